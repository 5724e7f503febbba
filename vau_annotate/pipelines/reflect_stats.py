"""What `status` reports about the reflect stage: initial accuracy, SRVAU-R1 transitions, rejects, usage."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from vau_annotate.annotate.rundir import RunDir
from vau_annotate.pipelines.reflect_items import TASKS
from vau_annotate.pipelines.runner import StageStore
from vau_annotate.schemas.reflection import ReflectionRecord

STAGE = "reflect"
ROLES = ("base", "teacher")


def stage_of(role: str) -> str:
    """Ledger stage of one role's calls, so `status` can tell base and teacher usage apart."""
    return f"{STAGE}:{role}"


def reflection_stats(rd: RunDir) -> dict[str, Any] | None:
    """Initial accuracy, transitions, accepted / rejected by gate, tokens and cost of the reflect stage."""
    store = StageStore(rd, STAGE)
    if not store.dir.exists():
        return None
    records = store.accepted(ReflectionRecord)
    rejects = [json.loads(p.read_text()) for p in sorted(store.dir.glob("*.rejected.json"))]
    judged = [(r.task, r.initial.correct) for r in records]
    judged += [(d["detail"]["task"], d["detail"]["initial_correct"]) for d in rejects if "initial_correct" in d.get("detail", {})]
    transitions = Counter(r.transition for r in records)
    transitions.update(d["detail"]["transition"] for d in rejects if "transition" in d.get("detail", {}))
    stats: dict[str, Any] = {
        "accepted": len(records),
        "repaired": sum(r.provenance.repaired for r in records),
        "rejected": len(rejects),
        "initial accuracy": accuracy(judged),
        **{f"initial accuracy ({task})": accuracy([j for j in judged if j[0] == task]) for task in TASKS if any(j[0] == task for j in judged)},
        "transitions": {t: transitions[t] for t in ("C→C", "W→C", "W→W", "C→W")},
        "rejected by gate": dict(Counter(g for d in rejects for g in d.get("detail", {}).get("failed", []))),
        "rejected otherwise": dict(Counter(d["reason"].split(":")[0] for d in rejects if not d.get("detail", {}).get("failed"))),
    }
    stats.update(ledger_usage(rd))
    return stats


def accuracy(judged: list[tuple[str, bool]]) -> str:
    if not judged:
        return "-"
    right = sum(correct for _, correct in judged)
    return f"{right}/{len(judged)} ({right / len(judged):.0%})"


def ledger_usage(rd: RunDir) -> dict[str, Any]:
    """Tokens and cost of the base and teacher calls as the ledger recorded them (all runs)."""
    if not rd.ledger_paths():
        return {}
    with rd.open_ledger() as ledger:
        groups = ledger.usage_summary()
    out: dict[str, Any] = {}
    for role in ROLES:
        rows = [g for g in groups if g["stage"] == stage_of(role)]
        if rows:
            out[f"{role} tokens"] = {"input": sum(g["input_tokens"] for g in rows), "output": sum(g["output_tokens"] for g in rows)}
            out[f"{role} cost"] = round(sum(g["cost"] for g in rows), 6)
    return out
