"""Runs one model-backed stage over many items: concurrently, resumably, exactly once per item.

A stage gives an async `process(item) -> Accepted | Rejected` function. The runner skips items
whose completion marker exists (datatrove-style), runs the rest with bounded concurrency, writes
each item's marker atomically the moment it finishes — `RUN/<stage>/<item>.json` for an accepted
record, `RUN/<stage>/<item>.rejected.json` for a reject (also appended to rejects.jsonl) — and
shows a progress bar with accepted / repaired / rejected, calls, tokens and cost. A crash or
kill -9 loses at most the items in flight, whose model calls are already in the ledger, so a
re-run finishes them without paying twice and without writing any record twice.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Generic, Iterable, TypeVar

from pydantic import BaseModel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from vau_annotate.annotate.rundir import RunDir, atomic_write_text, safe_name

T = TypeVar("T")


@dataclass
class Accepted:
    record: BaseModel
    repaired: bool = False


@dataclass
class Rejected:
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)


Outcome = Accepted | Rejected


class StageStore:
    """The per-item completion markers of one stage inside a run directory."""

    def __init__(self, run: RunDir, stage: str) -> None:
        self.run = run
        self.stage = stage
        self.dir = run.root / stage

    def accepted_path(self, item: str) -> Path:
        return self.dir / f"{safe_name(item)}.json"

    def rejected_path(self, item: str) -> Path:
        return self.dir / f"{safe_name(item)}.rejected.json"

    def is_done(self, item: str) -> bool:
        return self.accepted_path(item).exists() or self.rejected_path(item).exists()

    def write(self, item: str, outcome: Outcome) -> None:
        if isinstance(outcome, Accepted):
            self.rejected_path(item).unlink(missing_ok=True)
            atomic_write_text(self.accepted_path(item), outcome.record.model_dump_json(indent=1))
        else:
            atomic_write_text(self.rejected_path(item), json.dumps({"item": item, "reason": outcome.reason, "detail": outcome.detail}, default=str))
            self.run.add_reject(item, self.stage, outcome.reason, **outcome.detail)

    def forget_rejects(self) -> int:
        """Let previously rejected items run again (e.g. after changing a gate or a prompt)."""
        paths = list(self.dir.glob("*.rejected.json")) if self.dir.exists() else []
        for path in paths:
            path.unlink()
        self.run.clear_rejects(self.stage)
        return len(paths)

    def accepted(self, model: type[T]) -> list[T]:
        """Every accepted record of the stage, in item order."""
        if not self.dir.exists():
            return []
        paths = sorted(p for p in self.dir.glob("*.json") if not p.name.endswith(".rejected.json"))
        return [model.model_validate_json(p.read_text()) for p in paths]  # type: ignore[attr-defined]


@dataclass
class RunCounts:
    accepted: int = 0
    repaired: int = 0
    rejected: int = 0
    skipped: int = 0


class StageRunner(Generic[T]):
    """Drive `process` over items with concurrency, markers and a progress bar."""

    def __init__(self, store: StageStore, *, concurrency: int = 8, usage: Callable[[], dict[str, Any]] | None = None, show_progress: bool = True) -> None:
        self.store = store
        self.concurrency = max(1, concurrency)
        self.usage = usage or (lambda: {})
        self.show_progress = show_progress
        self.counts = RunCounts()

    async def run(self, items: Iterable[tuple[str, T]], process: Callable[[T], Awaitable[Outcome]]) -> RunCounts:
        todo = []
        for item_id, item in items:
            if self.store.is_done(item_id):
                self.counts.skipped += 1
            else:
                todo.append((item_id, item))
        with Progress(
            TextColumn(f"[bold]{self.store.stage}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"), disable=not self.show_progress, transient=False,
        ) as progress:
            task = progress.add_task(self.store.stage, total=len(todo), info="")
            queue: asyncio.Queue[tuple[str, T]] = asyncio.Queue()
            for entry in todo:
                queue.put_nowait(entry)

            async def worker() -> None:
                while True:
                    try:
                        item_id, item = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        return
                    outcome = await process(item)
                    self.store.write(item_id, outcome)
                    self._count(outcome)
                    progress.update(task, advance=1, info=self._info())

            workers = [asyncio.create_task(worker()) for _ in range(min(self.concurrency, max(1, len(todo))))]
            try:
                await asyncio.gather(*workers)
            finally:
                for w in workers:
                    w.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
        return self.counts

    def _count(self, outcome: Outcome) -> None:
        if isinstance(outcome, Accepted):
            self.counts.accepted += 1
            self.counts.repaired += int(outcome.repaired)
        else:
            self.counts.rejected += 1

    def _info(self) -> str:
        c = self.counts
        parts = [f"accepted {c.accepted}", f"repaired {c.repaired}", f"rejected {c.rejected}"]
        usage = self.usage()
        if usage:
            parts.append(f"calls {usage.get('calls', 0)} (cached {usage.get('cache_hits', 0)})")
            parts.append(f"tokens {usage.get('input_tokens', 0) + usage.get('output_tokens', 0):,}")
            parts.append(f"${usage.get('cost', 0.0):.4f}")
        return " · ".join(parts)
