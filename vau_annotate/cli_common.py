"""What every `vau-annotate` command shares: the consoles, the options of model-backed stages, usage
errors and exit statuses, and the shard driver (`--shard I/N`, `--shards N --executor ...`).

Split out of cli.py so that the command modules (cli.py: the annotation stages; cli_outputs.py:
eval, rewards, report, merge, export, push) stay short and read top to bottom.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from vau_annotate.pipelines.summary import StageSummary

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


def finish(summary: StageSummary, run: Path, rejected_note: str | None = None) -> None:
    """Print the summary table and notes, then exit with the run's status (0, 3 partial, ...)."""
    out.print(summary.counts_table(f"{summary.stage}: {run}"))
    for note in summary.notes:
        console.print(note)
    if summary.rejected:
        console.print(rejected_note or f"[yellow]{summary.rejected} item(s) rejected[/] — reasons in {run / 'rejects.jsonl'} (`vau-annotate status --run {run}`)")
    raise typer.Exit(code=summary.exit_code)


def model_access(prices: Optional[Path], retry_failed: bool, video_mode: str, timeout: Optional[float],
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


def ingest_before(source: str, annotations: Optional[Path], videos: Optional[Path], run: Path) -> None:
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


# not passed on to shards: the driver's own options, and ingest-first options (the driver ingested once)
DRIVER_ONLY = {"shard", "shards", "executor", "ray_address", "source", "annotations", "videos"}
INGEST_FIRST = {"source", "annotations", "videos"}  # driver-only in commands that ingest first (eval's --videos is not)


def command_args(ctx: typer.Context) -> list[str]:
    """The invoked command again as CLI arguments (from its parsed options), less the driver's own."""
    args = [ctx.info_name or ""]
    for param in ctx.command.params:  # Typer's own (vendored) click classes: duck-typed
        ingest_first = param.name in INGEST_FIRST and "source" in ctx.params
        if (param.name in DRIVER_ONLY and (param.name not in INGEST_FIRST or ingest_first)) or getattr(param, "param_type_name", "") != "option":
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


def shard_or_drive(ctx: typer.Context, run: Path, shard: Optional[str], shards: Optional[int], executor: str, ray_address: Optional[str]):
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
    drive_shards(command_args(ctx), run, shards, executor, ray_address)


def drive_shards(args: list[str], run: Path, count: int, executor: str, ray_address: Optional[str]) -> None:
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


def parse_size(text: str) -> int:
    """'500MB', '2GB', '64KB' or a byte count → bytes (decimal units, as datasets' max_shard_size)."""
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?B?)\s*", text.upper())
    if not match:
        raise usage_error(f"--max-shard-size must look like 500MB, 2GB or a byte count, not {text!r}")
    unit = {"": 1, "B": 1, "K": 1e3, "KB": 1e3, "M": 1e6, "MB": 1e6, "G": 1e9, "GB": 1e9}[match[2]]
    return max(1, int(float(match[1]) * unit))


def with_ray_llm(access, executor: str, shards: Optional[int], ray_address: Optional[str], ray_llm: Optional[str], specs: tuple[str, ...]):  # -> ModelAccess
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
