"""The one protocol every model backend speaks.

A request is a list of chat messages whose parts are text, images (JPEG bytes) or a video given
as sampled frames (JPEG bytes + timestamps + the true sampling fps), plus sampling parameters.
A result is the text, the finish reason, token counts and latency. Backends raise
`BackendError` with an `ErrorClass` so the engine can decide: retry, skip the item, or stop.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal, Protocol, Sequence, runtime_checkable


@dataclass(frozen=True)
class TextPart:
    text: str
    kind: Literal["text"] = "text"


@dataclass(frozen=True)
class ImagePart:
    """One image as encoded JPEG (or PNG) bytes."""

    data: bytes
    mime: str = "image/jpeg"
    kind: Literal["image"] = "image"

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class VideoPart:
    """A video given as its sampled frames; `fps` is the true sampling rate of those frames."""

    frames: tuple[bytes, ...]
    timestamps: tuple[float, ...]
    fps: float
    kind: Literal["video"] = "video"

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for frame, ts in zip(self.frames, self.timestamps):
            h.update(hashlib.sha256(frame).digest())
            h.update(f"{ts:.4f}".encode())
        h.update(f"fps={self.fps:.4f}".encode())
        return h.hexdigest()


Part = TextPart | ImagePart | VideoPart


@dataclass(frozen=True)
class Message:
    role: Literal["system", "user", "assistant"]
    parts: tuple[Part, ...]

    @classmethod
    def text(cls, role: Literal["system", "user", "assistant"], text: str) -> Message:
        return cls(role=role, parts=(TextPart(text),))


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Request:
    """One model call. `prompt_name`/`prompt_hash` identify the template that rendered it (cache key)."""

    messages: tuple[Message, ...]
    params: SamplingParams = field(default_factory=SamplingParams)
    prompt_name: str = ""
    prompt_hash: str = ""


@dataclass(frozen=True)
class Result:
    text: str
    finish_reason: str
    input_tokens: int
    output_tokens: int
    latency_s: float


# Timeouts of hosted calls. Connecting is quick or never: a dead host should cost seconds, not the
# reply's budget. A non-streaming reply arrives whole, after the model wrote every token, so the read
# budget covers queueing and prefill (VLM frames) plus max_tokens at a slow decode rate; a hung
# request then costs ~40-80 s for 256-1024 tokens instead of a flat 120 s.
DEFAULT_CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_FLOOR_S = 30.0
SLOW_DECODE_TOKENS_PER_S = 20.0


def read_timeout_for(request: Request, fixed: float | None = None) -> float:
    """Seconds a call may take once connected: `fixed` when the user gave one (--timeout), else
    the floor plus max_tokens at the slow decode rate."""
    if fixed:
        return float(fixed)
    return READ_TIMEOUT_FLOOR_S + request.params.max_tokens / SLOW_DECODE_TOKENS_PER_S


class ErrorClass(str, Enum):
    """How the engine treats a failure."""

    RETRYABLE = "retryable"  # 429 / throttling, 5xx, timeouts, connection resets
    PERMANENT = "permanent"  # bad request, moderation refusal, malformed answer: this item fails
    FATAL = "fatal"  # invalid key, billing / quota exhausted: stop the whole run


class BackendError(Exception):
    """A classified failure of one call. Messages never contain secrets."""

    def __init__(self, message: str, error_class: ErrorClass, *, code: str = "", retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.code = code or error_class.value
        self.retry_after = retry_after
        self.status = status

    @property
    def retryable(self) -> bool:
        return self.error_class is ErrorClass.RETRYABLE


@runtime_checkable
class Backend(Protocol):
    """What the engine needs of a backend. `generate` is async; in-process backends may batch."""

    provider: str
    model: str

    async def generate(self, request: Request) -> Result: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class BatchBackend(Backend, Protocol):
    """Backends that run many requests in one forward pass (hf:, vllm:)."""

    async def generate_batch(self, requests: Sequence[Request]) -> list[Result]: ...
