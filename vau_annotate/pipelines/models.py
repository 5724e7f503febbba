"""How a model-backed stage reaches its models: the options every such stage shares.

build-cot and reflect both open backends from specs and wrap each in an Engine over the run's
ledger; the knobs a user needs for that — a price file, retrying permanent failures, how a video
travels to an OpenAI-compatible server, the timeouts, per-role rate limits — live here once.

Rate limits: `--rpm`/`--tpm` hold per endpoint (provider, base URL, model), shared by every role
that uses it (the Engine keeps the buckets); `--role-limit ROLE:rpm=N` (or tpm=N) adds a cap of
that role's own on top, e.g. to keep the captioner from starving the reasoner on one server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import SimpleNamespace
from pathlib import Path
from typing import Any

from vau_annotate.annotate.backends import BackendError, ErrorClass, ModelSpec, load_backend
from vau_annotate.annotate.backends.ray_llm_rows import RayLLMOptions
from vau_annotate.annotate.backends.base import DEFAULT_CONNECT_TIMEOUT_S
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
    timeout: float | None = None  # seconds a call may take once connected; None: sized by max_tokens
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S
    role_limits: tuple[tuple[str, str, float], ...] = ()  # (role, "rpm" | "tpm", per minute)
    batch: bool = False  # openai: roles go through the provider's Batch API (half price, up to 24 h)
    batch_poll_s: float = 30.0
    # --executor ray: vllm: roles run as Ray Data LLM jobs on the cluster at ray_address (None: a local one)
    ray_llm: RayLLMOptions | None = None
    ray_address: str | None = None

    def backend_options(self) -> dict[str, Any]:
        return {"video_mode": self.video_mode, "timeout": self.timeout, "connect_timeout": self.connect_timeout}

    def role_limit(self, role: str, kind: str) -> float | None:
        """The stricter of the caps given for this role, or None."""
        values = [value for r, k, value in self.role_limits if r == role and k == kind]
        return min(values) if values else None

    def recorded(self) -> dict[str, Any]:
        return {"prices": str(self.prices) if self.prices else None, "retry_failed": self.retry_failed,
                "video_mode": self.video_mode, "timeout": self.timeout, "connect_timeout": self.connect_timeout,
                "role_limits": [f"{role}:{kind}={value:g}" for role, kind, value in self.role_limits],
                "batch": self.batch,
                **({"ray_llm": self.ray_llm.recorded(), "ray_address": self.ray_address} if self.ray_llm is not None else {})}


_ROLE_LIMIT = re.compile(r"^\s*([A-Za-z_][\w-]*)\s*:\s*(rpm|tpm)\s*=\s*([0-9]*\.?[0-9]+)\s*$")


def parse_role_limits(texts: list[str] | tuple[str, ...], roles: tuple[str, ...]) -> tuple[tuple[str, str, float], ...]:
    """`ROLE:rpm=N` / `ROLE:tpm=N` options as tuples; ValueError names what is wrong."""
    out = []
    for text in texts:
        match = _ROLE_LIMIT.match(text)
        if match is None:
            raise ValueError(f"--role-limit {text!r}: expected ROLE:rpm=N or ROLE:tpm=N (roles: {', '.join(roles)})")
        role, kind, value = match.group(1), match.group(2), float(match.group(3))
        if role not in roles:
            raise ValueError(f"--role-limit {text!r}: unknown role {role!r} (roles: {', '.join(roles)})")
        if value <= 0:
            raise ValueError(f"--role-limit {text!r}: the limit must be positive")
        out.append((role, kind, value))
    return tuple(out)


def open_backend(spec: str, access: ModelAccess, **extra: Any) -> Any:
    """The backend of a spec; a fatal failure while opening it (e.g. no API key) stops the run."""
    try:
        if access.ray_llm is not None and ModelSpec.parse(spec).provider == "vllm":
            from vau_annotate.annotate.backends.ray_llm_backend import create

            return create(ModelSpec.parse(spec), access.ray_llm, address=access.ray_address, **extra)
        return load_backend(spec, **{**access.backend_options(), **extra})
    except BackendError as exc:
        if exc.error_class is ErrorClass.FATAL:
            raise RunStopped(str(exc), exc) from None
        raise


def make_engine(stage: str, backend: Any, ledger: Ledger, access: ModelAccess, *, concurrency: int, rpm: float | None, tpm: float | None) -> Engine:
    """An engine for one model role of a stage (`stage` is "STAGE:ROLE"), priced by the bundled table
    merged with --prices. rpm/tpm are the endpoint's (shared with every role on it); the role's
    own caps come from --role-limit."""
    role = stage.rsplit(":", 1)[-1]
    if access.batch and backend.provider == "openai":
        backend = batch_backend(backend, ledger, access)
        # a batch round should carry every request that is ready; the provider, not us, paces it
        concurrency, rpm, tpm = max(concurrency, BATCH_CONCURRENCY), None, None
    elif getattr(backend, "round_size", None):  # Ray Data LLM: a round carries every ready request
        concurrency = max(concurrency, backend.round_size)
    return Engine(
        backend, ledger, stage=stage, concurrency=concurrency, rpm=rpm, tpm=tpm,
        role_rpm=access.role_limit(role, "rpm"), role_tpm=access.role_limit(role, "tpm"),
        prices=PriceTable.load(access.prices), retry_failed=access.retry_failed,
    )


BATCH_CONCURRENCY = 1000  # items (and calls) in flight with --batch: what one batch round can gather


def items_in_flight(concurrency: int, access: ModelAccess) -> int:
    """Items a stage runs at once: with --batch, or vllm: roles under --executor ray, enough for one
    round to gather every ready request."""
    if access.ray_llm is not None:
        concurrency = max(concurrency, access.ray_llm.round_size)
    return max(concurrency, BATCH_CONCURRENCY) if access.batch else concurrency


def batch_backend(backend: Any, ledger: Ledger, access: ModelAccess) -> Any:
    """An `openai:` backend routed through the Batch API, its jobs remembered in the run's ledger.

    A dry run's SpecOnly stand-in only takes the discount, so `--batch --dry-run` prints the halved
    estimate without connecting anywhere.
    """
    from vau_annotate.annotate.backends.openai_backend import OpenAIBackend
    from vau_annotate.annotate.backends.openai_batch import PRICE_FACTOR, BatchingBackend
    from vau_annotate.annotate.batch_store import BatchStore

    if not isinstance(backend, OpenAIBackend):
        return SimpleNamespace(provider=backend.provider, model=backend.model, base_url=getattr(backend, "base_url", None),
                               price_factor=PRICE_FACTOR, generate=backend.generate, aclose=backend.aclose)
    # a round goes out once no new request came for gather_s: never longer than a poll interval
    return BatchingBackend(backend, BatchStore(ledger.path), poll_s=access.batch_poll_s, gather_s=min(2.0, access.batch_poll_s))
