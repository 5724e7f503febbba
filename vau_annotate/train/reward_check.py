"""`vau-annotate rewards`: score saved completions with the GRPO rewards, outside any trainer.

Useful to check a reward configuration on real replies before a run (does the format reward fire?
does IoU read the spans?), or to score a model's replies on an exported GRPO split. Input is JSONL,
one `{"id": …, "completion": "…"}` per line, each carrying its `row` (the solution columns) or
finding it by `id` in an exported GRPO config (`--data DIR --config grpo_qa --split test`). Lines
that cannot be scored go to the rejects with a reason; the rest are scored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from vau_annotate.train.rewards import combine, resolve

SOLUTION_COLUMNS = ("id", "task", "answer", "options", "span", "duration", "label", "category",
                    "when_source", "span_known", "question", "reflect_task")


@dataclass
class RewardReport:
    """Scored lines, rejected lines (with reasons) and the per-component means."""

    scored: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)

    def means(self) -> dict[str, float]:
        """Mean of `total` and of every component over the scored lines (absent components count 0)."""
        if not self.scored:
            return {}
        names = list(dict.fromkeys(name for line in self.scored for name in line["components"]))
        out = {"total": sum(line["total"] for line in self.scored) / len(self.scored)}
        for name in names:
            out[name] = sum(line["components"].get(name, 0.0) for line in self.scored) / len(self.scored)
        return out


def parse_weights(specs: Iterable[str]) -> dict[str, float] | None:
    """`["accuracy=1", "format_vau_r1=0.5"]` → weights; unknown names or bad numbers raise ValueError."""
    weights: dict[str, float] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep:
            raise ValueError(f"--weight {spec!r}: expected NAME=NUMBER")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--weight {spec!r}: {value!r} is not a number") from None
    if weights:
        try:
            resolve(list(weights))
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
    return weights or None


def load_rows(data: str, config: str, split: str) -> dict[str, dict[str, Any]]:
    """The solution columns of an exported GRPO config, by row id (frames are not decoded)."""
    import datasets

    ds = datasets.load_dataset(data, config, split=split)
    keep = [c for c in SOLUTION_COLUMNS if c in ds.column_names]
    if "id" not in keep:
        raise ValueError(f"{data} [{config}/{split}] has no 'id' column")
    return {row["id"]: row for row in ds.select_columns(keep)}


def score_lines(lines: Iterable[str], rows: Mapping[str, Mapping[str, Any]] | None, weights: Mapping[str, float] | None) -> RewardReport:
    """Score each JSONL line; a line that is not JSON, has no completion, or has no row is rejected."""
    report = RewardReport()
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except json.JSONDecodeError as exc:
            report.rejects.append({"line": number, "reason": f"not JSON: {exc.msg}"})
            continue
        if not isinstance(item, dict) or not isinstance(item.get("completion"), str):
            report.rejects.append({"line": number, "id": _id_of(item), "reason": "no 'completion' string"})
            continue
        row = item.get("row")
        if row is None and rows is not None:
            row = rows.get(str(item.get("id")))
        if not isinstance(row, Mapping) or not row.get("task"):
            why = "no 'row' and no --data to find it in" if rows is None else f"id {item.get('id')!r} is not in the dataset"
            report.rejects.append({"line": number, "id": _id_of(item), "reason": why if row is None else "row has no 'task'"})
            continue
        try:
            totals, components = combine([item["completion"]], [dict(row)], weights)
        except (KeyError, ValueError) as exc:
            report.rejects.append({"line": number, "id": _id_of(item), "reason": str(exc)})
            continue
        report.scored.append({"id": _id_of(item), "total": totals[0], "components": {k: v[0] for k, v in components.items()}})
    return report


def _id_of(item: Any) -> Any:
    return item.get("id") if isinstance(item, dict) else None


def write_report(report: RewardReport, out: Path) -> Path:
    """Scores to `out` (JSONL), rejects beside it as `<out>.rejects.jsonl`; returns the rejects path."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(line) + "\n" for line in report.scored), encoding="utf-8")
    rejects = out.with_name(out.name + ".rejects.jsonl")
    rejects.write_text("".join(json.dumps(line) + "\n" for line in report.rejects), encoding="utf-8")
    return rejects
