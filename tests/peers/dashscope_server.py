"""A loopback peer that speaks DashScope's native HTTP API (what the `dashscope` SDK calls).

Serves `/api/v1/services/aigc/multimodal-generation/generation` (content is a list of
`{"text"}` / `{"image"}` / `{"video": [...], "fps"}` items) and
`/api/v1/services/aigc/text-generation/generation` (`result_format="message"`: content is a string).
Errors are `{"code", "message", "request_id"}` with the HTTP status DashScope documents for the code.
"""

from __future__ import annotations

import itertools
from typing import Any

from .script import Fault, PeerServer, Received, Rendered, Reply, bearer_key, retry_headers

MULTIMODAL_PATH = "/api/v1/services/aigc/multimodal-generation/generation"
TEXT_PATH = "/api/v1/services/aigc/text-generation/generation"

_ERRORS: dict[str, tuple[int, str, str]] = {
    # kind: (status, code, message) - from DashScope's status-code reference
    "rate_limit": (429, "Throttling.RateQuota", "Requests rate limit exceeded, please try again later."),
    "quota": (400, "Arrearage", "Access denied, please make sure your account is in good standing."),
    "server_error": (500, "InternalError", "An internal error has occured, please try again later or contact service support."),
    "forbidden": (403, "AccessDenied.Unpurchased", "Access to model denied. Please make sure you are eligible for using the model."),
    "moderation": (400, "DataInspectionFailed", "Input or output data may contain inappropriate content."),
    "bad_request": (400, "InvalidParameter", "Required parameter(s) missing or invalid, please check the request parameters."),
}


class DashScopePeer(PeerServer):
    routes = (MULTIMODAL_PATH, TEXT_PATH)
    api_prefix = "/api/v1"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ids = itertools.count(1)

    def render_reply(self, reply: Reply, received: Received) -> Rendered:
        content: Any = reply.text if received.path.startswith(TEXT_PATH) else [{"text": reply.text}]
        choice = {"finish_reason": reply.finish_reason, "message": {"role": "assistant", "content": content}}
        return 200, {}, self._envelope({"choices": [choice]}, reply)

    def render_fault(self, fault: Fault, received: Received) -> Rendered:
        if fault.kind == "empty":
            return 200, {}, self._envelope({"choices": []}, Reply())
        if fault.kind == "moderation_finish":
            choice = {"finish_reason": "content_filter", "message": {"role": "assistant", "content": []}}
            return 200, {}, self._envelope({"choices": [choice]}, Reply(output_tokens=0))
        if fault.kind == "invalid_key":
            # echo the key whole so tests prove the client scrubs it from its errors
            return 401, {}, self._error(fault.code or "InvalidApiKey", f"Invalid API-key provided: {bearer_key(received)}")
        status, code, message = _ERRORS[fault.kind]
        headers = retry_headers(fault) if fault.kind == "rate_limit" else {}
        return status, headers, self._error(fault.code or code, message)

    def _request_id(self) -> str:
        return f"peer-{next(self._ids):06d}"

    def _envelope(self, output: dict[str, Any], reply: Reply) -> dict[str, Any]:
        usage = {
            "input_tokens": reply.input_tokens,
            "output_tokens": reply.completion_tokens,
            "total_tokens": reply.input_tokens + reply.completion_tokens,
        }
        return {"output": output, "usage": usage, "request_id": self._request_id()}

    def _error(self, code: str, message: str) -> dict[str, Any]:
        return {"code": code, "message": message, "request_id": self._request_id()}


def content_items(received: Received) -> list[Any]:
    """All content items of all messages a client sent, in order (string contents become `{"text"}`)."""
    items: list[Any] = []
    for message in ((received.body or {}).get("input") or {}).get("messages", []):
        content = message.get("content")
        items.extend([{"text": content}] if isinstance(content, str) else (content or []))
    return items
