"""Shard scaling: the same calls spread over n = 1, 2, 4 shard processes at a fixed per-process
concurrency, against the 200 ms loopback server of bench_engine.py.

Each shard is its own process (as with `--shard I/N` under Slurm or `--executor local`): it takes
the items whose id hashes to its index (annotate/shards.py), writes its own ledger
(`shards/ledger-I-of-N.sqlite`) and runs them through Engine + the `openai:` backend. The baseline
is the one-process figure scaled by n: ratio = calls/s with n shards ÷ (n × calls/s with 1).
With the server answering after a fixed latency, perfect scaling is 1.0; what the ratio loses is
client CPU (2 cores here) and the uneven split of a hash.

    python benchmarks/bench_shards.py [--calls 1200] [--concurrency 16] [--latency 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_engine import ServerProcess, requests  # noqa: E402

from vau_annotate.annotate.backends import load_backend  # noqa: E402
from vau_annotate.annotate.engine import Engine  # noqa: E402
from vau_annotate.annotate.ledger import Ledger  # noqa: E402
from vau_annotate.annotate.shards import Shard  # noqa: E402


def run_shard(base_url: str, run: str, index: int, count: int, calls: int, concurrency: int, start_at: float) -> None:
    """One shard process: its share of the calls, its own ledger."""
    shard = Shard(index, count)
    batch = [(item, request) for item, request in requests(calls) if shard.owns(item)]

    async def go() -> None:
        backend = load_backend(f"openai:bench@{base_url}")
        ledger = Ledger(Path(run) / "shards" / f"ledger-{shard.tag}.sqlite")
        engine = Engine(backend, ledger, stage="bench", concurrency=concurrency)
        while time.time() < start_at:  # every shard starts together, after its imports
            await asyncio.sleep(0.005)
        await engine.run_all(batch)
        await backend.aclose()

    asyncio.run(go())


def measure(base_url: str, count: int, calls: int, concurrency: int) -> float:
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as run:
        start_at = time.time() + 3.0
        procs = [ctx.Process(target=run_shard, args=(base_url, run, i, count, calls, concurrency, start_at)) for i in range(count)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        elapsed = time.time() - start_at
        if any(p.exitcode for p in procs):
            raise RuntimeError("a shard process failed")
    return calls / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1200)
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight per shard process")
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args()
    server = ServerProcess(args.latency)
    try:
        rates = {}
        for count in (1, 2, 4):
            rates[count] = measure(server.base_url, count, args.calls, args.concurrency)
        print(f"{args.calls} calls, {args.concurrency} in flight per shard, server latency {args.latency * 1000:.0f} ms "
              f"(one shard's ideal: {args.concurrency / args.latency:.0f} calls/s)")
        print(f"{'shards':>6} {'calls/s':>9} {'ratio to n × 1 shard':>22}")
        for count, rate in rates.items():
            print(f"{count:>6} {rate:>9.1f} {rate / (count * rates[1]):>22.2f}")
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
