"""`--batch`: calls through the OpenAI Batch API peer — gathering into files within limits, resume
of submitted jobs after a restart, and failed / expired / partially failed / damaged jobs."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from peers.batch_server import BatchPeer, completion
from vau_annotate.annotate.backends.base import ErrorClass, Message, Request, SamplingParams
from vau_annotate.annotate.backends.openai_backend import OpenAIBackend
from vau_annotate.annotate.backends.openai_batch import BatchingBackend, chunk_lines
from vau_annotate.annotate.batch_store import BatchStore, batch_summary
from vau_annotate.annotate.engine import Engine, TransientFailure
from vau_annotate.annotate.ledger import Ledger
from vau_annotate.pipelines.status import pending_batches, render_status

KEY = "sk-batch-test-secret"


def request(text: str) -> Request:
    return Request(messages=(Message.text("user", text),), params=SamplingParams(max_tokens=16), prompt_name="t", prompt_hash="h")


def echo_upper(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The peer's model: answers with the user's text upper-cased (a function of the request only)."""
    text = body["messages"][-1]["content"]
    text = text if isinstance(text, str) else text[0]["text"]
    if "refuse" in text:
        return 400, {"error": {"message": "Input data may contain inappropriate content.", "type": "data_inspection_failed", "code": "data_inspection_failed"}}
    if "flaky" in text:
        return 500, {"error": {"message": "server error", "type": "server_error", "code": "internal_error"}}
    return 200, completion(text.upper())


def backend(peer: BatchPeer, ledger_path: Path, **options: Any) -> BatchingBackend:
    inner = OpenAIBackend("gpt-4o-mini", base_url=peer.base_url, api_key=KEY, api_key_env="OPENAI_API_KEY", timeout=10.0)
    return BatchingBackend(inner, BatchStore(ledger_path), gather_s=0.05, poll_s=0.02, **options)


async def run_calls(peer: BatchPeer, ledger_path: Path, texts: list[str], **options: Any) -> tuple[list, BatchingBackend, Engine]:
    batching = backend(peer, ledger_path, **options)
    engine = Engine(batching, Ledger(ledger_path), stage="test", concurrency=10_000, max_attempts=2, base_delay=0.01, max_delay=0.02)
    async with engine:
        outcomes = await asyncio.gather(*(engine.outcome(f"item{i}", request(t)) for i, t in enumerate(texts)), return_exceptions=True)
    await batching.aclose()
    return outcomes, batching, engine


def test_one_round_is_one_job_and_answers_land_in_the_ledger(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite"
    with BatchPeer(echo_upper, polls=2) as peer:
        outcomes, batching, engine = asyncio.run(run_calls(peer, ledger, ["a cat", "a dog", "a cow"]))
        assert [o.result.text for o in outcomes] == ["A CAT", "A DOG", "A COW"]
        assert len(peer.created) == 1 and len(peer.uploads) == 1
        lines = peer.uploads[0]
        assert {line["url"] for line in lines} == {"/v1/chat/completions"}
        assert {line["body"]["model"] for line in lines} == {"gpt-4o-mini"}
        assert sorted(line["custom_id"] for line in lines) == sorted(engine.key(request(t)) for t in ["a cat", "a dog", "a cow"])
        assert peer.retrieves[peer.created[0]] == 3  # two in_progress polls, then completed
    # half price: the engine prices the call with the backend's factor
    assert engine.price_factor == 0.5
    full = engine.price.cost(outcomes[0].result.input_tokens, outcomes[0].result.output_tokens)
    assert outcomes[0].cost == pytest.approx(full / 2) and full > 0
    # a second run answers everything from the ledger: nothing uploaded
    with BatchPeer(echo_upper) as peer:
        outcomes, _, _ = asyncio.run(run_calls(peer, ledger, ["a cat", "a dog", "a cow"]))
        assert [o.cached for o in outcomes] == [True, True, True]
        assert peer.uploads == []


def test_dependent_steps_go_out_in_successive_rounds(tmp_path: Path) -> None:
    async def chains(batching: BatchingBackend, engine: Engine) -> list[str]:
        async def chain(i: int) -> str:
            first = await engine.call(f"v{i}", request(f"step one of video {i}"))
            second = await engine.call(f"v{i}", request(f"step two after {first.text}"))
            return second.text

        async with engine:
            out = await asyncio.gather(*(chain(i) for i in range(4)))
        await batching.aclose()
        return out

    with BatchPeer(echo_upper) as peer:
        batching = backend(peer, tmp_path / "l.sqlite")
        engine = Engine(batching, Ledger(tmp_path / "l.sqlite"), stage="cot", concurrency=10_000)
        texts = asyncio.run(chains(batching, engine))
        assert texts[2] == "STEP TWO AFTER STEP ONE OF VIDEO 2"
        assert [len(u) for u in peer.uploads] == [4, 4]  # round 1: every first step; round 2: every second


def test_files_respect_request_and_byte_limits() -> None:
    lines = [(f"k{i}", b"x" * 100 + b"\n") for i in range(10)]
    assert [len(c) for c in chunk_lines(lines, max_requests=4, max_bytes=10_000)] == [4, 4, 2]
    assert [len(c) for c in chunk_lines(lines, max_requests=50_000, max_bytes=303)] == [3, 3, 3, 1]


def test_restart_waits_for_the_submitted_job_instead_of_resubmitting(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite"
    with BatchPeer(echo_upper, polls=10_000) as peer:  # the job never finishes while the first process lives

        async def first_process() -> None:
            batching = backend(peer, ledger)
            engine = Engine(batching, Ledger(ledger), stage="test", concurrency=100)
            calls = asyncio.gather(*(engine.outcome(f"i{n}", request(t)) for n, t in enumerate(["one", "two"])))
            for _ in range(200):
                await asyncio.sleep(0.02)
                if peer.created:
                    break
            calls.cancel()  # the user's Ctrl-C / a kill: the job stays submitted at the provider
            await asyncio.gather(calls, return_exceptions=True)
            await batching.aclose()

        asyncio.run(first_process())
        assert len(peer.created) == 1
        [summary] = batch_summary(ledger)
        assert summary["status"] in ("validating", "in_progress") and summary["requests"] == 2  # submitted, not final
        [pending] = pending_batches(ledger)
        assert pending["batch_id"] == summary["batch_id"] and pending["cost"] == 0.0  # nothing answered yet
        table = io.StringIO()
        render_status({"run": "r", "pending_batches": [pending]}, Console(file=table, width=200))
        assert summary["batch_id"] in table.getvalue() and "a re-run picks them up" in table.getvalue()
        peer.polls = 0  # the provider finishes the job
        outcomes, _, _ = asyncio.run(run_calls(peer, ledger, ["one", "two"]))
        assert [o.result.text for o in outcomes] == ["ONE", "TWO"]
        assert len(peer.created) == 1 and len(peer.uploads) == 1  # picked up, not submitted again
    assert batch_summary(ledger)[0]["status"] == "completed"


def test_partial_failures_keep_their_error_classes(tmp_path: Path) -> None:
    with BatchPeer(echo_upper, outcomes=["partial", "completed"]) as peer:
        outcomes, _, _ = asyncio.run(run_calls(peer, tmp_path / "l.sqlite", ["fine", "please refuse", "flaky now"]))
        assert outcomes[0].result.text == "FINE"
        assert outcomes[1].error.error_class is ErrorClass.PERMANENT and outcomes[1].error.code == "moderation"
        # the 500 is retryable: it went out again in a second job, failed again there, and the item
        # is left pending (a transient failure, not a reject)
        assert isinstance(outcomes[2], TransientFailure) and outcomes[2].error.code == "server_error"
        assert [len(u) for u in peer.uploads] == [3, 1]
        assert peer.uploads[1][0]["body"]["messages"][0]["content"] == "flaky now"


def test_failed_job_is_a_permanent_error_with_the_providers_reason(tmp_path: Path) -> None:
    with BatchPeer(echo_upper, outcomes=["failed"]) as peer:
        outcomes, _, _ = asyncio.run(run_calls(peer, tmp_path / "l.sqlite", ["a", "b"]))
    for outcome in outcomes:
        assert outcome.error.error_class is ErrorClass.PERMANENT
        assert "invalid_json_line" in str(outcome.error)
        assert KEY not in str(outcome.error)


@pytest.mark.parametrize("outcome", ["expired:1", "drop:2"])
def test_missing_lines_are_submitted_again_and_nothing_is_lost(tmp_path: Path, outcome: str) -> None:
    with BatchPeer(echo_upper, outcomes=[outcome, "completed"]) as peer:
        outcomes, _, _ = asyncio.run(run_calls(peer, tmp_path / "l.sqlite", ["one", "two", "three"]))
        assert [o.result.text for o in outcomes] == ["ONE", "TWO", "THREE"]
        assert [len(u) for u in peer.uploads] == [3, 2]


def test_missing_lines_stay_pending_when_retries_run_out(tmp_path: Path) -> None:
    ledger = tmp_path / "l.sqlite"
    with BatchPeer(echo_upper, outcomes=["drop:1", "drop:1"]) as peer:
        outcomes, _, _ = asyncio.run(run_calls(peer, ledger, ["one", "two"]))
        assert outcomes[0].result.text == "ONE"
        assert isinstance(outcomes[1], TransientFailure) and outcomes[1].error.code == "batch_missing"
        assert [len(u) for u in peer.uploads] == [2, 1]
        # the next run (same provider) submits only the missing request
        outcomes, _, _ = asyncio.run(run_calls(peer, ledger, ["one", "two"]))
        assert outcomes[0].cached and outcomes[1].result.text == "TWO"
        assert [len(u) for u in peer.uploads] == [2, 1, 1]
    assert [job["status"] for job in batch_summary(ledger)] == ["completed"] * 3
    assert batch_summary(ledger, pending_only=True) == []
