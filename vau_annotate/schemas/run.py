"""Run metadata (run.json) and reject lines (rejects.jsonl)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, Field


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")  # seconds made fast stages start and finish "at once"


class StageRun(BaseModel):
    """One invocation of a stage on the run: what was asked and what came of it."""

    stage: str
    started: str = Field(default_factory=utc_now)
    finished: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    counts: dict[str, int] = Field(default_factory=dict)


class RunMeta(BaseModel):
    """Contents of run.json: what produced this run directory (never any secret)."""

    created: str = Field(default_factory=utc_now)
    tool_version: str
    versions: dict[str, str] = Field(default_factory=dict, description="Versions of key libraries.")
    source: str | None = None
    annotations: str | None = None
    videos: str | None = None
    prompt_hashes: dict[str, str] = Field(default_factory=dict)
    stages: list[StageRun] = Field(default_factory=list)


class RejectRecord(BaseModel):
    """One item that a stage could not accept, and why, in words a person understands."""

    item: str = Field(description="Video id, source row or file the failure is about.")
    stage: str
    reason: str
    detail: dict[str, Any] = Field(default_factory=dict)
    time: str = Field(default_factory=utc_now)
