"""Sample: frames of every ingested video → RUN/frames/<video>/<policy>_<max_pixels>px/.

Each video's JPEGs are written first and its `frameset.json` last, atomically: the FrameSet is
the completion marker, so a re-run skips finished videos and redoes any video that was cut off
half-way. Videos are sampled in parallel processes (decoding is CPU-bound); a video that cannot
be sampled becomes a line in rejects.jsonl and the run goes on.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from vau_annotate.annotate.rundir import RunDir, atomic_write_bytes, atomic_write_text
from vau_annotate.annotate.shards import active_shard
from vau_annotate.annotate.shards import owns as shard_owns
from vau_annotate.annotate.video import VideoError, canonical_decoder, parse_policy, sample_video
from vau_annotate.pipelines.summary import StageSummary
from vau_annotate.schemas import FrameSet, VideoRecord
from vau_annotate.schemas.run import utc_now

STAGE = "sample"


@dataclass(frozen=True)
class Job:
    """Everything a worker process needs to sample one video (picklable, no open handles)."""

    video_id: str
    video_path: str
    run_root: str
    out_dir: str
    policy: str
    max_pixels: int
    decoder: str
    jpeg_quality: int
    spans: tuple[tuple[float, float], ...] | None
    threads: bool = True


@dataclass(frozen=True)
class Outcome:
    video_id: str
    frames: int = 0
    reason: str | None = None
    decoder: str = ""


def run_sample(
    run: Path,
    policy: str,
    max_pixels: int,
    decoder: str = "auto",
    workers: int = 0,
    jpeg_quality: int = 90,
    video_ids: set[str] | None = None,
    show_progress: bool = True,
) -> StageSummary:
    """Sample every video of the manifest (or only `video_ids`) that is not sampled yet."""
    rundir = RunDir(run)
    canonical = str(parse_policy(policy))
    decoder = canonical_decoder(decoder)
    records = [r for r in rundir.load_manifest() if (video_ids is None or r.id in video_ids) and shard_owns(r.id)]
    rundir.claim_shard(sampling_stage(canonical, max_pixels), {"policy": canonical, "max_pixels": max_pixels})
    started = utc_now()
    videos_dir = rundir.load_meta().videos
    todo = [r for r in records if not is_sampled(rundir, r.id, canonical, max_pixels)]
    # only this sampling's earlier rejects: another policy's rejects stay on record
    rundir.clear_rejects(STAGE, {r.id for r in todo}, detail={"policy": canonical, "max_pixels": max_pixels})
    processes = resolve_workers(workers, len(todo))
    jobs = [make_job(rundir, r, videos_dir, canonical, max_pixels, decoder, jpeg_quality, threads=processes == 1) for r in todo]

    def record_reject(outcome: Outcome) -> None:  # at once, so an interrupted run keeps its reasons
        if outcome.reason is not None:
            rundir.add_reject(outcome.video_id, STAGE, outcome.reason, policy=canonical, max_pixels=max_pixels)

    outcomes = execute(jobs, processes, show_progress, record_reject)
    return summarise(rundir, records, outcomes, canonical, max_pixels, decoder, workers, jpeg_quality, started)


def sampling_stage(policy: str, max_pixels: int) -> str:
    """A sampling's name among shard files: each policy and pixel budget is its own share of work."""
    return f"sample_{policy.replace(':', '-')}_{max_pixels}px"


def is_sampled(rundir: RunDir, video_id: str, policy: str, max_pixels: int) -> bool:
    """Whether the video's FrameSet for this sampling exists and all its JPEGs are on disk."""
    try:
        frameset = rundir.load_frameset(video_id, policy, max_pixels)
    except ValueError:  # an unreadable marker (hand-edited, disk trouble): sample again
        return False
    return frameset is not None and all((rundir.root / p).is_file() for p in frameset.paths)


def make_job(rundir: RunDir, record: VideoRecord, videos_dir: str | None, policy: str, max_pixels: int, decoder: str, jpeg_quality: int,
             threads: bool = True) -> Job:
    """A job for one video; its path is relative to the run's --videos directory (run.json).

    With several worker processes each decoder gets one thread: the processes already use the
    cores, and frame threading only adds its own overhead then.
    """
    path = Path(record.path)
    if videos_dir and not path.is_absolute():
        path = Path(videos_dir) / path
    spans = tuple((s.start, s.end) for s in record.spans) if record.label == "abnormal" and record.span_known else None
    return Job(
        video_id=record.id,
        video_path=str(path),
        run_root=str(rundir.root),
        out_dir=str(rundir.frames_path(record.id, policy, max_pixels)),
        policy=policy,
        max_pixels=max_pixels,
        decoder=decoder,
        jpeg_quality=jpeg_quality,
        spans=spans,
        threads=threads,
    )


def resolve_workers(workers: int, jobs: int) -> int:
    """0 means one process per CPU; never more processes than videos."""
    wanted = workers if workers > 0 else (os.cpu_count() or 1)
    return max(1, min(wanted, jobs))


def sample_one(job: Job) -> Outcome:
    """Sample one video and write its JPEGs, then its FrameSet (runs in a worker process)."""
    out_dir = Path(job.out_dir)
    try:
        sampled = sample_video(job.video_path, job.policy, job.max_pixels, job.decoder, job.spans, job.jpeg_quality, job.threads)
        if not sampled.indices:
            return Outcome(job.video_id, reason="no frames: the policy selected none")
        if out_dir.exists():  # leftovers of an interrupted attempt
            shutil.rmtree(out_dir)
        paths = []
        for index, data in zip(sampled.indices, sampled.jpegs):
            target = out_dir / f"{index:06d}.jpg"
            atomic_write_bytes(target, data)
            paths.append(target.relative_to(job.run_root).as_posix())
        frameset = FrameSet(
            video_id=job.video_id,
            policy=job.policy,
            indices=sampled.indices,
            timestamps=sampled.timestamps,
            paths=paths,
            width=sampled.size[0],
            height=sampled.size[1],
            sampling_fps=sampled.sampling_fps,
            decoder=sampled.decoder,
        )
        atomic_write_text(out_dir / "frameset.json", frameset.model_dump_json(indent=1))
        return Outcome(job.video_id, frames=len(paths), decoder=sampled.decoder)
    except VideoError as exc:
        return Outcome(job.video_id, reason=str(exc))
    except Exception as exc:  # one bad video must not stop the run; the reason names the error
        return Outcome(job.video_id, reason=f"sampling failed: {type(exc).__name__}: {exc}")


def execute(jobs: list[Job], workers: int, show_progress: bool = True, on_outcome: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Run the jobs (in a process pool when workers > 1) with a progress bar; outcomes in job order.

    `on_outcome` is called in this process as each video finishes.
    """
    if not jobs:
        return []
    tracker = _Tracker(len(jobs), show_progress, on_outcome)
    if workers == 1:
        with tracker:
            for job in jobs:
                tracker.done(sample_one(job))
    else:
        _run_pool(jobs, workers, tracker)
    order = {job.video_id: n for n, job in enumerate(jobs)}
    return sorted(tracker.outcomes, key=lambda o: order[o.video_id])


class _Tracker:
    """Collects outcomes and shows them on a rich progress bar (frames and rejects so far)."""

    def __init__(self, total: int, show: bool, on_outcome: Callable[[Outcome], None] | None = None) -> None:
        self.outcomes: list[Outcome] = []
        self.on_outcome = on_outcome
        self.progress = Progress(
            TextColumn(f"[bold]{STAGE}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"), console=Console(stderr=True), disable=not show, transient=False,
        )
        self.task = self.progress.add_task(STAGE, total=total, info="")

    def __enter__(self) -> _Tracker:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def done(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        frames = sum(o.frames for o in self.outcomes)
        rejected = sum(o.reason is not None for o in self.outcomes)
        self.progress.update(self.task, advance=1, info=f"frames {frames} · rejected {rejected}")


def _run_pool(jobs: list[Job], workers: int, tracker: _Tracker) -> None:
    """Fan the jobs out over processes.

    All jobs are submitted (so the workers are forked) before the progress bar starts its
    refresh thread. If a worker dies (a decoder crash on a hostile file), the unfinished jobs are
    retried one per fresh process so that only the culprit is rejected.
    """
    unfinished: list[Job] = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures: dict[Future, Job] = {pool.submit(sample_one, job): job for job in jobs}
        with tracker:
            try:
                for future in as_completed(futures):
                    try:
                        tracker.done(future.result())
                    except BrokenProcessPool:
                        unfinished.append(futures[future])
            except KeyboardInterrupt:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            for job in unfinished:
                with ProcessPoolExecutor(max_workers=1) as single:
                    try:
                        tracker.done(single.submit(sample_one, job).result())
                    except BrokenProcessPool:
                        tracker.done(Outcome(job.video_id, reason="decoder crashed: the worker process died on this file"))


def summarise(rundir: RunDir, records: list[VideoRecord], outcomes: list[Outcome], policy: str, max_pixels: int,
              decoder: str, workers: int, jpeg_quality: int, started: str | None = None) -> StageSummary:
    """Counts for the CLI and run.json, plus a note when a decoder had to be substituted."""
    sampled = [o for o in outcomes if o.reason is None]
    rejected = len(outcomes) - len(sampled)
    counts = {
        "videos": len(records),
        "sampled": len(sampled),
        "skipped": len(records) - len(outcomes),
        "rejected": rejected,
        "frames": sum(o.frames for o in sampled),
    }
    rundir.record_stage(sampling_stage(policy, max_pixels) if active_shard() else STAGE, {"policy": policy, "max_pixels": max_pixels, "decoder": decoder, "workers": workers, "jpeg_quality": jpeg_quality}, counts, started=started)
    notes = []
    substituted = 0 if decoder == "auto" else sum(1 for o in sampled if o.decoder != decoder)
    if substituted:
        notes.append(f"{substituted} video(s) were decoded with another decoder than {decoder}, which would return wrong frames for them "
                     f"(no reliable timestamps, e.g. AVI; rotation metadata or a container other than MP4/MOV/MKV for decord)")
    return StageSummary(stage=STAGE, counts=counts, rejected=rejected, notes=notes)
