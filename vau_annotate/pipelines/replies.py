"""Model replies a record may hold: whole replies only, and reasons that say how to retry a failure.

Shared by build-cot and reflect. A reply that stopped at its token limit (`finish_reason` "length",
or a provider's equivalent) holds a sentence cut mid-word; it must never reach a record. It is asked
again once with a larger budget (the same prompt, so the ledger keeps both calls apart by their
sampling parameters); a second cut reply fails the item with the reason `truncated`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from vau_annotate.annotate.backends import BackendError, ErrorClass, Request, Result
from vau_annotate.annotate.backends._hosted import MODERATION_CODES
from vau_annotate.annotate.engine import Engine

# finish reasons meaning "the token budget ran out": OpenAI-compatible servers, vLLM, DashScope and
# transformers say "length"; Anthropic-style APIs "max_tokens"; Gemini "MAX_TOKENS"; Responses API
# "max_output_tokens".
TRUNCATION_REASONS = frozenset({"length", "max_tokens", "max_output_tokens", "model_length"})
BUDGET_GROWTH = 2  # the repair's max_tokens, as a multiple of the first one
RETRY_REJECTED = "--retry-rejected"
RETRY_FAILED = "--retry-failed"

OnResult = Callable[[Request, Result], None]


def is_truncated(result: Result) -> bool:
    """Whether the reply stopped because its token budget ran out."""
    return (result.finish_reason or "").strip().lower() in TRUNCATION_REASONS


class Truncated(Exception):
    """A reply that was cut at its token limit twice: the item is rejected as `truncated`."""

    def __init__(self, part: str, budgets: tuple[int, int]) -> None:
        self.part = part
        self.budgets = budgets
        super().__init__(self.reason)

    @property
    def reason(self) -> str:
        first, second = self.budgets
        return (f"truncated: the {self.part} reply stopped at its token limit twice ({first}, then {second} tokens); "
                f"raise the token budget, then re-run with {RETRY_REJECTED}")


def larger_budget(request: Request, growth: int = BUDGET_GROWTH) -> Request:
    """The same request with `growth` × its max_tokens."""
    return replace(request, params=replace(request.params, max_tokens=request.params.max_tokens * growth))


async def whole_reply(engine: Engine, item: str, request: Request, part: str, on_result: OnResult) -> Result:
    """A reply that was not cut off: asked once more with a larger budget if it was; else Truncated.

    `on_result` sees every reply (cut or not), so a record's usage counts the calls it cost.
    BackendError and RunStopped from the engine pass through.
    """
    result = await engine.call(item, request)
    on_result(request, result)
    if not is_truncated(result):
        return result
    bigger = larger_budget(request)
    result = await engine.call(item, bigger)
    on_result(bigger, result)
    if is_truncated(result):
        raise Truncated(part, (request.params.max_tokens, bigger.params.max_tokens))
    return result


def is_refusal(error: BackendError) -> bool:
    """A content refusal (moderation / content filter), as opposed to any other failure."""
    code = (error.code or "").lower()
    return code in MODERATION_CODES or "moderation" in code or "inspection" in code or "content_filter" in code


def refusal_reason(error: BackendError) -> str:
    """A reject reason for a call that failed for good, naming the flags that retry it.

    A permanent failure is remembered by the ledger, so asking again needs --retry-failed as well.
    """
    if is_refusal(error):
        return f"model refused: moderation (re-run with {RETRY_REJECTED} {RETRY_FAILED} to ask again)"
    if error.error_class is ErrorClass.RETRYABLE:
        return f"model unavailable: {error.code} (re-run with {RETRY_REJECTED} to try again)"
    return f"model refused: {error.code} (re-run with {RETRY_REJECTED} {RETRY_FAILED} to ask again)"
