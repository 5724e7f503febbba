"""Executors decide where the shards of one command run: local processes, or Ray tasks on a cluster.

Each shard is the same command with `--shard I/N` added, started as its own `vau-annotate` process
(on this machine, or on a Ray worker that shares the run directory), so a shard run under an
executor is exactly what a user would get from a Slurm array job. The driver polls the shards'
state files to show progress, waits, folds the shards into run.json (`merge`), and exits with the
most serious shard status (1 stopped > 3 partial > 0).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vau_annotate.annotate.shards import shard_states

EXECUTORS = ("local", "ray")


@dataclass
class ShardResult:
    index: int
    exit_code: int
    output_tail: str


def shard_command(args: list[str], index: int, count: int) -> list[str]:
    return [sys.executable, "-m", "vau_annotate.cli", *args, "--shard", f"{index}/{count}"]


def _run_one(command: list[str], index: int, env: dict[str, str] | None = None) -> ShardResult:
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    return ShardResult(index, done.returncode, (done.stdout + done.stderr)[-4000:])


def run_local(args: list[str], count: int, run: Path, on_progress: Any = None) -> list[ShardResult]:
    """Every shard as a local process at once (each one bounded by its own --concurrency)."""
    procs = [(i, subprocess.Popen(shard_command(args, i, count), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
             for i in range(count)]
    outputs: dict[int, str] = {}
    while any(p.poll() is None for _, p in procs):
        if on_progress is not None:
            on_progress(shard_states(run))
        time.sleep(0.5)
    for i, proc in procs:
        outputs[i] = (proc.stdout.read() if proc.stdout else "")[-4000:]
    return [ShardResult(i, proc.returncode, outputs[i]) for i, proc in procs]


def run_ray(args: list[str], count: int, run: Path, address: str | None = None, num_cpus: int | None = None,
            on_progress: Any = None) -> list[ShardResult]:
    """Every shard as a Ray task (one CPU each by default) on the cluster at `address` (a local one when None).

    The run directory must be on storage every worker sees (a shared file system), as for Slurm.
    """
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        init: dict[str, Any] = {"address": address, "include_dashboard": False, "log_to_driver": False}
        if address is None and num_cpus is not None:
            init["num_cpus"] = num_cpus
        ray.init(**{k: v for k, v in init.items() if v is not None or k == "address"})
    try:
        remote = ray.remote(num_cpus=1)(_run_one)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        refs = [remote.remote(shard_command(args, i, count), i, env) for i in range(count)]
        pending = list(refs)
        while pending:
            _, pending = ray.wait(pending, timeout=0.5, num_returns=len(pending))
            if on_progress is not None:
                on_progress(shard_states(run))
        return list(ray.get(refs))
    finally:
        if started_here:
            ray.shutdown()


def worst_exit(results: list[ShardResult]) -> int:
    """1 (a shard stopped or crashed) > 3 (partial) > 0; a usage error (2) of any shard wins over all."""
    codes = {r.exit_code for r in results}
    for code in (2, 1, 130, 3):
        if code in codes:
            return code
    return 0 if codes <= {0} else max(codes)
