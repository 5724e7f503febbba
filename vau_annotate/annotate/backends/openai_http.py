"""The hot path of `openai:` chat calls: one JSON POST over a shared aiohttp session.

Why not the SDK's `chat.completions.create` (or its low-level `post`) for every call: at 64 calls
in flight against a 200 ms server, the SDK's request pipeline (option merging, header building,
httpx request/response objects, and with the aiohttp transport a second translation layer) cost
~2.3 ms of client CPU per call against ~0.6 ms for a bare aiohttp POST, and that CPU — not the
network — capped throughput at 0.90 of what this machine can do (`benchmarks/bench_engine.py`).
The chat endpoint is one POST with a JSON body and a JSON answer; everything that makes it the
OpenAI protocol is kept from the SDK client of the same backend: the resolved base URL
(`OPENAI_BASE_URL` honoured), the exact headers it sends (auth, organization/project, its
User-Agent and platform headers), and the status → error-class table (`classify_status`). Files
and Batches (`--batch`) still go through the SDK.

Errors become `BackendError`s with the classes the SDK path had: refused/failed connections and
cut-off bodies are RETRYABLE, HTTP errors go through `classify_status` with the provider's error
`code`/`type`/`message` read from the body the way the SDK reads them, and no message carries the
key (the Authorization header is never formatted into one).
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import urllib.request
from typing import Any

import aiohttp

from vau_annotate.annotate.backends._hosted import scrub
from vau_annotate.annotate.backends.base import BackendError, ErrorClass

POOL_LIMIT = 0  # connections: unbounded here; the engine's --concurrency bounds calls in flight


class ChatPoster:
    """POSTs chat-completion bodies to `base_url + /chat/completions`; one aiohttp session per event loop."""

    def __init__(self, base_url: str, headers: dict[str, str], *, connect_timeout: float, secret: str, api_key_env: str) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.headers = dict(headers)
        self.connect_timeout = connect_timeout
        self._secret = secret
        self._api_key_env = api_key_env
        self.proxy = env_proxy(self.url)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _session_for_loop(self) -> aiohttp.ClientSession:
        """A session lives on one event loop; a backend reused under a new `asyncio.run` gets a new one."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            # reading is bounded per call by the caller's asyncio.timeout; here only connecting
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout, connect=self.connect_timeout)
            self._session = aiohttp.ClientSession(
                # trust_env=False: with it aiohttp reads ~/.netrc in a thread on every request (a
                # third of the client's CPU per call); the environment's proxy is read once instead
                headers=self.headers, timeout=timeout, trust_env=False,
                connector=aiohttp.TCPConnector(limit=POOL_LIMIT),
            )
            self._loop = loop
        return self._session

    async def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """The decoded answer of a 2xx reply; a BackendError for everything else."""
        session = self._session_for_loop()
        try:
            async with session.post(self.url, data=json.dumps(body).encode(), proxy=self.proxy) as response:
                raw = await response.read()
                if response.status >= 400:
                    raise self._status_error(response.status, raw, response.headers)
        except aiohttp.ServerTimeoutError as exc:  # only connecting is bounded by aiohttp here
            raise BackendError(f"openai: connection failed: no connection within {self.connect_timeout:g} s ({type(exc).__name__})",
                               ErrorClass.RETRYABLE, code="connection") from None
        except aiohttp.ClientPayloadError as exc:  # the body was cut short: a dying proxy or server
            raise BackendError(f"openai: truncated answer: {scrub(str(exc), self._secret)}", ErrorClass.RETRYABLE, code="malformed") from None
        except aiohttp.ClientError as exc:  # refused, reset, disconnected before an answer
            raise BackendError(f"openai: connection failed: {type(exc).__name__}: {scrub(str(exc), self._secret)}",
                               ErrorClass.RETRYABLE, code="connection") from None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise BackendError(f"openai: the answer is not valid JSON ({exc})", ErrorClass.RETRYABLE, code="malformed", status=200) from None

    def _status_error(self, status: int, raw: bytes, headers: Any) -> BackendError:
        """What the SDK's APIStatusError would have said: `error.message/code/type` of a JSON body."""
        from vau_annotate.annotate.backends.openai_backend import classify_status

        code = err_type = None
        message = raw.decode("utf-8", "replace")[:500] or f"HTTP {status}"
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if isinstance(data, dict):
            body = data.get("error", data)
            if isinstance(body, dict):
                message = str(body.get("message") or message)
                code = _text_or_none(body.get("code"))
                err_type = _text_or_none(body.get("type"))
            elif isinstance(body, str):
                message = body
        return classify_status(status, code, err_type, message, headers, secret=self._secret, api_key_env=self._api_key_env)

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            try:
                await self._session.close()
            except RuntimeError:  # its event loop is gone: nothing left to close there
                pass
        self._session = None


def env_proxy(url: str) -> str | None:
    """The proxy the environment (HTTPS_PROXY / HTTP_PROXY / ALL_PROXY, NO_PROXY) names for `url`,
    as httpx — the SDK's HTTP library — would use it; None when there is none or the host bypasses it."""
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)
