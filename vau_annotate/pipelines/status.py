"""`vau-annotate status`: what a run directory holds — items per stage, rejects by reason, usage."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from vau_annotate.annotate.rundir import RunDir


def collect_status(run: Path) -> dict[str, Any]:
    """Gather everything `status` shows as plain data (also printed with --json)."""
    rd = RunDir(run)
    report: dict[str, Any] = {"run": str(run), "stages": {}, "rejects": {}, "usage": []}
    meta = rd.load_meta() if rd.meta_path.exists() else None
    if meta is not None:
        report["source"] = meta.source
        report["stages_run"] = [s.stage for s in meta.stages]
    if rd.manifest_path.exists():
        records = rd.load_manifest()
        labels = Counter(r.label for r in records)
        report["stages"]["ingest"] = {"videos": len(records), **dict(labels), "mcqs": sum(len(r.mcqs) for r in records)}
        for sampling, done in sorted(rd.sampled_video_ids().items()):
            report["stages"][f"sample {sampling}"] = {"sampled": len(done), "pending": len(records) - len(done)}
    for (stage, reason), n in sorted(rd.reject_summary().items()):
        report["rejects"].setdefault(stage, {})[reason] = n
    if rd.ledger_paths():
        report.update(_ledger_status(rd))
        batches = [job for path in rd.ledger_paths() for job in pending_batches(path)]
        if batches:
            report["pending_batches"] = batches
    from vau_annotate.pipelines.reflect import reflection_stats

    reflection = reflection_stats(rd)
    if reflection is not None:
        report["reflection"] = reflection
    from vau_annotate.pipelines.cot import cot_shape

    shape = cot_shape(rd)
    if shape:
        report["cot shape"] = shape
    return report


def pending_batches(ledger_path: Path) -> list[dict[str, Any]]:
    """Batch jobs not yet final, priced at the batch discount from the tokens answered so far."""
    from vau_annotate.annotate.backends.openai_batch import PRICE_FACTOR
    from vau_annotate.annotate.batch_store import batch_summary
    from vau_annotate.annotate.pricing import PriceTable

    jobs = batch_summary(ledger_path, pending_only=True)
    prices = PriceTable.default()
    for job in jobs:
        provider, model = job["model"].split(":", 1)
        price = prices.lookup(provider, model, job.get("base_url") or None)
        job["cost"] = None if price is None else price.cost(job["input_tokens"], job["output_tokens"]) * PRICE_FACTOR
    return jobs


def _ledger_status(rd: RunDir) -> dict[str, Any]:
    """Calls, cache hits, tokens, cost and failures as recorded in the run's ledgers (all shards')."""
    ledger = rd.open_ledger()
    try:
        out: dict[str, Any] = {"usage": ledger.usage_summary()}
        # per model-backed stage: accepted records on disk; rejected and pending (after a transient
        # failure) items from the ledger
        item_counts = ledger.item_status_counts()
        stages = set(item_counts) | {row["stage"].split(":")[0] for row in out["usage"]}
        for stage in sorted(stages):
            stage_dir = rd.root / stage
            accepted = {"accepted": sum(1 for p in stage_dir.glob("*.json") if not p.name.endswith(".rejected.json"))} if stage_dir.is_dir() else {}
            counts = {**accepted, **item_counts.get(stage, {})}
            if counts:
                out.setdefault("item_stages", {})[stage] = counts
        return out
    finally:
        ledger.close()


def render_status(report: dict[str, Any], console: Console) -> None:
    """Human-readable tables of a `collect_status` report."""
    console.print(f"[bold]run[/] {report['run']}" + (f"  (source: {report['source']})" if report.get("source") else ""))
    stages = dict(report.get("stages", {}))
    stages.update(report.get("item_stages", {}))
    if stages:
        table = Table(title="items per stage")
        table.add_column("stage")
        table.add_column("counts")
        for stage, counts in stages.items():
            table.add_row(stage, ", ".join(f"{k}={v}" for k, v in counts.items()))
        console.print(table)
    else:
        console.print("nothing ingested yet")
    if report.get("rejects"):
        table = Table(title="rejects by reason")
        for column in ("stage", "reason", "items"):
            table.add_column(column)
        for stage, reasons in report["rejects"].items():
            for reason, n in reasons.items():
                table.add_row(stage, reason, str(n))
        console.print(table)
    if report.get("reflection"):
        table = Table(title="reflection (reflect stage)", show_header=False)
        for key, value in report["reflection"].items():
            table.add_row(key, _fmt(value))
        console.print(table)
    for label, shape in report.get("cot shape", {}).items():
        table = Table(title=f"accepted {label} chains (build-cot) vs Vad-Reasoning", show_header=False)
        for key, value in shape.items():
            table.add_row(key, _fmt(value))
        console.print(table)
    usage = report.get("usage") or []
    if usage:
        console.print(usage_table(usage))
    if report.get("pending_batches"):
        table = Table(title="batch jobs still at the provider (a re-run picks them up)")
        for column in ("batch", "model", "status", "requests", "done", "failed", "age", "cost so far $"):
            table.add_column(column)
        for job in report["pending_batches"]:
            table.add_row(job["batch_id"], job["model"], job["status"], str(job["requests"]), str(job["completed"]), str(job["failed"]),
                          f"{job['age_s'] / 3600:.1f} h", f"{job['cost']:.4f}" if job["cost"] is not None else "-")
        console.print(table)


def usage_table(usage: list[dict[str, Any]]) -> Table:
    """One row per stage and model; failures by class get a column only when there are any.

    "requests" counts every request sent (retries and the ones that stopped a run included),
    "failed attempts" every one of them that failed (a call retried 3 times before it was answered
    has 3), "failed calls" the calls that stand failed now.
    """
    failures = any(row["failures"] or row.get("errors") for row in usage)
    table = Table(title="model calls")
    columns = ["stage", "model", "requests", "cached", "failed attempts", "failed calls", "tokens in", "out", "cost $"]
    columns += ["failed attempts by class:code"] if failures else []
    for column in columns:
        table.add_column(column, overflow="fold", justify="left" if column in ("stage", "model", "failed attempts by class:code") else "right")
    for row in usage:
        model = f"{row['provider']}:{Path(row['model']).name if '/' in row['model'] else row['model']}"
        attempts = row.get("failed_attempts", sum(row.get("errors", {}).values()))
        cells = [row["stage"], model, str(row["requests"]), str(row["cache_hits"]), str(attempts), str(row["failed"]),
                 f"{row['input_tokens']:,}", f"{row['output_tokens']:,}", f"{row['cost']:.4f}"]
        table.add_row(*cells, *([_fmt(row.get("errors") or row["failures"])] if failures else []))
    return table


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)
