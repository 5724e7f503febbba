"""Shards: one stage spread over n processes or machines that share the run directory.

Why this shape (datatrove's): each process gets `(index, count)` and works only on the items whose
stable hash falls to it, so n shards started in any order, on any machines, killed and re-run,
together do each item exactly once. Each shard writes its model calls and item states to its own
ledger (`shards/ledger-I-of-N.sqlite`: SQLite files are not shared between writers on network file
systems), its options and counts to `shards/STAGE-I-of-N.json`, and a completion marker
`shards/STAGE-I-of-N.done` when nothing of its share is left pending. Records (`cot/`, `reflect/`,
`frames/`) are one file per item, so shards never write the same file. Every reading command
(`status`, `export`, `report`, a later unsharded run) reads the union of all ledgers.

Items are assigned by their video id (the part of an item id before `#`), so a video's frames,
chain and reflection items land in the same shard.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHARDS_DIR = "shards"
_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


class ShardError(ValueError):
    """A shard spec out of range, or a shard started with other options than its siblings."""


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def tag(self) -> str:
        return f"{self.index}-of-{self.count}"

    def owns(self, item_id: str) -> bool:
        return shard_of(item_id, self.count) == self.index


def parse_shard(text: str) -> Shard:
    """`I/N` with 0 ≤ I < N (Slurm: `--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT` with `--array=0-(N-1)`)."""
    match = _SPEC.match(text)
    if match is None:
        raise ShardError(f"--shard {text!r}: expected I/N, e.g. 0/4")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1:
        raise ShardError(f"--shard {text}: N must be at least 1")
    if not 0 <= index < count:
        raise ShardError(f"--shard {text} is out of range: I counts from 0, so it must be 0..{count - 1} for N = {count}")
    return Shard(index, count)


def shard_of(item_id: str, count: int) -> int:
    """Stable across machines and Python versions (no `hash()` randomisation)."""
    video_id = item_id.split("#", 1)[0]
    return int.from_bytes(hashlib.sha256(video_id.encode("utf-8")).digest()[:8], "big") % count


_ACTIVE: contextvars.ContextVar[Shard | None] = contextvars.ContextVar("vau_shard", default=None)


def active_shard() -> Shard | None:
    return _ACTIVE.get()


@contextlib.contextmanager
def use_shard(shard: Shard | None) -> Iterator[None]:
    """Run a stage as one shard: its items, its ledger, its completion marker."""
    token = _ACTIVE.set(shard)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def owns(item_id: str) -> bool:
    """Whether the active shard (or an unsharded run: always) handles this item."""
    shard = _ACTIVE.get()
    return shard is None or shard.owns(item_id)


# -- per-shard state files -------------------------------------------------------------------------


def shard_file(run: Path, stage: str, shard: Shard, suffix: str) -> Path:
    return run / SHARDS_DIR / f"{stage}-{shard.tag}.{suffix}"


def _write_json(path: Path, value: dict[str, Any]) -> None:
    """Temp file + rename: a driver polling the shard files never reads one half-written."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(value, fh, indent=1, default=str)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def claim(run: Path, stage: str, shard: Shard, options: dict[str, Any]) -> None:
    """Record this shard's options; refuse if a sibling shard of the stage ran with others or another N."""
    folder = run / SHARDS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    wanted = json.loads(json.dumps(options, default=str))
    for path in sorted(folder.glob(f"{stage}-*-of-*.json")):
        other = _read_json(path)
        if other is None:
            continue
        if other["count"] != shard.count:
            raise ShardError(f"{stage} already ran as {other['count']} shards ({path.name}); this run asks for {shard.count}: "
                             f"use --shard I/{other['count']}, or a new run directory")
        if other["options"] != wanted and other["index"] != shard.index:
            differ = sorted(k for k in set(other["options"]) | set(wanted) if other["options"].get(k) != wanted.get(k))
            raise ShardError(f"shard {shard} of {stage} has other options than shard {other['index']}/{other['count']} "
                             f"({', '.join(differ)}): every shard of a stage must run the same command")
    _write_json(shard_file(run, stage, shard, "json"), {"stage": stage, "index": shard.index, "count": shard.count, "options": wanted})
    shard_file(run, stage, shard, "done").unlink(missing_ok=True)


def finish(run: Path, stage: str, shard: Shard, counts: dict[str, Any], complete: bool) -> None:
    """Store the shard's counts; write its completion marker when nothing of its share is left pending."""
    path = shard_file(run, stage, shard, "json")
    state = _read_json(path) or {"stage": stage, "index": shard.index, "count": shard.count, "options": {}}
    state["counts"] = counts
    _write_json(path, state)
    if complete:
        shard_file(run, stage, shard, "done").write_text("", encoding="utf-8")


def finish_hashes(run: Path, stage: str, shard: Shard, hashes: dict[str, str]) -> None:
    """Keep the prompt hashes a shard used, for `merge` to put into run.json."""
    path = shard_file(run, stage, shard, "json")
    state = _read_json(path) or {"stage": stage, "index": shard.index, "count": shard.count, "options": {}}
    state["prompt_hashes"] = hashes
    _write_json(path, state)


def set_state(run: Path, stage: str, shard: Shard, **fields: Any) -> None:
    """Keep more of a shard's results in its state file (eval: its engines' usage, for `merge`)."""
    path = shard_file(run, stage, shard, "json")
    state = _read_json(path) or {"stage": stage, "index": shard.index, "count": shard.count, "options": {}}
    state.update(fields)
    _write_json(path, state)


def read_state(run: Path, stage: str, shard: Shard) -> dict[str, Any] | None:
    return _read_json(shard_file(run, stage, shard, "json"))


def shard_states(run: Path) -> dict[str, dict[str, Any]]:
    """stage → {count, done: [indices], started: [indices], counts: summed counts} over shard files."""
    out: dict[str, dict[str, Any]] = {}
    folder = run / SHARDS_DIR
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*-of-*.json")):
        state = _read_json(path)
        if state is None:  # gone or unreadable between glob and read: the next poll sees it
            continue
        entry = out.setdefault(state["stage"], {"count": state["count"], "started": [], "done": [], "counts": {},
                                                "options": state.get("options", {}), "prompt_hashes": {}})
        entry["started"].append(state["index"])
        entry["prompt_hashes"].update(state.get("prompt_hashes") or {})
        if shard_file(run, state["stage"], Shard(state["index"], state["count"]), "done").exists():
            entry["done"].append(state["index"])
        for key, value in (state.get("counts") or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                entry["counts"][key] = entry["counts"].get(key, 0) + value
    for entry in out.values():
        entry["missing"] = [i for i in range(entry["count"]) if i not in entry["done"]]
    return out


def ledger_paths(run: Path) -> list[Path]:
    """Every ledger of a run: the unsharded one first, then each shard's."""
    paths = [run / "ledger.sqlite"] if (run / "ledger.sqlite").exists() else []
    folder = run / SHARDS_DIR
    if folder.is_dir():
        paths += sorted(folder.glob("ledger-*-of-*.sqlite"))
    return paths
