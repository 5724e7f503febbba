"""Pieces the hosted-API backends (openai:, dashscope:) share: keys, secret scrubbing, data URLs.

Kept free of any SDK import so that loading one provider never imports the other's SDK.
"""

from __future__ import annotations

import base64
import email.utils
import os
import re
import time
from collections.abc import Mapping

from vau_annotate.annotate.backends.base import BackendError, ErrorClass

# What vLLM and other self-hosted OpenAI-compatible servers accept when started without --api-key.
PLACEHOLDER_KEY = "EMPTY"

# Codes that mean "the provider's content inspection refused this item" across providers:
# Azure/OpenAI `content_filter`, DashScope `DataInspectionFailed` (native) and
# `data_inspection_failed` (compatible mode), OpenAI images `content_policy_violation`.
MODERATION_CODES = frozenset({"content_filter", "data_inspection_failed", "datainspectionfailed", "content_policy_violation"})

_KEY_LIKE = re.compile(r"\b(sk-[A-Za-z0-9_\-]{4})[A-Za-z0-9_\-]+")
_BEARER = re.compile(r"(?i)(bearer\s+)\S+")


def resolve_api_key(env_name: str, base_url: str | None, *, provider: str) -> str:
    """The key named by `env_name`; a placeholder for custom servers; a FATAL error otherwise.

    A custom base URL (vLLM, a proxy, a loopback peer) often needs no key, so a missing variable
    is not an error there: the server will answer 401 if it does want one, and that is FATAL too.
    """
    key = (os.environ.get(env_name) or "").strip()
    if key:
        return key
    if base_url:
        return PLACEHOLDER_KEY
    raise BackendError(
        f"{provider}: no API key: set the environment variable {env_name} (or name another one with --api-key-env)",
        ErrorClass.FATAL,
        code="auth",
    )


def scrub(text: str, *secrets: str) -> str:
    """Remove secrets from text that came from a server or an SDK before it reaches a log or a file.

    Servers echo keys in auth errors (OpenAI masks most of it, others may not), so the exact keys
    in use are replaced, and so is anything shaped like an `sk-` key or a bearer token.
    """
    for secret in secrets:
        if secret and secret != PLACEHOLDER_KEY and len(secret) >= 4:
            text = text.replace(secret, "***")
    text = _BEARER.sub(r"\1***", text)
    return _KEY_LIKE.sub(r"\1***", text)


def data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{b64(data)}"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `Retry-After` (seconds or an HTTP date), any case."""
    if not headers:
        return None
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = lowered.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / divisor)
        except ValueError:
            pass
    when = lowered.get("retry-after")
    if when:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(when).timestamp() - time.time())
        except (TypeError, ValueError):
            return None
    return None
