"""Export memory and speed on 10,000 synthetic records, against an all-in-memory baseline.

A synthetic run is written once: N videos, each with a manifest entry (one MCQ, a known span), a
Vad-R1 chain (CotRecord: four steps, eight captions) and eight sampled 224×224 JPEG frames
(hard links to eight real JPEG files, so the run costs little disk but export reads N × 8 files).

Two ways to turn it into the same `p2c_sft` + `grpo_qa` + `captions` parquet files, each in its
own fresh process so that its peak RSS (ru_maxrss) is its own:
- **tool**: `run_export` (streams rows batch by batch into pyarrow ParquetWriters);
- **baseline** ("from_list"): the same rows built in a list with the same row builders, then
  `datasets.Dataset.from_list(rows, features=…)` and `to_parquet` per config and split, which is
  what a script that collects everything first does.
Prints peak RSS, wall time and rows/s of each, and the ratios tool ÷ baseline.

    python benchmarks/bench_export.py [--records 10000] [--workdir /tmp/bench-export]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = ("p2c_sft", "grpo_qa", "captions")
FRAMES = 8
POLICY_FOLDER = "uniform-8_50176px"


def _jpegs(folder: Path) -> list[Path]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 150, 224)[None, :, None]
    paths = []
    for i in range(FRAMES):  # a lit scene with a little sensor noise: ~6 KB per JPEG, like a small sampled frame
        pixels = np.clip(ramp + ramp.transpose(1, 0, 2) * 0.5 + i * 10 + rng.normal(0, 3, (224, 224, 3)), 0, 255).astype("uint8")
        path = folder / f"src_{i}.jpg"
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
        path.write_bytes(buffer.getvalue())
        paths.append(path)
    return paths


def make_run(root: Path, records: int) -> Path:
    """The synthetic run directory (reused when it already has `records` chains)."""
    from vau_annotate.annotate.rundir import RunDir
    from vau_annotate.schemas import MCQ, FrameSet, Span, VideoRecord
    from vau_annotate.schemas.cot import Caption, CotAnswer, CotProvenance, CotRecord

    run = root / f"run-{records}"
    marker = run / ".complete"
    if marker.exists():
        return run
    shutil.rmtree(run, ignore_errors=True)
    (run / "cot").mkdir(parents=True)
    sources = _jpegs(root)
    rd = RunDir(run)
    sentence = "A person walks along the platform while a train arrives and other people wait near the yellow line. "
    videos = []
    for i in range(records):
        vid = f"synthetic_{i:06d}"
        videos.append(VideoRecord(
            id=vid, path=f"{vid}.mp4", source="vau-bench", label="abnormal", category="Fighting", spans=[Span(start=3.0, end=6.0)],
            span_known=True, duration=12.0, fps=30.0, num_frames=360,
            mcqs=[MCQ(question="What happens on the platform?", options=["A fight", "A train leaves", "Nothing", "A sale"], answer="A")]))
        folder = rd.frames_path(vid, "uniform:8", 50176)
        folder.mkdir(parents=True)
        paths = []
        for k, src in enumerate(sources):
            os.link(src, folder / f"{k:06d}.jpg")
            paths.append(f"frames/{vid}/{POLICY_FOLDER}/{k:06d}.jpg")
        times = [0.75 + 1.5 * k for k in range(FRAMES)]
        (folder / "frameset.json").write_text(FrameSet(video_id=vid, policy="uniform:8", indices=[int(t * 30) for t in times], timestamps=times,
                                                       paths=paths, width=224, height=224, sampling_fps=FRAMES / 12.0).model_dump_json())
        steps = [sentence * 5] * 4
        think = "<think>" + "".join(f"<step{k + 1}>{s}</step{k + 1}>" for k, s in enumerate(steps)) + "</think>"
        answer = "<answer><which>Fighting</which><what>Two people fight.</what><when>[0.250, 0.500]</when><where>Platform.</where><why>Violence.</why><how>A push, then punches.</how></answer>"
        record = CotRecord(
            video_id=vid, label="abnormal", category="Fighting", duration=12.0, span=(0.25, 0.5),
            captions=[Caption(frame_index=int(t * 30), timestamp=t, text=sentence) for t in times], steps=steps,
            fields=CotAnswer(which="Fighting", what="Two people fight.", when=(0.25, 0.5), where="Platform.", why="Violence.", how="A push."),
            think=think, answer=answer,
            provenance=CotProvenance(captioner="mock:bench", reasoner="mock:bench", caption_policy="uniform:8", max_pixels=50176, caption_batch=8))
        (run / "cot" / f"{vid}.json").write_text(record.model_dump_json())
    rd.save_manifest(videos)
    marker.write_text("ok")
    return run


def run_tool(run: Path, out: Path) -> int:
    from vau_annotate.pipelines.export import ExportOptions, run_export

    result = run_export(ExportOptions(runs=(run,), out=out, configs=CONFIGS, workers=3, overwrite=True, show_progress=False))
    return sum(r.total for r in result.results.values())


def run_baseline(run: Path, out: Path) -> int:
    """Every row in one list per config, then Dataset.from_list + to_parquet per split."""
    from collections import Counter

    from datasets import Dataset

    from vau_annotate.pipelines.export import ConfigResult, Splitter, iter_rows
    from vau_annotate.pipelines.export_source import open_runs
    from vau_annotate.pipelines.export_write import SplitPlan, VideoOptions
    from vau_annotate.schemas.rows import features

    inputs = open_runs([run])
    splitter = Splitter(inputs, SplitPlan())
    total = 0
    shutil.rmtree(out, ignore_errors=True)
    kept = []
    for config in CONFIGS:
        rows = list(iter_rows(config, inputs, splitter, VideoOptions(), ConfigResult(config, skips=Counter())))
        kept.append(rows)  # a collect-first script holds every config's rows until it writes
        for split in ("train", "validation", "test"):
            part = [row for s, row in rows if s == split]
            if part:
                (out / config).mkdir(parents=True, exist_ok=True)
                Dataset.from_list(part, features=features(config, "embed")).to_parquet(str(out / config / f"{split}.parquet"))
        total += len(rows)
    return total


def child(variant: str, run: Path, out: Path) -> None:
    start = time.perf_counter()
    rows = (run_tool if variant == "tool" else run_baseline)(run, out)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"variant": variant, "rows": rows, "seconds": seconds, "peak_rss_mb": peak_mb}))


def measure(variant: str, run: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", variant, "--run", str(run), "--out", str(out)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-export"))
    parser.add_argument("--child", choices=("tool", "baseline"))
    parser.add_argument("--run", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.run, args.out)
    args.workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    run = make_run(args.workdir, args.records)
    print(f"synthetic run: {args.records} chains, {args.records * FRAMES} frames ({time.perf_counter() - t0:.1f} s to make or reuse)")
    results = {v: measure(v, run, args.workdir / f"out-{v}") for v in ("tool", "baseline")}
    print(f"{'variant':<34} {'rows':>7} {'wall s':>8} {'rows/s':>8} {'peak RSS MB':>12}")
    names = {"tool": "tool (run_export, streaming)", "baseline": "baseline (Dataset.from_list)"}
    for variant, r in results.items():
        print(f"{names[variant]:<34} {r['rows']:>7} {r['seconds']:>8.1f} {r['rows'] / r['seconds']:>8.0f} {r['peak_rss_mb']:>12.0f}")
    tool, base = results["tool"], results["baseline"]
    print(f"peak RSS ratio tool/baseline: {tool['peak_rss_mb'] / base['peak_rss_mb']:.2f}   "
          f"wall-time ratio tool/baseline: {tool['seconds'] / base['seconds']:.2f}")


if __name__ == "__main__":
    main()
