"""`vau-annotate merge`: what the shards of a run did, folded into run.json and rejects.jsonl.

Shards write their own ledgers and state files (annotate/shards.py); every reading command already
sees their union. `merge` makes the run directory say so on its own: rejects.jsonl rendered from
every ledger, one run.json stage entry per sharded stage (summed counts, the shards' options,
`shards: K/N done`), and the list of shards still missing — the exit status is 3 (partial) while
any shard has not completed its share. On an eval output directory whose evaluation ran as shards
it also writes predictions.jsonl, metrics.json and metrics.md of the whole once every shard is done
(eval_shards.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vau_annotate.annotate.rundir import RunDir, atomic_write_text
from vau_annotate.annotate.shards import SHARDS_DIR, shard_states
from vau_annotate.pipelines.summary import StageSummary


def merge_run(run: Path) -> tuple[StageSummary, dict[str, dict[str, Any]]]:
    rd = RunDir(run)
    states = shard_states(run)
    rd.render_rejects()
    merged_path = run / SHARDS_DIR / "merged.json"
    merged = json.loads(merged_path.read_text(encoding="utf-8")) if merged_path.exists() else {}
    summary = StageSummary("merge", counts={"sharded stages": len(states)})
    missing_total = 0
    for stage, state in states.items():
        done = f"{len(state['done'])}/{state['count']}"
        summary.counts[f"{stage} shards done"] = done
        missing_total += len(state["missing"])
        if state["missing"]:
            summary.notes.append(f"{stage}: shards {', '.join(str(i) for i in state['missing'])} of {state['count']} have not finished "
                                 f"(run them again with --shard I/{state['count']})")
        fingerprint = {"done": sorted(state["done"]), "counts": state["counts"]}
        if merged.get(stage) != fingerprint:  # record each new state once, not on every merge
            counts = {**state["counts"], "shards": state["count"], "shards done": len(state["done"])}
            rd.record_stage(stage, {**state["options"], "shards": state["count"]}, counts,
                            **({"prompt_hashes": {**rd.load_meta().prompt_hashes, **state["prompt_hashes"]}} if state["prompt_hashes"] else {}))
            merged[stage] = fingerprint
    if states:
        atomic_write_text(merged_path, json.dumps(merged, indent=1))
    _merge_eval_outputs(run, states, summary)
    summary.rejected = len(rd.load_rejects())
    summary.counts["rejects"] = summary.rejected
    summary.pending = missing_total
    return summary, states


def _merge_eval_outputs(run: Path, states: dict[str, dict[str, Any]], summary: StageSummary) -> None:
    """An eval directory (`eval --shard I/N` ran into it): the files of the whole, or why not yet."""
    from vau_annotate.pipelines.eval_shards import STAGE, ShardOutputMissing, is_eval_output, merge_eval

    state = states.get(STAGE)
    if state is None or not is_eval_output(run):
        return
    if state["missing"]:
        summary.notes.append(f"eval: predictions.jsonl and metrics.json of the whole are written once shards "
                             f"{', '.join(str(i) for i in state['missing'])} of {state['count']} are done")
        return
    written = StageSummary(STAGE)
    try:
        metrics = merge_eval(run, state, written)
    except ShardOutputMissing as exc:
        summary.notes.append(f"eval: {exc}")
        summary.pending += 1
        return
    summary.counts["eval items"] = metrics.get("items", 0)
    summary.notes.extend(written.notes)
