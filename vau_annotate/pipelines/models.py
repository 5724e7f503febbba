"""How a model-backed stage reaches its models: the options every such stage shares.

build-cot and reflect both open backends from specs and wrap each in an Engine over the run's
ledger; the knobs a user needs for that — a price file, retrying permanent failures, how a video
travels to an OpenAI-compatible server, the per-call timeout — live here once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vau_annotate.annotate.backends import BackendError, ErrorClass, load_backend
from vau_annotate.annotate.engine import Engine, RunStopped
from vau_annotate.annotate.ledger import Ledger
from vau_annotate.annotate.pricing import PriceTable

VIDEO_MODES = ("video_url", "images")


@dataclass(frozen=True)
class ModelAccess:
    """Options shared by every stage that calls models (recorded in run.json; never a secret)."""

    prices: Path | None = None
    retry_failed: bool = False
    video_mode: str = "video_url"
    timeout: float = 120.0

    def backend_options(self) -> dict[str, Any]:
        return {"video_mode": self.video_mode, "timeout": self.timeout}

    def recorded(self) -> dict[str, Any]:
        return {"prices": str(self.prices) if self.prices else None, "retry_failed": self.retry_failed,
                "video_mode": self.video_mode, "timeout": self.timeout}


def open_backend(spec: str, access: ModelAccess, **extra: Any) -> Any:
    """The backend of a spec; a fatal failure while opening it (e.g. no API key) stops the run."""
    try:
        return load_backend(spec, **{**access.backend_options(), **extra})
    except BackendError as exc:
        if exc.error_class is ErrorClass.FATAL:
            raise RunStopped(str(exc), exc) from None
        raise


def make_engine(stage: str, backend: Any, ledger: Ledger, access: ModelAccess, *, concurrency: int, rpm: float | None, tpm: float | None) -> Engine:
    """An engine for one model role of a stage, priced by the bundled table merged with --prices."""
    return Engine(
        backend, ledger, stage=stage, concurrency=concurrency, rpm=rpm, tpm=tpm,
        prices=PriceTable.load(access.prices), retry_failed=access.retry_failed,
    )
