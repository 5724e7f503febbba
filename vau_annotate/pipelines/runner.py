"""Runs one model-backed stage over many items: concurrently, resumably, exactly once per item.

A stage gives an async `process(item) -> Accepted | Rejected` function. The runner skips items
that are done (an accepted record `RUN/<stage>/<item>.json`, or a reject in the ledger), runs the
rest with bounded concurrency, and records each item the moment it finishes: an accepted record
is written atomically; a reject is committed to the ledger (reject row + item status in one
transaction), then rendered into rejects.jsonl and `RUN/<stage>/<item>.rejected.json`. A crash or
kill -9 loses at most the items in flight, whose model calls are already in the ledger, so a
re-run finishes them without paying twice and without writing any record twice.

What is *not* a reject: an item whose call failed for a transient reason after every retry
(TransientFailure: 5xx, timeout, connection, rate limit) stays pending and a plain re-run tries it
again; an item cut short by Ctrl-C (CallAbandoned) stays pending too.

Stopping: the first Ctrl-C (or a fatal answer, RunStopped) closes the run's CallGate: no new
request starts, calls already at the provider get `grace_s` seconds to come back and land in the
ledger, then what is left is cancelled. A second Ctrl-C cancels at once. After Ctrl-C the runner
raises StageInterrupted, whose message says what was kept and how to resume.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Generic, Iterable, TypeVar

from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from vau_annotate.annotate.engine import CALL_GATE, CallAbandoned, CallGate, RunStopped, TransientFailure
from vau_annotate.annotate.rundir import RunDir, atomic_write_text, safe_name

T = TypeVar("T")
_STDERR = Console(stderr=True)  # notices about stopping go where errors go, not into the output


@dataclass
class Accepted:
    record: BaseModel
    repaired: bool = False


@dataclass
class Rejected:
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)


Outcome = Accepted | Rejected


class StageInterrupted(KeyboardInterrupt):
    """Ctrl-C ended a stage early; the message says what was kept and how to resume (exit 130)."""

    def __init__(self, message: str, counts: RunCounts) -> None:
        super().__init__(message)
        self.counts = counts

    def __str__(self) -> str:
        return str(self.args[0])


class StageStore:
    """The per-item completion state of one stage: accepted records on disk, rejects in the ledger."""

    def __init__(self, run: RunDir, stage: str) -> None:
        self.run = run
        self.stage = stage
        self.dir = run.root / stage
        self._rejected: set[str] | None = None
        self._pending: set[str] | None = None

    def accepted_path(self, item: str) -> Path:
        return self.dir / f"{safe_name(item)}.json"

    def rejected_path(self, item: str) -> Path:
        """A copy of the item's reject for people browsing the stage folder (the ledger decides)."""
        return self.dir / f"{safe_name(item)}.rejected.json"

    def rejected(self) -> set[str]:
        """Items of this stage that stand rejected, per the ledger (read once, then kept current)."""
        if self._rejected is None:
            self._rejected = self.run.rejected_items(self.stage)
        return self._rejected

    def pending(self) -> set[str]:
        """Items left pending by an earlier transient failure (per the ledger)."""
        if self._pending is None:
            self._pending = set(self.run.pending_items(self.stage))
        return self._pending

    def is_rejected(self, item: str) -> bool:
        return item in self.rejected()

    def is_done(self, item: str) -> bool:
        return self.accepted_path(item).exists() or self.is_rejected(item)

    def mark_pending(self, item: str, why: str) -> None:
        """An item left pending after a transient failure, so `status` can show it and why."""
        with self.run.ledger() as ledger:
            ledger.set_item(self.stage, item, "pending", why)
        self._pending.add(item)

    def write(self, item: str, outcome: Outcome) -> None:
        if isinstance(outcome, Accepted):
            if self.is_rejected(item):
                self.run.clear_rejects(self.stage, {item})
                self.rejected().discard(item)
            self.rejected_path(item).unlink(missing_ok=True)
            atomic_write_text(self.accepted_path(item), outcome.record.model_dump_json(indent=1))
            if item in self.pending():
                with self.run.ledger() as ledger:
                    ledger.forget_item(self.stage, item, "pending")
                self._pending.discard(item)
        else:
            # the ledger commit is the reject; the jsonl line and the marker file render it
            self.run.add_reject(item, self.stage, outcome.reason, **outcome.detail)
            self.rejected().add(item)
            atomic_write_text(self.rejected_path(item), json.dumps({"item": item, "reason": outcome.reason, "detail": outcome.detail}, default=str))

    def sync(self) -> None:
        """Render rejects.jsonl and the marker files again from the ledger (a kill may have cut an
        append short). Cheap: one line per reject."""
        self.run.render_rejects()
        for record in self.run.load_rejects(self.stage):
            path = self.rejected_path(record.item)
            if not path.exists():
                atomic_write_text(path, json.dumps({"item": record.item, "reason": record.reason, "detail": record.detail}, default=str))

    def forget_rejects(self) -> int:
        """Let previously rejected items run again (e.g. after changing a gate or a prompt)."""
        n = len(self.rejected())
        paths = list(self.dir.glob("*.rejected.json")) if self.dir.exists() else []
        for path in paths:
            path.unlink()
        self.run.clear_rejects(self.stage)
        self._rejected = set()
        return n

    def accepted(self, model: type[T]) -> list[T]:
        """Every accepted record of the stage, in item order."""
        if not self.dir.exists():
            return []
        paths = sorted(p for p in self.dir.glob("*.json") if not p.name.endswith(".rejected.json"))
        return [model.model_validate_json(p.read_text()) for p in paths]  # type: ignore[attr-defined]


@dataclass
class RunCounts:
    """What became of the items of one invocation (the summary and the exit status come from it)."""

    accepted: int = 0
    repaired: int = 0
    rejected: int = 0  # rejected in this invocation
    skipped: int = 0  # done before: accepted earlier or rejected earlier
    rejected_before: int = 0  # of the skipped: rejects of an earlier invocation, still standing
    pending: int = 0  # a call failed for a transient reason after every retry: a re-run tries again
    abandoned: int = 0  # cut short by Ctrl-C or a stop: a re-run continues them
    transient: Counter[str] = field(default_factory=Counter)  # why items stayed pending, by error code
    interrupted: bool = False
    usage: dict[str, Any] = field(default_factory=dict)  # the engines' usage when the run ended

    @property
    def rejects_in_scope(self) -> int:
        return self.rejected + self.rejected_before


class StageRunner(Generic[T]):
    """Drive `process` over items with concurrency, completion state, a progress bar and Ctrl-C."""

    def __init__(self, store: StageStore, *, concurrency: int = 8, usage: Callable[[], dict[str, Any]] | None = None,
                 show_progress: bool = True, grace_s: float = 10.0) -> None:
        self.store = store
        self.concurrency = max(1, concurrency)
        self.usage = usage or (lambda: {})
        self.show_progress = show_progress
        self.grace_s = grace_s
        self.counts = RunCounts()
        self._busy = 0  # items being processed right now

    async def run(self, items: Iterable[tuple[str, T]], process: Callable[[T], Awaitable[Outcome]]) -> RunCounts:
        self.store.sync()
        todo = []
        for item_id, item in items:
            if self.store.is_rejected(item_id):
                self.counts.skipped += 1
                self.counts.rejected_before += 1
            elif self.store.is_done(item_id):
                self.counts.skipped += 1
            else:
                todo.append((item_id, item))
        gate = CallGate()
        token = CALL_GATE.set(gate)  # worker tasks copy this context: every engine call they make sees the gate
        try:
            with Progress(
                TextColumn(f"[bold]{self.store.stage}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("{task.fields[info]}"), disable=not self.show_progress, transient=False,
            ) as progress:
                await self._run_todo(todo, process, gate, progress)
        finally:
            CALL_GATE.reset(token)
            self.counts.usage = dict(self.usage())
        if self.counts.interrupted:
            raise StageInterrupted(self._kept_message(len(todo)), self.counts)
        return self.counts

    async def _run_todo(self, todo: list[tuple[str, T]], process: Callable[[T], Awaitable[Outcome]], gate: CallGate, progress: Progress) -> None:
        task = progress.add_task(self.store.stage, total=len(todo), info="")
        queue: asyncio.Queue[tuple[str, T]] = asyncio.Queue()
        for entry in todo:
            queue.put_nowait(entry)

        async def worker() -> None:
            while not gate.closed:
                try:
                    item_id, item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                self._busy += 1
                try:
                    outcome = await process(item)
                except TransientFailure as exc:
                    self.counts.pending += 1
                    self.counts.transient[exc.error.code] += 1
                    self.store.mark_pending(item_id, f"{exc.error.code}: {exc.error}"[:500])
                    continue
                except CallAbandoned:
                    self.counts.abandoned += 1
                    continue
                finally:
                    self._busy -= 1
                self.store.write(item_id, outcome)
                self._count(outcome)
                progress.update(task, advance=1, info=self._info())

        workers = [asyncio.create_task(worker()) for _ in range(min(self.concurrency, max(1, len(todo))))]
        loop = asyncio.get_running_loop()
        interrupts = _SigintCatcher(loop, lambda: self._on_ctrl_c(gate, workers))
        try:
            done, pending = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
            failure = _first_failure(done)
            if failure is not None and pending:
                # a fatal answer: start nothing more, let the calls at the provider land (and count)
                gate.close()
                await asyncio.wait(pending, timeout=self.grace_s)
            elif self.counts.interrupted and pending:
                await asyncio.wait(pending)  # bounded: the grace timer (or a second Ctrl-C) cancels them
            if failure is not None:
                raise failure
        finally:
            interrupts.remove()
            for w in workers:
                w.cancel()
            results = await asyncio.gather(*workers, return_exceptions=True)
            self.counts.abandoned += sum(isinstance(r, asyncio.CancelledError) for r in results)

    def _on_ctrl_c(self, gate: CallGate, workers: list[asyncio.Task[None]]) -> None:
        """First Ctrl-C: close the gate and give calls in flight grace_s; second: cancel now."""
        loop = asyncio.get_running_loop()
        if not self.counts.interrupted:
            self.counts.interrupted = True
            gate.close()
            _STDERR.print(
                f"[yellow]Ctrl-C:[/] no new calls start; waiting up to {self.grace_s:g} s for the {self._busy} item(s) "
                "in flight to record their calls in the ledger (Ctrl-C again to stop at once)"
            )
            loop.call_later(self.grace_s, _cancel, workers)
        else:
            _STDERR.print("[yellow]Ctrl-C again:[/] stopping at once")
            _cancel(workers)

    def _kept_message(self, todo: int) -> str:
        c = self.counts
        finished = c.accepted + c.rejected
        calls = c.usage.get("calls", 0)
        left = todo - finished - c.pending
        return (
            f"interrupted: kept {finished} finished item(s) of {todo} (accepted {c.accepted}, rejected {c.rejected}) "
            f"and every answered call ({calls} made in this run) in the ledger; {left} item(s) left pending. "
            "Run the same command again to resume: finished items are skipped and answered calls come from the ledger."
        )

    def _count(self, outcome: Outcome) -> None:
        if isinstance(outcome, Accepted):
            self.counts.accepted += 1
            self.counts.repaired += int(outcome.repaired)
        else:
            self.counts.rejected += 1

    def _info(self) -> str:
        c = self.counts
        parts = [f"accepted {c.accepted}", f"repaired {c.repaired}", f"rejected {c.rejected}"]
        if c.pending:
            parts.append(f"pending {c.pending}")
        usage = self.usage()
        if usage:
            parts.append(f"calls {usage.get('calls', 0)} (cached {usage.get('cache_hits', 0)})")
            parts.append(f"tokens {usage.get('input_tokens', 0) + usage.get('output_tokens', 0):,}")
            parts.append(f"${usage.get('cost', 0.0):.4f}")
        return " · ".join(parts)


class _SigintCatcher:
    """Ctrl-C as an event-loop callback while a stage runs (main thread only; elsewhere a no-op).

    Installing it replaces asyncio.run's own handler, which would cancel the main task and with it
    every HTTP call already paid for; removing it restores Python's default (KeyboardInterrupt).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self.loop = loop
        self.active = False
        if threading.current_thread() is threading.main_thread():
            try:
                loop.add_signal_handler(signal.SIGINT, callback)
                self.active = True
            except (NotImplementedError, RuntimeError, ValueError):  # e.g. Windows' proactor loop
                self.active = False

    def remove(self) -> None:
        if self.active:
            self.loop.remove_signal_handler(signal.SIGINT)
            self.active = False


def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()


def _first_failure(done: set[asyncio.Task[None]]) -> BaseException | None:
    """The exception that ended a worker (RunStopped first), or None."""
    failures = [t.exception() for t in done if not t.cancelled() and t.exception() is not None]
    stopped = [f for f in failures if isinstance(f, RunStopped)]
    return (stopped or failures or [None])[0]
