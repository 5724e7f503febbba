"""The run's SQLite ledger: every model call made, per-item stage status, and usage counters.

Why SQLite: a run must survive `kill -9` without losing an answer it paid for, and a re-run must
find each answer again in microseconds. One small file in the run directory does both.

Durability: the database runs in WAL mode with `synchronous=NORMAL`, and every answered call is
its own committed transaction. A commit in WAL mode has written the frame to the WAL file before
`commit()` returns, so a killed *process* (SIGKILL, crash, Ctrl-C) loses nothing committed; only a
power cut or OS crash may roll back the last few commits (`synchronous=FULL` closes that gap at
the price of an fsync per call — pass `synchronous="FULL"`).

Concurrency: sqlite3 connections must not cross threads or `fork()`, so the ledger keeps one
connection per (process, thread) and opens it lazily. Other processes may use the same file at
the same time; writers wait up to `timeout` seconds for the lock (busy timeout).

Tables
    calls   one row per call key: the answer (or the last failure) of that exact request.
    errors  one count per (stage, provider, model, error class, code) of every failed attempt,
            retried ones included, so `status` can show what went wrong across runs.
    hits    per (stage, provider, model): how many calls were answered from this ledger.
    items   per (stage, item): pending / done / rejected, for pipelines that resume.
    rejects one row per reject (stage, item, reason, detail JSON), in the order they happened;
            an item may have several (e.g. one per sampling policy). The one source of truth for
            rejects: a reject and its item's "rejected" status are one transaction, and
            `rejects.jsonl` is rendered from this table (see rundir.py).
    unstored per (stage, provider, model): requests sent whose call has no row in `calls` (the
            attempts of a call that stopped the run), so `status` counts every request.
    meta    small facts about the ledger itself (e.g. that an older rejects.jsonl was imported).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, NamedTuple, Sequence

from vau_annotate.annotate.backends.base import ImagePart, Request, TextPart, VideoPart

SCHEMA_VERSION = 2  # 2: rejects, unstored and meta tables (created on open; a v1 file gains them)
ITEM_STATUSES = ("pending", "done", "rejected")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_name TEXT NOT NULL DEFAULT '',
    prompt_hash TEXT NOT NULL DEFAULT '',
    item TEXT NOT NULL DEFAULT '',
    stage TEXT NOT NULL DEFAULT '',
    text TEXT,
    finish_reason TEXT,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0,
    latency_s REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    error_class TEXT,
    error_code TEXT,
    error TEXT,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_stage ON calls (stage, provider, model);
CREATE TABLE IF NOT EXISTS errors (
    stage TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    error_class TEXT NOT NULL,
    error_code TEXT NOT NULL,
    count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (stage, provider, model, error_class, error_code)
);
CREATE TABLE IF NOT EXISTS hits (
    stage TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (stage, provider, model)
);
CREATE TABLE IF NOT EXISTS items (
    stage TEXT NOT NULL,
    item TEXT NOT NULL,
    status TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    updated REAL NOT NULL,
    PRIMARY KEY (stage, item)
);
CREATE TABLE IF NOT EXISTS rejects (
    stage TEXT NOT NULL,
    item TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}',
    time TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS rejects_item ON rejects (stage, item);
CREATE TABLE IF NOT EXISTS unstored (
    stage TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (stage, provider, model)
);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class RejectRow(NamedTuple):
    """One row of `rejects` (detail as JSON text; rundir.py turns it into a RejectRecord)."""

    stage: str
    item: str
    reason: str
    detail: str = "{}"
    time: str = ""


class CallRecord(NamedTuple):
    """One row of `calls`: the answer to a request, or how it last failed.

    A NamedTuple rather than a frozen dataclass: a warm re-run builds one per cache hit, and a
    tuple is built straight from the sqlite row at a fraction of the cost.
    """

    key: str
    provider: str
    model: str
    prompt_name: str = ""
    prompt_hash: str = ""
    item: str = ""
    stage: str = ""
    text: str | None = None
    finish_reason: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    latency_s: float = 0.0
    attempts: int = 1
    error_class: str | None = None
    error_code: str | None = None
    error: str | None = None
    created: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error_class is None


_CALL_COLUMNS = CallRecord._fields

# A failure row may be replaced by a later answer (or a later failure); an answer is never replaced:
# it was paid for, and a second process racing on the same key must not overwrite it.
_UPSERT_CALL = f"""
INSERT INTO calls ({", ".join(_CALL_COLUMNS)}) VALUES ({", ".join("?" * len(_CALL_COLUMNS))})
ON CONFLICT(key) DO UPDATE SET
    item = excluded.item, stage = excluded.stage, text = excluded.text, finish_reason = excluded.finish_reason,
    input_tokens = excluded.input_tokens, output_tokens = excluded.output_tokens, cost = excluded.cost,
    latency_s = excluded.latency_s, attempts = calls.attempts + excluded.attempts,
    error_class = excluded.error_class, error_code = excluded.error_code, error = excluded.error,
    created = excluded.created
WHERE calls.error_class IS NOT NULL
"""

_SELECT_CALL = f"SELECT {', '.join(_CALL_COLUMNS)} FROM calls WHERE key = ?"
_SELECT_MANY = f"SELECT {', '.join(_CALL_COLUMNS)} FROM calls WHERE key IN"


# -- call keys -------------------------------------------------------------------------------

# one encoder for all keys: json.dumps with options builds a new encoder per call (hot on cache hits)
_KEY_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _part_key(part: TextPart | ImagePart | VideoPart) -> list[Any]:
    """A part as it enters the key: text verbatim, media by content hash (never the bytes)."""
    if isinstance(part, TextPart):
        return ["text", part.text]
    if isinstance(part, ImagePart):
        return ["image", part.mime, part.digest]
    if isinstance(part, VideoPart):
        return ["video", len(part.frames), part.digest]
    raise TypeError(f"unknown message part {type(part).__name__}")


def call_key(provider: str, model: str, request: Request) -> str:
    """The identity of a call: same key ⇔ same provider, model, prompt, rendered content and sampling.

    The prompt's content hash is part of it, so editing a prompt file invalidates exactly the
    calls it rendered; media enter by digest so the key costs one hash per frame, not a copy.
    """
    params = request.params
    payload = [
        provider.lower(),
        model,
        request.prompt_name,
        request.prompt_hash,
        [[m.role, [_part_key(p) for p in m.parts]] for m in request.messages],
        [params.max_tokens, params.temperature, params.top_p, params.seed, list(params.stop)],
    ]
    return hashlib.sha256(_KEY_ENCODER.encode(payload).encode("utf-8")).hexdigest()


# -- the ledger ------------------------------------------------------------------------------

# Bumped in every forked child: a connection opened before the fork belongs to the parent and must
# not be used (nor closed) by the child. Cheaper than comparing os.getpid() on every access.
_fork_generation = 0


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Ledger:
    """The run's ledger file. Cheap to create; connections open on first use in each thread."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0, synchronous: str = "NORMAL",
                 also_read: Sequence[str | os.PathLike[str]] = ()) -> None:
        if synchronous.upper() not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be NORMAL or FULL")
        self.path = Path(path)
        # Other ledgers of the same run (shards): answers, item states, rejects and usage are read
        # from all of them (see annotate/shards.py); writes go to `path` only.
        self.also_read = [Path(p) for p in also_read if Path(p) != self.path]
        self.timeout = timeout
        self.synchronous = synchronous.upper()
        self._local = threading.local()
        self._schema_lock = threading.Lock()
        self._schema_ready = False

    # connections -----------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        enable_wal(conn, self.timeout)
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        self._ensure_schema(conn)
        return conn

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        with self._schema_lock:
            if self._schema_ready:
                return
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"{self.path} was written by a newer vau-annotate (ledger schema {version})")
            with _transaction(conn):
                _run_script(conn, _SCHEMA)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._schema_ready = True

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection; a forked child gets its own instead of the parent's."""
        local = self._local
        if getattr(local, "generation", None) != _fork_generation:
            local.conn = self._connect()
            local.generation = _fork_generation
        return local.conn

    def readers(self) -> list[sqlite3.Connection]:
        """This ledger's connection, then read-only ones to every `also_read` ledger that exists."""
        local = self._local
        conns = [self.conn]
        if getattr(local, "others", None) is None:
            local.others = []
            for path in self.also_read:
                if path.exists():
                    other = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=self.timeout)
                    other.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
                    local.others.append(other)
        return conns + local.others

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        local = self._local
        if getattr(local, "generation", None) == _fork_generation:
            local.conn.close()
        for other in getattr(local, "others", None) or []:
            other.close()
        local.others = None
        local.generation = None
        local.conn = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # calls -----------------------------------------------------------------------------
    def get(self, key: str) -> CallRecord | None:
        for conn in self.readers():
            row = conn.execute(_SELECT_CALL, (key,)).fetchone()
            if row:
                return CallRecord._make(row)
        return None

    def get_many(self, keys: Sequence[str]) -> dict[str, CallRecord]:
        """The stored calls among `keys`, in one query per 500 keys (a warm re-run's fast path)."""
        found: dict[str, CallRecord] = {}
        for conn in self.readers():
            missing = [k for k in keys if k not in found]
            for start in range(0, len(missing), 500):
                chunk = missing[start:start + 500]
                sql = f"{_SELECT_MANY} ({','.join('?' * len(chunk))})"
                for row in conn.execute(sql, chunk):
                    found[row[0]] = CallRecord._make(row)
        return found

    def put(self, record: CallRecord, errors: Iterable[tuple[str, str]] = ()) -> None:
        """Commit one call (and the failed attempts it took) as one transaction: durable on return."""
        conn = self.conn
        with _transaction(conn):
            conn.execute(_UPSERT_CALL, record)
            _add_errors(conn, record.stage, record.provider, record.model, errors)

    def add_errors(self, stage: str, provider: str, model: str, errors: Sequence[tuple[str, str]], *, unstored: bool = True) -> None:
        """Count failed attempts that belong to no stored call (e.g. the one that stopped the run);
        with `unstored`, they are also counted as requests, since no `calls` row holds them."""
        conn = self.conn
        with _transaction(conn):
            _add_errors(conn, stage, provider, model, errors)
            if unstored and errors:
                conn.execute(
                    "INSERT INTO unstored (stage, provider, model, count) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(stage, provider, model) DO UPDATE SET count = count + excluded.count",
                    (stage, provider, model, len(errors)),
                )

    def add_hits(self, counts: Mapping[tuple[str, str, str], int]) -> None:
        """Add cache-hit counts per (stage, provider, model); the engine flushes them in batches."""
        rows = [(s, p, m, n) for (s, p, m), n in counts.items() if n]
        if not rows:
            return
        conn = self.conn
        with _transaction(conn):
            conn.executemany(
                "INSERT INTO hits (stage, provider, model, count) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(stage, provider, model) DO UPDATE SET count = count + excluded.count",
                rows,
            )

    def iter_calls(self, stage: str | None = None) -> Iterator[CallRecord]:
        sql = f"SELECT {', '.join(_CALL_COLUMNS)} FROM calls"
        args: tuple[Any, ...] = ()
        if stage is not None:
            sql += " WHERE stage = ?"
            args = (stage,)
        for row in self.conn.execute(sql + " ORDER BY created", args):
            yield CallRecord._make(row)

    # items -----------------------------------------------------------------------------
    def set_item(self, stage: str, item: str, status: str, detail: str = "") -> None:
        if status not in ITEM_STATUSES:
            raise ValueError(f"item status must be one of {ITEM_STATUSES}, not {status!r}")
        conn = self.conn
        with _transaction(conn):
            conn.execute(
                "INSERT INTO items (stage, item, status, detail, updated) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(stage, item) DO UPDATE SET status = excluded.status, detail = excluded.detail, "
                "updated = excluded.updated",
                (stage, item, status, detail, time.time()),
            )

    def forget_item(self, stage: str, item: str, status: str) -> None:
        """Drop an item's row if it has this status (e.g. "pending" once the item is done)."""
        conn = self.conn
        with _transaction(conn):
            conn.execute("DELETE FROM items WHERE stage = ? AND item = ? AND status = ?", (stage, item, status))

    def item_status(self, stage: str, item: str) -> str | None:
        for conn in self.readers():
            row = conn.execute("SELECT status FROM items WHERE stage = ? AND item = ?", (stage, item)).fetchone()
            if row:
                return row[0]
        return None

    def items(self, stage: str, status: str | None = None) -> dict[str, str]:
        """item → status for a stage (optionally only one status)."""
        sql, args = "SELECT item, status FROM items WHERE stage = ?", [stage]
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        out: dict[str, str] = {}
        for conn in reversed(self.readers()):  # this ledger's state wins
            out.update(conn.execute(sql, args).fetchall())
        return out

    def item_status_counts(self) -> dict[str, dict[str, int]]:
        """stage → status → count, for `status`."""
        out: dict[str, dict[str, int]] = {}
        for conn in self.readers():  # shards hold disjoint items
            for stage, status, n in conn.execute("SELECT stage, status, COUNT(*) FROM items GROUP BY stage, status"):
                out.setdefault(stage, {})[status] = out.get(stage, {}).get(status, 0) + n
        return out

    # rejects ---------------------------------------------------------------------------
    def add_rejects(self, rows: Iterable[RejectRow]) -> None:
        """Record rejects and mark their items rejected, all in one transaction."""
        rows = list(rows)
        if not rows:
            return
        now = time.time()
        conn = self.conn
        with _transaction(conn):
            conn.executemany("INSERT INTO rejects (stage, item, reason, detail, time) VALUES (?, ?, ?, ?, ?)", rows)
            conn.executemany(
                "INSERT INTO items (stage, item, status, detail, updated) VALUES (?, ?, 'rejected', ?, ?) "
                "ON CONFLICT(stage, item) DO UPDATE SET status = 'rejected', detail = excluded.detail, updated = excluded.updated",
                [(row.stage, row.item, row.reason, now) for row in rows],
            )

    def clear_rejects(self, stage: str, items: Iterable[str] | None = None, detail: Mapping[str, Any] | None = None) -> int:
        """Forget rejects of a stage — all, those of the given items, and/or only those whose detail
        has every key/value of `detail` (e.g. one sampling policy's) — so those items run again.
        An item whose last reject goes is no longer "rejected"."""
        wanted = None if items is None else set(items)
        conn = self.conn
        with _transaction(conn):
            doomed: list[tuple[int, str]] = []
            for rowid, item, text in conn.execute("SELECT rowid, item, detail FROM rejects WHERE stage = ?", (stage,)):
                if wanted is not None and item not in wanted:
                    continue
                if detail and not _detail_matches(text, detail):
                    continue
                doomed.append((rowid, item))
            conn.executemany("DELETE FROM rejects WHERE rowid = ?", [(rowid,) for rowid, _ in doomed])
            for item in {item for _, item in doomed}:
                if conn.execute("SELECT 1 FROM rejects WHERE stage = ? AND item = ? LIMIT 1", (stage, item)).fetchone() is None:
                    conn.execute("DELETE FROM items WHERE stage = ? AND item = ? AND status = 'rejected'", (stage, item))
            return len(doomed)

    def rejects(self, stage: str | None = None) -> list[RejectRow]:
        """Reject rows in the order they happened (all stages, or one)."""
        sql = "SELECT stage, item, reason, detail, time FROM rejects"
        args: tuple[Any, ...] = ()
        if stage is not None:
            sql += " WHERE stage = ?"
            args = (stage,)
        rows = [RejectRow._make(row) for conn in self.readers() for row in conn.execute(sql + " ORDER BY rowid", args)]
        return sorted(rows, key=lambda row: row.time) if self.also_read else rows

    def rejected_items(self, stage: str) -> set[str]:
        return {row[0] for conn in self.readers() for row in conn.execute("SELECT DISTINCT item FROM rejects WHERE stage = ?", (stage,))}

    def get_meta(self, name: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def set_meta(self, name: str, value: str) -> None:
        conn = self.conn
        with _transaction(conn):
            conn.execute("INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value", (name, value))

    # usage -----------------------------------------------------------------------------
    def usage_summary(self) -> list[dict[str, Any]]:
        """One row per (stage, provider, model): requests, answers, cache hits, tokens, cost, failures.

        `requests` counts every request sent (retries included, and the attempts of a call that
        stopped the run, which has no `calls` row); `answered`/`failed` count distinct calls by
        their current state; `failures` is calls failed now, by error class; `errors` counts every
        failed attempt by `class:code`, retried ones included, and `failed_attempts` is their sum. Rows are plain data
        so `status --json` can print them as they are.
        """
        groups: dict[tuple[str, str, str], dict[str, Any]] = {}
        for conn in self.readers():
            self._add_usage(conn, groups)
        for group in groups.values():
            group["failed_attempts"] = sum(group["errors"].values())
        return [groups[k] for k in sorted(groups)]

    @staticmethod
    def _add_usage(conn: sqlite3.Connection, groups: dict[tuple[str, str, str], dict[str, Any]]) -> None:
        for stage, provider, model, ok, n, requests, tin, tout, cost in conn.execute(
            "SELECT stage, provider, model, error_class IS NULL, COUNT(*), SUM(attempts), SUM(input_tokens), "
            "SUM(output_tokens), SUM(cost) FROM calls GROUP BY stage, provider, model, error_class IS NULL"
        ):
            group = _group(groups, stage, provider, model)
            group["answered" if ok else "failed"] += n
            group["requests"] += requests or 0
            group["input_tokens"] += tin or 0
            group["output_tokens"] += tout or 0
            group["cost"] += cost or 0.0
        for stage, provider, model, error_class, n in conn.execute(
            "SELECT stage, provider, model, error_class, COUNT(*) FROM calls WHERE error_class IS NOT NULL "
            "GROUP BY stage, provider, model, error_class"
        ):
            failures = _group(groups, stage, provider, model)["failures"]
            failures[error_class] = failures.get(error_class, 0) + n
        for stage, provider, model, error_class, code, n in conn.execute(
            "SELECT stage, provider, model, error_class, error_code, count FROM errors"
        ):
            errors = _group(groups, stage, provider, model)["errors"]
            errors[f"{error_class}:{code}"] = errors.get(f"{error_class}:{code}", 0) + n
        for stage, provider, model, n in conn.execute("SELECT stage, provider, model, count FROM hits"):
            _group(groups, stage, provider, model)["cache_hits"] += n
        for stage, provider, model, n in conn.execute("SELECT stage, provider, model, count FROM unstored"):
            _group(groups, stage, provider, model)["requests"] += n

    def usage_totals(self) -> dict[str, Any]:
        """The rows of `usage_summary` added up (all stages, providers and models)."""
        return _totals(self.usage_summary())


# -- helpers ---------------------------------------------------------------------------------

class _transaction:
    """BEGIN IMMEDIATE … COMMIT (ROLLBACK on error): takes the write lock up front, so a busy
    database makes us wait (busy timeout) instead of failing half-way through."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


def _detail_matches(text: str, wanted: Mapping[str, Any]) -> bool:
    try:
        detail = json.loads(text or "{}")
    except ValueError:
        return False
    return isinstance(detail, dict) and all(detail.get(k) == v for k, v in wanted.items())


def enable_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Switch `conn`'s file to WAL, retrying "database is locked" for up to `timeout` seconds.

    Why not just the busy timeout: until the first write has made the file a WAL database it is
    in rollback mode, where the switch reads (SHARED lock) and then needs the write lock; if
    another connection already holds RESERVED (a concurrent first writer), SQLite returns
    SQLITE_BUSY at once without calling the busy handler (waiting could deadlock). Four threads
    opening a fresh ledger hit this in ~8% of trials; the retry waits for that writer instead.
    """
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    """Run DDL statements one by one (executescript would COMMIT our open transaction)."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _add_errors(conn: sqlite3.Connection, stage: str, provider: str, model: str, errors: Iterable[tuple[str, str]]) -> None:
    counts: dict[tuple[str, str], int] = {}
    for error_class, code in errors:
        counts[(error_class, code)] = counts.get((error_class, code), 0) + 1
    if counts:
        conn.executemany(
            "INSERT INTO errors (stage, provider, model, error_class, error_code, count) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(stage, provider, model, error_class, error_code) DO UPDATE SET count = count + excluded.count",
            [(stage, provider, model, c, code, n) for (c, code), n in counts.items()],
        )


def _empty_group(stage: str, provider: str, model: str) -> dict[str, Any]:
    return {
        "stage": stage, "provider": provider, "model": model, "requests": 0, "answered": 0, "cache_hits": 0,
        "failed": 0, "failed_attempts": 0, "input_tokens": 0, "output_tokens": 0, "cost": 0.0, "failures": {}, "errors": {},
    }


def _group(groups: dict[tuple[str, str, str], dict[str, Any]], stage: str, provider: str, model: str) -> dict[str, Any]:
    key = (stage, provider, model)
    if key not in groups:
        groups[key] = _empty_group(stage, provider, model)
    return groups[key]


def _totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    total = _empty_group("", "", "")
    for key in ("stage", "provider", "model"):
        del total[key]
    for row in rows:
        for key in ("answered", "failed", "failed_attempts", "requests", "cache_hits", "input_tokens", "output_tokens", "cost"):
            total[key] += row[key]
        for key in ("failures", "errors"):
            for name, n in row[key].items():
                total[key][name] = total[key].get(name, 0) + n
    return total
