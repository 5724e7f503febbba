"""Where submitted batch jobs are remembered: two tables in the run's ledger database.

A batch job lives for up to 24 hours, much longer than a process may: a killed or restarted
command must find the jobs it already submitted (and paid for) instead of submitting them again.
So every upload and every submitted job is written here before anything waits on it, and each
request's ledger key (the batch line's `custom_id`) is mapped to the job that carries it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from vau_annotate.annotate.ledger import enable_wal

FINAL_STATES = frozenset({"completed", "failed", "expired", "cancelled"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    base_url TEXT NOT NULL DEFAULT '',
    input_file_id TEXT NOT NULL,
    status TEXT NOT NULL,
    requests INTEGER NOT NULL,
    completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    output_file_id TEXT,
    error_file_id TEXT,
    errors TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS batch_requests (
    custom_id TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (custom_id, batch_id)
);
CREATE INDEX IF NOT EXISTS batch_requests_key ON batch_requests (custom_id, seq);
"""


@dataclass(frozen=True)
class BatchJob:
    """One submitted batch as last seen."""

    batch_id: str
    provider: str
    model: str
    base_url: str
    input_file_id: str
    status: str
    requests: int
    completed: int
    failed: int
    input_tokens: int
    output_tokens: int
    output_file_id: str | None
    error_file_id: str | None
    errors: str | None
    created: float
    updated: float

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATES

    @property
    def age_s(self) -> float:
        return time.time() - self.created


class BatchStore:
    """The `batches` / `batch_requests` tables of a ledger file (its own connection, WAL mode)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        enable_wal(self._conn, 30.0)
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        self._conn.close()

    def add(self, job: BatchJob, custom_ids: list[str]) -> None:
        """Record a submitted job and the keys it carries, in one transaction."""
        seq = int(time.time() * 1000)
        with self._conn:
            self._conn.execute("BEGIN")
            self._conn.execute(
                "INSERT OR REPLACE INTO batches VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (job.batch_id, job.provider, job.model, job.base_url, job.input_file_id, job.status, job.requests,
                 job.completed, job.failed, job.input_tokens, job.output_tokens, job.output_file_id,
                 job.error_file_id, job.errors, job.created, job.updated),
            )
            self._conn.executemany(
                "INSERT OR REPLACE INTO batch_requests VALUES (?,?,?)", [(cid, job.batch_id, seq) for cid in custom_ids]
            )

    def update(self, batch_id: str, **fields: Any) -> None:
        if not fields:
            return
        fields["updated"] = time.time()
        columns = ", ".join(f"{name} = ?" for name in fields)
        self._conn.execute(f"UPDATE batches SET {columns} WHERE batch_id = ?", (*fields.values(), batch_id))

    def get(self, batch_id: str) -> BatchJob | None:
        row = self._conn.execute("SELECT * FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
        return BatchJob(*row) if row else None

    def latest_batch_of(self, custom_id: str) -> str | None:
        """The most recent job that carries this request (a request may be resubmitted after an expiry)."""
        row = self._conn.execute(
            "SELECT batch_id FROM batch_requests WHERE custom_id = ? ORDER BY seq DESC LIMIT 1", (custom_id,)
        ).fetchone()
        return row[0] if row else None


def batch_summary(path: str | os.PathLike[str], *, pending_only: bool = False) -> list[dict[str, Any]]:
    """What `status` shows: the run's batch jobs (or only those not yet final) with age and progress."""
    if not os.path.exists(path):
        return []
    conn = sqlite3.connect(os.fspath(path))
    try:
        exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='batches'").fetchone()
        if not exists:
            return []
        rows = conn.execute("SELECT * FROM batches ORDER BY created").fetchall()
    finally:
        conn.close()
    out = []
    for row in rows:
        job = BatchJob(*row)
        if pending_only and job.final:
            continue
        out.append({
            "batch_id": job.batch_id, "model": f"{job.provider}:{job.model}", "base_url": job.base_url, "status": job.status,
            "requests": job.requests, "completed": job.completed, "failed": job.failed,
            "age_s": round(job.age_s, 1), "input_tokens": job.input_tokens, "output_tokens": job.output_tokens,
            "errors": json.loads(job.errors) if job.errors else None,
        })
    return out
