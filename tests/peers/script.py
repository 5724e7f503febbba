"""What a loopback peer answers, what it received, and the HTTP server both protocols share.

A peer is a real HTTP server on 127.0.0.1 (random free port, background thread) so that the real
SDKs are exercised end to end: their request encoding, their HTTP client, their error parsing.
Tests script it with a queue of `Reply` / `Fault` items (or a function of the request), read back
what it received, and may give it a fixed latency (the engine benchmark uses 200 ms).
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from PIL import Image

FaultKind = Literal[
    "rate_limit",  # 429 throttling, with Retry-After / retry-after-ms when given
    "quota",  # billing / quota exhausted
    "server_error",  # 500
    "invalid_key",  # 401; the message echoes the key so tests can prove it is scrubbed
    "forbidden",  # 403
    "moderation",  # 400 content-inspection refusal
    "moderation_finish",  # 200 whose only choice ended with finish_reason "content_filter"
    "bad_request",  # 400 invalid parameter
    "empty",  # 200 with no choices
    "malformed",  # 200 whose body is not JSON
    "truncated",  # Content-Length larger than the body, then the connection closes
    "hang",  # answer only after `seconds` (longer than the client's timeout)
]


@dataclass(frozen=True)
class Reply:
    """A successful answer. `output_tokens=None` counts the reply's whitespace-separated words."""

    text: str = "ok"
    finish_reason: str = "stop"
    input_tokens: int = 10
    output_tokens: int | None = None

    @property
    def completion_tokens(self) -> int:
        return self.output_tokens if self.output_tokens is not None else len(self.text.split())


@dataclass(frozen=True)
class Fault:
    """A failure the peer acts out; each protocol renders it the way its real service does."""

    kind: FaultKind
    retry_after: float | None = None
    retry_after_ms: float | None = None
    seconds: float = 0.0
    code: str | None = None  # overrides the protocol's usual error code for this kind

    @classmethod
    def rate_limit(cls, retry_after: float | None = None, *, retry_after_ms: float | None = None, code: str | None = None) -> Fault:
        return cls("rate_limit", retry_after=retry_after, retry_after_ms=retry_after_ms, code=code)

    @classmethod
    def hang(cls, seconds: float) -> Fault:
        return cls("hang", seconds=seconds)

    @classmethod
    def of(cls, kind: FaultKind, code: str | None = None) -> Fault:
        return cls(kind, code=code)


Item = Reply | Fault


@dataclass(frozen=True)
class Received:
    """One request as the peer saw it (headers lower-cased, body parsed when it was JSON)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float = field(default_factory=time.monotonic)
    target: str = ""  # the request line's target as sent: absolute-form (`http://host/path`) through a proxy


class Script:
    """Thread-safe queue of the next answers, a default for when it is empty, and the request log."""

    def __init__(self, *items: Item, default: Item | Callable[[Received], Item] = Reply(), latency_s: float = 0.0) -> None:
        self._queue: deque[Item] = deque(items)
        self._lock = threading.Lock()
        self.default = default
        self.latency_s = latency_s
        self.received: list[Received] = []

    def push(self, *items: Item) -> None:
        with self._lock:
            self._queue.extend(items)

    def take(self, received: Received) -> Item:
        """Log the request and decide its answer."""
        with self._lock:
            self.received.append(received)
            if self._queue:
                return self._queue.popleft()
        return self.default(received) if callable(self.default) else self.default

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self.received)

    @property
    def last(self) -> Received:
        with self._lock:
            return self.received[-1]


Rendered = tuple[int, dict[str, str], Any]  # status, extra headers, JSON-able payload


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs' pooled clients expect
    disable_nagle_algorithm = True  # headers and body go out without a delayed-ACK stall
    server: PeerServer

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        self.server.handle_call(self)

    do_GET = do_POST

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output clean
        return


class PeerServer(ThreadingHTTPServer):
    """Base of the protocol peers: threading, keep-alive, scripted latency and transport faults.

    Subclasses implement `render_reply`, `render_fault` and `routes` (the paths they serve).
    """

    daemon_threads = True
    request_queue_size = 512  # listen backlog: 64+ clients connect at once in the benchmark
    allow_reuse_address = True
    routes: tuple[str, ...] = ()
    api_prefix = ""

    def __init__(self, script: Script | None = None, *, latency_s: float | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script = script or Script()
        if latency_s is not None:
            self.script.latency_s = latency_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> PeerServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stopping.set()  # releases hanging and delayed handlers at once
        self.shutdown()
        self.server_close()

    def __enter__(self) -> PeerServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What a model spec's `@BASE_URL` should name for this peer."""
        return self.root_url + self.api_prefix

    # -- protocol hooks --------------------------------------------------------------------------
    def render_reply(self, reply: Reply, received: Received) -> Rendered:
        raise NotImplementedError

    def render_fault(self, fault: Fault, received: Received) -> Rendered:
        raise NotImplementedError

    # -- request handling ------------------------------------------------------------------------
    def handle_call(self, handler: _Handler) -> None:
        received = _read_request(handler)
        if received.path.split("?", 1)[0] not in self.routes:
            _send_json(handler, 404, {}, {"error": {"message": f"no route {received.path}", "code": "not_found"}})
            return
        item = self.script.take(received)
        if self.script.latency_s and self._stopping.wait(self.script.latency_s):
            return
        try:
            self._answer(handler, item, received)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up first (timeouts)
            handler.close_connection = True

    def _answer(self, handler: _Handler, item: Item, received: Received) -> None:
        if isinstance(item, Reply):
            _send_json(handler, *self.render_reply(item, received))
        elif item.kind == "hang":
            if not self._stopping.wait(item.seconds):
                _send_json(handler, *self.render_reply(Reply(), received))
        elif item.kind == "truncated":
            _send_truncated(handler, json.dumps(self.render_reply(Reply(), received)[2]).encode())
        elif item.kind == "malformed":
            _send_raw(handler, 200, b'{"id": "broken", "choices": [{"message": ', "application/json")
        else:
            _send_json(handler, *self.render_fault(item, received))


def _read_request(handler: _Handler) -> Received:
    length = int(handler.headers.get("Content-Length") or 0)
    raw = handler.rfile.read(length) if length else b""
    try:
        body: Any = json.loads(raw) if raw else None
    except ValueError:
        body = raw.decode("utf-8", "replace")
    headers = {k.lower(): v for k, v in handler.headers.items()}
    # a server must accept the absolute form a client sends to a proxy (RFC 9112 §3.2.2)
    split = urllib.parse.urlsplit(handler.path)
    path = (split.path + (f"?{split.query}" if split.query else "")) if split.scheme else handler.path
    return Received(method=handler.command, path=path, headers=headers, body=body, target=handler.path)


def _send_json(handler: _Handler, status: int, headers: dict[str, str], payload: Any) -> None:
    _send_raw(handler, status, json.dumps(payload).encode(), "application/json", headers)


def _send_raw(handler: _Handler, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


def _send_truncated(handler: _Handler, body: bytes) -> None:
    """Promise more bytes than are sent, then close: what a proxy dying mid-answer looks like."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body) + 100))
    handler.end_headers()
    handler.wfile.write(body[: len(body) // 2])
    handler.wfile.flush()
    handler.close_connection = True
    with contextlib.suppress(OSError):
        handler.connection.shutdown(socket.SHUT_RDWR)


def bearer_key(received: Received) -> str:
    """The API key a client sent (`Authorization: Bearer KEY`), for echoing in auth errors."""
    auth = received.headers.get("authorization", "")
    return auth[7:] if auth.lower().startswith("bearer ") else auth


def retry_headers(fault: Fault) -> dict[str, str]:
    headers: dict[str, str] = {}
    if fault.retry_after is not None:
        headers["Retry-After"] = f"{fault.retry_after:g}"
    if fault.retry_after_ms is not None:
        headers["retry-after-ms"] = f"{fault.retry_after_ms:g}"
    return headers


def tiny_jpeg(shade: int = 0) -> bytes:
    """A real 8×8 JPEG (distinct per shade) for requests that carry images or video frames."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (shade % 256, 64, 128)).save(buffer, "JPEG")
    return buffer.getvalue()
