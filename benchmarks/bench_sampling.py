"""Frame sampling speed: the tool's keyframe-aware `auto` decoder against common baselines.

Makes two 30 s 640×360 30 fps H.264 clips (x264 `veryfast`, B-frames on, a keyframe every 250
frames — x264's default spacing — and every 30 frames) whose frames encode their own index,
then for uniform:16, fps:1 and stride:16 times, on the same frame indices:

  tool auto        vau_annotate.annotate.video: probe (packet index + first frame, for the display
                   rotation) + keyframe-aware decode; RGB conversion in a helper thread beside it
  decord batch     decord.VideoReader(...).get_batch(indices)
  cv2 seek         OpenCV, set(CAP_PROP_POS_FRAMES, i) + read() per frame
  cv2 sequential   OpenCV, grab() every frame, retrieve() the wanted ones
  pyav seek        PyAV, seek(pts) per frame + decode forward to it

Every method does the same work: open the file, decode to RGB uint8 arrays, no resize or JPEG.
Each method's frames are checked by the index they encode; a method that returns wrong frames
is marked and left out of "best baseline". Times are medians of --repeats runs, methods
interleaved so that drift hits all alike. Ratio = tool / best correct baseline in wall-clock
time (≤ 1.10 is the target); "cpu ratio" is the same in process CPU time (all threads), which
a busy machine disturbs much less; "best ratio" compares each method's fastest run, which a busy
machine also disturbs less than the median; the load average is printed to judge the noise.

    python benchmarks/bench_sampling.py [--repeats 7] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.media import read_index  # noqa: E402
from vau_annotate.annotate import synth  # noqa: E402
from vau_annotate.annotate.video import decode_frames, parse_policy, probe, select_indices  # noqa: E402

SECONDS, FPS, WIDTH, HEIGHT = 30, 30, 640, 360
GOPS = (250, 30)
POLICIES = ("uniform:16", "fps:1", "stride:16")


def make_clip(path: Path, gop: int) -> Path:
    """A realistic-ish x264 clip (veryfast, B-frames) with a keyframe every `gop` frames."""
    return synth.make_clip(path, seconds=SECONDS, fps=FPS, width=WIDTH, height=HEIGHT, gop=gop, preset="veryfast", crf=23, bframes=None)


# --- methods: each takes (path, sorted indices) and returns RGB arrays -------------------------


def tool_auto(path: Path, indices: list[int]) -> list[np.ndarray]:
    return decode_frames(path, indices, "auto", info=probe(path, decode_first=False))


def decord_batch(path: Path, indices: list[int]) -> list[np.ndarray]:
    import decord

    return list(decord.VideoReader(str(path), ctx=decord.cpu(0)).get_batch(indices).asnumpy())


def cv2_seek(path: Path, indices: list[int]) -> list[np.ndarray]:
    import cv2

    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    out = []
    for index in indices:
        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, image = capture.read()
        out.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if ok else np.zeros((HEIGHT, WIDTH, 3), np.uint8))
    capture.release()
    return out


def cv2_sequential(path: Path, indices: list[int]) -> list[np.ndarray]:
    import cv2

    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    keep, out = set(indices), []
    for index in range(indices[-1] + 1):
        capture.grab()
        if index in keep:
            out.append(cv2.cvtColor(capture.retrieve()[1], cv2.COLOR_BGR2RGB))
    capture.release()
    return out


def pyav_seek(path: Path, indices: list[int]) -> list[np.ndarray]:
    container = av.open(str(path))
    stream = container.streams.video[0]
    start = stream.start_time or 0
    step = 1 / (FPS * stream.time_base)
    out = []
    for index in indices:
        target = start + int(round(index * step))
        container.seek(target, stream=stream, backward=True)
        for frame in container.decode(stream):
            if frame.pts >= target:
                out.append(frame.to_ndarray(format="rgb24"))
                break
    container.close()
    return out


METHODS: dict[str, Callable[[Path, list[int]], list[np.ndarray]]] = {
    "tool auto": tool_auto,
    "decord batch": decord_batch,
    "cv2 seek": cv2_seek,
    "cv2 sequential": cv2_sequential,
    "pyav seek": pyav_seek,
}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process
    return usage.ru_utime + usage.ru_stime


def time_case(path: Path, indices: list[int], repeats: int) -> tuple[dict[str, float], dict[str, float], dict[str, float], dict[str, bool]]:
    """Median wall, median CPU and fastest wall ms per method (interleaved repeats), and whether its frames were right."""
    wall: dict[str, list[float]] = {name: [] for name in METHODS}
    cpu: dict[str, list[float]] = {name: [] for name in METHODS}
    correct: dict[str, bool] = {}
    for name, method in METHODS.items():  # warm-up run doubles as the correctness check
        frames = method(path, indices)
        correct[name] = [read_index(f) for f in frames] == indices
    for _ in range(repeats):
        for name, method in METHODS.items():
            start, start_cpu = time.perf_counter(), cpu_seconds()
            method(path, indices)
            wall[name].append((time.perf_counter() - start) * 1000)
            cpu[name].append((cpu_seconds() - start_cpu) * 1000)
    median = statistics.median
    return {n: median(v) for n, v in wall.items()}, {n: median(v) for n, v in cpu.items()}, {n: min(v) for n, v in wall.items()}, correct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--keep", type=Path, default=None, help="Directory to keep (and reuse) the clips in.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        load_before = os.getloadavg()[0]
        rows = []
        for gop in GOPS:
            path = folder / f"clip_gop{gop}.mp4"
            if not path.exists():
                make_clip(path, gop)
            info = probe(path)
            for policy in POLICIES:
                indices = select_indices(parse_policy(policy), info)
                rows.append((gop, policy, len(indices), *time_case(path, indices, args.repeats)))
        print_table(rows, args.repeats)
        print(f"load average (1 min) before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


def print_table(rows: list, repeats: int) -> None:
    names = list(METHODS)
    header = f"{'keyframes':>10} {'policy':>10} {'frames':>6} " + " ".join(f"{n:>14}" for n in names) + f" {'ratio':>6} {'cpu ratio':>9} {'best ratio':>10}"
    print(f"median wall ms over {repeats} runs (! = wrong frames returned, excluded from best baseline)")
    print(header)
    print("-" * len(header))
    worst = worst_cpu = worst_best = 0.0
    for gop, policy, count, wall, cpu, fastest, correct in rows:
        cells = " ".join(f"{wall[n]:>13.1f}{' ' if correct[n] else '!'}" for n in names)
        fair = [n for n in names[1:] if correct[n]]
        ratio = wall["tool auto"] / min(wall[n] for n in fair) if fair and correct["tool auto"] else float("nan")
        cpu_ratio = cpu["tool auto"] / min(cpu[n] for n in fair) if fair and correct["tool auto"] else float("nan")
        best_ratio = fastest["tool auto"] / min(fastest[n] for n in fair) if fair and correct["tool auto"] else float("nan")
        worst, worst_cpu, worst_best = max(worst, ratio), max(worst_cpu, cpu_ratio), max(worst_best, best_ratio)
        print(f"{'every ' + str(gop):>10} {policy:>10} {count:>6} {cells} {ratio:>6.2f} {cpu_ratio:>9.2f} {best_ratio:>10.2f}")
    print(f"worst ratio tool / best baseline: {worst:.2f} wall (median), {worst_cpu:.2f} cpu, {worst_best:.2f} wall (fastest runs)")


if __name__ == "__main__":
    main()
