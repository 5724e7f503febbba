"""What `vau-annotate eval` writes: predictions.jsonl, metrics.json and metrics.md, from *rows*.

A row is one line of predictions.jsonl together with what the metrics need and the line does not
say (the item's ground truth) and where the line goes (`position`: the request's place among all
requests of the evaluation, before any shard took its share). An unsharded evaluation and
`vau-annotate merge` over the shards of one both call `write_union` on rows in this one JSON
shape, so the union of the shards' rows gives the very same files as one process: the same lines
in the same order, and metrics computed by the same code from the same values.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Iterator

from vau_annotate.annotate.rundir import RunDir, atomic_write_text
from vau_annotate.pipelines.eval_items import EvalItem
from vau_annotate.pipelines.eval_metrics import compute_metrics
from vau_annotate.pipelines.eval_report import render_markdown
from vau_annotate.pipelines.eval_tasks import Ask
from vau_annotate.pipelines.summary import StageSummary
from vau_annotate.prompts import Prompt

STAGE = "eval"
Row = dict[str, Any]  # {"position": int, "unreadable": bool, "item": {EvalItem fields}, "record": {predictions.jsonl line}}


@dataclass
class ItemResult:
    """Everything known about one (item, mode) after the run: one line of predictions.jsonl."""

    ask: Ask
    raw: str | None = None
    error: str | None = None
    analysis: str | None = None  # reasoning: the second turn's reply
    opponent: str | None = None  # pairwise: the opponent's reply (reasoning: both turns)
    prediction: Any = None
    scores: dict[str, Any] = field(default_factory=dict)
    judge: dict[str, Any] | None = None
    pairwise: dict[str, Any] | None = None

    @property
    def text(self) -> str:
        """The reply as judges and text metrics read it (reasoning: description + analysis)."""
        if self.ask.item.task == "reasoning":
            return f"Description: {self.raw or ''}\nAnalysis: {self.analysis or ''}"
        return self.raw or ""

    def record(self, model: str) -> dict[str, Any]:
        item = self.ask.item
        raw: Any = {"description": self.raw, "analysis": self.analysis} if item.task == "reasoning" else self.raw
        out = {
            "id": item.id, "video_id": item.video_id, "task": item.task, "sub_task": item.sub_task or None, "mode": self.ask.mode or None,
            "prompt": self.ask.prompt.name, "prompt_hash": self.ask.prompt.hash, "model": model, "raw": raw,
            "prediction": self.prediction, "scores": self.scores, "error": self.error,
        }
        if self.judge is not None:
            out["judge"] = self.judge
        if self.pairwise is not None:
            out["pairwise"] = self.pairwise
        return out


# -- rows ------------------------------------------------------------------------------------------------

def item_fields(item: EvalItem) -> dict[str, Any]:
    """The item's ground truth as JSON values (its video loader stays behind)."""
    return {f.name: getattr(item, f.name) for f in fields(item) if f.name != "loader"}


def item_from_fields(values: dict[str, Any]) -> EvalItem:
    span = values.get("span")
    return EvalItem(**{**values, "span": tuple(span) if span is not None else None, "options": tuple(values.get("options") or ())})


def unreadable_record(ask: Ask, reason: str, model: str) -> dict[str, Any]:
    item = ask.item
    return {"id": item.id, "video_id": item.video_id, "task": item.task, "mode": ask.mode or None, "model": model,
            "raw": None, "prediction": None, "scores": {}, "error": reason}


def make_rows(results: Iterable[ItemResult], unreadable: Iterable[tuple[Ask, str]], positions: dict[str, int], model: str) -> list[Row]:
    """The rows of this process's requests, as JSON values (what a shard file holds, read back)."""
    rows: list[Row] = [{"position": positions[r.ask.key], "unreadable": False, "item": item_fields(r.ask.item), "record": r.record(model)}
                       for r in results]
    rows += [{"position": positions[ask.key], "unreadable": True, "item": item_fields(ask.item), "record": unreadable_record(ask, reason, model)}
             for ask, reason in unreadable]
    return json.loads(json.dumps(rows, ensure_ascii=False, default=str))


def ordered(rows: Iterable[Row]) -> list[Row]:
    """predictions.jsonl order: the answered requests in request order, then the unreadable ones."""
    return sorted(rows, key=lambda row: (bool(row["unreadable"]), int(row["position"])))


def result_of(row: Row) -> ItemResult:
    """An answered row back as the ItemResult the metrics read (the prompt as recorded: name and hash)."""
    record = row["record"]
    item = item_from_fields(row["item"])
    ask = Ask(item=item, mode=record.get("mode") or "", prompt=Prompt(record.get("prompt") or "", "", record.get("prompt_hash") or "", ()))
    raw = record.get("raw")
    description, analysis = (raw.get("description"), raw.get("analysis")) if item.task == "reasoning" and isinstance(raw, dict) else (raw, None)
    return ItemResult(ask=ask, raw=description, analysis=analysis, error=record.get("error"), prediction=record.get("prediction"),
                      scores=record.get("scores") or {}, judge=record.get("judge"), pairwise=record.get("pairwise"))


# -- rejects ---------------------------------------------------------------------------------------------

def add_rejects(results: Iterable[ItemResult], unreadable: Iterable[tuple[str, Ask, str]], rd: RunDir) -> None:
    """Every per-item failure of this process into its ledger and rejects.jsonl, with its reason."""
    for key, ask, reason in unreadable:
        rd.add_reject(key, STAGE, f"video could not be read: {reason}", task=ask.item.task, video_id=ask.item.video_id)
    for result in results:
        item = result.ask.item
        if result.error is not None:
            rd.add_reject(result.ask.key, STAGE, f"model call failed: {result.error}", task=item.task, mode=result.ask.mode)
        if result.judge is not None and result.judge.get("status") == "failed":
            rd.add_reject(result.ask.key, STAGE, f"VAU-Eval judge: {result.judge.get('reason')}", task=item.task)
        if result.pairwise is not None and result.pairwise.get("outcome") == "failed":
            rd.add_reject(result.ask.key, STAGE, f"pairwise: {result.pairwise.get('reason') or 'no [[A]]/[[B]]/[[C]] verdict'}", task=item.task)


def failure_counts(rows: list[Row]) -> dict[str, int]:
    """Failures by kind, in the order they first occur (the order metrics.json lists them)."""
    failures: dict[str, int] = defaultdict(int)
    for row in rows:
        if row["unreadable"]:
            continue
        record = row["record"]
        if record.get("error") is not None:
            failures["model call failed"] += 1
        if (record.get("judge") or {}).get("status") == "failed":
            failures["judge failed"] += 1
        if (record.get("pairwise") or {}).get("outcome") == "failed":
            failures["pairwise failed"] += 1
    unreadable = sum(1 for row in rows if row["unreadable"])
    if unreadable:
        failures["video unreadable"] += unreadable
    return dict(failures)


def sum_usage(usages: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Per-role engine usage of several processes added up (numbers summed, counters merged)."""
    total: dict[str, dict[str, Any]] = {}
    for usage in usages:
        for role, entry in usage.items():
            into = total.setdefault(role, {})
            for key, value in entry.items():
                if isinstance(value, dict):
                    merged = into.setdefault(key, {})
                    for name, count in value.items():
                        merged[name] = merged.get(name, 0) + count
                elif isinstance(value, (int, float)) and not isinstance(value, bool):
                    into[key] = into.get(key, 0) + value
                else:
                    into.setdefault(key, value)
    return total


# -- the files of the whole ------------------------------------------------------------------------------

def write_union(out: Path, options: dict[str, Any], rows: list[Row], usage: dict[str, Any], summary: StageSummary) -> dict[str, Any]:
    """predictions.jsonl (one line per item and mode), metrics.json and metrics.md from every row of
    the evaluation. `options` is EvalOptions.recorded() (as JSON values)."""
    rows = ordered(rows)
    lines = [json.dumps(row["record"], ensure_ascii=False, default=str) for row in rows]
    atomic_write_text(out / "predictions.jsonl", "\n".join(lines) + ("\n" if lines else ""))
    results = [result_of(row) for row in rows if not row["unreadable"]]
    unreadable_items = len({(row["item"]["task"], row["item"]["id"]) for row in rows if row["unreadable"]})
    failures = failure_counts(rows)
    metrics = compute_metrics(results, unreadable_items)
    metrics = {"model": options["model"], "data": options["data"], "options": options, **metrics, "failures": failures, "usage": usage}
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, ensure_ascii=False, default=str))
    atomic_write_text(out / "metrics.md", render_markdown(metrics))
    summary.counts.update({f"failed ({k})": v for k, v in failures.items()})
    summary.rejected += sum(failures.values())
    for role, entry in usage.items():
        summary.counts[f"{role} calls"] = entry.get("calls", 0)
        summary.counts[f"{role} cache hits"] = entry.get("cache_hits", 0)
    summary.notes.append(f"wrote {out / 'predictions.jsonl'}, {out / 'metrics.json'} and {out / 'metrics.md'}")
    return metrics


def iter_predictions(out: Path) -> Iterator[dict[str, Any]]:
    """The lines of OUT/predictions.jsonl (for reports and tests)."""
    with (out / "predictions.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)
