"""`openai:MODEL[@BASE_URL]`: the OpenAI API or any OpenAI-compatible server (vLLM, DashScope
compatible mode, DeepSeek…). Chat calls are POSTed by `openai_http.ChatPoster` with the URL and
headers of an `openai.AsyncOpenAI` client, which itself serves Files and Batches (`--batch`).

Videos are sampled frames. With `video_mode="video_url"` (default) a video is one `video_url` part
whose data URL carries every JPEG frame: `data:video/jpeg;base64,<frame1>,<frame2>,…` — vLLM's
`VideoMediaIO.load_base64` splits such a URL on commas into frames, so the server decodes no
video and sees exactly the frames we sampled. The true sampling rate travels in vLLM's per-request
`media_io_kwargs={"video": {"fps": F, "num_frames": -1}}` (`num_frames=-1` keeps every frame:
vLLM's default of 32 would silently cut longer frame lists). With `video_mode="images"` each frame
is an `image_url` part preceded by its timestamp (`<12.5 seconds>`, the form Qwen3-VL's template
uses), which any vision chat model understands.

The SDK's own retries are off (`max_retries=0`): the engine decides about retries from the
`BackendError` classes this module raises.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Literal

import openai

from vau_annotate.annotate.backends._hosted import MODERATION_CODES, b64, data_url, parse_retry_after, resolve_api_key, scrub
from vau_annotate.annotate.backends.base import (
    DEFAULT_CONNECT_TIMEOUT_S,
    BackendError,
    ErrorClass,
    ImagePart,
    Message,
    Part,
    Request,
    Result,
    TextPart,
    VideoPart,
    read_timeout_for,
)
from vau_annotate.annotate.backends.openai_http import ChatPoster
from vau_annotate.annotate.backends.registry import ModelSpec

VideoMode = Literal["video_url", "images"]
VIDEO_MODES: tuple[str, ...] = ("video_url", "images")
_QUOTA_CODES = frozenset({"insufficient_quota", "arrearage", "allocationquota.freetieronly", "billing_hard_limit_reached"})


def create(
    spec: ModelSpec,
    *,
    api_key_env: str = "OPENAI_API_KEY",
    timeout: float | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
    video_mode: str = "video_url",
    frame_timestamps: bool = True,
    **_: Any,
) -> OpenAIBackend:
    """Factory registered for `openai:`; unknown options are ignored so one option set fits all providers."""
    if video_mode not in VIDEO_MODES:
        raise ValueError(f"video_mode must be one of {', '.join(VIDEO_MODES)}, not {video_mode!r}")
    api_key = resolve_api_key(api_key_env, spec.base_url, provider="openai")
    return OpenAIBackend(
        spec.model,
        base_url=spec.base_url,
        api_key=api_key,
        api_key_env=api_key_env,
        timeout=timeout,
        connect_timeout=connect_timeout,
        video_mode=video_mode,  # type: ignore[arg-type]
        frame_timestamps=frame_timestamps,
    )


class OpenAIBackend:
    provider = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None,
        api_key: str,
        api_key_env: str,
        timeout: float | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
        video_mode: VideoMode = "video_url",
        frame_timestamps: bool = True,
    ) -> None:
        self.model = model
        self.base_url = base_url
        self.timeout = float(timeout) if timeout else None  # None: sized per request (read_timeout_for)
        self.connect_timeout = float(connect_timeout)
        self.video_mode: VideoMode = video_mode
        self.frame_timestamps = frame_timestamps
        self._api_key_env = api_key_env
        self._secret = api_key
        # connect bounded here; reading is bounded per call (asyncio.timeout in generate). The SDK
        # client serves Files/Batches (--batch) and gives the chat path its URL and headers.
        http_timeout = openai.Timeout(None, connect=self.connect_timeout)
        self._client = openai.AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=http_timeout)
        self._chat = ChatPoster(str(self._client.base_url), sdk_headers(self._client), connect_timeout=self.connect_timeout,
                                secret=api_key, api_key_env=api_key_env)

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIBackend(model={self.model!r}, base_url={self.base_url!r}, video_mode={self.video_mode!r})"

    async def generate(self, request: Request) -> Result:
        kwargs = self._request_kwargs(request)
        budget = read_timeout_for(request, self.timeout)
        started = time.perf_counter()
        try:
            # the session bounds connecting; this bounds the whole call, e.g. a trickling server.
            # The POST itself skips the SDK's per-call request pipeline (see openai_http.py: that
            # CPU, not the network, capped throughput at 64 calls in flight on a small machine).
            async with asyncio.timeout(budget):
                completion = await self._chat.post(kwargs)
        except (asyncio.TimeoutError, TimeoutError):
            raise BackendError(f"openai: no answer within {budget:g} s", ErrorClass.RETRYABLE, code="timeout") from None
        return self._result(completion, time.perf_counter() - started)

    async def aclose(self) -> None:
        await self._chat.aclose()
        await self._client.close()

    # -- request ---------------------------------------------------------------------------------
    def _request_kwargs(self, request: Request) -> dict[str, Any]:
        params = request.params
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [self._message(m) for m in request.messages],
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        # OpenAI's own endpoint wants max_completion_tokens (reasoning models reject max_tokens);
        # compatible servers (vLLM, DashScope, DeepSeek) all understand max_tokens.
        kwargs["max_tokens" if self.base_url else "max_completion_tokens"] = params.max_tokens
        if params.seed is not None:
            kwargs["seed"] = params.seed
        if params.stop:
            kwargs["stop"] = list(params.stop)
        videos = [p for m in request.messages for p in m.parts if isinstance(p, VideoPart)]
        if videos and self.video_mode == "video_url":
            # media_io_kwargs is per modality, not per video: the first video's rate applies to all
            kwargs["media_io_kwargs"] = {"video": {"fps": videos[0].fps, "num_frames": -1}}
        return kwargs

    def _message(self, message: Message) -> dict[str, Any]:
        if all(isinstance(p, TextPart) for p in message.parts):
            # plain strings: some servers reject list content in system/assistant turns
            return {"role": message.role, "content": "\n".join(p.text for p in message.parts)}  # type: ignore[union-attr]
        content: list[dict[str, Any]] = []
        for part in message.parts:
            content.extend(self._parts(part))
        return {"role": message.role, "content": content}

    def _parts(self, part: Part) -> list[dict[str, Any]]:
        if isinstance(part, TextPart):
            return [{"type": "text", "text": part.text}]
        if isinstance(part, ImagePart):
            return [{"type": "image_url", "image_url": {"url": data_url(part.mime, part.data)}}]
        if self.video_mode == "video_url":
            return [{"type": "video_url", "video_url": {"url": video_data_url(part)}}]
        return frame_image_parts(part, timestamps=self.frame_timestamps)

    # -- response --------------------------------------------------------------------------------
    def _result(self, completion: Any, latency: float) -> Result:
        choices = completion.get("choices") if isinstance(completion, dict) else None
        if not choices or not isinstance(choices[0], dict):
            raise BackendError("openai: the answer has no choices", ErrorClass.PERMANENT, code="malformed", status=200)
        choice = choices[0]
        finish = choice.get("finish_reason") or "stop"
        message = choice.get("message") or {}
        if finish == "content_filter" or message.get("refusal"):
            refused = "openai: the provider's content filter refused this item"
            raise BackendError(refused, ErrorClass.PERMANENT, code="moderation", status=200)
        usage = completion.get("usage") or {}
        return Result(
            text=message.get("content") or "",
            finish_reason=finish,
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            latency_s=latency,
        )

    def _classify(self, exc: BaseException) -> BackendError:
        return classify_exception(exc, secret=self._secret, api_key_env=self._api_key_env)


def sdk_headers(client: Any) -> dict[str, str]:
    """The headers the SDK sends on every call (auth, organization/project, User-Agent, platform),
    without the ones it leaves out (`Omit` markers)."""
    headers = {**client.default_headers, **client.auth_headers}
    return {name: value for name, value in headers.items() if isinstance(value, str)}


def video_data_url(video: VideoPart) -> str:
    """All frames in one data URL, comma-separated, the way vLLM splits `video/jpeg` data URLs."""
    return "data:video/jpeg;base64," + ",".join(b64(frame) for frame in video.frames)


def frame_image_parts(video: VideoPart, *, timestamps: bool) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for frame, ts in zip(video.frames, video.timestamps):
        if timestamps:
            parts.append({"type": "text", "text": f"<{ts:.1f} seconds>"})
        parts.append({"type": "image_url", "image_url": {"url": data_url("image/jpeg", frame)}})
    return parts


def classify_exception(exc: BaseException, *, secret: str = "", api_key_env: str = "OPENAI_API_KEY") -> BackendError:
    """Map an openai SDK failure (Files/Batches calls) to the engine's classes; the message never carries the key."""
    if isinstance(exc, openai.APITimeoutError):
        return BackendError("openai: request timed out", ErrorClass.RETRYABLE, code="timeout")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        if cause is not None and _is_truncation(cause):
            # e.g. "peer closed connection without sending complete message body": a dying proxy
            return BackendError(f"openai: truncated answer: {scrub(str(cause), secret)}", ErrorClass.RETRYABLE, code="malformed")
        detail = f": {scrub(str(cause), secret)}" if cause is not None else ""
        return BackendError(f"openai: connection failed{detail}", ErrorClass.RETRYABLE, code="connection")
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        message = str(body.get("message") or exc.message)
        return classify_status(exc.status_code, exc.code, exc.type, message, exc.response.headers, secret=secret, api_key_env=api_key_env)
    if isinstance(exc, json.JSONDecodeError):
        return BackendError(f"openai: the answer is not valid JSON ({exc.msg})", ErrorClass.RETRYABLE, code="malformed", status=200)
    if isinstance(exc, openai.APIResponseValidationError):
        return BackendError("openai: the answer does not match the chat completion schema", ErrorClass.PERMANENT, code="malformed")
    return BackendError(f"openai: {type(exc).__name__}: {scrub(str(exc), secret)}", ErrorClass.PERMANENT, code="sdk_error")


def _is_truncation(cause: BaseException) -> bool:
    """A body cut short: the SDK's httpx transport says RemoteProtocolError."""
    return "protocol" in type(cause).__name__.lower()


def classify_status(
    status: int,
    code: str | None,
    err_type: str | None,
    message: str,
    headers: Any,
    *,
    secret: str = "",
    api_key_env: str = "OPENAI_API_KEY",
) -> BackendError:
    """The decision table for HTTP errors from OpenAI-compatible servers."""
    codes = {c.lower() for c in (code, err_type) if c}
    text = f"openai {status}" + (f" {code}" if code else "") + f": {scrub(message, secret)}"
    if codes & MODERATION_CODES:
        return BackendError(text, ErrorClass.PERMANENT, code="moderation", status=status)
    if codes & _QUOTA_CODES:
        return BackendError(text, ErrorClass.FATAL, code="quota", status=status)
    if status == 429:
        return BackendError(text, ErrorClass.RETRYABLE, code="rate_limit", status=status, retry_after=parse_retry_after(headers))
    if status in (401, 403):
        return BackendError(f"{text} (check ${api_key_env})", ErrorClass.FATAL, code="auth", status=status)
    if status == 404:
        return BackendError(text, ErrorClass.FATAL, code="not_found", status=status)  # wrong model or URL: every call fails
    if status >= 500:
        return BackendError(text, ErrorClass.RETRYABLE, code="server_error", status=status)
    if status == 408:
        return BackendError(text, ErrorClass.RETRYABLE, code="timeout", status=status)
    if status == 409:  # OpenAI's "request conflicted" is a transient lock; its own client retries it
        return BackendError(text, ErrorClass.RETRYABLE, code="conflict", status=status)
    return BackendError(text, ErrorClass.PERMANENT, code="bad_request", status=status)
