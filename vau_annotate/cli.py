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

from vau_annotate import __version__
from vau_annotate.cli_common import (
    BATCH_OPTION,
    BATCH_POLL_OPTION,
    CONNECT_TIMEOUT_OPTION,
    DECODERS,
    EXECUTOR_OPTION,
    PRICES_OPTION,
    RAY_ADDRESS_OPTION,
    RAY_LLM_OPTION,
    RETRY_FAILED_OPTION,
    ROLE_LIMIT_OPTION,
    SHARDS_OPTION,
    SHARD_OPTION,
    SOURCES,
    TIMEOUT_OPTION,
    VIDEO_MODE_OPTION,
    console,
    finish,
    ingest_before,
    model_access,
    out,
    shard_or_drive,
    usage_error,
    with_ray_llm,
)

app = typer.Typer(
    name="vau-annotate",
    help="Turn anomaly videos and their labels into checked reasoning datasets, and train/evaluate on them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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

    as_shard = shard_or_drive(ctx, run, shard, shards, executor, ray_address)
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
    access = model_access(prices, retry_failed, video_mode, timeout, connect_timeout, role_limit, ("captioner", "reasoner"), batch, batch_poll)
    access = with_ray_llm(access, executor, shards, ray_address, ray_llm, (captioner, reasoner))
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
        ingest_before(source, annotations, videos, run)
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

    as_shard = shard_or_drive(ctx, run, shard, shards, executor, ray_address)
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
    access = model_access(prices, retry_failed, video_mode, timeout, connect_timeout, role_limit, ("base", "teacher"), batch, batch_poll)
    access = with_ray_llm(access, executor, shards, ray_address, ray_llm, (base, teacher))
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

    as_shard = shard_or_drive(ctx, run, shard, shards, executor, ray_address)
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


from vau_annotate.cli_outputs import register  # noqa: E402
from vau_annotate.train.cli import train_app  # noqa: E402

register(app)
app.add_typer(train_app, name="train")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
