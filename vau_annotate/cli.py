"""The `vau-annotate` command line. Thin: parse options, call a pipeline, print a summary.

Exit status: 0 = everything went through, 3 = partial (something was rejected: see
RUN_DIR/rejects.jsonl), 2 = usage error (bad option, missing file), 1 = the run stopped
(e.g. an invalid API key).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from vau_annotate import __version__
from vau_annotate.pipelines.summary import StageSummary

app = typer.Typer(
    name="vau-annotate",
    help="Turn anomaly videos and their labels into checked reasoning datasets, and train/evaluate on them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()

SOURCES = ("vau-bench", "ucf-crime", "vad-reasoning", "folder")
DECODERS = ("auto", "pyav", "decord", "opencv")


class UsageError(Exception):
    """A problem with what the user asked for (exit status 2)."""


def usage_error(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=2)


def finish(summary: StageSummary, run: Path) -> None:
    table = Table(title=f"{summary.stage}: {run}", show_header=False)
    for key, value in summary.counts.items():
        table.add_row(key, str(value))
    out.print(table)
    for note in summary.notes:
        console.print(note)
    if summary.rejected:
        console.print(f"[yellow]{summary.rejected} item(s) rejected[/] — reasons in {run / 'rejects.jsonl'} (`vau-annotate status --run {run}`)")
    raise typer.Exit(code=summary.exit_code)


@app.callback(invoke_without_command=True)
def _root(version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    if version:
        out.print(__version__)
        raise typer.Exit()


@app.command()
def ingest(
    annotations: Optional[Path] = typer.Argument(None, help="Annotation file (CSV / TXT / JSONL); optional for --source folder."),
    source: str = typer.Option(..., "--source", "-s", help=f"One of: {', '.join(SOURCES)}."),
    videos: Path = typer.Option(..., "--videos", "-v", help="Directory holding the video files."),
    run: Path = typer.Option(..., "--run", "-r", help="Run directory to create or update."),
    classes: Optional[Path] = typer.Option(None, "--classes", help="JSON file of canonical class names and aliases (default: built-in VAU taxonomy)."),
    probe: bool = typer.Option(True, "--probe/--no-probe", help="Probe every video (duration, fps, size); needed to check spans."),
) -> None:
    """Read a dataset's labels, match them to video files, and write RUN/manifest.parquet."""
    from vau_annotate.pipelines.ingest import IngestInputError, run_ingest

    if source not in SOURCES:
        raise usage_error(f"--source must be one of {', '.join(SOURCES)}, not {source!r}")
    if annotations is None and source != "folder":
        raise usage_error(f"--source {source} needs an ANNOTATIONS file")
    if annotations is not None and not annotations.is_file():
        raise usage_error(f"annotation file {annotations} does not exist")
    if not videos.is_dir():
        raise usage_error(f"--videos {videos} is not a directory")
    if classes is not None and not classes.is_file():
        raise usage_error(f"--classes {classes} does not exist")
    try:
        summary = run_ingest(source=source, annotations=annotations, videos=videos, run=run, classes_file=classes, probe=probe)
    except IngestInputError as exc:
        raise usage_error(str(exc)) from None
    finish(summary, run)


@app.command()
def sample(
    run: Path = typer.Option(..., "--run", "-r", help="Run directory (after ingest)."),
    policy: str = typer.Option("uniform:16", "--policy", "-p", help="uniform:N | fps:F | stride:K | span:N (N frames inside the abnormal span)."),
    max_pixels: int = typer.Option(448 * 448, "--max-pixels", help="Pixel budget per frame; sides are aligned to 28."),
    decoder: str = typer.Option("auto", "--decoder", help=f"One of: {', '.join(DECODERS)}."),
    workers: int = typer.Option(0, "--workers", "-j", help="Parallel processes (0 = number of CPUs)."),
    quality: int = typer.Option(90, "--jpeg-quality", min=1, max=100),
) -> None:
    """Sample frames of every ingested video into RUN/frames/ (resumable: done videos are skipped)."""
    from vau_annotate.annotate.video import PolicyError, parse_policy
    from vau_annotate.pipelines.sample import run_sample

    if decoder not in DECODERS:
        raise usage_error(f"--decoder must be one of {', '.join(DECODERS)}, not {decoder!r}")
    try:
        parse_policy(policy)
    except PolicyError as exc:
        raise usage_error(str(exc)) from None
    if max_pixels < 28 * 28:
        raise usage_error("--max-pixels must be at least 784 (one 28×28 patch)")
    if not (run / "manifest.parquet").exists():
        raise usage_error(f"{run}/manifest.parquet does not exist: run `vau-annotate ingest ... --run {run}` first")
    summary = run_sample(run=run, policy=policy, max_pixels=max_pixels, decoder=decoder, workers=workers, jpeg_quality=quality)
    finish(summary, run)


@app.command()
def status(
    run: Path = typer.Option(..., "--run", "-r", help="Run directory."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Items per stage, rejects by reason, and (once models were called) calls, tokens and cost."""
    from vau_annotate.pipelines.status import collect_status, render_status

    if not run.is_dir():
        raise usage_error(f"run directory {run} does not exist")
    report = collect_status(run)
    if as_json:
        out.print_json(json.dumps(report))
    else:
        render_status(report, out)


@app.command()
def schema(name: str = typer.Argument(..., help="Record name: video, frames, mcq, run, reject.")) -> None:
    """Print a record's JSON Schema."""
    from vau_annotate.schemas import SCHEMAS

    if name not in SCHEMAS:
        raise usage_error(f"unknown schema {name!r}; known: {', '.join(SCHEMAS)}")
    out.print_json(json.dumps(SCHEMAS[name].model_json_schema()))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
