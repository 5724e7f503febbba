"""mock: the scriptable backend used by tests, the demo and dry runs."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from vau_annotate.annotate.backends import (
    BackendError,
    ErrorClass,
    ImagePart,
    Message,
    Request,
    Result,
    SpecError,
    TextPart,
    VideoPart,
    load_backend,
    providers,
)

IMAGE = b"\xff\xd8 not really a jpeg"


def ask(text: str, *parts: Any) -> Request:
    return Request(messages=(Message.text("system", "you are terse"), Message("user", (*parts, TextPart(text)))))


def outcomes(backend: Any, *requests: Request) -> list[Result | BackendError]:
    async def go() -> list[Result | BackendError]:
        out: list[Result | BackendError] = []
        for request in requests:
            try:
                out.append(await backend.generate(request))
            except BackendError as error:
                out.append(error)
        await backend.aclose()
        return out

    return asyncio.run(go())


def test_echo_answers_the_last_text_and_counts_tokens_deterministically() -> None:
    video = VideoPart(frames=(IMAGE, IMAGE, IMAGE), timestamps=(0.0, 1.0, 2.0), fps=1.0)
    [result] = outcomes(load_backend("mock:echo"), ask("what is going on here", ImagePart(IMAGE), video))
    assert isinstance(result, Result)
    assert result.text == "what is going on here" and result.finish_reason == "stop"
    assert result.input_tokens == 3 + 64 + 3 * 64 + 5  # system words + image + frames + user words
    assert result.output_tokens == 5


def test_list_replies_are_used_in_order_then_exhausted() -> None:
    backend = load_backend("mock:teacher", replies=["first answer", {"text": "cut", "finish_reason": "length"}])
    first, second, third = outcomes(backend, ask("a"), ask("b"), ask("c"))
    assert isinstance(first, Result) and first.text == "first answer"
    assert isinstance(second, Result) and (second.text, second.finish_reason) == ("cut", "length")
    assert isinstance(third, BackendError) and (third.error_class, third.code) == (ErrorClass.PERMANENT, "mock_exhausted")
    assert backend.calls == 3 and backend.requests[0].messages[-1].parts[-1] == TextPart("a")


def test_jsonl_script_named_by_the_model_with_rules_and_errors(tmp_path: Path) -> None:
    script = tmp_path / "teacher.jsonl"
    lines = [
        {"match": "caption", "text": "a man walks"},
        {"error": {"class": "retryable", "code": "rate_limit", "message": "slow down", "retry_after": 1.5}},
        "<answer>B</answer>",
        {"error": {"class": "fatal", "code": "quota", "message": "no money"}},
    ]
    script.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    backend = load_backend(f"mock:{script}")
    got = outcomes(backend, ask("caption frame 1"), ask("question"), ask("caption frame 2"), ask("question"), ask("question"))
    assert [r.text for r in got if isinstance(r, Result)] == ["a man walks", "a man walks", "<answer>B</answer>"]
    errors = [r for r in got if isinstance(r, BackendError)]
    assert [(e.error_class, e.code, e.retry_after, str(e)) for e in errors] == [
        (ErrorClass.RETRYABLE, "rate_limit", 1.5, "slow down"),
        (ErrorClass.FATAL, "quota", None, "no money"),
    ]


def test_json_list_script_file_option(tmp_path: Path) -> None:
    script = tmp_path / "replies.json"
    script.write_text(json.dumps(["one", "two"]))
    got = outcomes(load_backend("mock:any", script_file=script), ask("x"), ask("y"))
    assert [r.text for r in got if isinstance(r, Result)] == ["one", "two"]


def test_callable_replies_and_results_and_errors_pass_through() -> None:
    def respond(request: Request) -> Any:
        text = request.messages[-1].parts[-1].text  # type: ignore[union-attr]
        if text == "boom":
            return BackendError("scripted", ErrorClass.PERMANENT, code="moderation")
        if text == "exact":
            return Result("fixed", "stop", 1, 2, 0.0)
        return text.upper()

    got = outcomes(load_backend("mock:fn", replies=respond), ask("hello"), ask("boom"), ask("exact"))
    assert isinstance(got[0], Result) and got[0].text == "HELLO"
    assert isinstance(got[1], BackendError) and got[1].code == "moderation"
    assert got[2] == Result("fixed", "stop", 1, 2, 0.0)


def test_latency_is_simulated_without_blocking_other_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """All 20 calls wait their latency at the same time (counted, not timed: load cannot break it)."""
    from vau_annotate.annotate.backends import mock_backend

    backend = load_backend("mock:echo", latency_s=0.1)
    real_sleep, waiting, most = asyncio.sleep, [0], [0]

    async def counted_sleep(seconds: float) -> None:
        waiting[0] += 1
        most[0] = max(most[0], waiting[0])
        try:
            await real_sleep(seconds)
        finally:
            waiting[0] -= 1

    monkeypatch.setattr(mock_backend.asyncio, "sleep", counted_sleep)

    async def go() -> float:
        started = time.monotonic()
        await asyncio.gather(*(backend.generate(ask(f"q{i}")) for i in range(20)))
        return time.monotonic() - started

    assert asyncio.run(go()) >= 0.1
    assert most[0] == 20


def test_registry_knows_mock_and_rejects_unusable_specs(tmp_path: Path) -> None:
    assert "mock" in providers()
    with pytest.raises(SpecError, match="mock:echo"):
        load_backend("mock:nothing-scripted")
    with pytest.raises(SpecError, match="does not exist"):
        load_backend(f"mock:{tmp_path / 'missing.jsonl'}")
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a list"}')
    with pytest.raises(SpecError, match="JSON list"):
        load_backend(f"mock:{bad}")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"error": {"class": "sometimes"}}\n')
    with pytest.raises(SpecError, match="error class"):
        load_backend(f"mock:{broken}")
