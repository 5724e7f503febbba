"""`dashscope:MODEL[@BASE_URL]`: Alibaba Model Studio's native API through the `dashscope` SDK.

Requests with images or video (or to a vision model: `-vl-`, `omni`, `qvq` in the name) go to
`AioMultiModalConversation`, text-only requests to `AioGeneration`; both with
`result_format="message"`. The SDK's async classes run on an aiohttp session this backend owns, so
64 concurrent calls need no thread pool (`asyncio.to_thread` on the default executor would cap
them at min(32, cpus + 4)) and a timed-out call is really cancelled.

Media travel inline as base64 data URIs: an image is `{"image": "data:image/jpeg;base64,…"}`, a
video is its sampled frames as an image list `{"video": ["data:image/jpeg;base64,…", …], "fps": F}`
with the true sampling rate, so the model's time axis matches the frames. The SDK would upload
local `file://` paths (and any text that names an existing file) to Alibaba's OSS before the call;
data URIs are not paths, so nothing is uploaded and the call works against any endpoint, a
loopback peer included.

The SDK never raises on HTTP errors: the response's `status_code` and `code` are classified here.
The endpoint is chosen per call (`base_address`) and the key is passed per call, so nothing is
written to the SDK's module globals.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from typing import Any
from urllib.parse import urlparse

import aiohttp
from dashscope import AioGeneration, AioMultiModalConversation

from vau_annotate.annotate.backends._hosted import MODERATION_CODES, data_url, parse_retry_after, resolve_api_key, scrub
from vau_annotate.annotate.backends.base import (
    BackendError,
    ErrorClass,
    ImagePart,
    Message,
    Part,
    Request,
    Result,
    TextPart,
    read_timeout_for,
)
from vau_annotate.annotate.backends.registry import ModelSpec

_QUOTA_CODES = frozenset({"arrearage", "allocationquota.freetieronly", "insufficient_quota", "billingaccountoverdue"})
_AUTH_CODES = frozenset({"invalidapikey", "invalid_api_key"})
_RETRY_CODES = frozenset({"serviceunavailable", "modelservicefailed", "requesttimeout", "modelunavailable"})
_VISION_MARKERS = frozenset({"vl", "omni"})


class _DropSdkFailureLog(logging.Filter):
    """The SDK logs every transport failure with a traceback ("Request failed") before re-raising.

    This backend classifies and reports those failures itself; without a handler configured, the
    SDK's records would reach stderr through logging's last-resort handler and break progress bars.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != "Request failed"


_SDK_LOGGER = logging.getLogger("dashscope")
if not any(isinstance(f, _DropSdkFailureLog) for f in _SDK_LOGGER.filters):
    _SDK_LOGGER.addFilter(_DropSdkFailureLog())


def create(
    spec: ModelSpec,
    *,
    api_key_env: str = "DASHSCOPE_API_KEY",
    timeout: float | None = None,
    endpoint: str = "auto",
    **_: Any,
) -> DashScopeBackend:
    """Factory registered for `dashscope:`. `endpoint`: auto | multimodal | text."""
    if endpoint not in ("auto", "multimodal", "text"):
        raise ValueError(f"endpoint must be auto, multimodal or text, not {endpoint!r}")
    api_key = resolve_api_key(api_key_env, spec.base_url, provider="dashscope")
    return DashScopeBackend(
        spec.model,
        base_url=api_base(spec.base_url),
        api_key=api_key,
        api_key_env=api_key_env,
        timeout=timeout,
        endpoint=endpoint,
    )


def api_base(base_url: str | None) -> str | None:
    """Accept a bare host (`http://host:port`) as well as the API base (`…/api/v1`) the SDK wants."""
    if not base_url:
        return None
    if urlparse(base_url).path.strip("/") == "":
        return base_url.rstrip("/") + "/api/v1"
    return base_url


def is_vision_model(model: str) -> bool:
    tokens = re.split(r"[-_.:/]", model.lower())
    return any(t in _VISION_MARKERS or t.startswith("qvq") for t in tokens)


class DashScopeBackend:
    provider = "dashscope"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None,
        api_key: str,
        api_key_env: str,
        timeout: float | None = None,
        endpoint: str = "auto",
    ) -> None:
        self.model = model
        self.base_url = base_url
        # None: sized per request (read_timeout_for). The SDK gives aiohttp one total timeout per
        # request, which replaces any connect timeout of the session, so there is no split here.
        self.timeout = float(timeout) if timeout else None
        self.endpoint = endpoint
        self._api_key_env = api_key_env
        self._secret = api_key
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:  # never shows the key
        return f"DashScopeBackend(model={self.model!r}, base_url={self.base_url!r})"

    async def generate(self, request: Request) -> Result:
        multimodal = self._wants_multimodal(request)
        api = AioMultiModalConversation if multimodal else AioGeneration
        kwargs = self._call_kwargs(request, multimodal, await self._get_session())
        budget = kwargs["request_timeout"]
        started = time.perf_counter()
        try:
            # the SDK's aiohttp timeout is total, but it retries once on a dropped connection;
            # non-streaming, so the answer is one *Response, never the generator the stubs allow
            response: Any = await asyncio.wait_for(api.call(**kwargs), budget)
        except asyncio.TimeoutError:
            raise BackendError(f"dashscope: no answer within {budget:g} s", ErrorClass.RETRYABLE, code="timeout") from None
        except Exception as exc:  # the SDK raises transport errors raw; classify every one
            raise classify_exception(exc, secret=self._secret) from None
        latency = time.perf_counter() - started
        if response.status_code != 200:
            raise classify_response(
                int(response.status_code), response.code, response.message, response.headers,
                secret=self._secret, api_key_env=self._api_key_env,
            )
        return _result(response, latency)

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    # -- request ---------------------------------------------------------------------------------
    def _wants_multimodal(self, request: Request) -> bool:
        if self.endpoint != "auto":
            return self.endpoint == "multimodal"
        has_media = any(not isinstance(p, TextPart) for m in request.messages for p in m.parts)
        return has_media or is_vision_model(self.model)

    async def _get_session(self) -> aiohttp.ClientSession:
        """One pooled session per backend, made inside the running loop (aiohttp sessions are loop-bound)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256), trust_env=True)
        return self._session

    def _call_kwargs(self, request: Request, multimodal: bool, session: aiohttp.ClientSession) -> dict[str, Any]:
        params = request.params
        render = _multimodal_message if multimodal else _text_message
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [render(m) for m in request.messages],
            "api_key": self._secret,
            "result_format": "message",
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "request_timeout": read_timeout_for(request, self.timeout),
            "session": session,
        }
        if self.base_url:
            kwargs["base_address"] = self.base_url
        if params.seed is not None:
            kwargs["seed"] = params.seed
        if params.stop:
            kwargs["stop"] = list(params.stop)
        return kwargs


def _text_message(message: Message) -> dict[str, Any]:
    return {"role": message.role, "content": "\n".join(p.text for p in message.parts if isinstance(p, TextPart))}


def _multimodal_message(message: Message) -> dict[str, Any]:
    return {"role": message.role, "content": [_content_item(p) for p in message.parts]}


def _content_item(part: Part) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"text": _not_a_path(part.text)}
    if isinstance(part, ImagePart):
        return {"image": data_url(part.mime, part.data)}
    return {"video": [data_url("image/jpeg", frame) for frame in part.frames], "fps": part.fps}


def _not_a_path(text: str) -> str:
    """The SDK uploads any user-turn text that is an existing file path or a file:// URL; never let it."""
    stripped = text.strip()
    if stripped.startswith("file://") or (stripped and len(stripped) < 4096 and os.path.isfile(os.path.expanduser(stripped))):
        return " " + text
    return text


# -- response ------------------------------------------------------------------------------------
def _result(response: Any, latency: float) -> Result:
    output = response.output or {}
    choices = output.get("choices") or []
    if not choices:
        raise BackendError("dashscope: the answer has no choices", ErrorClass.PERMANENT, code="malformed", status=200)
    choice = choices[0]
    finish = choice.get("finish_reason") or "stop"
    if finish == "content_filter":
        refused = "dashscope: the provider's content inspection refused this item"
        raise BackendError(refused, ErrorClass.PERMANENT, code="moderation", status=200)
    message = choice.get("message") or {}
    usage = response.usage or {}
    return Result(
        text=_content_text(message.get("content")),
        finish_reason=finish,
        input_tokens=int(usage.get("input_tokens") or 0),
        output_tokens=int(usage.get("output_tokens") or 0),
        latency_s=latency,
    )


def _content_text(content: Any) -> str:
    """Text of a message: a string (text-generation) or a list of `{"text": …}` items (multimodal)."""
    if isinstance(content, str):
        return content
    return "".join(item.get("text", "") for item in content or [] if isinstance(item, dict))


def classify_response(
    status: int,
    code: str | None,
    message: Any,
    headers: Any,
    *,
    secret: str = "",
    api_key_env: str = "DASHSCOPE_API_KEY",
) -> BackendError:
    """The decision table for DashScope's `{status_code, code, message}` failures."""
    c = (code or "").lower()
    text = f"dashscope {status}" + (f" {code}" if code else "") + f": {scrub(str(message or ''), secret)}"
    if c in MODERATION_CODES:
        return BackendError(text, ErrorClass.PERMANENT, code="moderation", status=status)
    if c in _QUOTA_CODES:
        return BackendError(text, ErrorClass.FATAL, code="quota", status=status)
    if status == 401 or c in _AUTH_CODES:
        return BackendError(f"{text} (check ${api_key_env})", ErrorClass.FATAL, code="auth", status=status)
    if status == 403 or c.startswith("accessdenied"):
        return BackendError(text, ErrorClass.FATAL, code="forbidden", status=status)
    if status == 429 or c.startswith("throttling"):
        return BackendError(text, ErrorClass.RETRYABLE, code="rate_limit", status=status, retry_after=parse_retry_after(headers))
    if status >= 500 or status == 408 or c.startswith("internalerror") or c in _RETRY_CODES:
        return BackendError(text, ErrorClass.RETRYABLE, code="server_error", status=status)
    if status == 404:
        return BackendError(text, ErrorClass.FATAL, code="not_found", status=status)  # wrong model or URL
    return BackendError(text, ErrorClass.PERMANENT, code="bad_request", status=status)


def classify_exception(exc: BaseException, *, secret: str = "") -> BackendError:
    """Transport failures the SDK lets through (it wraps none of them)."""
    detail = scrub(str(exc), secret) or type(exc).__name__
    if isinstance(exc, asyncio.TimeoutError):
        return BackendError("dashscope: request timed out", ErrorClass.RETRYABLE, code="timeout")
    if isinstance(exc, (aiohttp.ClientPayloadError, aiohttp.ContentTypeError, json.JSONDecodeError)):
        # a body cut short or not JSON: a proxy or the service hiccuped
        return BackendError(f"dashscope: malformed answer: {detail}", ErrorClass.RETRYABLE, code="malformed", status=200)
    if isinstance(exc, aiohttp.ClientError):
        return BackendError(f"dashscope: connection failed: {detail}", ErrorClass.RETRYABLE, code="connection")
    return BackendError(f"dashscope: {type(exc).__name__}: {detail}", ErrorClass.PERMANENT, code="sdk_error")
