"""A loopback peer that speaks OpenAI's `/v1/chat/completions` (non-streaming), vLLM flavoured.

Errors use OpenAI's envelope `{"error": {"message", "type", "code", "param"}}`; the moderation
refusal uses DashScope compatible mode's `data_inspection_failed` code unless a fault names another
(`content_filter` is Azure's).
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from .script import Fault, PeerServer, Received, Rendered, Reply, bearer_key, retry_headers

_ERRORS: dict[str, tuple[int, str, str, str]] = {
    # kind: (status, type, code, message)
    "rate_limit": (429, "requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again later."),
    "quota": (429, "insufficient_quota", "insufficient_quota", "You exceeded your current quota, please check your plan and billing details."),
    "server_error": (500, "server_error", "internal_error", "The server had an error while processing your request."),
    "forbidden": (403, "invalid_request_error", "model_not_allowed", "You are not allowed to use this model."),
    "moderation": (400, "data_inspection_failed", "data_inspection_failed", "Input data may contain inappropriate content."),
    "bad_request": (400, "invalid_request_error", "invalid_value", "Invalid value for 'max_tokens': must be positive."),
}


class OpenAIPeer(PeerServer):
    routes = ("/v1/chat/completions",)
    api_prefix = "/v1"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ids = itertools.count(1)

    def render_reply(self, reply: Reply, received: Received) -> Rendered:
        return 200, {}, self._completion(received, [_choice(reply.text, reply.finish_reason)], reply)

    def render_fault(self, fault: Fault, received: Received) -> Rendered:
        if fault.kind == "empty":
            return 200, {}, self._completion(received, [], Reply())
        if fault.kind == "moderation_finish":
            return 200, {}, self._completion(received, [_choice(None, "content_filter")], Reply(output_tokens=0))
        if fault.kind == "invalid_key":
            # real servers mask most of the key; echo it whole so tests prove the client scrubs it
            message = f"Incorrect API key provided: {bearer_key(received)}."
            return 401, {}, _error(message, "invalid_request_error", fault.code or "invalid_api_key")
        status, err_type, code, message = _ERRORS[fault.kind]
        headers = retry_headers(fault) if fault.kind == "rate_limit" else {}
        return status, headers, _error(message, err_type, fault.code or code)

    def _completion(self, received: Received, choices: list[dict[str, Any]], reply: Reply) -> dict[str, Any]:
        body = received.body if isinstance(received.body, dict) else {}
        return {
            "id": f"chatcmpl-peer-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "peer"),
            "choices": choices,
            "usage": {
                "prompt_tokens": reply.input_tokens,
                "completion_tokens": reply.completion_tokens,
                "total_tokens": reply.input_tokens + reply.completion_tokens,
            },
        }


def _choice(text: str | None, finish_reason: str) -> dict[str, Any]:
    return {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason, "logprobs": None}


def _error(message: str, err_type: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": err_type, "code": code, "param": None}}


def content_parts(received: Received) -> list[dict[str, Any]]:
    """All content parts of all messages a client sent, in order (string contents become text parts)."""
    parts: list[dict[str, Any]] = []
    for message in (received.body or {}).get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            parts.append({"type": "text", "text": content})
        else:
            parts.extend(content or [])
    return parts
