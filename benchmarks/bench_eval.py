"""Evaluation throughput: `vau-annotate eval` (engine, full concurrency) vs the papers' sequential loop.

Both answer the same multiple-choice items of an exported test split (embedded frames) against a
200 ms OpenAI-compatible loopback model (bench_engine's asyncio responder, in its own process).

  eval          run_eval over --items QA items, think off: load the split, build every request
                (frames + VAU-R1's prompt), call through the engine at --concurrency, parse,
                score, write predictions.jsonl / metrics.json / metrics.md. Timed end to end.
  sequential    what VAU-R1's `inference_qa_qwen.py` does per item: build the prompt, one
                synchronous SDK call with the frames, parse the letter, append a CSV row — one
                item after another. --sequential items are measured and the time for --items is
                extrapolated (and says so).
  warm          the same eval command again: every call from the ledger (the server must see none).

    python benchmarks/bench_eval.py [--items 400] [--concurrency 64] [--latency 0.2] [--sequential 20]

Prints items/s of each and the ratio eval / sequential. Exit status 1 when the warm run reached
the server, the cold run failed items, or the two disagree (correctness, not speed).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_engine import ServerProcess  # noqa: E402
from eval_fixtures import grpo_row, write_exported  # noqa: E402

from vau_annotate.annotate.answers import extract_choice  # noqa: E402
from vau_annotate.annotate.backends.openai_backend import video_data_url  # noqa: E402
from vau_annotate.pipelines.eval_items import DEFAULT_CONFIGS, load_dataset_items  # noqa: E402
from vau_annotate.pipelines.eval_tasks import render_prompt  # noqa: E402
from vau_annotate.pipelines.evaluate import EvalOptions, run_eval  # noqa: E402

OPTIONS = ["a man runs", "a man fights", "a car stops", "a dog barks"]


def make_split(root: Path, items: int) -> Path:
    rows = [grpo_row(f"v{i}#qa0", f"v{i}", i % 250, "qa", answer="ABCD"[i % 4], options=OPTIONS, question=f"What happens in clip {i}?")
            for i in range(items)]
    return write_exported(root, {"grpo_qa": rows})


def sequential_loop(base_url: str, data: Path, n: int, out_csv: Path) -> float:
    """Seconds per item of the papers' loop: prompt → one blocking call → parse → append a CSV row."""
    import openai

    items, _ = load_dataset_items(str(data), ["qa"], DEFAULT_CONFIGS, None, None, 64)
    client = openai.OpenAI(api_key="EMPTY", base_url=base_url, max_retries=0)
    start = time.perf_counter()
    with out_csv.open("a", newline="") as fh:
        writer = csv.writer(fh)
        for item in items[:n]:
            part = item.video()
            _, text = render_prompt(item, "no_think", part.fps, item.duration or 0.0)
            content = [{"type": "video_url", "video_url": {"url": video_data_url(part)}}, {"type": "text", "text": text}]
            reply = client.chat.completions.create(model="bench", messages=[{"role": "user", "content": content}], max_tokens=1024)
            writer.writerow([item.video_id, extract_choice(reply.choices[0].message.content, list(item.options)) or ""])
    elapsed = time.perf_counter() - start
    client.close()
    return elapsed / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--sequential", type=int, default=20, help="items of the sequential loop to measure (then extrapolated)")
    args = parser.parse_args()
    os.environ.setdefault("OPENAI_API_KEY", "EMPTY")

    server = ServerProcess(args.latency)
    load_before = os.getloadavg()[0]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = make_split(Path(tmp) / "ds", args.items)
            per_item = sequential_loop(server.base_url, data, args.sequential, Path(tmp) / "papers.csv")
            options = EvalOptions(data=str(data), model=f"openai:bench@{server.base_url}", out=Path(tmp) / "eval", tasks=("qa",),
                                  think="off", concurrency=args.concurrency, show_progress=False)
            before = server.calls
            start = time.perf_counter()
            cold = run_eval(options)
            cold_s = time.perf_counter() - start
            cold_calls = server.calls - before
            before = server.calls
            start = time.perf_counter()
            warm = run_eval(options)
            warm_s = time.perf_counter() - start
            warm_calls = server.calls - before
    finally:
        server.close()

    eval_rate, seq_rate, warm_rate = args.items / cold_s, 1 / per_item, args.items / warm_s
    ideal = args.concurrency / args.latency
    print(f"model: minimal asyncio OpenAI-compatible responder on 127.0.0.1, {args.latency * 1000:.0f} ms per answer, own process")
    print(f"machine: {os.cpu_count()} CPUs, load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after")
    print(f"{'run':<44}{'items':>7}{'seconds':>10}{'items/s':>10}")
    print(f"{'papers sequential loop (measured)':<44}{args.sequential:>7}{per_item * args.sequential:>10.2f}{seq_rate:>10.2f}")
    print(f"{'papers sequential loop (extrapolated)':<44}{args.items:>7}{per_item * args.items:>10.1f}{seq_rate:>10.2f}")
    print(f"{f'vau-annotate eval, concurrency {args.concurrency} (end to end)':<44}{args.items:>7}{cold_s:>10.2f}{eval_rate:>10.1f}")
    print(f"{'vau-annotate eval, warm ledger':<44}{args.items:>7}{warm_s:>10.2f}{warm_rate:>10.1f}")
    print()
    print(f"eval / sequential loop: {eval_rate / seq_rate:.1f}×   (ideal model-bound rate {ideal:.0f} items/s)")
    print(f"server requests: cold {cold_calls}, warm {warm_calls}; QA accuracy {cold.metrics['qa']['no_think']['accuracy']}")
    if warm_calls != 0 or cold_calls != args.items or cold.summary.exit_code != 0 or warm.metrics["qa"] != cold.metrics["qa"]:
        print("FAIL: the cold run must answer every item, the warm run none from the server, with the same metrics", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
