"""What export reads from run directories: videos (deduplicated by id), records, frames, splits.

Several runs can be exported together. A video id seen in more than one run is one video: its
manifest entry comes from the first run that has it, and its split (for `--split column`) is the
strictest any run gives it (test > validation > train), so a VAU-Bench test video never lands in
train. Records (`RUN/cot/*.json`, `RUN/reflect/*.json`) are read lazily, one file at a time, so
export's memory does not grow with the number of records; a record id seen twice is kept once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterator, TypeVar

from pydantic import BaseModel, ValidationError

from vau_annotate.annotate.rundir import RunDir, safe_name
from vau_annotate.schemas import FrameSet, VideoRecord
from vau_annotate.schemas.cot import CotRecord
from vau_annotate.schemas.reflection import ReflectionRecord

M = TypeVar("M", bound=BaseModel)

SPLIT_RANK = {"train": 0, "validation": 1, "test": 2}
# VAU-Bench ships train.csv, val.csv and test_<dataset>.csv; other sources name their files alike.
_SPLIT_NAMES = (("test", "test"), ("val", "validation"), ("dev", "validation"), ("train", "train"))


class ExportInputError(Exception):
    """A whole-input problem: no such run, no manifest, no split in the source file name, …"""


def split_of_file(name: str | None) -> str | None:
    """The split an annotation file name says (`train.csv`, `val.csv`, `test_ucf.csv`), or None."""
    if not name:
        return None
    stem = PurePosixPath(name.replace("\\", "/")).name.lower()
    for prefix, split in _SPLIT_NAMES:
        if re.match(rf"^{prefix}(?![a-z])", stem) or re.search(rf"[_\-.]{prefix}(?![a-z])", stem):
            return split
    return None


@dataclass
class Run:
    """One run directory as export sees it."""

    index: int
    dir: RunDir
    source_file: str | None
    source_split: str | None

    @property
    def root(self) -> Path:
        return self.dir.root


@dataclass
class Video:
    """A deduplicated video: its record, the run it comes from, and its source split (if any)."""

    record: VideoRecord
    run: Run
    source_split: str | None


@dataclass
class Inputs:
    """Every run, every video by id (first run wins), and the reject log lines of all runs."""

    runs: list[Run]
    videos: dict[str, Video]
    duplicates: int = 0
    notes: list[str] = field(default_factory=list)


def open_runs(paths: list[Path]) -> Inputs:
    """Open the runs and merge their manifests; a missing run or manifest is a clear error."""
    if not paths:
        raise ExportInputError("give at least one --run")
    runs: list[Run] = []
    videos: dict[str, Video] = {}
    duplicates = 0
    for index, path in enumerate(paths):
        rd = RunDir(path)
        if not rd.root.is_dir():
            raise ExportInputError(f"run directory {path} does not exist")
        if not rd.manifest_path.exists():
            raise ExportInputError(f"{path} has no manifest.parquet: run `vau-annotate ingest --run {path}` first")
        meta = rd.load_meta()
        run = Run(index, rd, meta.annotations, split_of_file(meta.annotations))
        runs.append(run)
        for record in rd.load_manifest():
            seen = videos.get(record.id)
            if seen is None:
                videos[record.id] = Video(record, run, run.source_split)
                continue
            duplicates += 1
            if run.source_split and (seen.source_split is None or SPLIT_RANK[run.source_split] > SPLIT_RANK[seen.source_split]):
                seen.source_split = run.source_split
    return Inputs(runs, videos, duplicates)


def iter_records(runs: list[Run], stage: str, model: type[M], key: str) -> Iterator[tuple[Run, M]]:
    """Accepted records of a stage over all runs, one file at a time, first run winning per `key`.

    A file that no longer parses (e.g. written by an older version) is skipped and counted by the
    caller through `bad`; it never stops the export.
    """
    seen: set[str] = set()
    for run in runs:
        folder = run.root / stage
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.json")):
            if path.name.endswith(".rejected.json"):
                continue
            try:
                record = model.model_validate_json(path.read_bytes())
            except ValidationError:
                continue
            ident = getattr(record, key)
            if ident in seen:
                continue
            seen.add(ident)
            yield run, record


def cot_records(runs: list[Run]) -> Iterator[tuple[Run, CotRecord]]:
    return iter_records(runs, "cot", CotRecord, "video_id")


def reflection_records(runs: list[Run]) -> Iterator[tuple[Run, ReflectionRecord]]:
    return iter_records(runs, "reflect", ReflectionRecord, "id")


# -- frames ----------------------------------------------------------------------------------------

_FOLDER = re.compile(r"^(?P<policy>.+)_(?P<pixels>\d+)px$")


@dataclass(frozen=True)
class Frames:
    """One sampling of one video: the FrameSet plus where it lies and its pixel budget."""

    run_root: Path
    frameset: FrameSet
    max_pixels: int

    def paths(self) -> list[Path]:
        return [self.run_root / p for p in self.frameset.paths]


def policy_folder(policy: str) -> str:
    """The folder name a sampling policy gets in `frames/<video>/` (see RunDir.frames_path)."""
    return safe_name(policy.replace(":", "-"))


def find_frames(run: Run, video_id: str, prefer: list[tuple[str, int]], policy: str | None) -> Frames | None:
    """The frames to put in a row: `--sampling` if given, else the first of `prefer` that exists,
    else the sampling with the most frames (ties: the larger pixel budget, then the name)."""
    folder = run.dir.frames_dir / safe_name(video_id)
    if not folder.is_dir():
        return None
    candidates: list[tuple[str, int, Path]] = []
    for marker in sorted(folder.glob("*/frameset.json")):
        match = _FOLDER.match(marker.parent.name)
        if match:
            candidates.append((match["policy"], int(match["pixels"]), marker))
    if policy is not None:
        wanted = policy_folder(policy)
        candidates = [c for c in candidates if c[0] == wanted]
    else:
        for pol, pixels in prefer:
            hit = [c for c in candidates if c[0] == policy_folder(pol) and c[1] == pixels]
            if hit:
                candidates = hit
                break
    best: tuple[int, int, str, Frames] | None = None
    for _, pixels, marker in candidates:
        try:
            frameset = FrameSet.model_validate_json(marker.read_bytes())
        except ValidationError:
            continue
        frames = Frames(run.root, frameset, pixels)
        rank = (len(frameset.paths), pixels, marker.parent.name)
        if best is None or rank > best[:3]:
            best = (*rank, frames)
    return best[3] if best else None
