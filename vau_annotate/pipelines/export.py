"""`vau-annotate export`: run directories → a Hugging Face dataset (or another trainer's format).

One config per use (schemas/rows.py), each with train / validation / test splits decided per
video. Everything is written into a temporary folder next to `--out` and renamed into place at the
end, so an interrupted or failed export never leaves a directory that looks complete. Configs are
written in parallel (one thread each: reading JPEGs and compressing parquet release the GIL), each
streaming its rows batch by batch (export_write.py). `--push-to-hub` checks for a token before any
work and pushes the finished folder (pipelines/hub.py).
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from vau_annotate.pipelines.export_card import CardFacts, write_card
from vau_annotate.pipelines.export_rows import BUILDERS, Pending
from vau_annotate.pipelines.export_source import ExportInputError, Inputs, open_runs
from vau_annotate.pipelines.export_write import MissingFrames, SplitPlan, VideoOptions, row_size, split_writers, video_columns
from vau_annotate.pipelines.summary import StageSummary
from vau_annotate.schemas.rows import CONFIGS, SPLITS, features

DEFAULT_SHARD_BYTES = 500 * 1000 * 1000  # datasets' push_to_hub default max_shard_size ("500MB")
EXAMPLES = 3
MISSING_FRAMES = "no sampled frames for the row's video (run `vau-annotate sample`, or export with --frames path)"


@dataclass(frozen=True)
class ExportOptions:
    """What `vau-annotate export` was asked to do."""

    runs: tuple[Path, ...]
    out: Path
    configs: tuple[str, ...] = CONFIGS
    split: SplitPlan = field(default_factory=SplitPlan)
    video: VideoOptions = field(default_factory=VideoOptions)
    format: str = "hf"
    max_shard_bytes: int = DEFAULT_SHARD_BYTES
    workers: int = 4
    license: str = "other"
    overwrite: bool = False
    show_progress: bool = True


@dataclass
class ConfigResult:
    """What one config came to: rows per split, shard files, and why rows were left out."""

    config: str
    rows: dict[str, int] = field(default_factory=dict)
    files: dict[str, list[str]] = field(default_factory=dict)
    skips: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.rows.values())


@dataclass
class Exported:
    """An export's outcome: the directory, per-config results and the summary for the CLI."""

    out: Path
    results: dict[str, ConfigResult]
    summary: StageSummary
    splits: dict[str, str]


class Splitter:
    """Video id → split, decided once per video (so no video is ever in two splits)."""

    def __init__(self, inputs: Inputs, plan: SplitPlan) -> None:
        self.split = {vid: plan.of(vid, video.source_split) for vid, video in sorted(inputs.videos.items())}

    def __call__(self, video_id: str) -> str:
        return self.split[video_id]


def iter_rows(config: str, inputs: Inputs, splitter: Splitter, video: VideoOptions, result: ConfigResult) -> Iterator[tuple[str, dict[str, Any]]]:
    """(split, finished row) pairs of a config; rows whose frames are missing are counted, not fatal."""
    for pending in BUILDERS[config](inputs, result.skips):
        row = _finish(pending, video, result)
        if row is not None:
            yield splitter(pending.row["video_id"]), row


def _finish(pending: Pending, video: VideoOptions, result: ConfigResult) -> dict[str, Any] | None:
    try:
        return pending.row | video_columns(pending, video)
    except MissingFrames as exc:
        result.skips[MISSING_FRAMES] += 1
        if len(result.examples) < EXAMPLES:
            result.examples.append(str(exc))
        return None


def _write_config(config: str, inputs: Inputs, splitter: Splitter, options: ExportOptions, folder: Path, progress: Progress) -> ConfigResult:
    result = ConfigResult(config)
    feats = features(config, options.video.mode)
    writers = split_writers(folder / config, feats, options.max_shard_bytes)
    task = progress.add_task(config, total=None, info="")
    for split, row in iter_rows(config, inputs, splitter, options.video, result):
        writers[split].add(row, row_size(row))
        progress.update(task, advance=1)
    for split in SPLITS:
        result.files[split] = writers[split].close()
        result.rows[split] = writers[split].rows
    progress.update(task, info=" · ".join(f"{s} {result.rows[s]}" for s in SPLITS))
    return result


def _check_inputs(inputs: Inputs, options: ExportOptions) -> None:
    unknown = [c for c in options.configs if c not in CONFIGS]
    if unknown:
        raise ExportInputError(f"unknown config(s) {', '.join(unknown)} (known: {', '.join(CONFIGS)})")
    if not inputs.videos:
        raise ExportInputError(f"nothing to export: the manifest of {', '.join(str(r.root) for r in inputs.runs)} lists no video "
                               "(every row was rejected at ingest? see `vau-annotate status --run RUN`)")
    if options.video.mode == "embed" and options.format == "hf" and not any(run.dir.frames_dir.is_dir() for run in inputs.runs):
        raise ExportInputError("--frames embed needs sampled frames, and no run has a frames/ folder: run `vau-annotate sample --run RUN` "
                               "(or build-cot / reflect, which sample), or export with --frames path")


def prepare_out(out: Path, overwrite: bool) -> Path:
    """A fresh temporary folder beside `out` (renamed onto it at the end)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ExportInputError(f"{out} exists and is not empty: choose another --out or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def commit_out(tmp: Path, out: Path) -> None:
    """Move the finished folder into place; an old export is removed only after that succeeded."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def run_export(options: ExportOptions) -> Exported:
    """Export the runs; raise ExportInputError for bad input before anything is written."""
    inputs = open_runs(list(options.runs))
    _check_inputs(inputs, options)
    splitter = Splitter(inputs, options.split)
    tmp = prepare_out(options.out, options.overwrite)
    try:
        if options.format == "hf":
            results = _export_hf(inputs, splitter, options, tmp)
        else:
            results = _export_format(inputs, splitter, options, tmp)
        commit_out(tmp, options.out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Exported(options.out, results, _summary(inputs, results, options), splitter.split)


def _progress(options: ExportOptions) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed} rows"), TimeElapsedColumn(),
                    TextColumn("{task.fields[info]}"), disable=not options.show_progress)


def _export_hf(inputs: Inputs, splitter: Splitter, options: ExportOptions, tmp: Path) -> dict[str, ConfigResult]:
    with _progress(options) as progress, ThreadPoolExecutor(max_workers=max(1, options.workers)) as pool:
        futures = {c: pool.submit(_write_config, c, inputs, splitter, options, tmp, progress) for c in options.configs}
        results = {c: f.result() for c, f in futures.items()}
    write_card(tmp, CardFacts.gather(inputs, results, options))
    return results


def _export_format(inputs: Inputs, splitter: Splitter, options: ExportOptions, tmp: Path) -> dict[str, ConfigResult]:
    from vau_annotate.pipelines.formats import FORMATS, FormatContext

    writer = FORMATS.get(options.format)
    if writer is None:
        raise ExportInputError(f"unknown --format {options.format!r} (known: hf, {', '.join(FORMATS)})")
    context = FormatContext(inputs, splitter, options)
    with _progress(options) as progress:
        task = progress.add_task(options.format, total=None, info="")
        context.on_row = lambda: progress.update(task, advance=1)
        writer(context, tmp)
    return context.results


def _summary(inputs: Inputs, results: dict[str, ConfigResult], options: ExportOptions) -> StageSummary:
    counts: dict[str, int] = {"runs": len(inputs.runs), "videos": len(inputs.videos)}
    notes: list[str] = []
    if inputs.duplicates:
        notes.append(f"{inputs.duplicates} video(s) appear in more than one run: each was exported once (the first run's manifest entry)")
    for config, result in results.items():
        counts[config] = result.total
        if result.total == 0:
            notes.append(f"warning: config {config} is empty ({_reasons(result) or 'no records of its kind in the runs'})")
        elif result.skips:
            notes.append(f"{config}: left out {_reasons(result)}")
        notes.extend(f"  e.g. {e}" for e in result.examples[:1])
    counts["rows"] = sum(r.total for r in results.values())
    # rows lost to missing frames are failures (exit status 3); rows a config has no use for are not
    rejected = sum(r.skips.get(MISSING_FRAMES, 0) for r in results.values())
    return StageSummary(stage="export", counts=counts, notes=notes, rejected=rejected)


def _reasons(result: ConfigResult) -> str:
    return "; ".join(f"{n} × {reason}" for reason, n in result.skips.most_common())


def has_output(results: dict[str, ConfigResult]) -> bool:
    return any(r.total for r in results.values())
