"""Ingest: read a dataset's labels, find and probe each video, write RUN/manifest.parquet.

Every source quirk is resolved here, once (see DESIGN.md "Conventions"): names are matched to
files on disk, frame numbers become seconds with the probed fps, spans are checked against the
real duration. A row or video that cannot be used becomes a line in rejects.jsonl ("phrase:
specifics" reason, row numbers and values in `detail`); only whole-file problems stop the stage,
as IngestInputError (the CLI's exit status 2).
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Sequence

from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from vau_annotate.annotate.classes import NORMAL, VAD_REASONING, VAU_BENCH, ClassFileError, Taxonomy, load_taxonomy
from vau_annotate.annotate.rundir import RunDir
from vau_annotate.annotate.sources import FRAME_SOURCES, SOURCES, VIDEO_EXTENSIONS, Problem, SourceFormatError, SourceRow, parse_source
from vau_annotate.annotate.sources.folder import find_manifest
from vau_annotate.annotate.video import VideoError, VideoInfo, probe as probe_video
from vau_annotate.pipelines.summary import StageSummary
from vau_annotate.schemas.run import utc_now
from vau_annotate.schemas.video import Span, VideoRecord

STAGE = "ingest"
CLAMP_SECONDS = 1.0
PROBE_WORKERS = 8
EXAMPLES = 3


class IngestInputError(Exception):
    """A whole-input problem (unreadable or wrong-format annotation file, bad --classes file)."""


# -- finding files ---------------------------------------------------------------------------


@dataclass
class Resolution:
    """Where a source name points on disk, or why it points nowhere."""

    path: str | None
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class VideoIndex:
    """Every file under --videos, indexed by file name and by case-insensitive stem.

    Annotation files name videos in many ways (bare name, dataset prefix, absolute path from
    another machine, no extension, other case); one walk of the folder answers them all.
    """

    def __init__(self, root: Path, exclude: Path | None = None) -> None:
        self.root = root
        self.files = sorted(_walk(root, exclude))
        self.by_name: dict[str, list[str]] = {}
        self.by_stem: dict[str, list[str]] = {}
        for rel in self.files:
            name = PurePosixPath(rel).name
            self.by_name.setdefault(name, []).append(rel)
            if name.lower().endswith(VIDEO_EXTENSIONS):
                self.by_stem.setdefault(_stem_key(name), []).append(rel)

    @property
    def videos(self) -> list[str]:
        return [rel for rel in self.files if rel.lower().endswith(VIDEO_EXTENSIONS)]

    def resolve(self, names: Sequence[str], hint: str | None = None) -> Resolution:
        """The file for the first of `names` that matches: exact trailing path, then stem."""
        for matcher in (self._trailing, self._by_stem):
            for name in names:
                matches = matcher(name)
                if matches:
                    return _pick(matches, name, hint)
        return Resolution(None, f"video not found: no file matching {names[0]!r} under --videos", {"tried": list(names), "videos": str(self.root)})

    def _trailing(self, name: str) -> list[str]:
        """Files sharing the longest run of trailing path components with `name`."""
        parts = _parts(name)
        if not parts:
            return []
        scored = [(_common_tail(parts, PurePosixPath(rel).parts), rel) for rel in self.by_name.get(parts[-1], [])]
        best = max((score for score, _ in scored), default=0)
        return [rel for score, rel in scored if score == best and best > 0]

    def _by_stem(self, name: str) -> list[str]:
        parts = _parts(name)
        return list(self.by_stem.get(_stem_key(parts[-1]), [])) if parts else []


def _walk(root: Path, exclude: Path | None) -> Iterable[str]:
    """Relative paths of all non-hidden files; follows symlinked folders (datasets are often
    linked in from another disk) but visits each real folder once."""
    skip = exclude.resolve() if exclude else None
    seen = {root.resolve()}
    for directory, dirs, files in os.walk(root, followlinks=True):
        here = Path(directory)
        keep = []
        for d in sorted(dirs):
            real = (here / d).resolve()
            if not d.startswith(".") and real != skip and real not in seen:
                seen.add(real)
                keep.append(d)
        dirs[:] = keep
        for name in files:
            if not name.startswith("."):
                yield (here / name).relative_to(root).as_posix()


def _parts(name: str) -> list[str]:
    return [p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in ("/", "") and not p.endswith(":")]


def _stem_key(name: str) -> str:
    lowered = name.lower()
    for ext in VIDEO_EXTENSIONS:
        if lowered.endswith(ext):
            return lowered[: -len(ext)]
    return lowered


def _common_tail(a: Sequence[str], b: Sequence[str]) -> int:
    count = 0
    while count < min(len(a), len(b)) and a[-1 - count] == b[-1 - count]:
        count += 1
    return count


def _pick(matches: list[str], name: str, hint: str | None) -> Resolution:
    """One match wins; several are broken by a folder named like the dataset hint, else rejected."""
    if len(matches) == 1:
        return Resolution(matches[0])
    if hint:
        hinted = [m for m in matches if any(hint in part.lower() for part in PurePosixPath(m).parts[:-1])]
        if len(hinted) == 1:
            return Resolution(hinted[0])
    return Resolution(None, f"ambiguous video name: {len(matches)} files match {name!r}", {"candidates": matches[:10]})


# -- the stage -------------------------------------------------------------------------------


@dataclass
class _Pending:
    """A source row matched to a file, waiting for its probe."""

    row: SourceRow
    path: str


@dataclass
class _Tally:
    """Things worth telling the user that are not rejects (clamped spans, frame-count drift)."""

    clamped: list[str] = field(default_factory=list)
    frame_drift: list[str] = field(default_factory=list)


def run_ingest(
    source: str,
    annotations: str | os.PathLike[str] | None,
    videos: str | os.PathLike[str],
    run: str | os.PathLike[str],
    classes_file: str | os.PathLike[str] | None = None,
    probe: bool = True,
) -> StageSummary:
    """Ingest `annotations` (a `source` format) against the files under `videos` into `run`.

    Re-running replaces the manifest and this stage's earlier rejects. Classes are read in the
    source's own taxonomy (Vad-R1's for vad-reasoning, VAU-Bench's otherwise) unless
    `classes_file` gives one.
    """
    started = utc_now()
    videos_dir = Path(videos).resolve()
    annotations_path = _annotations_path(source, annotations, videos_dir)
    taxonomy = _taxonomy(classes_file, source)
    if not probe and source in FRAME_SOURCES:
        raise IngestInputError(f"--no-probe cannot be used with --source {source}: its spans are frame numbers, and converting them to seconds needs each video's probed fps")
    try:
        parsed = parse_source(source, annotations_path, taxonomy)
    except SourceFormatError as exc:
        raise IngestInputError(str(exc)) from None

    rundir = RunDir(run)
    index = VideoIndex(videos_dir, exclude=Path(run))
    problems = list(parsed.problems)
    pending = _match_files(parsed.rows, index, problems)
    unlisted = _unlisted(index, pending, parsed.mentioned) if parsed.include_unlisted else []
    pending += unlisted
    infos = _probe_all([p.path for p in pending], videos_dir) if probe else {}
    tally = _Tally()
    records = []
    for item in pending:
        record = _build(item, infos.get(item.path), source, taxonomy, tally, problems)
        if record:
            records.append(record)
    records = assign_ids(records)

    rundir.clear_rejects(STAGE)
    for problem in problems:
        rundir.add_reject(problem.item, STAGE, problem.reason, **problem.detail)
    rundir.save_manifest(records)
    summary = _summary(parsed.records + len(unlisted), records, problems, tally, probe, parsed.warnings)
    rundir.record_stage(
        STAGE,
        started=started,
        options={"source": source, "annotations": str(annotations_path) if annotations_path else None, "videos": str(videos_dir),
                 "classes": str(Path(classes_file).resolve()) if classes_file else None, "probe": probe},
        counts=summary.counts,
        source=source,  # run.json fields (RunMeta) from here on
        annotations=str(annotations_path) if annotations_path else None,
        videos=str(videos_dir),
    )
    return summary


def _annotations_path(source: str, annotations: str | os.PathLike[str] | None, videos_dir: Path) -> Path | None:
    if source not in SOURCES:
        raise IngestInputError(f"--source must be one of {', '.join(SOURCES)}, not {source!r}")
    if not videos_dir.is_dir():
        raise IngestInputError(f"--videos {videos_dir} is not a directory")
    if annotations is None:
        if source != "folder":
            raise IngestInputError(f"--source {source} needs an ANNOTATIONS file")
        manifest = find_manifest(videos_dir)
        return manifest.resolve() if manifest else None
    path = Path(annotations).resolve()
    if path.is_dir():
        raise IngestInputError(f"annotation file {annotations} is a directory: give the annotation file itself (the videos go to --videos)")
    if not path.exists():
        raise IngestInputError(f"annotation file {annotations} does not exist")
    if not path.is_file():
        raise IngestInputError(f"annotation file {annotations} is not a regular file")
    return path


def _taxonomy(classes_file: str | os.PathLike[str] | None, source: str) -> Taxonomy:
    try:
        return load_taxonomy(classes_file, builtin=VAD_REASONING if source == "vad-reasoning" else VAU_BENCH)
    except ClassFileError as exc:
        raise IngestInputError(str(exc)) from None


def _match_files(rows: list[SourceRow], index: VideoIndex, problems: list[Problem]) -> list[_Pending]:
    """Resolve each row to a file; a file claimed twice keeps its first row."""
    claimed: dict[str, SourceRow] = {}
    out = []
    for row in rows:
        found = index.resolve(row.lookup or [row.name], row.hint)
        if found.path is None:
            problems.append(Problem(row.name, found.reason or "video not found", {**row.where, **found.detail}))
        elif found.path in claimed:
            first = claimed[found.path]
            problems.append(Problem(row.name, f"duplicate video: {found.path} is also named by {first.name!r} (row {first.rows[0]})", {**row.where, "path": found.path}))
        else:
            claimed[found.path] = row
            out.append(_Pending(row, found.path))
    return out


def _unlisted(index: VideoIndex, pending: list[_Pending], mentioned: list[str]) -> list[_Pending]:
    """Folder source: every video the manifest does not name, as unlabeled."""
    used = {p.path for p in pending} | {found.path for name in mentioned if (found := index.resolve([name])).path}
    return [_Pending(SourceRow(name=rel, rows=[0], lookup=[rel]), rel) for rel in index.videos if rel not in used]


def _probe_all(paths: list[str], root: Path) -> dict[str, VideoInfo | VideoError]:
    """Probe every file (threads: probing is mostly I/O and FFmpeg code that releases the GIL)."""
    results: dict[str, VideoInfo | VideoError] = {}
    if not paths:
        return results

    def one(rel: str) -> tuple[str, VideoInfo | VideoError]:
        try:
            return rel, probe_video(root / rel)
        except VideoError as exc:
            return rel, exc

    columns = (TextColumn("probing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("probe", total=len(paths))
        with ThreadPoolExecutor(max_workers=min(PROBE_WORKERS, len(paths))) as pool:
            for rel, result in pool.map(one, paths):
                results[rel] = result
                progress.advance(task)
    return results


def _build(item: _Pending, info: VideoInfo | VideoError | None, source: str, taxonomy: Taxonomy, tally: _Tally,
           problems: list[Problem]) -> VideoRecord | None:
    """The VideoRecord for one matched file, or None after recording why it was rejected."""
    row = item.row
    where = {**row.where, "path": item.path} if row.rows[0] else {"path": item.path}
    if isinstance(info, VideoError):
        problems.append(Problem(row.name, str(info), where))
        return None
    try:
        spans = _seconds(row, info)
        spans = _fit(spans, info, row.name, tally)
    except _SpanRejected as exc:
        problems.append(Problem(row.name, exc.reason, {**where, **exc.detail}))
        return None
    if info and row.total_frames is not None and abs(row.total_frames - info.num_frames) > 1:
        tally.frame_drift.append(f"{row.name}: {row.total_frames} vs {info.num_frames}")
    try:
        return _record(row, item.path, spans, info, source, taxonomy)
    except ValidationError as exc:
        problems.append(Problem(row.name, f"invalid record: {_validation_text(exc)}", {**where, "errors": _errors(exc)}))
        return None


class _SpanRejected(Exception):
    def __init__(self, reason: str, **detail: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


def _seconds(row: SourceRow, info: VideoInfo | None) -> list[tuple[float, float]]:
    """Spans in seconds (frame numbers divided by the probed fps)."""
    if row.span_unit == "seconds" or not row.spans:
        return list(row.spans)
    if info is None or not info.fps:
        raise _SpanRejected("unknown frame rate: frame-numbered spans cannot be converted to seconds", spans_frames=row.spans)
    return [(round(s / info.fps, 3), round(e / info.fps, 3)) for s, e in row.spans]


def _fit(spans: list[tuple[float, float]], info: VideoInfo | None, name: str, tally: _Tally) -> list[tuple[float, float]]:
    """Check spans against the probed duration; an end ≤ 1 s past the end is clamped, not rejected."""
    if info is None:
        return spans
    duration = info.duration
    out = []
    for start, end in spans:
        if start >= duration:
            raise _SpanRejected(f"span starts after the video ends: {start:g} s ≥ duration {duration:.2f} s", span=[start, end], duration=duration)
        if end > duration + CLAMP_SECONDS:
            raise _SpanRejected(f"span ends after the video: {end:g} s > duration {duration:.2f} s", span=[start, end], duration=duration)
        if end > duration:
            tally.clamped.append(f"{name}: {end:g} → {duration:.2f} s")
            end = round(duration, 3)
        out.append((start, end))
    return out


def _record(row: SourceRow, path: str, spans: list[tuple[float, float]], info: VideoInfo | None, source: str, taxonomy: Taxonomy) -> VideoRecord:
    category = row.category or (NORMAL if row.label == "normal" else None)
    class_source = row.class_source or ("label" if category else None)
    return VideoRecord(
        id=PurePosixPath(path).stem,
        path=path,
        source=source,
        label=row.label,
        category=category,
        class_source=class_source,
        source_class=row.source_class,
        taxonomy=taxonomy.name if category else None,
        vau_bench_class=taxonomy.map_to(category, VAU_BENCH),
        spans=[Span(start=s, end=e) for s, e in spans],
        span_known=row.span_known and bool(spans),
        duration=info.duration if info else None,
        fps=info.fps if info else None,
        num_frames=info.num_frames if info else None,
        width=info.width if info else None,
        height=info.height if info else None,
        mcqs=row.mcqs,
        key_object=row.key_object,
        description=row.description,
        reasoning=row.reasoning,
        think=row.think,
        answer=row.answer,
        source_name=row.name,
        warnings=list(row.warnings),
    )


def _errors(exc: ValidationError) -> list[str]:
    """pydantic's errors as 'field: message' lines (just the message for whole-record checks)."""
    out = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        where = ".".join(str(p) for p in error["loc"])
        out.append(f"{where}: {message}" if where else message)
    return out


def _validation_text(exc: ValidationError) -> str:
    errors = _errors(exc)
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return errors[0] + more


def assign_ids(records: list[VideoRecord]) -> list[VideoRecord]:
    """Ids are file stems; stems shared by several files become their relative paths.

    Depends only on the set of paths, so the same files always get the same ids whatever the
    row order (e.g. 'ucf/Abuse001' and 'xd/Abuse001' → 'ucf__Abuse001', 'xd__Abuse001').
    """
    stems = Counter(r.id for r in records)
    taken: set[str] = set()
    out = []
    for record in sorted(records, key=lambda r: r.path):
        wanted = record.id if stems[record.id] == 1 else str(PurePosixPath(record.path).with_suffix("")).replace("/", "__")
        unique, n = wanted, 2
        while unique in taken:
            unique, n = f"{wanted}-{n}", n + 1
        taken.add(unique)
        out.append(record.model_copy(update={"id": unique}))
    order = {r.path: i for i, r in enumerate(records)}
    return sorted(out, key=lambda r: order[r.path])


def _summary(rows: int, records: list[VideoRecord], problems: list[Problem], tally: _Tally, probed: bool,
             file_warnings: Sequence[str] = ()) -> StageSummary:
    labels = Counter(r.label for r in records)
    counts = {
        "rows": rows,
        "videos": len(records),
        "mcqs": sum(len(r.mcqs) for r in records),
        "normal": labels["normal"],
        "abnormal": labels["abnormal"],
        "unlabeled": labels["unlabeled"],
        "rejected": len(problems),
        "warned": sum(1 for r in records if r.warnings),
    }
    notes = [f"warning: {w}" for w in file_warnings]
    warned = [r for r in records if r.warnings]
    if warned:
        kinds = Counter(w.split(":")[0] for r in warned for w in r.warnings)
        shown = "; ".join(f"{n} × {kind}" for kind, n in kinds.most_common())
        notes.append(f"warning: {len(warned)} video(s) kept with a warning on the record ({shown}; e.g. {warned[0].id}: {warned[0].warnings[0]})")
    inferred = [r.id for r in records if r.class_source == "file-name"]
    if inferred:
        notes.append(f"{len(inferred)} class(es) read off the file name, no class in the annotation (class_source 'file-name', e.g. {', '.join(inferred[:EXAMPLES])})")
    unknown = [r.id for r in records if r.label == "abnormal" and not r.span_known]
    if unknown:
        notes.append(f"{len(unknown)} abnormal video(s) have no known span (e.g. {', '.join(unknown[:EXAMPLES])})")
    if tally.clamped:
        notes.append(f"{len(tally.clamped)} span end(s) up to {CLAMP_SECONDS:g} s past the video end were clamped to its duration ({'; '.join(tally.clamped[:EXAMPLES])})")
    if tally.frame_drift:
        notes.append(f"warning: {len(tally.frame_drift)} video(s) have a different frame count than the annotations' total_frames ({'; '.join(tally.frame_drift[:EXAMPLES])})")
    if not probed:
        notes.append("--no-probe: durations are unknown, so spans were not checked against video length")
    return StageSummary(stage=STAGE, counts=counts, rejected=len(problems), notes=notes)
