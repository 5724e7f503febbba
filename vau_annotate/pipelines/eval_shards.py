"""`vau-annotate eval --shard I/N`: one evaluation spread over N processes, and the merge of their shares.

A shard asks only the requests of the videos whose id hashes to it (annotate/shards.py: SHA-256 of
the video id), so a video's questions, both think modes, VAU-R1's second reasoning turn and the
judge calls about it all stay in one shard. Everything a request depends on is decided from the
whole test split before the shard takes its share (the `--limit` cut, the class list of the CLS
prompt, each request's position), so every request a shard sends is the request one process
would send. A shard writes, under OUT/shards/ (no file is written by two processes):

- its model calls to its own ledger, `ledger-I-of-N.sqlite`;
- its rows to `predictions-I-of-N.jsonl`: per request, the line predictions.jsonl will hold, the
  item's ground truth and the request's position among all requests (eval_outputs.py);
- its options, counts and engine usage to `eval-I-of-N.json`, then the marker `eval-I-of-N.done`.

Why a shard writes no metrics.json (nor predictions.jsonl, metrics.md) of its own: accuracy,
mIoU, F1, BLEU/METEOR/ROUGE, VAU-Eval means and pairwise rates are not sums, so the metrics of a
share are no part of the metrics of the whole, and a file called OUT/metrics.json is what users,
`report --eval` and scripts read as *the* result. The files of the whole are written once, when
every shard is done, by `vau-annotate merge --run OUT` (the `--shards N` driver merges by itself):
it orders the shards' rows as one process orders its requests and calls the very code an
unsharded evaluation calls (`write_union`), so the files are the same byte for byte; only the
engines' `usage` in metrics.json is the sum of the shards' (same calls and tokens, summed costs).
While a shard is missing, merge writes nothing of the whole and exits 3 naming it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vau_annotate.annotate.rundir import RunDir, atomic_write_text
from vau_annotate.annotate.shards import SHARDS_DIR, Shard, read_state, set_state
from vau_annotate.pipelines.eval_outputs import STAGE, Row, sum_usage, write_union
from vau_annotate.pipelines.summary import StageSummary


def predictions_path(out: Path, shard: Shard) -> Path:
    return out / SHARDS_DIR / f"predictions-{shard.tag}.jsonl"


def write_shard(out: Path, shard: Shard, rows: list[Row], usage: dict[str, Any], options: dict[str, Any],
                counts: dict[str, Any], summary: StageSummary) -> None:
    """The shard's rows, then its usage and counts, then (last, so a kill leaves no marker) `.done`."""
    atomic_write_text(predictions_path(out, shard), "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    set_state(out, STAGE, shard, usage=usage)
    RunDir(out).record_stage(STAGE, options, counts)  # as a shard: counts into eval-I-of-N.json and the marker
    summary.rejected += sum(1 for row in rows if row["unreadable"] or _failed(row["record"]))
    for role, entry in usage.items():
        summary.counts[f"{role} calls"] = entry.get("calls", 0)
        summary.counts[f"{role} cache hits"] = entry.get("cache_hits", 0)
    summary.notes.append(f"shard {shard}: wrote {predictions_path(out, shard)}; `vau-annotate merge --run {out}` writes "
                         f"predictions.jsonl, metrics.json and metrics.md once all {shard.count} shards are done")


def _failed(record: dict[str, Any]) -> bool:
    return (record.get("error") is not None or (record.get("judge") or {}).get("status") == "failed"
            or (record.get("pairwise") or {}).get("outcome") == "failed")


def is_eval_output(out: Path) -> bool:
    """An eval output directory whose evaluation ran (or runs) as shards."""
    return any((out / SHARDS_DIR).glob(f"{STAGE}-*-of-*.json"))


class ShardOutputMissing(RuntimeError):
    """A shard marked done whose predictions file is gone."""


def merge_eval(out: Path, state: dict[str, Any], summary: StageSummary) -> dict[str, Any]:
    """predictions.jsonl, metrics.json and metrics.md of the whole from the shards' rows
    (`state`: the eval entry of `shard_states(out)`, every shard done). Returns the metrics."""
    count = state["count"]
    rows: list[Row] = []
    usages: list[dict[str, Any]] = []
    for index in range(count):
        shard = Shard(index, count)
        path = predictions_path(out, shard)
        if not path.exists():
            raise ShardOutputMissing(f"shard {shard} of eval is marked done but {path} is missing: run it again with --shard {shard}")
        rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        usages.append((read_state(out, STAGE, shard) or {}).get("usage") or {})
    return write_union(out, state["options"], rows, sum_usage(usages), summary)
