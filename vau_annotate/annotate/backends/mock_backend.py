"""`mock:…`: a scriptable backend for tests, the demo and dry runs — no network, no model.

    mock:echo                     answers the last text part of the request
    mock:path/to/replies.jsonl    answers from a script file (the model name is the path)
    mock:anything + replies=[…]   answers from a list, or from a function of the request

A script is a JSON list or JSONL. Each entry is a reply string, a reply object
`{"text": "…", "finish_reason": "length"}`, or an error
`{"error": {"class": "retryable|permanent|fatal", "code": "rate_limit", "message": "…",
"retry_after": 1.5}}`. An entry with `"match": "substring"` is a standing rule: it answers every
request whose text contains the substring and is never used up. Other entries are used once, in
order; when they run out the call fails PERMANENT (`mock_exhausted`), so a test that makes more calls
than it scripted notices.

Token counts are deterministic: whitespace-separated words of all text, plus 64 per image and per
video frame for the input; words of the reply for the output.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vau_annotate.annotate.backends.base import (
    BackendError,
    ErrorClass,
    ImagePart,
    Request,
    Result,
    TextPart,
    VideoPart,
)
from vau_annotate.annotate.backends.registry import ModelSpec, SpecError

TOKENS_PER_IMAGE = 64

ReplyLike = str | Result | BackendError | dict
Responder = Callable[[Request], ReplyLike]


@dataclass(frozen=True)
class _Rule:
    match: str
    reply: ReplyLike


def create(
    spec: ModelSpec,
    *,
    replies: Iterable[ReplyLike] | Responder | None = None,
    script_file: str | Path | None = None,
    latency_s: float = 0.0,
    **_: Any,
) -> MockBackend:
    """Factory registered for `mock:`. `replies` wins over `script_file`, which wins over the model name."""
    if replies is not None:
        return MockBackend(spec.model, replies, latency_s=latency_s)
    if script_file is not None:
        return MockBackend(spec.model, load_script(Path(script_file)), latency_s=latency_s)
    if spec.model == "echo":
        return MockBackend(spec.model, echo, latency_s=latency_s)
    path = Path(spec.model).expanduser()
    if path.suffix in (".json", ".jsonl") or path.is_file():
        return MockBackend(spec.model, load_script(path), latency_s=latency_s)
    raise SpecError(f"mock:{spec.model}: use mock:echo, mock:PATH.jsonl (a script file) or pass replies=")


def echo(request: Request) -> str:
    """The last text part of the request (what `mock:echo` answers)."""
    texts = [p.text for m in request.messages for p in m.parts if isinstance(p, TextPart)]
    return texts[-1] if texts else ""


def load_script(path: Path) -> list[ReplyLike]:
    """Entries of a JSON list or a JSONL file (blank lines skipped)."""
    if not path.is_file():
        raise SpecError(f"mock script {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        entries = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"mock script {path}: not valid JSON: {exc}") from exc
    if not isinstance(entries, list):
        raise SpecError(f"mock script {path}: expected a JSON list of replies")
    return entries


def count_input_tokens(request: Request) -> int:
    total = 0
    for message in request.messages:
        for part in message.parts:
            if isinstance(part, TextPart):
                total += len(part.text.split())
            elif isinstance(part, ImagePart):
                total += TOKENS_PER_IMAGE
            elif isinstance(part, VideoPart):
                total += TOKENS_PER_IMAGE * len(part.frames)
    return total


def request_text(request: Request) -> str:
    return "\n".join(p.text for m in request.messages for p in m.parts if isinstance(p, TextPart))


class MockBackend:
    provider = "mock"

    def __init__(self, model: str, replies: Iterable[ReplyLike] | Responder, *, latency_s: float = 0.0) -> None:
        self.model = model
        self.latency_s = latency_s
        self.requests: list[Request] = []
        self._responder: Responder | None = replies if callable(replies) else None
        entries = [] if callable(replies) else list(replies)
        for entry in entries:  # a typo in a script fails at load time, not mid-run
            if isinstance(entry, dict) and "error" in entry:
                _scripted_error(entry["error"])
        self._rules = [_Rule(e["match"], _without_match(e)) for e in entries if isinstance(e, dict) and "match" in e]
        self._queue: deque[ReplyLike] = deque(e for e in entries if not (isinstance(e, dict) and "match" in e))

    @property
    def calls(self) -> int:
        return len(self.requests)

    async def generate(self, request: Request) -> Result:
        started = time.perf_counter()
        self.requests.append(request)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        reply = self._next_reply(request)
        return _to_result(reply, request, time.perf_counter() - started)

    async def aclose(self) -> None:
        return None

    def _next_reply(self, request: Request) -> ReplyLike:
        if self._responder is not None:
            return self._responder(request)
        text = request_text(request)
        for rule in self._rules:
            if rule.match in text:
                return rule.reply
        if not self._queue:
            used = self.calls - 1
            raise BackendError(f"mock:{self.model}: script exhausted after {used} replies", ErrorClass.PERMANENT, code="mock_exhausted")
        return self._queue.popleft()


def _without_match(entry: dict) -> ReplyLike:
    return {k: v for k, v in entry.items() if k != "match"}


def _to_result(reply: ReplyLike, request: Request, latency: float) -> Result:
    """Turn a scripted entry into a Result, or raise the BackendError it describes."""
    if isinstance(reply, BackendError):
        raise reply
    if isinstance(reply, Result):
        return reply
    if isinstance(reply, dict) and "error" in reply:
        raise _scripted_error(reply["error"])
    if isinstance(reply, dict):
        text, finish = str(reply.get("text", "")), str(reply.get("finish_reason", "stop"))
    elif isinstance(reply, str):
        text, finish = reply, "stop"
    else:
        raise TypeError(f"mock reply must be str, dict, Result or BackendError, not {type(reply).__name__}")
    tokens_in, tokens_out = count_input_tokens(request), len(text.split())
    return Result(text=text, finish_reason=finish, input_tokens=tokens_in, output_tokens=tokens_out, latency_s=latency)


def _scripted_error(spec: Any) -> BackendError:
    spec = spec if isinstance(spec, dict) else {"message": str(spec)}
    try:
        error_class = ErrorClass(str(spec.get("class", "permanent")).lower())
    except ValueError as exc:
        raise SpecError(f"mock script error class must be retryable, permanent or fatal, not {spec.get('class')!r}") from exc
    retry_after = spec.get("retry_after")
    return BackendError(
        str(spec.get("message", f"scripted {error_class.value} error")),
        error_class,
        code=str(spec.get("code", "")),
        retry_after=float(retry_after) if retry_after is not None else None,
        status=spec.get("status"),
    )
