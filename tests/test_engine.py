"""The call engine: cache, retries, fatal stops, rate limits, cost, dry-run, and kill -9 resume."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from PIL import Image

from vau_annotate.annotate.backends.base import (
    BackendError, ErrorClass, ImagePart, Message, Request, Result, SamplingParams, TextPart, VideoPart,
)
from vau_annotate.annotate.engine import Engine, RunStopped, TokenBucket
from vau_annotate.annotate.ledger import Ledger
from vau_annotate.annotate.pricing import (
    Price, PriceFileError, PriceTable, estimate_tokens, image_rule, image_tokens, qwen_smart_resize,
)

ROOT = Path(__file__).resolve().parents[1]


class FakeBackend:
    """A scriptable in-test backend: per prompt text, a list of exceptions to raise before answering.

    It records the monotonic time of every request it receives, so tests can check waits without
    timing the test itself.
    """

    def __init__(self, provider: str = "fake", model: str = "m", *, latency: float = 0.0, script=None, tokens=(100, 20)) -> None:
        self.provider = provider
        self.model = model
        self.latency = latency
        self.script: dict[str, list[BaseException]] = {k: list(v) for k, v in (script or {}).items()}
        self.tokens = tokens
        self.calls: list[tuple[float, str]] = []
        self.finished = 0

    async def generate(self, request: Request) -> Result:
        text = request.messages[-1].parts[-1].text
        self.calls.append((time.monotonic(), text))
        if self.latency:
            await asyncio.sleep(self.latency)
        pending = self.script.get(text)
        if pending:
            raise pending.pop(0)
        self.finished += 1
        return Result(f"answer to {text}", "stop", self.tokens[0], self.tokens[1], self.latency)

    async def aclose(self) -> None:
        return None

    def times(self, text: str) -> list[float]:
        return [t for t, x in self.calls if x == text]


def req(text: str, **kw) -> Request:
    return Request(messages=(Message.text("user", text),), prompt_name="p", prompt_hash="h", **kw)


def pairs(n: int, prefix: str = "q") -> list[tuple[str, Request]]:
    return [(f"item{i}", req(f"{prefix}{i}")) for i in range(n)]


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def ledger(tmp_path):
    with Ledger(tmp_path / "ledger.sqlite") as led:
        yield led


def retryable(retry_after=None, code="429"):
    return BackendError("rate limited", ErrorClass.RETRYABLE, code=code, retry_after=retry_after, status=429)


# -- answers and cache ------------------------------------------------------------------------------

def test_answers_are_recorded_and_repeats_come_from_the_ledger(ledger):
    backend = FakeBackend()
    outcomes = run(Engine(backend, ledger, stage="cot").run_all(pairs(5)))
    assert sorted(o.item for o in outcomes) == [f"item{i}" for i in range(5)]
    assert all(o.ok and not o.cached for o in outcomes)
    assert len(backend.calls) == 5

    again = Engine(backend, ledger, stage="cot")
    outcomes = run(again.run_all(pairs(5)))
    assert len(backend.calls) == 5  # nothing reached the backend
    assert all(o.cached and o.result.text == f"answer to q{o.item[4:]}" for o in outcomes)
    assert again.usage.cache_hits == 5 and again.usage.calls == 0 and again.usage.cost == 0
    (row,) = ledger.usage_summary()
    assert row["answered"] == 5 and row["cache_hits"] == 5 and row["requests"] == 5


def test_call_api_for_pipelines(ledger):
    backend = FakeBackend()

    async def main():
        async with Engine(backend, ledger, stage="cot") as engine:
            first = await engine.call("v1", req("hello"))
            second = await engine.call("v1", req("hello"))
            return first, second, engine.usage

    first, second, usage = run(main())
    assert first.text == second.text == "answer to hello"
    assert len(backend.calls) == 1 and usage.calls == 1 and usage.cache_hits == 1


def test_identical_requests_in_flight_are_sent_once(ledger):
    backend = FakeBackend(latency=0.02)
    outcomes = run(Engine(backend, ledger, stage="cot").run_all([("a", req("same")), ("b", req("same"))]))
    assert len(backend.calls) == 1
    assert sorted(o.item for o in outcomes) == ["a", "b"] and all(o.ok for o in outcomes)


def test_a_repeat_later_in_the_input_is_answered_by_the_first_one(ledger):
    backend = FakeBackend()
    batch = [("a", req("x")), ("b", req("y")), ("c", req("z")), ("d", req("x")), ("e", req("y"))]
    outcomes = run(Engine(backend, ledger, stage="cot", concurrency=1).run_all(batch))
    assert sorted(text for _, text in backend.calls) == ["x", "y", "z"]
    assert sorted(o.item for o in outcomes if o.cached) == ["d", "e"]


def test_progress_hook_sees_every_outcome(ledger):
    seen = []
    engine = Engine(FakeBackend(), ledger, stage="cot", on_progress=lambda usage, outcome: seen.append((usage.calls, outcome.item)))
    run(engine.run_all(pairs(3)))
    assert sorted(item for _, item in seen) == ["item0", "item1", "item2"]
    assert engine.usage.as_dict()["input_tokens"] == 300


# -- retries -----------------------------------------------------------------------------------------

def test_retryable_failure_is_retried_after_at_least_retry_after(ledger):
    backend = FakeBackend(script={"q0": [retryable(retry_after=0.05), retryable(retry_after=0.05)]})
    engine = Engine(backend, ledger, stage="cot", base_delay=0.001, max_delay=0.002)
    (outcome,) = run(engine.run_all(pairs(1)))
    assert outcome.ok and outcome.attempts == 3
    t = backend.times("q0")
    assert len(t) == 3
    assert t[1] - t[0] >= 0.05 and t[2] - t[1] >= 0.05  # retry_after beats the tiny backoff
    assert ledger.get(outcome.key).attempts == 3
    assert engine.usage.errors == {"retryable:429": 2}


def test_backoff_is_exponential_with_full_jitter(ledger):
    engine = Engine(FakeBackend(), ledger, stage="cot", base_delay=0.01, max_delay=0.05)
    for attempt, ceiling in [(1, 0.01), (2, 0.02), (3, 0.04), (4, 0.05), (9, 0.05)]:
        delays = [engine.backoff(attempt) for _ in range(200)]
        assert min(delays) >= 0 and max(delays) <= ceiling
    assert engine.backoff(1, retry_after=3.0) == 3.0


def test_exhausted_retries_are_recorded_and_retried_on_rerun(ledger):
    backend = FakeBackend(script={"q0": [retryable(code="503")] * 3})
    (outcome,) = run(Engine(backend, ledger, stage="cot", max_attempts=3, base_delay=0.001).run_all(pairs(1)))
    assert not outcome.ok and outcome.error.error_class is ErrorClass.RETRYABLE and outcome.attempts == 3
    assert ledger.get(outcome.key).error_code == "503"

    (outcome,) = run(Engine(backend, ledger, stage="cot", max_attempts=3, base_delay=0.001).run_all(pairs(1)))
    assert outcome.ok and len(backend.times("q0")) == 4
    assert ledger.get(outcome.key).attempts == 4


def test_permanent_failure_is_not_retried_and_is_answered_from_the_ledger(ledger):
    bad = BackendError("image too large", ErrorClass.PERMANENT, code="400", status=400)
    backend = FakeBackend(script={"q0": [bad]})
    (outcome,) = run(Engine(backend, ledger, stage="cot", base_delay=0.001).run_all(pairs(1)))
    assert not outcome.ok and outcome.error.code == "400" and len(backend.calls) == 1

    engine = Engine(backend, ledger, stage="cot")
    (outcome,) = run(engine.run_all(pairs(1)))
    assert outcome.cached and outcome.error.error_class is ErrorClass.PERMANENT and "image too large" in str(outcome.error)
    assert len(backend.calls) == 1  # no second paid call
    with pytest.raises(BackendError, match="image too large"):
        run(Engine(backend, ledger, stage="cot").call("item0", req("q0")))
    assert engine.estimate(pairs(1)).cached == 1

    retry = Engine(backend, ledger, stage="cot", retry_failed=True, concurrency=1)
    assert retry.estimate(pairs(1)).cached == 0
    first, second = run(retry.run_all(pairs(1) + [("again", req("q0"))]))
    assert first.ok and second.ok and second.cached
    assert len(backend.calls) == 2  # retried once, and the repeat is answered by the retry


def test_unexpected_exception_fails_the_item_without_a_retry_loop(ledger):
    backend = FakeBackend(script={"q0": [KeyError("bug")]})
    (outcome,) = run(Engine(backend, ledger, stage="cot", base_delay=0.001).run_all(pairs(1)))
    assert not outcome.ok and outcome.error.code == "unexpected:KeyError" and len(backend.calls) == 1
    (outcome,) = run(Engine(backend, ledger, stage="cot").run_all(pairs(1)))
    assert outcome.ok and len(backend.calls) == 2  # recorded as retryable: a re-run tries again


def test_fatal_error_stops_the_run_and_no_further_call_is_made(ledger):
    fatal = BackendError("invalid api key", ErrorClass.FATAL, code="invalid_api_key", status=401)
    backend = FakeBackend(latency=0.01, script={"q2": [fatal]})
    engine = Engine(backend, ledger, stage="cot", concurrency=2)

    async def main():
        with pytest.raises(RunStopped, match="invalid api key") as info:
            await engine.run_all(pairs(40))
        made = len(backend.calls)
        await asyncio.sleep(0.05)
        assert len(backend.calls) == made  # nothing was still running or scheduled
        with pytest.raises(RunStopped):
            await engine.call("x", req("another"))
        return made, info.value

    made, stopped = run(main())
    assert made <= 5  # the calls before q2 and at most the one running beside it
    assert len(backend.calls) == made
    assert "run the same command again" in str(stopped)
    assert stopped.error.code == "invalid_api_key"
    (row,) = ledger.usage_summary()
    assert row["errors"] == {"fatal:invalid_api_key": 1}


# -- interruption and kill -9 ------------------------------------------------------------------------

def test_ctrl_c_lets_calls_in_flight_land_in_the_ledger_and_starts_no_new_ones(ledger):
    backend = FakeBackend(latency=0.1)
    engine = Engine(backend, ledger, stage="cot", concurrency=3, grace_s=5.0)

    async def consume():
        async for _ in engine.run(pairs(20)):
            pass

    async def main():
        task = asyncio.create_task(consume())
        while len(backend.calls) < 3:
            await asyncio.sleep(0.005)
        task.cancel()  # what asyncio.run does on Ctrl-C
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())
    assert len(backend.calls) == 3
    assert ledger.usage_totals()["answered"] == 3  # the three in flight finished and were recorded


CHILD = textwrap.dedent(
    """
    import asyncio, os, sys, time
    sys.path.insert(0, {root!r})
    from vau_annotate.annotate.backends.base import Message, Request, Result
    from vau_annotate.annotate.engine import Engine
    from vau_annotate.annotate.ledger import Ledger

    class SlowBackend:
        provider, model = "fake", "slow"

        def __init__(self, log_path, stall_after):
            self.log = open(log_path, "a", buffering=1)
            self.stall_after, self.started = stall_after, 0

        async def generate(self, request):
            text = request.messages[0].parts[0].text
            self.started += 1
            if self.stall_after and self.started > self.stall_after:
                await asyncio.sleep(3600)  # the first run is killed while these wait
            await asyncio.sleep(0.03)
            self.log.write(text + "\\n")  # the provider answered: this call is paid for
            return Result("answer " + text, "stop", 10, 2, 0.03)

        async def aclose(self):
            pass

    async def main(ledger_path, log_path, n, stall_after):
        engine = Engine(SlowBackend(log_path, stall_after), Ledger(ledger_path), stage="cot", concurrency=4)
        requests = [(f"item{{i}}", Request(messages=(Message.text("user", f"q{{i}}"),))) for i in range(n)]
        outcomes = await engine.run_all(requests)
        print(len(outcomes), sum(o.cached for o in outcomes), flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 0))
    """
)


def test_kill_9_mid_run_then_rerun_pays_each_call_once(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=str(ROOT)))
    ledger_path, log_path, n = tmp_path / "ledger.sqlite", tmp_path / "calls.log", 80

    child = subprocess.Popen([sys.executable, str(script), str(ledger_path), str(log_path), str(n), "16"], stdout=subprocess.PIPE)
    deadline = time.monotonic() + 120  # a wait, not a bound: a cold, loaded machine starts the child slowly
    answered = 0
    while answered < 12 and time.monotonic() < deadline:
        time.sleep(0.01)
        if ledger_path.exists():
            try:
                with Ledger(ledger_path) as watch:
                    answered = watch.usage_totals()["answered"]
            except Exception:
                answered = 0
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    with Ledger(ledger_path) as led:
        before = {r.text.split()[-1] for r in led.iter_calls() if r.ok}
    first_run_calls = log_path.read_text().split()
    assert 12 <= len(before) < n  # killed mid-run with answers committed

    rerun = subprocess.run([sys.executable, str(script), str(ledger_path), str(log_path), str(n)], capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    outcomes, cached = map(int, rerun.stdout.split())
    assert outcomes == n and cached == len(before)
    all_calls = log_path.read_text().split()
    second_run_calls = all_calls[len(first_run_calls):]
    assert not set(second_run_calls) & before  # nothing answered before the kill was paid again
    assert len(second_run_calls) == len(set(second_run_calls)) == n - len(before)
    # only calls the provider answered but the ledger never saw (in flight at the kill) may repeat
    assert len(all_calls) - n <= 4
    with Ledger(ledger_path) as led:
        records = [r for r in led.iter_calls() if r.ok]
    assert sorted(r.item for r in records) == sorted(f"item{i}" for i in range(n))


# -- rate limits ---------------------------------------------------------------------------------------

def test_rpm_spaces_requests(ledger):
    backend = FakeBackend()
    run(Engine(backend, ledger, stage="cot", concurrency=8, rpm=1200).run_all(pairs(6)))  # one per 50 ms
    times = sorted(t for t, _ in backend.calls)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(gaps) == 5 and min(gaps) >= 0.045


def test_tpm_reserves_estimate_and_settles_on_actual_tokens():
    async def main():
        bucket = TokenBucket(rate_per_s=1000.0, capacity=1000.0)
        await bucket.acquire(1500)  # bigger than the bucket: goes through, leaves a debt
        assert bucket.level == pytest.approx(-500, abs=5)
        bucket.give_back(1400)  # the call used only 100 tokens
        assert bucket.level == pytest.approx(900, abs=5)
        start = time.monotonic()
        await bucket.acquire(1000)  # needs 100 more tokens: ≈ 0.1 s
        return time.monotonic() - start

    waited = run(main())
    assert waited >= 0.08


def test_tpm_limits_the_engine(ledger):
    backend = FakeBackend(tokens=(5, 15))
    # 6000 tokens/min = 100/s with a 100-token bucket; each request reserves 5 (text) + 15 (max_tokens)
    # and uses exactly that: five go at once, then one every 0.2 s.
    engine = Engine(backend, ledger, stage="cot", tpm=6000)
    assert estimate_tokens(req("t0"), "fake", "m") == 5
    run(engine.run_all([(f"i{i}", req(f"t{i}", params=SamplingParams(max_tokens=15))) for i in range(8)]))
    times = sorted(t for t, _ in backend.calls)
    assert times[7] - times[4] >= 0.6 * 0.9


# -- cost and dry-run ----------------------------------------------------------------------------------

def test_cost_comes_from_the_price_table(ledger, tmp_path):
    backend = FakeBackend("openai", "gpt-4o", tokens=(1000, 500))
    engine = Engine(backend, ledger, stage="cot")
    (outcome,) = run(engine.run_all(pairs(1)))
    expected = (1000 * 2.50 + 500 * 10.00) / 1e6
    assert outcome.cost == pytest.approx(expected)
    assert engine.usage.cost == pytest.approx(expected)
    assert ledger.get(outcome.key).cost == pytest.approx(expected)

    user = tmp_path / "prices.json"
    user.write_text(json.dumps({"openai:gpt-4o": {"input": 1.0, "output": 2.0}}))
    cheaper = Engine(FakeBackend("openai", "gpt-4o", tokens=(1000, 500)), ledger, stage="cot", prices=PriceTable.load(user))
    (outcome,) = run(cheaper.run_all(pairs(1, prefix="other")))
    assert outcome.cost == pytest.approx((1000 * 1.0 + 500 * 2.0) / 1e6)

    unknown = Engine(FakeBackend("openai", "no-such-model"), ledger, stage="cot")
    run(unknown.run_all(pairs(1, prefix="x")))
    assert unknown.usage.unpriced == 1 and unknown.usage.cost == 0


def test_dry_run_counts_cached_calls_and_prices_only_new_ones(ledger):
    backend = FakeBackend("dashscope", "qwen-vl-max")
    engine = Engine(backend, ledger, stage="cot")
    run(engine.run_all(pairs(3)))
    requests = pairs(5) + [("dup", req("q4"))]
    estimate = engine.estimate(requests)
    assert (estimate.calls, estimate.cached, estimate.new) == (5, 3, 2)
    per_request = estimate_tokens(req("q3"), "dashscope", "qwen-vl-max")
    assert estimate.input_tokens == 2 * per_request
    assert estimate.output_tokens_est == 2 * SamplingParams().max_tokens
    assert estimate.cost == pytest.approx((estimate.input_tokens * 0.80 + estimate.output_tokens_est * 3.20) / 1e6)
    assert len(backend.calls) == 3  # estimating calls nothing
    assert Engine(FakeBackend("openai", "unknown"), ledger, stage="cot").estimate(pairs(1, "z")).cost is None


# -- pricing rules -----------------------------------------------------------------------------------

def jpeg(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def test_price_lookup_fallbacks():
    table = PriceTable.default()
    assert table.about["taken"]
    assert table.lookup("openai", "gpt-4o-mini") == Price(0.15, 0.60)
    assert table.lookup("openai", "gpt-4o-2024-08-06") == table.lookup("openai", "gpt-4o")  # snapshot
    assert table.lookup("openai", "deepseek-chat", "https://api.deepseek.com/v1") == table.lookup("deepseek", "deepseek-chat")
    assert table.lookup("openai", "Qwen/Qwen2.5-VL-7B", "http://127.0.0.1:8000/v1") == Price(0, 0)  # local server
    assert table.lookup("vllm", "anything") == table.lookup("hf", "x") == table.lookup("mock", "y") == Price(0, 0)
    assert table.lookup("openai", "made-up") is None


def test_bad_price_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps({"openai:gpt-4o": {"input": -1, "output": 2}}))
    with pytest.raises(PriceFileError, match="non-negative"):
        PriceTable.load(bad)
    bad.write_text("{not json")
    with pytest.raises(PriceFileError, match="cannot read"):
        PriceTable.load(bad)


def test_image_token_rules():
    assert image_rule("openai", "gpt-4o") == "openai-tile"
    assert image_rule("openai", "gpt-4.1-mini") == "openai-patch"
    assert image_rule("openai", "Qwen2.5-VL-7B-Instruct") == "qwen"  # a vLLM server behind openai:
    assert image_rule("dashscope", "qwen-vl-max") == image_rule("somebody", "x") == "qwen"
    # OpenAI's published examples
    assert image_tokens((1024, 1024), "openai-tile", "gpt-4o") == 765
    assert image_tokens((2048, 4096), "openai-tile", "gpt-4o") == 1105
    assert image_tokens((1024, 1024), "openai-tile", "gpt-4o-mini") == 2833 + 4 * 5667
    assert image_tokens((1024, 1024), "openai-patch", "gpt-4.1-mini") == 1659  # 1024 patches × 1.62
    assert image_tokens((1800, 2400), "openai-patch", "gpt-4.1-nano") == 3572  # 1452 patches × 2.46
    # Qwen: 448×448 → 16×16 blocks of 28 px, + 2 markers
    assert image_tokens((448, 448), "qwen") == 16 * 16 + 2
    assert qwen_smart_resize(500, 300, 4 * 784, 1280 * 784) == (504, 308)


def test_estimate_tokens_pairs_qwen_video_frames_and_prices_openai_frames_as_images():
    frame = jpeg(448, 252)
    video = VideoPart(frames=(frame,) * 8, timestamps=tuple(float(i) for i in range(8)), fps=1.0)
    request = Request(messages=(Message("user", (video, TextPart("x" * 40))),))
    blocks = (252 // 28) * (448 // 28)
    assert estimate_tokens(request, "dashscope", "qwen-vl-max") == 4 + 10 + 4 * blocks + 2
    assert estimate_tokens(request, "openai", "gpt-4o") == 4 + 10 + 8 * (85 + 170 * 1)
    image = Request(messages=(Message("user", (ImagePart(jpeg(448, 448)),)),))
    assert estimate_tokens(image, "vllm", "tiny", count_text=len) == 4 + 16 * 16 + 2


# -- issue 9: transient failures, fatal stops under load, endpoint-shared limits, tenacity -----------

from vau_annotate.annotate.engine import CALL_GATE, CallAbandoned, CallGate, TransientFailure  # noqa: E402


def test_transient_failure_after_every_retry_raises_transient_not_a_backend_error(ledger):
    """A pipeline catches BackendError to write a reject; an outage must not reach that handler."""
    backend = FakeBackend(script={"q0": [BackendError("bad gateway", ErrorClass.RETRYABLE, code="502", status=502)] * 6})  # two calls × 3 attempts
    engine = Engine(backend, ledger, stage="cot", max_attempts=3, base_delay=0.001)

    async def pipeline_step():
        try:
            return await engine.call("item0", req("q0"))
        except BackendError as exc:  # what cot/reflect do with a failed call: reject the item
            return f"rejected: {exc}"

    with pytest.raises(TransientFailure) as info:
        run(pipeline_step())
    assert info.value.error.code == "502" and len(backend.calls) == 3
    with pytest.raises(TransientFailure):
        run(engine.outcome("item0", req("q0")))  # `outcome` never hands a transient failure back as a result
    (record,) = list(ledger.iter_calls())
    assert record.error_class == "retryable"  # a re-run calls again (the ledger does not answer it)


def test_permanent_failure_still_comes_back_as_backend_error(ledger):
    refused = BackendError("refused", ErrorClass.PERMANENT, code="content_filter", status=400)
    engine = Engine(FakeBackend(script={"q0": [refused]}), ledger, stage="cot")
    with pytest.raises(BackendError, match="refused"):
        run(engine.call("item0", req("q0")))
    outcome = run(engine.outcome("item0", req("q0")))
    assert outcome.error is not None and outcome.error.code == "content_filter" and outcome.cached


def test_retry_policy_is_tenacity_and_honours_retry_after(ledger):
    import tenacity

    backend = FakeBackend(script={"q0": [retryable(retry_after=0.05), retryable(retry_after=0.05)]})
    engine = Engine(backend, ledger, stage="cot", base_delay=0.001, max_delay=0.002)
    seen = []
    real = tenacity.AsyncRetrying.__init__

    def spy(self, *args, **kwargs):
        seen.append(kwargs)
        real(self, *args, **kwargs)

    tenacity.AsyncRetrying.__init__ = spy
    try:
        (outcome,) = run(engine.run_all([("item0", req("q0"))]))
    finally:
        tenacity.AsyncRetrying.__init__ = real
    assert outcome.ok and outcome.attempts == 3 and len(seen) == 1
    t = backend.times("q0")
    assert t[1] - t[0] >= 0.05 and t[2] - t[1] >= 0.05
    assert ledger.usage_summary()[0]["errors"] == {"retryable:429": 2}


def test_a_fatal_answer_lets_every_call_in_flight_land_and_counts_every_failed_attempt(ledger):
    """8 calls in flight all get 401: status must count 8 failed attempts (it used to count 2)."""
    fatal = BackendError("invalid api key", ErrorClass.FATAL, code="invalid_api_key", status=401)

    class Always401(FakeBackend):
        async def generate(self, request):
            self.calls.append((time.monotonic(), request.messages[-1].parts[-1].text))
            await asyncio.sleep(0.05 + 0.01 * len(self.calls))  # staggered: the first 401 comes back alone
            raise fatal

    backend = Always401()
    engine = Engine(backend, ledger, stage="cot", concurrency=8, grace_s=5.0)
    with pytest.raises(RunStopped) as info:
        run(engine.run_all(pairs(8)))
    assert len(backend.calls) == 8
    assert not str(info.value).lower().startswith("the run stopped")  # the CLI prints "stopped: …" itself
    (row,) = ledger.usage_summary()
    assert row["errors"] == {"fatal:invalid_api_key": 8} and row["failed_attempts"] == 8 and row["requests"] == 8


def test_a_closed_call_gate_starts_no_request(ledger):
    backend = FakeBackend()
    engine = Engine(backend, ledger, stage="cot")

    async def main():
        gate = CallGate()
        CALL_GATE.set(gate)
        first = await engine.call("a", req("q0"))
        gate.close()
        with pytest.raises(CallAbandoned):
            await engine.call("b", req("q1"))
        return first

    assert run(main()).text == "answer to q0" and [x for _, x in backend.calls] == ["q0"]


class UrlBackend(FakeBackend):
    def __init__(self, base_url: str, **kw) -> None:
        super().__init__(**kw)
        self.base_url = base_url


def test_rpm_is_shared_by_every_role_on_one_endpoint(ledger):
    """Captioner and reasoner on one (provider, base URL, model): --rpm 1200 holds for both together."""
    same = UrlBackend("http://host/v1")

    async def main():
        captioner = Engine(same, ledger, stage="cot:captioner", rpm=1200)  # one request per 50 ms
        reasoner = Engine(same, ledger, stage="cot:reasoner", rpm=1200)
        assert captioner.endpoint == reasoner.endpoint == ("fake", "http://host/v1", "m")
        await asyncio.gather(captioner.run_all(pairs(4, "c")), reasoner.run_all(pairs(4, "r")))

    run(main())
    times = sorted(t for t, _ in same.calls)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(gaps) == 7 and min(gaps) >= 0.045  # per role each would have had two requests at once


def test_other_endpoints_keep_their_own_limits_and_a_role_cap_adds_to_the_shared_one(ledger):
    from vau_annotate.annotate.engine import endpoint_limits

    async def main():
        a = endpoint_limits(("openai", "http://a/v1", "m"), 60, None)
        assert endpoint_limits(("openai", "http://a/v1", "m"), 120, None) is a and a.rpm.rate == 1.0  # the stricter holds
        assert endpoint_limits(("openai", "http://a/v1", "m"), 30, None).rpm.rate == 0.5
        assert endpoint_limits(("openai", "http://b/v1", "m"), 60, None) is not a
        assert endpoint_limits(("openai", "http://a/v1", "other"), 60, None) is not a

    run(main())
    backend = UrlBackend("http://host/v1")

    async def capped():
        shared = Engine(backend, ledger, stage="cot:reasoner", rpm=6000)  # 10 ms apart at most
        slow = Engine(backend, ledger, stage="cot:captioner", rpm=6000, role_rpm=600)  # its own: 100 ms apart
        await asyncio.gather(shared.run_all(pairs(3, "r")), slow.run_all(pairs(3, "c")))

    run(capped())
    captions = sorted(t for t, x in backend.calls if x.startswith("c"))
    assert min(b - a for a, b in zip(captions, captions[1:])) >= 0.09


def test_read_timeout_is_sized_by_max_tokens_and_connect_is_split():
    from vau_annotate.annotate.backends.base import read_timeout_for
    from vau_annotate.annotate.backends.openai_backend import OpenAIBackend

    assert read_timeout_for(req("x", params=SamplingParams(max_tokens=512))) == pytest.approx(30 + 512 / 20)
    assert read_timeout_for(req("x", params=SamplingParams(max_tokens=1024))) < 120  # the old flat default
    assert read_timeout_for(req("x"), fixed=7.5) == 7.5
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", api_key="EMPTY", api_key_env="X", connect_timeout=3.0)
    assert backend._client.timeout.connect == 3.0 and backend._client.timeout.read is None  # reading: per call
    asyncio.run(backend.aclose())


def test_role_limit_option_reaches_only_that_roles_engine(ledger, tmp_path):
    from typer.testing import CliRunner

    from vau_annotate.cli import app
    from vau_annotate.pipelines.models import ModelAccess, make_engine, parse_role_limits

    limits = parse_role_limits(["captioner:rpm=30", " captioner : tpm = 9000", "captioner:rpm=20"], ("captioner", "reasoner"))
    access = ModelAccess(role_limits=limits)
    backend = UrlBackend("http://host/v1")
    captioner = make_engine("cot:captioner", backend, ledger, access, concurrency=2, rpm=60, tpm=None)
    reasoner = make_engine("cot:reasoner", backend, ledger, access, concurrency=2, rpm=60, tpm=None)
    assert captioner._role_limits.rpm.rate == pytest.approx(20 / 60) and captioner._role_limits.tpm.rate == pytest.approx(150)
    assert reasoner._role_limits.rpm is None and reasoner._role_limits.tpm is None
    assert access.recorded()["role_limits"] == ["captioner:rpm=30", "captioner:tpm=9000", "captioner:rpm=20"]
    for bad, message in (("teacher:rpm=5", "unknown role 'teacher'"), ("captioner=5", "expected ROLE:rpm=N")):
        result = CliRunner().invoke(app, ["build-cot", "--run", str(tmp_path), "--captioner", "mock:echo", "--reasoner", "mock:echo", "--role-limit", bad])
        assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
