"""`vau-annotate` commands that read what the stages made: eval, rewards, report, merge, export, push.

Registered on the app by cli.py (`register`), in the order they are listed in `--help`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.table import Table

from vau_annotate.cli_common import (
    BATCH_OPTION,
    BATCH_POLL_OPTION,
    EXECUTOR_OPTION,
    PRICES_OPTION,
    RAY_ADDRESS_OPTION,
    RETRY_FAILED_OPTION,
    SHARDS_OPTION,
    SHARD_OPTION,
    TIMEOUT_OPTION,
    VIDEO_MODE_OPTION,
    console,
    finish,
    model_access,
    out,
    parse_size,
    shard_or_drive,
    usage_error,
)

_COMMANDS: list[tuple[str | None, dict[str, Any], Callable[..., Any]]] = []


def command(name: str | None = None, **settings: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Like `app.command`, recorded until `register` puts the command on the app."""

    def record(function: Callable[..., Any]) -> Callable[..., Any]:
        _COMMANDS.append((name, settings, function))
        return function

    return record


def register(app: typer.Typer) -> None:
    for name, settings, function in _COMMANDS:
        app.command(name, **settings)(function)


@command("eval")
def evaluate(
    ctx: typer.Context,
    data: str = typer.Option(..., "--data", "-d", help="Exported dataset directory, Hub dataset id, or a VAU-Bench CSV (then give --videos)."),
    model: str = typer.Option(..., "--model", "-m", help="Model under test: openai:NAME@URL (e.g. a `vllm serve` checkpoint), hf:DIR, vllm:…"),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Output directory: predictions.jsonl, metrics.json, metrics.md, ledger.sqlite."),
    tasks: str = typer.Option("qa,tag,cls,p2c,reasoning,reflect", "--tasks", help="Comma-separated: qa, tag, cls, p2c, reasoning, reflect."),
    think: str = typer.Option("both", "--think", help="on | off | both: QA/TAG/CLS with VAU-R1's think prompt, without it, or both."),
    config: list[str] = typer.Option([], "--config", help="TASK=CONFIG to read a task from another exported config (repeatable), or one CONFIG when --tasks names one task."),
    videos: Optional[Path] = typer.Option(None, "--videos", "-v", help="Video folder (a CSV's videos, or exported rows made with --frames path)."),
    sampling: Optional[str] = typer.Option(None, "--sampling", help="Frame sampling: uniform:16 | fps:1 (default: as exported; fps:1 for a CSV, as VAU-R1)."),
    max_pixels: int = typer.Option(768 * 28 * 28, "--max-pixels", min=28 * 28, help="Pixel budget per frame when sampling here (VAU-R1: 768×28×28)."),
    max_frames: int = typer.Option(64, "--max-frames", min=1, help="At most this many frames per video (thinned evenly)."),
    judge: Optional[str] = typer.Option(None, "--judge", help="Judge model spec for VAU-Eval and pairwise (any backend)."),
    pairwise: Optional[str] = typer.Option(None, "--pairwise", help="A second model spec to compare with --model (needs --judge)."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", min=1, help="Only the first N items."),
    concurrency: int = typer.Option(16, "--concurrency", "-c", min=1, help="Calls in flight per model."),
    rpm: Optional[float] = typer.Option(None, "--rpm", min=0.001, help="Requests per minute per model."),
    tpm: Optional[float] = typer.Option(None, "--tpm", min=1, help="Tokens per minute per model."),
    max_tokens: int = typer.Option(1024, "--max-tokens", min=1, help="Reply budget of the model under test (VAU-R1: 1024)."),
    judge_max_tokens: int = typer.Option(1024, "--judge-max-tokens", min=16),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="Environment variable with the model's API key."),
    judge_api_key_env: Optional[str] = typer.Option(None, "--judge-api-key-env", help="Environment variable with the judge's API key."),
    prices: Optional[Path] = PRICES_OPTION,
    retry_failed: bool = RETRY_FAILED_OPTION,
    video_mode: str = VIDEO_MODE_OPTION,
    timeout: float = TIMEOUT_OPTION,
    batch: bool = BATCH_OPTION,
    batch_poll: float = BATCH_POLL_OPTION,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the calls, tokens and cost the evaluation would make; call nothing."),
    shard: Optional[str] = SHARD_OPTION,
    shards: Optional[int] = SHARDS_OPTION,
    executor: str = EXECUTOR_OPTION,
    ray_address: Optional[str] = RAY_ADDRESS_OPTION,
) -> None:
    """Evaluate a model with the metrics of VAU-R1, Vad-R1 and SRVAU-R1 (and VAU-Eval / pairwise judges).

    Every call is cached in OUT/ledger.sqlite: running the same command again resumes and pays nothing twice.

    With --shard I/N only the videos that hash to I are evaluated, into OUT/shards/ (own ledger and predictions).

    `vau-annotate merge --run OUT` then writes predictions.jsonl and the metrics of the whole (exit 3 naming missing shards).

    --shards N --executor local|ray runs the N shards, then merges.
    """
    from vau_annotate.annotate.backends import ModelSpec, SpecError
    from vau_annotate.annotate.engine import RunStopped
    from vau_annotate.annotate.video import PolicyError, parse_policy
    from vau_annotate.pipelines.eval_items import TASKS, EvalDataError
    from vau_annotate.pipelines.evaluate import EvalOptions, run_eval

    wanted = tuple(t.strip() for t in tasks.split(",") if t.strip())
    unknown = [t for t in wanted if t not in TASKS]
    if not wanted or unknown:
        raise usage_error(f"--tasks takes {', '.join(TASKS)}; unknown: {', '.join(unknown) or '(none given)'}")
    if think not in ("on", "off", "both"):
        raise usage_error(f"--think must be on, off or both, not {think!r}")
    configs: dict[str, str] = {}
    for entry in config:
        task_name, sep, name = entry.partition("=")
        if not sep:
            if len(wanted) != 1:
                raise usage_error(f"--config {entry}: give TASK=CONFIG when several tasks run")
            task_name, name = wanted[0], entry
        if task_name not in TASKS or not name:
            raise usage_error(f"--config {entry}: expected TASK=CONFIG with TASK one of {', '.join(TASKS)}")
        configs[task_name] = name
    access = model_access(prices, retry_failed, video_mode, timeout, batch=batch, batch_poll=batch_poll)
    try:
        for spec in (model, judge, pairwise):
            if spec is not None:
                ModelSpec.parse(spec)
        if sampling is not None:
            sampling = str(parse_policy(sampling))
    except (SpecError, PolicyError) as exc:
        raise usage_error(str(exc)) from None
    if pairwise is not None and judge is None:
        raise usage_error("--pairwise needs --judge (the model that compares the two answers)")
    if videos is not None and not videos.is_dir():
        raise usage_error(f"--videos {videos} is not a directory")
    options = EvalOptions(
        data=data, model=model, out=out_dir, tasks=wanted, think=think, configs=configs, videos=videos, sampling=sampling,
        max_pixels=max_pixels, max_frames=max_frames, judge=judge, pairwise=pairwise, limit=limit, concurrency=concurrency, rpm=rpm,
        tpm=tpm, max_tokens=max_tokens, judge_max_tokens=judge_max_tokens, dry_run=dry_run, access=access,
        model_options={"api_key_env": api_key_env} if api_key_env else {},
        judge_options={"api_key_env": judge_api_key_env} if judge_api_key_env else {},
    )
    from vau_annotate.annotate.shards import ShardError, use_shard

    if dry_run and shards is not None:
        raise usage_error("--dry-run estimates the whole evaluation in one process: drop --shards (or dry-run one --shard I/N)")
    as_shard = shard_or_drive(ctx, out_dir, shard, shards, executor, ray_address)
    try:
        with use_shard(as_shard):
            result = run_eval(options)
    except (EvalDataError, ShardError) as exc:
        raise usage_error(str(exc)) from None
    except RunStopped as exc:
        console.print(f"[bold red]stopped:[/] {exc}")
        raise typer.Exit(code=1) from None
    except SpecError as exc:
        raise usage_error(str(exc)) from None
    if not dry_run and as_shard is None:
        typer.echo((out_dir / "metrics.md").read_text())  # plain: rich would re-wrap the tables
    finish(result.summary, out_dir)


@command("rewards")
def rewards_command(
    completions: Path = typer.Argument(..., help="JSONL: one {\"id\", \"completion\"} per line, each with its \"row\" (solution columns) or found by id in --data."),
    data: Optional[str] = typer.Option(None, "--data", help="Exported dataset (directory or Hub id) holding the rows, found by id."),
    config: str = typer.Option("grpo_qa", "--config", help="GRPO config of --data: grpo_qa, grpo_tag, grpo_cls, grpo_p2c, grpo_reflect."),
    split: str = typer.Option("test", "--split", help="Split of --data."),
    weight: list[str] = typer.Option([], "--weight", "-w", help="NAME=WEIGHT, repeatable (default: each row's task defaults)."),
    scores: Optional[Path] = typer.Option(None, "--out", help="Write per-line scores here (JSONL) and the rejects beside it."),
) -> None:
    """Score saved completions with the GRPO rewards of train/rewards.py (VAU-R1, Vad-R1, SRVAU-R1).

    Prints the mean total and the mean of every reward component. Exit status 0 when every line
    was scored, 3 when some were rejected (reasons printed and written beside --out), 2 on usage errors.
    """
    from vau_annotate.train.reward_check import load_rows, parse_weights, score_lines, write_report

    try:
        weights = parse_weights(weight)
    except ValueError as exc:
        raise usage_error(str(exc)) from None
    if not completions.is_file():
        raise usage_error(f"completions file {completions} does not exist")
    rows = None
    if data is not None:
        try:
            rows = load_rows(data, config, split)
        except Exception as exc:  # datasets raises many kinds for a missing/unreadable dataset
            raise usage_error(f"cannot load {data} [{config}/{split}]: {exc}") from None
    with completions.open(encoding="utf-8") as lines:
        report = score_lines(lines, rows, weights)
    table = Table(title=f"rewards: {completions} ({len(report.scored)} scored, {len(report.rejects)} rejected)")
    table.add_column("reward")
    table.add_column("mean", justify="right")
    for name, value in report.means().items():
        table.add_row(name, f"{value:.4f}")
    out.print(table)
    for reject in report.rejects[:10]:
        console.print(f"[yellow]line {reject['line']}:[/] {reject['reason']}")
    if scores is not None:
        rejects = write_report(report, scores)
        console.print(f"scores in {scores}" + (f"; rejects in {rejects}" if report.rejects else ""))
    raise typer.Exit(code=3 if report.rejects else 0)


@command()
def report(
    run: Path = typer.Option(..., "--run", "-r", help="Run directory."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Exported dataset directory (counts per config and split, the card)."),
    eval_dirs: list[Path] = typer.Option([], "--eval", help="Eval output directory with metrics.json (repeatable)."),
    train_dirs: list[Path] = typer.Option([], "--train", help="Training output directory or log file; every *.jsonl with a 'step' key is plotted (repeatable)."),
    output: Optional[Path] = typer.Option(None, "--out", "-o", help="Where to write the page (default RUN/report.html)."),
) -> None:
    """Write one self-contained report.html over a run, its dataset, training and eval (no network needed to view it)."""
    from vau_annotate.pipelines.report import ReportInputError, ReportInputs, write_report

    if not run.is_dir():
        raise usage_error(f"run directory {run} does not exist")
    try:
        target = write_report(ReportInputs(run=run, dataset=dataset, evals=list(eval_dirs), trains=list(train_dirs)), output)
    except ReportInputError as exc:
        raise usage_error(str(exc)) from None
    out.print(f"report: {target}")


@command()
def merge(run: Path = typer.Option(..., "--run", "-r", help="Run directory (or eval --out directory) whose stages ran as shards.")) -> None:
    """Fold the shards of a run into run.json and rejects.jsonl, and say which shards are missing.

    Reading commands (status, export, report) already see every shard; exit 3 while a shard has
    not finished its share or rejects stand. On an eval output directory (`eval --shard I/N`) it
    also writes predictions.jsonl, metrics.json and metrics.md of the whole once every shard is done.
    """
    from vau_annotate.pipelines.merge import merge_run

    if not run.is_dir():
        raise usage_error(f"run directory {run} does not exist")
    summary, _ = merge_run(run)
    finish(summary, run)


@command()
def export(
    runs: list[Path] = typer.Option(..., "--run", "-r", help="Run directory; repeat to export several runs together (videos deduplicated by id)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Output folder (written to a temporary folder, renamed at the end)."),
    configs: Optional[str] = typer.Option(None, "--configs", help="Comma-separated configs (default: all): p2c_sft, reflect_sft, reflect_sft_conditioned, grpo_qa, grpo_tag, grpo_cls, grpo_p2c, grpo_reflect, captions."),
    split: str = typer.Option("ratio:0.9,0.05,0.05", "--split", help="ratio:TRAIN,VAL,TEST (hashed per video with --seed) | column (the ingested file's split)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the hashed split."),
    frames: str = typer.Option("embed", "--frames", help="embed (JPEG frames in the rows) | path (relative video path + sampling parameters)."),
    sampling: Optional[str] = typer.Option(None, "--sampling", help="Embed the frames of this sampling policy (e.g. fps:1); default: the frames each record's model saw."),
    fps: float = typer.Option(2.0, "--fps", help="--frames path: frames per second qwen-vl-utils samples at training time."),
    nframes: Optional[int] = typer.Option(None, "--nframes", help="--frames path: a fixed frame count instead of --fps."),
    max_pixels: int = typer.Option(360 * 420, "--max-pixels", help="--frames path: pixel budget per frame at training time."),
    fmt: str = typer.Option("hf", "--format", help="hf | verl | easyr1 | video-r1 | vad-r1 | vau-bench | lmms-eval."),
    max_shard_size: str = typer.Option("500MB", "--max-shard-size", help="Largest parquet shard (e.g. 500MB)."),
    workers: int = typer.Option(4, "--workers", "-j", min=1, help="Configs written in parallel."),
    license_id: str = typer.Option("other", "--license", help="License of the dataset, written into the card (e.g. cc-by-nc-4.0)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing, non-empty --out (only once the new export is complete)."),
    push_to_hub: Optional[str] = typer.Option(None, "--push-to-hub", help="Also push the result to this Hub dataset repo (needs HF_TOKEN or `hf auth login`)."),
    private: bool = typer.Option(False, "--private", help="Create the Hub repo as private."),
) -> None:
    """Turn run directories into a Hugging Face dataset (one config per use, train/validation/test by video)."""
    from vau_annotate.pipelines.export import ExportOptions, run_export
    from vau_annotate.pipelines.export_source import ExportInputError
    from vau_annotate.pipelines.export_write import SplitPlan, VideoOptions
    from vau_annotate.pipelines.hub import HubError, push_folder, require_token
    from vau_annotate.schemas.rows import CONFIGS, FRAMES_MODES

    if frames not in FRAMES_MODES:
        raise usage_error(f"--frames must be embed or path, not {frames!r}")
    if push_to_hub and fmt != "hf":
        raise usage_error("--push-to-hub pushes the Hugging Face format: use it with --format hf")
    chosen = tuple(c.strip() for c in configs.split(",") if c.strip()) if configs else CONFIGS
    try:
        plan = SplitPlan.parse(split, seed)
        token = require_token() if push_to_hub else None
        options = ExportOptions(
            runs=tuple(runs), out=out_dir, configs=chosen, split=plan,
            video=VideoOptions(mode=frames, sampling=sampling, fps=fps, nframes=nframes, max_pixels=max_pixels),  # type: ignore[arg-type]
            format=fmt, max_shard_bytes=parse_size(max_shard_size), workers=workers, license=license_id, overwrite=overwrite)
        result = run_export(options)
    except (ValueError, ExportInputError, HubError) as exc:
        raise usage_error(str(exc)) from None
    if push_to_hub:
        try:
            pushed = push_folder(out_dir, push_to_hub, private=private, token=token)
        except HubError as exc:
            console.print(f"[bold red]push failed:[/] {exc} (the export is complete in {out_dir}; retry with `vau-annotate push {out_dir} {push_to_hub}`)")
            raise typer.Exit(code=1) from None
        result.summary.notes.append(f"pushed {pushed.files} file(s) to {pushed.url} (commit {pushed.commit[:12]})")
    summary = result.summary
    finish(summary, out_dir, rejected_note=f"[yellow]{summary.rejected} row(s) left out for missing frames[/] (exit status 3: partial)")


@command()
def push(
    folder: Path = typer.Argument(..., help="A folder made by `vau-annotate export`."),
    repo_id: str = typer.Argument(..., help="Hub dataset repo, e.g. me/vau-reasoning."),
    private: bool = typer.Option(False, "--private", help="Create the repo as private."),
) -> None:
    """Push an exported dataset (every config + the card) to the Hugging Face Hub."""
    from vau_annotate.pipelines.hub import HubError, check_export_folder, push_folder, require_token

    try:
        check_export_folder(folder)
        token = require_token()
    except HubError as exc:
        raise usage_error(str(exc)) from None
    try:
        pushed = push_folder(folder, repo_id, private=private, token=token)
    except HubError as exc:
        console.print(f"[bold red]push failed:[/] {exc}")
        raise typer.Exit(code=1) from None
    out.print(f"pushed {pushed.files} file(s) to {pushed.url} (commit {pushed.commit[:12]})")

