"""The `vau-annotate` command line. Thin: parse options, call a pipeline, print a summary.

Exit status: 0 = everything went through, 3 = partial (something was rejected: see
RUN_DIR/rejects.jsonl, or is pending after a transient failure), 2 = usage error (bad option,
missing file), 1 = the run stopped (e.g. an invalid API key), 130 = interrupted by Ctrl-C.
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
DECODERS = ("auto", "pyav", "pyav-seek", "pyav-sequential", "decord", "opencv")

# Options of every model-backed stage (build-cot, reflect): declared once, used by both commands.
PRICES_OPTION = typer.Option(None, "--prices", help="JSON price table merged over the bundled one (USD per million input/output tokens).")
RETRY_FAILED_OPTION = typer.Option(False, "--retry-failed", help="Call again where the ledger holds a permanent failure (e.g. a refusal) instead of reusing it.")
VIDEO_MODE_OPTION = typer.Option("video_url", "--video-mode", help="How openai: specs send a video: video_url (vLLM's frame list) | images (one image per frame).")
TIMEOUT_OPTION = typer.Option(None, "--timeout", min=1.0, help="Seconds a model call may take once connected before it counts as a (retryable) timeout (default: 30 + max_tokens / 20).")
CONNECT_TIMEOUT_OPTION = typer.Option(10.0, "--connect-timeout", min=0.1, help="Seconds to connect to a model server before it counts as a (retryable) timeout.")
ROLE_LIMIT_OPTION = typer.Option([], "--role-limit", help="A role's own rate cap on top of the shared --rpm/--tpm, e.g. captioner:rpm=30 (repeatable).")


BATCH_OPTION = typer.Option(False, "--batch", help="Send openai: calls through the provider's Batch API (OpenAI, DashScope compatible mode): half price, results within 24 h; a re-run picks submitted jobs up. Lifts --concurrency to 1000 so each round gathers every ready item.")
BATCH_POLL_OPTION = typer.Option(30.0, "--batch-poll", min=0.01, help="Seconds between checks of a submitted batch job.")


SHARD_OPTION = typer.Option(None, "--shard", help="Run as shard I/N (0 ≤ I < N): only the items whose id hashes to I, with the shard's own ledger; e.g. --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT.")
SHARDS_OPTION = typer.Option(None, "--shards", min=1, help="Run this command as N shards through --executor, then merge them.")
EXECUTOR_OPTION = typer.Option("local", "--executor", help="Where --shards run: local (processes here) | ray (Ray tasks; the run directory must be on shared storage). With ray, vllm: roles run as Ray Data LLM jobs over the cluster instead (no --shards; see --ray-llm).")
RAY_ADDRESS_OPTION = typer.Option(None, "--ray-address", help="Ray cluster to use with --executor ray ('auto' = the one this machine belongs to; default: start a local one).")
RAY_LLM_OPTION = typer.Option(None, "--ray-llm", help="With --executor ray, vllm: roles run as Ray Data LLM jobs over the cluster's GPUs; settings as KEY=VALUE,...: tp (GPUs per replica, tensor parallel), pp (pipeline stages), replicas (N or MIN-MAX), batch (rows per engine batch), round (most requests per job), max-len, dtype, gpu-mem, kv-cache-gb, eager, device (gpu|cpu).")


class UsageError(Exception):
    """A problem with what the user asked for (exit status 2)."""


def usage_error(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=2)


def finish(summary: StageSummary, run: Path) -> None:
    out.print(summary.counts_table(f"{summary.stage}: {run}"))
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
    ctx: typer.Context,
    run: Path = typer.Option(..., "--run", "-r", help="Run directory (after ingest)."),
    policy: str = typer.Option("uniform:16", "--policy", "-p", help="uniform:N | fps:F | stride:K | span:N (N frames inside the abnormal span)."),
    max_pixels: int = typer.Option(448 * 448, "--max-pixels", help="Pixel budget per frame; sides are aligned to 28."),
    decoder: str = typer.Option("auto", "--decoder", help=f"One of: {', '.join(DECODERS)}."),
    workers: int = typer.Option(0, "--workers", "-j", help="Parallel processes (0 = number of CPUs)."),
    quality: int = typer.Option(90, "--jpeg-quality", min=1, max=100),
    shard: Optional[str] = SHARD_OPTION,
    shards: Optional[int] = SHARDS_OPTION,
    executor: str = EXECUTOR_OPTION,
    ray_address: Optional[str] = RAY_ADDRESS_OPTION,
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
    from vau_annotate.annotate.shards import ShardError, use_shard

    as_shard = _shard_or_drive(ctx, run, shard, shards, executor, ray_address)
    try:
        with use_shard(as_shard):
            summary = run_sample(run=run, policy=policy, max_pixels=max_pixels, decoder=decoder, workers=workers, jpeg_quality=quality)
    except ShardError as exc:
        raise usage_error(str(exc)) from None
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


@app.command("build-cot")
def build_cot(
    ctx: typer.Context,
    run: Path = typer.Option(..., "--run", "-r", help="Run directory (after ingest, or give --source/--annotations/--videos to ingest first)."),
    captioner: str = typer.Option(..., "--captioner", help="Vision model that captions frames: PROVIDER:MODEL\\[@BASE_URL], e.g. dashscope:qwen-vl-max."),
    reasoner: str = typer.Option(..., "--reasoner", help="Model that writes the steps and the answer from the captions, e.g. openai:gpt-4o."),
    caption_policy: str = typer.Option("stride:16", "--caption-policy", help="Frames to caption: stride:K | uniform:N | fps:F | span:N."),
    caption_batch: int = typer.Option(4, "--caption-batch", min=1, help="Frames per captioning request (each still gets its own caption)."),
    max_pixels: int = typer.Option(448 * 448, "--max-pixels", help="Pixel budget per captioned frame; sides are aligned to 28."),
    limit: Optional[int] = typer.Option(None, "--limit", min=0, help="Only the first N videos of the manifest."),
    concurrency: int = typer.Option(8, "--concurrency", "-c", min=1, help="Videos in flight, and calls in flight per model."),
    rpm: Optional[float] = typer.Option(None, "--rpm", min=0.001, help="Requests per minute per endpoint (provider, base URL, model), shared by every role using it."),
    tpm: Optional[float] = typer.Option(None, "--tpm", min=1, help="Tokens per minute per endpoint (provider, base URL, model), shared by every role using it."),
    gates: Optional[str] = typer.Option(None, "--gates", help="Gates to run, comma-separated (default all): structure, category, when, sentences, length, neutrality, repetition."),
    skip_gate: list[str] = typer.Option([], "--skip-gate", help="A gate not to run (repeatable)."),
    length_gate: str = typer.Option("reject", "--length-gate", help="reject | warn: whether a think outside Vad-R1's length band is rejected (default) or only warned about."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the estimated calls, tokens and cost; call nothing."),
    retry_rejected: bool = typer.Option(False, "--retry-rejected", help="Run previously rejected videos again (e.g. after changing a gate)."),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="Environment variable holding the API key (default: the provider's usual one)."),
    prices: Optional[Path] = PRICES_OPTION,
    retry_failed: bool = RETRY_FAILED_OPTION,
    video_mode: str = VIDEO_MODE_OPTION,
    timeout: Optional[float] = TIMEOUT_OPTION,
    connect_timeout: float = CONNECT_TIMEOUT_OPTION,
    role_limit: list[str] = ROLE_LIMIT_OPTION,
    batch: bool = BATCH_OPTION,
    batch_poll: float = BATCH_POLL_OPTION,
    shard: Optional[str] = SHARD_OPTION,
    shards: Optional[int] = SHARDS_OPTION,
    executor: str = EXECUTOR_OPTION,
    ray_address: Optional[str] = RAY_ADDRESS_OPTION,
    ray_llm: Optional[str] = RAY_LLM_OPTION,
    source: Optional[str] = typer.Option(None, "--source", "-s", help=f"Ingest first from this source ({', '.join(SOURCES)})."),
    annotations: Optional[Path] = typer.Option(None, "--annotations", help="Annotation file for --source."),
    videos: Optional[Path] = typer.Option(None, "--videos", "-v", help="Video directory for --source."),
) -> None:
    """Write Vad-R1 Perception-to-Cognition chains (captions → 4 steps → tagged answer), checked by gates.

    Accepted records go to RUN/cot/<video>.json, rejects (with every failed gate) to RUN/rejects.jsonl.
    Re-running continues: finished videos are skipped and every model call is answered from the ledger.
    """
    from vau_annotate.annotate.backends import ModelSpec, SpecError
    from vau_annotate.annotate.checks import GateSelectionError, parse_gate_list
    from vau_annotate.annotate.checks.cot import cot_gates
    from vau_annotate.annotate.engine import RunStopped
    from vau_annotate.annotate.video import PolicyError, parse_policy
    from vau_annotate.pipelines.cot import CotOptions, run_cot
    from vau_annotate.pipelines.runner import StageInterrupted

    if length_gate not in ("warn", "reject"):
        raise usage_error(f"--length-gate must be warn or reject, not {length_gate!r}")
    access = _model_access(prices, retry_failed, video_mode, timeout, connect_timeout, role_limit, ("captioner", "reasoner"), batch, batch_poll)
    access = _with_ray_llm(access, executor, shards, ray_address, ray_llm, (captioner, reasoner))
    try:
        policy = str(parse_policy(caption_policy))
        for spec in (captioner, reasoner):
            ModelSpec.parse(spec)
        cot_gates().select(parse_gate_list(gates), skip_gate)
    except (PolicyError, SpecError, GateSelectionError) as exc:
        raise usage_error(str(exc)) from None
    if max_pixels < 28 * 28:
        raise usage_error("--max-pixels must be at least 784 (one 28×28 patch)")
    if source is not None:
        _ingest_before(source, annotations, videos, run)
    elif annotations is not None or videos is not None:
        raise usage_error("--annotations/--videos need --source")
    if not (run / "manifest.parquet").exists():
        raise usage_error(f"{run}/manifest.parquet does not exist: run `vau-annotate ingest ... --run {run}` first, or give --source")
    options = CotOptions(
        captioner=captioner, reasoner=reasoner, caption_policy=policy, caption_batch=caption_batch, max_pixels=max_pixels,
        limit=limit, concurrency=concurrency, rpm=rpm, tpm=tpm, gates=tuple(parse_gate_list(gates) or ()) or None,
        skip_gates=tuple(skip_gate), length_gate=length_gate, dry_run=dry_run, retry_rejected=retry_rejected, api_key_env=api_key_env,  # type: ignore[arg-type]
        access=access,
    )
    from vau_annotate.annotate.shards import ShardError, use_shard

    as_shard = _shard_or_drive(ctx, run, shard, shards, executor, ray_address)
    try:
        with use_shard(as_shard):
            summary = run_cot(run, options)
    except (GateSelectionError, SpecError, ShardError) as exc:
        raise usage_error(str(exc)) from None
    except RunStopped as exc:
        console.print(f"[bold red]stopped:[/] {exc}")
        raise typer.Exit(code=1) from None
    except StageInterrupted as exc:
        console.print(f"[yellow]{exc}[/]")
        raise typer.Exit(code=130) from None
    finish(summary, run)


def _model_access(prices: Optional[Path], retry_failed: bool, video_mode: str, timeout: Optional[float],
                  connect_timeout: float = 10.0, role_limit: list[str] | tuple[str, ...] = (), roles: tuple[str, ...] = (),
                  batch: bool = False, batch_poll: float = 30.0):  # -> ModelAccess
    from vau_annotate.annotate.pricing import PriceFileError, PriceTable
    from vau_annotate.pipelines.models import VIDEO_MODES, ModelAccess, parse_role_limits

    try:
        role_limits = parse_role_limits(role_limit, roles)
    except ValueError as exc:
        raise usage_error(str(exc)) from None

    if video_mode not in VIDEO_MODES:
        raise usage_error(f"--video-mode must be one of {', '.join(VIDEO_MODES)}, not {video_mode!r}")
    if prices is not None:
        if not prices.is_file():
            raise usage_error(f"--prices {prices} does not exist")
        try:
            PriceTable.load(prices)
        except PriceFileError as exc:
            raise usage_error(str(exc)) from None
    return ModelAccess(prices=prices, retry_failed=retry_failed, video_mode=video_mode, timeout=timeout,
                       connect_timeout=connect_timeout, role_limits=role_limits, batch=batch, batch_poll_s=batch_poll)


def _ingest_before(source: str, annotations: Optional[Path], videos: Optional[Path], run: Path) -> None:
    """`--source/--annotations/--videos` on a generating command: ingest first, report in one line."""
    from vau_annotate.pipelines.ingest import IngestInputError, run_ingest

    if videos is None:
        raise usage_error("--source needs --videos")
    try:
        summary = run_ingest(source=source, annotations=annotations, videos=videos, run=run)
    except IngestInputError as exc:
        raise usage_error(str(exc)) from None
    counts = ", ".join(f"{k} {v}" for k, v in summary.counts.items())
    console.print(f"ingest: {counts}" + (f" — {summary.rejected} rejected, see {run / 'rejects.jsonl'}" if summary.rejected else ""))


REFLECT_TASKS = ("qa", "tag", "both")


@app.command()
def reflect(
    ctx: typer.Context,
    run: Path = typer.Option(..., "--run", "-r", help="Run directory (after ingest)."),
    teacher: str = typer.Option(..., "--teacher", help="Teacher model spec, e.g. openai:gpt-4o or dashscope:qwen-vl-max."),
    base: str = typer.Option("vllm:Qwen/Qwen2.5-VL-3B-Instruct", "--base", help="Base model spec (vllm:…, hf:DIR, or openai:NAME@URL from `serve-base`)."),
    task: str = typer.Option("both", "--task", help="qa (one item per multiple-choice question) | tag (temporal grounding) | both."),
    fps: float = typer.Option(1.0, "--fps", min=0.01, help="Frames per second shown to both models (sampled as policy fps:F)."),
    max_pixels: int = typer.Option(360 * 420, "--max-pixels", min=28 * 28, help="Pixel budget per frame."),
    max_frames: int = typer.Option(64, "--max-frames", min=2, help="At most this many frames per video (thinned evenly)."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", min=1, help="Only the first N items (manifest order)."),
    concurrency: int = typer.Option(4, "--concurrency", "-c", min=1, help="Items and calls in flight per model."),
    rpm: Optional[float] = typer.Option(None, "--rpm", min=0.001, help="Requests per minute per endpoint (provider, base URL, model), shared by every role using it."),
    tpm: Optional[float] = typer.Option(None, "--tpm", min=1, help="Tokens per minute per endpoint (provider, base URL, model), shared by every role using it."),
    min_iou: float = typer.Option(0.5, "--min-iou", min=0.0, max=1.0, help="IoU at which the base's span counts as correct."),
    revised_min_iou: float = typer.Option(0.7, "--revised-min-iou", min=0.0, max=1.0, help="IoU the teacher's revised span needs to be accepted."),
    reflection_min_words: int = typer.Option(12, "--reflection-min-words", min=1),
    reflection_max_words: int = typer.Option(120, "--reflection-max-words", min=1),
    skip_gate: list[str] = typer.Option([], "--skip-gate", help="Gate to skip (repeatable): format, reflection, revised-answer, revision, chronology, neutrality."),
    base_max_tokens: int = typer.Option(512, "--base-max-tokens", min=16),
    teacher_max_tokens: int = typer.Option(1024, "--teacher-max-tokens", min=16),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="Environment variable holding the teacher's API key (default: the provider's)."),
    prices: Optional[Path] = PRICES_OPTION,
    retry_failed: bool = RETRY_FAILED_OPTION,
    video_mode: str = VIDEO_MODE_OPTION,
    timeout: Optional[float] = TIMEOUT_OPTION,
    connect_timeout: float = CONNECT_TIMEOUT_OPTION,
    role_limit: list[str] = ROLE_LIMIT_OPTION,
    batch: bool = BATCH_OPTION,
    batch_poll: float = BATCH_POLL_OPTION,
    shard: Optional[str] = SHARD_OPTION,
    shards: Optional[int] = SHARDS_OPTION,
    executor: str = EXECUTOR_OPTION,
    ray_address: Optional[str] = RAY_ADDRESS_OPTION,
    ray_llm: Optional[str] = RAY_LLM_OPTION,
    retry_rejected: bool = typer.Option(False, "--retry-rejected", help="Run previously rejected items again."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Sample frames and estimate calls, tokens and cost; call no model."),
) -> None:
    """SRVAU-R1 reflection triples: the base model answers, the teacher reflects and revises, gates check.

    Accepted records go to RUN/reflect/<item>.json, rejects (with every failed gate) to RUN/rejects.jsonl.
    Re-running continues: finished items are skipped and every model call is answered from the ledger.
    """
    from vau_annotate.annotate.backends import SpecError
    from vau_annotate.annotate.backends.registry import ModelSpec
    from vau_annotate.annotate.checks import GateSelectionError
    from vau_annotate.annotate.checks.reflect import ReflectGateConfig, reflect_gates
    from vau_annotate.annotate.engine import RunStopped
    from vau_annotate.pipelines.reflect import ReflectOptions, run_reflect
    from vau_annotate.pipelines.runner import StageInterrupted

    if task not in REFLECT_TASKS:
        raise usage_error(f"--task must be one of {', '.join(REFLECT_TASKS)}, not {task!r}")
    access = _model_access(prices, retry_failed, video_mode, timeout, connect_timeout, role_limit, ("base", "teacher"), batch, batch_poll)
    access = _with_ray_llm(access, executor, shards, ray_address, ray_llm, (base, teacher))
    if reflection_min_words > reflection_max_words:
        raise usage_error("--reflection-min-words is larger than --reflection-max-words")
    if not (run / "manifest.parquet").exists():
        raise usage_error(f"{run}/manifest.parquet does not exist: run `vau-annotate ingest ... --run {run}` first")
    try:
        for spec in (base, teacher):
            ModelSpec.parse(spec)
        reflect_gates().select(skip=skip_gate)
    except (SpecError, GateSelectionError) as exc:
        raise usage_error(str(exc)) from None
    options = ReflectOptions(
        teacher=teacher, base=base, task=task, fps=fps, max_pixels=max_pixels, max_frames=max_frames, limit=limit,  # type: ignore[arg-type]
        concurrency=concurrency, rpm=rpm, tpm=tpm, initial_min_iou=min_iou, revised_min_iou=revised_min_iou,
        gates=ReflectGateConfig(reflection_words=(reflection_min_words, reflection_max_words)), skip_gates=tuple(skip_gate),
        base_max_tokens=base_max_tokens, teacher_max_tokens=teacher_max_tokens, retry_rejected=retry_rejected, dry_run=dry_run,
        teacher_options={"api_key_env": api_key_env} if api_key_env else {},
        access=access,
    )
    from vau_annotate.annotate.shards import ShardError, use_shard

    as_shard = _shard_or_drive(ctx, run, shard, shards, executor, ray_address)
    try:
        with use_shard(as_shard):
            summary = run_reflect(run, options)
    except ShardError as exc:
        raise usage_error(str(exc)) from None
    except RunStopped as exc:
        console.print(f"[bold red]stopped:[/] {exc}")
        raise typer.Exit(code=1) from None
    except StageInterrupted as exc:
        console.print(f"[yellow]{exc}[/]")
        raise typer.Exit(code=130) from None
    except SpecError as exc:
        raise usage_error(str(exc)) from None
    finish(summary, run)


@app.command("serve-base", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def serve_base(
    ctx: typer.Context,
    model: str = typer.Option("Qwen/Qwen2.5-VL-3B-Instruct", "--model", "-m", help="Hub model name or local directory to serve."),
    port: int = typer.Option(8000, "--port", "-p", min=1, max=65535),
    vllm_bin: Optional[str] = typer.Option(None, "--vllm-bin", help="The vllm executable (default: `vllm` on PATH)."),
    served_name: Optional[str] = typer.Option(None, "--served-model-name", help="Name clients use (default: the model, or a directory's name)."),
    max_frames: int = typer.Option(64, "--max-frames", min=1, help="Frames per video to plan for (match `reflect --max-frames`)."),
    max_pixels: int = typer.Option(360 * 420, "--max-pixels", min=28 * 28, help="Pixels per frame to plan for (match `reflect --max-pixels`)."),
    max_model_len: Optional[int] = typer.Option(None, "--max-model-len", min=256, help="Context length (default: one full video + 4096 text tokens)."),
    startup_timeout: float = typer.Option(900.0, "--startup-timeout", min=1.0, help="Seconds to wait for the server to answer."),
    grace: float = typer.Option(20.0, "--grace", min=0.0, help="Seconds between SIGTERM and SIGKILL when stopping."),
) -> None:
    """Start `vllm serve` for the reflect base model (video-ready), print its spec, stop it on Ctrl-C.

    Arguments after the options go to `vllm serve` unchanged (e.g. -- --gpu-memory-utilization 0.8).
    """
    from vau_annotate.pipelines.serve import ServeError, ServeOptions
    from vau_annotate.pipelines.serve import serve_base as run_server

    options = ServeOptions(
        model=model, port=port, vllm_bin=vllm_bin, served_name=served_name, max_frames=max_frames, max_pixels=max_pixels,
        max_model_len=max_model_len, startup_timeout=startup_timeout, grace_s=grace, extra_args=tuple(a for a in ctx.args if a != "--"),
    )

    def ready(spec: str) -> None:
        print(spec, flush=True)
        console.print(f"[green]serving[/] {options.model}: use `vau-annotate reflect --base {spec} --teacher …` (Ctrl-C stops it)")

    try:
        code = run_server(options, ready)
    except ServeError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(code=1) from None
    raise typer.Exit(code=code)


@app.command("tiny-model")
def tiny_model(
    directory: Path = typer.Argument(..., help="Directory to write the model into (created if missing)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the tokenizer corpus and the random weights."),
) -> None:
    """Build a tiny random-weight Qwen2.5-VL offline (for tests and dry runs: its text is noise)."""
    try:
        from vau_annotate.train.tiny import build_tiny_model
    except ImportError:
        raise usage_error("tiny-model needs the training extras: pip install 'vau-annotate[train]'") from None
    if directory.exists() and not directory.is_dir():
        raise usage_error(f"{directory} exists and is not a directory")
    path = build_tiny_model(directory, seed=seed)
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    out.print(f"tiny Qwen2.5-VL written to {path} ({size / 1e6:.1f} MB); use it as hf:{path} or vllm:{path}")


@app.command()
def demo(
    run: Path = typer.Option(Path("outputs/demo"), "--run", "-r", help="Run directory of the demo (running again resumes it)."),
    fresh: bool = typer.Option(False, "--fresh", help="Delete the demo's run directory first and start over."),
    tiny_model: Optional[Path] = typer.Option(None, "--tiny-model", help="A tiny model built by `tiny-model` (default: built under RUN)."),
    real_data: Optional[Path] = typer.Option(None, "--real-data", help="A folder holding the real sample clip vtest.avi (`make demo` passes $VAU_REAL_DATA): it joins the dataset as a normal video."),
) -> None:
    """The whole job offline: ingest → sample → build-cot → reflect → export → train sft → train grpo → eval → report.

    The captioner, reasoner and teacher are a recorded stand-in (no model API is needed); the
    reflect base model is real local inference of a random-weight tiny Qwen2.5-VL. Exit status 0
    when every stage produced what the demo expects (its rejects included), 1 otherwise.
    """
    try:
        from vau_annotate.pipelines.demo import DemoError, DemoOptions, run_demo
    except ImportError as exc:
        raise usage_error(f"the demo needs the training extras (pip install 'vau-annotate[train]'): {exc}") from None
    from vau_annotate.annotate.engine import RunStopped

    if tiny_model is not None and not (tiny_model / "config.json").is_file():
        raise usage_error(f"--tiny-model {tiny_model} is not a model directory (no config.json); build one with `vau-annotate tiny-model DIR`")
    try:
        result = run_demo(DemoOptions(run=run, tiny_model=tiny_model, fresh=fresh, real_data=real_data), out)
    except DemoError as exc:
        raise usage_error(str(exc)) from None
    except RunStopped as exc:
        console.print(f"[bold red]stopped:[/] {exc}")
        raise typer.Exit(code=1) from None
    if result.exit_code:
        console.print("[bold red]the demo did not produce what it expects[/] — see the 'expected outcomes' table")
    raise typer.Exit(code=result.exit_code)




@app.command("eval")
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
    access = _model_access(prices, retry_failed, video_mode, timeout, batch=batch, batch_poll=batch_poll)
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
    as_shard = _shard_or_drive(ctx, out_dir, shard, shards, executor, ray_address)
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


@app.command("rewards")
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


@app.command()
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


# not passed on to shards: the driver's own options, and ingest-first options (the driver ingested once)
_DRIVER_ONLY = {"shard", "shards", "executor", "ray_address", "source", "annotations", "videos"}
_INGEST_FIRST = {"source", "annotations", "videos"}  # driver-only in commands that ingest first (eval's --videos is not)


def _command_args(ctx: typer.Context) -> list[str]:
    """The invoked command again as CLI arguments (from its parsed options), less the driver's own."""
    args = [ctx.info_name or ""]
    for param in ctx.command.params:  # Typer's own (vendored) click classes: duck-typed
        ingest_first = param.name in _INGEST_FIRST and "source" in ctx.params
        if (param.name in _DRIVER_ONLY and (param.name not in _INGEST_FIRST or ingest_first)) or getattr(param, "param_type_name", "") != "option":
            continue
        value = ctx.params.get(param.name)
        if value is None or (param.multiple and not value):
            continue
        if param.is_flag:
            if param.secondary_opts and not value:
                args.append(param.secondary_opts[0])
            elif value:
                args.append(param.opts[0])
            continue
        for one in (value if param.multiple else [value]):
            args += [param.opts[0], str(one)]
    return args


def _shard_or_drive(ctx: typer.Context, run: Path, shard: Optional[str], shards: Optional[int], executor: str, ray_address: Optional[str]):
    """`--shard I/N`: the Shard to run as. `--shards N`: run N shards via the executor, merge, exit here."""
    from vau_annotate.annotate.shards import ShardError, parse_shard

    if shard is not None and shards is not None:
        raise usage_error("--shard (be one shard) and --shards (drive N shards) exclude each other")
    if executor not in ("local", "ray"):
        raise usage_error(f"--executor must be local or ray, not {executor!r}")
    if shard is not None:
        if ctx.params.get("source") is not None:
            raise usage_error("--shard with --source: ingest once (`vau-annotate ingest`), then start the shards without --source")
        try:
            return parse_shard(shard)
        except ShardError as exc:
            raise usage_error(str(exc)) from None
    if shards is None:
        return None
    _drive_shards(_command_args(ctx), run, shards, executor, ray_address)


def _drive_shards(args: list[str], run: Path, count: int, executor: str, ray_address: Optional[str]) -> None:
    from vau_annotate.pipelines.executors import run_local, run_ray, worst_exit
    from vau_annotate.pipelines.merge import merge_run

    def progress(states: dict) -> None:
        line = "  ".join(f"{stage}: {len(s['done'])}/{s['count']} shards done" for stage, s in states.items())
        if line:
            console.print(f"[dim]{line}[/]", end="\r")

    console.print(f"running {count} shard(s) of `{args[0]}` with the {executor} executor")
    if executor == "ray":
        try:
            results = run_ray(args, count, run, address=ray_address, on_progress=progress)
        except ImportError:
            raise usage_error("--executor ray needs Ray: pip install 'ray[data]'") from None
    else:
        results = run_local(args, count, run, on_progress=progress)
    table = Table(title=f"shards of {args[0]}")
    for column in ("shard", "exit", "last line"):
        table.add_column(column)
    for result in results:
        lines = [line for line in result.output_tail.splitlines() if line.strip()]
        table.add_row(f"{result.index}/{count}", str(result.exit_code), lines[-1][:120] if lines else "")
    out.print(table)
    summary, _ = merge_run(run)
    code = worst_exit(results)
    out.print(summary.counts_table(f"merge: {run}"))
    for note in summary.notes:
        console.print(note)
    raise typer.Exit(code=code or summary.exit_code)


@app.command()
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




def _parse_size(text: str) -> int:
    """'500MB', '2GB', '64KB' or a byte count → bytes (decimal units, as datasets' max_shard_size)."""
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?B?)\s*", text.upper())
    if not match:
        raise usage_error(f"--max-shard-size must look like 500MB, 2GB or a byte count, not {text!r}")
    unit = {"": 1, "B": 1, "K": 1e3, "KB": 1e3, "M": 1e6, "MB": 1e6, "G": 1e9, "GB": 1e9}[match[2]]
    return max(1, int(float(match[1]) * unit))


@app.command()
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
            format=fmt, max_shard_bytes=_parse_size(max_shard_size), workers=workers, license=license_id, overwrite=overwrite)
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
    out.print(summary.counts_table(f"export: {out_dir}"))
    for note in summary.notes:
        console.print(note)
    if summary.rejected:
        console.print(f"[yellow]{summary.rejected} row(s) left out for missing frames[/] (exit status 3: partial)")
    raise typer.Exit(code=summary.exit_code)


@app.command()
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


from vau_annotate.train.cli import train_app  # noqa: E402

app.add_typer(train_app, name="train")



def _with_ray_llm(access, executor: str, shards: Optional[int], ray_address: Optional[str], ray_llm: Optional[str], specs: tuple[str, ...]):  # -> ModelAccess
    """`--executor ray` with a `vllm:` role: that role runs as Ray Data LLM jobs over the cluster
    (one job spreads over every GPU), so the command runs once, not as --shards."""
    from dataclasses import replace

    from vau_annotate.annotate.backends import ModelSpec, SpecError
    from vau_annotate.annotate.backends.ray_llm_rows import RayLLMOptions

    local = []
    for spec in specs:
        try:
            if ModelSpec.parse(spec).provider == "vllm":
                local.append(spec)
        except SpecError:
            pass  # the command reports a bad spec itself
    if ray_llm is not None and (executor != "ray" or not local):
        raise usage_error("--ray-llm sets up vllm: roles under --executor ray: " + ("add --executor ray" if executor != "ray" else "no role here uses a vllm: spec"))
    if executor != "ray" or not local:
        return access
    if shards is not None:
        raise usage_error(f"--executor ray runs {', '.join(local)} as Ray Data LLM jobs over every GPU of the cluster: "
                          "drop --shards (or use --executor local to run shards with an engine each)")
    try:
        options = RayLLMOptions.parse(ray_llm or "")
    except ValueError as exc:
        raise usage_error(str(exc)) from None
    return replace(access, ray_llm=options, ray_address=ray_address)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
