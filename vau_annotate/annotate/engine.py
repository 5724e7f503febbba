"""Runs many model calls: concurrency, rate limits, retries, the ledger cache, usage and cost.

Every call goes through one path:

    key = call_key(request)          same prompt + content + sampling ⇒ same key
    ledger has an answer?            → answer from the ledger (no request, no cost)
    ledger has a permanent failure?  → the same failure again, unless retry_failed
    otherwise                        → semaphore (concurrency) → token buckets (rpm, tpm)
                                       → backend.generate → commit answer or failure to the ledger

What is retried (the policy is a tenacity `AsyncRetrying`; the ledger and counters wrap it):
    RETRYABLE (429, 5xx, timeouts)   retried here with exponential backoff and full jitter,
                                     waiting at least the server's retry_after; if all
                                     `max_attempts` fail, the failure is recorded and a re-run
                                     tries again (it was never the request's fault). `call` and
                                     `outcome` raise TransientFailure for it, which is not a
                                     BackendError: a stage leaves the item pending instead of
                                     rejecting it (the stage runner does that).
    PERMANENT (bad request, refusal) not retried; recorded; a re-run answers it from the ledger
                                     as the same error (no second paid call) unless the user
                                     passes --retry-failed.
    FATAL (invalid key, billing)     stops the run at once: pending calls are cancelled and
                                     `RunStopped` is raised with a message saying what to fix.
    TimeoutError, ConnectionError    leaked by a backend unclassified: treated as RETRYABLE.
    any other exception              a bug in a backend: the item fails now (no retry loop on a
                                     bug), recorded as retryable so a re-run tries again.

Identical requests (same key) asked for while one is in flight are sent once and share its answer.

Durability: each answer is committed to the ledger before the engine hands it on, so a killed
process loses no answered call (see `ledger.py` for what WAL + synchronous=NORMAL guarantees).
Ctrl-C during `run`: no new call starts; calls already at the provider get `grace_s` seconds to
come back and be recorded; the rest are abandoned (a re-run makes them again). Pipelines that use
`call`/`outcome` under the stage runner get the same: the runner closes the `CallGate` of its
context (every engine in that context then refuses to *start* a request, raising CallAbandoned)
and waits up to its grace period before cancelling what is still at the provider.

Rate limits belong to an endpoint, not to a role: every engine of one event loop that talks to the
same (provider, base URL, model) shares one rpm and one tpm bucket (`endpoint_limits`), so a model
used as captioner and reasoner sees `--rpm` in total. A role may add its own, stricter buckets.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import weakref
from collections import Counter, deque
from dataclasses import asdict, dataclass, field, replace
from itertools import islice
from typing import Any, AsyncGenerator, Callable, Iterable

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_random_exponential

from vau_annotate.annotate.backends.base import Backend, BackendError, ErrorClass, Request, Result
from vau_annotate.annotate.ledger import CallRecord, Ledger, call_key
from vau_annotate.annotate.pricing import Price, PriceTable, TextCounter, estimate_tokens

log = logging.getLogger(__name__)

HIT_FLUSH_EVERY = 1000  # cache-hit counters are bookkeeping, not paid work: batch their writes
LOOKUP_CHUNK = 256  # requests whose keys are looked up in the ledger with one query
MAX_ERROR_TEXT = 2000


class RunStopped(Exception):
    """The provider said something no retry can fix (invalid key, billing): the run stopped."""

    def __init__(self, message: str, error: BackendError | None = None) -> None:
        super().__init__(message)
        self.error = error


class CallAbandoned(Exception):
    """Raised by a call that must not start a request because the run is closing (Ctrl-C).

    Not a BackendError: a stage does not turn it into a reject; the item stays pending.
    """


class TransientFailure(Exception):
    """A call that failed for a transient reason (429, 5xx, timeout, connection) after every retry.

    Not a BackendError on purpose: stages turn BackendErrors into rejects, but an outage is not the
    item's fault. The stage runner leaves the item pending and a plain re-run tries it again.
    """

    def __init__(self, error: BackendError, item: str = "") -> None:
        super().__init__(f"{error} [{error.code}] (after every retry)")
        self.error = error
        self.item = item


class CallGate:
    """Whether new requests may start. The stage runner closes it on Ctrl-C (or a fatal stop)."""

    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


# the gate of the stage run this task belongs to (tasks inherit it from the runner's workers)
CALL_GATE: contextvars.ContextVar[CallGate | None] = contextvars.ContextVar("vau_annotate_call_gate", default=None)


@dataclass(frozen=True)
class Outcome:
    """What became of one (item, request): a result or an error, and whether the ledger answered."""

    item: str
    key: str
    result: Result | None
    error: BackendError | None = None
    cached: bool = False
    attempts: int = 0
    cost: float = 0.0  # paid in this run (0 when answered from the ledger)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Usage:
    """This engine's accounting since it was created (the ledger keeps the all-runs totals)."""

    calls: int = 0  # requests sent to the backend, retries included
    answered: int = 0  # calls the backend answered in this run
    cache_hits: int = 0  # calls answered from the ledger (or by an identical call in flight)
    failed: int = 0  # outcomes that are failures (fresh or from the ledger)
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0  # USD paid in this run
    unpriced: int = 0  # answered calls whose model has no price in the table
    failures: Counter[str] = field(default_factory=Counter)  # failed outcomes by error class
    errors: Counter[str] = field(default_factory=Counter)  # failed attempts by "class:code"

    def snapshot(self) -> Usage:
        return replace(self, failures=Counter(self.failures), errors=Counter(self.errors))

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["failures"] = dict(self.failures)
        data["errors"] = dict(self.errors)
        return data


@dataclass(frozen=True)
class Estimate:
    """What a `--dry-run` reports: how many calls are new, and what they would cost at most."""

    calls: int  # distinct calls asked for
    cached: int  # already answered (or permanently failed) in the ledger: free
    input_tokens: int  # estimated input tokens of the new calls
    output_tokens_est: int  # upper bound: the new calls' max_tokens
    cost: float | None  # USD for the new calls; None when the model has no price

    @property
    def new(self) -> int:
        return self.calls - self.cached


ProgressHook = Callable[[Usage, Outcome], None]


class TokenBucket:
    """A token bucket that may go into debt: a request bigger than the bucket still goes through,
    and the debt delays the ones after it, so the long-run rate is right without starving large
    requests. Waiters are served in arrival order."""

    def __init__(self, rate_per_s: float, capacity: float) -> None:
        if rate_per_s <= 0 or capacity <= 0:
            raise ValueError("rate and capacity must be positive")
        self.rate = rate_per_s
        self.capacity = capacity
        self.level = capacity
        self.stamp = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    async def acquire(self, amount: float = 1.0) -> None:
        async with self._lock:
            need = min(amount, self.capacity)
            self._refill()
            while self.level < need:
                await asyncio.sleep((need - self.level) / self.rate)
                self._refill()
            self.level -= amount

    def give_back(self, amount: float) -> None:
        """Return an over-reservation (or, with a negative amount, charge an under-reservation)."""
        self._refill()
        self.level = min(self.capacity, self.level + amount)


Endpoint = tuple[str, str, str]  # (provider, base URL or "", model): what a provider rate-limits


class RateLimits:
    """An rpm and a tpm bucket (either may be absent).

    rpm: capacity 1 spaces requests evenly (no bursts at start-up or after a pause);
    tpm: one second's worth, so a burst never exceeds what the provider refills per second.
    """

    def __init__(self, rpm: float | None = None, tpm: float | None = None) -> None:
        self.rpm = TokenBucket(rpm / 60.0, 1.0) if rpm else None
        self.tpm = TokenBucket(tpm / 60.0, max(1.0, tpm / 60.0)) if tpm else None

    def tighten(self, rpm: float | None, tpm: float | None) -> None:
        """Two roles asked for different limits on one endpoint: the stricter one holds for both."""
        for name, per_minute in (("rpm", rpm), ("tpm", tpm)):
            if not per_minute:
                continue
            bucket: TokenBucket | None = getattr(self, name)
            if bucket is None:
                setattr(self, name, getattr(RateLimits(**{name: per_minute}), name))
            elif per_minute / 60.0 < bucket.rate:
                bucket.rate = per_minute / 60.0


# per event loop (asyncio locks belong to one loop), per endpoint: the buckets every role shares
_ENDPOINT_LIMITS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Endpoint, RateLimits]] = weakref.WeakKeyDictionary()


def endpoint_limits(endpoint: Endpoint, rpm: float | None, tpm: float | None) -> RateLimits:
    """The shared buckets of an endpoint in the running event loop (created on first use)."""
    table = _ENDPOINT_LIMITS.setdefault(asyncio.get_running_loop(), {})
    limits = table.get(endpoint)
    if limits is None:
        limits = table[endpoint] = RateLimits(rpm, tpm)
    else:
        limits.tighten(rpm, tpm)
    return limits


class _WaitAtLeastRetryAfter:
    """tenacity wait: full jitter over an exponential ceiling, never less than the server asked for."""

    def __init__(self, base_delay: float, max_delay: float) -> None:
        self.jitter = wait_random_exponential(multiplier=base_delay, max=max_delay)

    def __call__(self, state: RetryCallState) -> float:
        delay = float(self.jitter(state))
        error = state.outcome.exception() if state.outcome is not None else None
        retry_after = getattr(error, "retry_after", None)
        return max(delay, retry_after) if retry_after is not None else delay


def _worth_retrying(exc: BaseException) -> bool:
    """Retry transient failures; a backend bug (`unexpected:`) fails now rather than loop."""
    return isinstance(exc, BackendError) and exc.retryable and not exc.code.startswith("unexpected:")


class Engine:
    """Runs model calls for one stage against one backend, with the ledger as cache and record."""

    def __init__(
        self,
        backend: Backend,
        ledger: Ledger,
        *,
        stage: str,
        concurrency: int = 8,
        rpm: float | None = None,
        tpm: float | None = None,
        role_rpm: float | None = None,
        role_tpm: float | None = None,
        max_attempts: int = 6,
        base_delay: float = 1.0,
        max_delay: float = 60.0,
        prices: PriceTable | None = None,
        retry_failed: bool = False,
        on_progress: ProgressHook | None = None,
        grace_s: float = 10.0,
        count_text: TextCounter | None = None,
    ) -> None:
        if concurrency < 1 or max_attempts < 1:
            raise ValueError("concurrency and max_attempts must be at least 1")
        self.backend = backend
        self.ledger = ledger
        self.stage = stage
        self.provider = backend.provider
        self.model = backend.model
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.retry_failed = retry_failed
        self.on_progress = on_progress
        self.grace_s = grace_s
        self.count_text = count_text
        # Batch APIs bill at a discount (0.5 at OpenAI and DashScope): the backend says by how much.
        self.price_factor: float = float(getattr(backend, "price_factor", 1.0))
        self.price: Price | None = (prices or PriceTable.default()).lookup(
            self.provider, self.model, getattr(backend, "base_url", None)
        )
        self.usage = Usage()
        self.endpoint: Endpoint = (self.provider, str(getattr(backend, "base_url", None) or ""), self.model)
        self._endpoint_rates = (rpm, tpm)
        self._role_limits = RateLimits(role_rpm, role_tpm)  # this role's own cap, on top of the endpoint's
        self._limits: list[RateLimits] | None = None  # resolved inside the event loop on first use
        self._wait = _WaitAtLeastRetryAfter(base_delay, max_delay)
        self._semaphore = asyncio.Semaphore(concurrency)
        self._inflight: dict[str, asyncio.Future[Outcome]] = {}
        self._calling: set[asyncio.Task[object]] = set()
        self._called: set[str] = set()  # with retry_failed: keys this engine called and recorded
        self._pending_hits = 0
        self._closing = False
        self._stopped: RunStopped | None = None
        self._warned: set[str] = set()

    # public API --------------------------------------------------------------------------
    def key(self, request: Request) -> str:
        return call_key(self.provider, self.model, request)

    async def call(self, item: str, request: Request) -> Result:
        """One call for a pipeline: the result, or the BackendError that failed it for good.

        Raises TransientFailure when it failed for a transient reason after every retry (the item
        should stay pending), CallAbandoned when the run is closing, RunStopped on a fatal error.
        """
        outcome = await self.outcome(item, request)
        if outcome.error is not None:
            raise outcome.error
        assert outcome.result is not None
        return outcome.result

    async def outcome(self, item: str, request: Request) -> Outcome:
        """Like `call`, but a permanent failure comes back as an Outcome instead of an exception.

        A transient one still raises TransientFailure: no outcome of it may become a reject.
        """
        if self._stopped is not None:
            raise self._stopped
        key = self.key(request)
        outcome = self._from_ledger(item, key)
        if outcome is None:
            outcome = await self._execute(item, request, key)
        self._notify(outcome)
        if outcome.error is not None and outcome.error.retryable:
            raise TransientFailure(outcome.error, item)
        return outcome

    async def run(self, requests: Iterable[tuple[str, Request]]) -> AsyncGenerator[Outcome, None]:
        """Outcomes of many (item, request) pairs, in completion order.

        The input is consumed lazily, LOOKUP_CHUNK pairs at a time: their keys are looked up in
        the ledger with one query, answered ones are yielded at once, and the rest become calls
        (at most 2 × concurrency waiting at a time), so a pipeline can feed millions of requests
        without holding them in memory. Use it with `contextlib.aclosing` (or `run_all`) so that
        leaving the loop early cancels what is pending.
        """
        if self._stopped is not None:
            raise self._stopped
        source = iter(requests)
        window = 2 * self.concurrency
        backlog: deque[tuple[str, Request, str]] = deque()
        active: set[asyncio.Task[Outcome]] = set()
        # finished tasks report here: O(1) per completion, unlike asyncio.wait over the whole set
        finished: asyncio.Queue[asyncio.Task[Outcome]] = asyncio.Queue()
        exhausted = False
        try:
            while True:
                while len(active) < window and (backlog or not exhausted):
                    if backlog:
                        task = asyncio.create_task(self._lookup_then_execute(*backlog.popleft()))
                        task.add_done_callback(finished.put_nowait)
                        active.add(task)
                        continue
                    chunk = list(islice(source, LOOKUP_CHUNK))
                    exhausted = len(chunk) < LOOKUP_CHUNK
                    keys = [self.key(request) for _, request in chunk]
                    records = self.ledger.get_many(keys)
                    for (item, request), key in zip(chunk, keys, strict=True):
                        cached = self._from_record(item, key, records.get(key))
                        if cached is None:
                            backlog.append((item, request, key))
                        else:
                            self._notify(cached)
                            yield cached
                if not active:
                    break
                done = [await finished.get()]
                while not finished.empty():
                    done.append(finished.get_nowait())
                active.difference_update(done)
                for outcome in _results(done):
                    self._notify(outcome)
                    yield outcome
        except (asyncio.CancelledError, KeyboardInterrupt, RunStopped):
            # Ctrl-C, or a fatal answer: calls already at the provider get grace_s to land (and,
            # after a fatal answer, to have their own failures counted) before the rest is cancelled
            await self._drain(active)
            raise
        finally:
            await _cancel_all(active)
            self.flush()

    async def run_all(self, requests: Iterable[tuple[str, Request]]) -> list[Outcome]:
        """All outcomes of `run` as a list (completion order)."""
        gen = self.run(requests)
        try:
            return [outcome async for outcome in gen]
        finally:
            await gen.aclose()

    def estimate(self, requests: Iterable[tuple[str, Request]]) -> Estimate:
        """For --dry-run: count calls the ledger already answered; estimate and price the rest."""
        seen: set[str] = set()
        cached = input_tokens = output_tokens = 0
        source = iter(requests)
        while chunk := list(islice(source, LOOKUP_CHUNK)):
            keys = [self.key(request) for _, request in chunk]
            records = self.ledger.get_many(keys)
            for (_item, request), key in zip(chunk, keys, strict=True):
                if key in seen:
                    continue
                seen.add(key)
                if self._answerable(records.get(key)):
                    cached += 1
                    continue
                input_tokens += estimate_tokens(request, self.provider, self.model, count_text=self.count_text)
                output_tokens += request.params.max_tokens
        cost = None if self.price is None else self.price.cost(input_tokens, output_tokens) * self.price_factor
        return Estimate(calls=len(seen), cached=cached, input_tokens=input_tokens, output_tokens_est=output_tokens, cost=cost)

    def flush(self) -> None:
        """Write the cache-hit counters to the ledger (answers themselves are written at once)."""
        if self._pending_hits:
            self.ledger.add_hits({(self.stage, self.provider, self.model): self._pending_hits})
            self._pending_hits = 0

    async def aclose(self) -> None:
        """Wait up to grace_s for calls in flight (so they are recorded), then flush counters."""
        pending = [f for f in self._inflight.values() if not f.done()]
        if pending:
            await asyncio.wait(pending, timeout=self.grace_s)
        self.flush()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # the ledger side -----------------------------------------------------------------------
    def _answerable(self, record: CallRecord | None) -> bool:
        """Does the ledger answer this call? Answers always; permanent failures unless retried."""
        if record is None:
            return False
        if record.ok:
            return True
        # with --retry-failed a permanent failure is retried once per run: after this engine made the
        # call again, its new outcome (in the ledger) answers any repeat of it
        return record.error_class == ErrorClass.PERMANENT.value and not (self.retry_failed and record.key not in self._called)

    def _from_ledger(self, item: str, key: str) -> Outcome | None:
        return self._from_record(item, key, self.ledger.get(key))

    def _from_record(self, item: str, key: str, record: CallRecord | None) -> Outcome | None:
        """The outcome the ledger gives for this call, or None when it must be made."""
        if not self._answerable(record):
            return None
        assert record is not None
        if record.ok:
            self._count_hit()
            result = Result(
                text=record.text or "", finish_reason=record.finish_reason or "", input_tokens=record.input_tokens,
                output_tokens=record.output_tokens, latency_s=record.latency_s,
            )
            return Outcome(item=item, key=key, result=result, cached=True)
        error = BackendError(record.error or "failed earlier", ErrorClass.PERMANENT, code=record.error_code or "")
        self._count_failure(error)
        return Outcome(item=item, key=key, result=None, error=error, cached=True)

    def _count_hit(self) -> None:
        self.usage.cache_hits += 1
        self._pending_hits += 1
        if self._pending_hits >= HIT_FLUSH_EVERY:
            self.flush()

    def _count_failure(self, error: BackendError) -> None:
        self.usage.failed += 1
        self.usage.failures[error.error_class.value] += 1

    def _record_answer(self, item: str, request: Request, key: str, result: Result, attempts: int, errors: list[tuple[str, str]]) -> Outcome:
        cost = 0.0
        if self.price is None:
            self.usage.unpriced += 1
        else:
            cost = self.price.cost(result.input_tokens, result.output_tokens) * self.price_factor
        self.ledger.put(self._record(item, request, key, attempts, result=result, cost=cost), errors)
        if self.retry_failed:
            self._called.add(key)
        usage = self.usage
        usage.answered += 1
        usage.input_tokens += result.input_tokens
        usage.output_tokens += result.output_tokens
        usage.cost += cost
        return Outcome(item=item, key=key, result=result, attempts=attempts, cost=cost)

    def _record_failure(self, item: str, request: Request, key: str, error: BackendError, attempts: int, errors: list[tuple[str, str]]) -> Outcome:
        self.ledger.put(self._record(item, request, key, attempts, error=error), errors)
        if self.retry_failed:
            self._called.add(key)
        self._count_failure(error)
        return Outcome(item=item, key=key, result=None, error=error, attempts=attempts)

    def _record(
        self, item: str, request: Request, key: str, attempts: int, *,
        result: Result | None = None, cost: float = 0.0, error: BackendError | None = None,
    ) -> CallRecord:
        return CallRecord(
            key=key, provider=self.provider, model=self.model, prompt_name=request.prompt_name,
            prompt_hash=request.prompt_hash, item=item, stage=self.stage,
            text=result.text if result else None, finish_reason=result.finish_reason if result else None,
            input_tokens=result.input_tokens if result else 0, output_tokens=result.output_tokens if result else 0,
            cost=cost, latency_s=result.latency_s if result else 0.0, attempts=attempts,
            error_class=error.error_class.value if error else None, error_code=error.code if error else None,
            error=str(error)[:MAX_ERROR_TEXT] if error else None, created=time.time(),
        )

    # the calling side ------------------------------------------------------------------------
    async def _lookup_then_execute(self, item: str, request: Request, key: str) -> Outcome:
        """Look again before calling: an identical request earlier in the input may have been
        answered while this one waited in the backlog."""
        cached = self._from_ledger(item, key)
        return cached if cached is not None else await self._execute(item, request, key)

    async def _execute(self, item: str, request: Request, key: str) -> Outcome:
        """Make the call once even if the same key is asked for again while it is in flight."""
        shared = self._inflight.get(key)
        if shared is not None:
            outcome = await asyncio.shield(shared)
            if outcome.ok:
                self._count_hit()
            else:
                assert outcome.error is not None
                self._count_failure(outcome.error)
            return replace(outcome, item=item, cached=True, attempts=0, cost=0.0)
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            outcome = await self._attempts(item, request, key)
        except RunStopped as exc:
            future.set_exception(exc)
            future.exception()  # waiters re-raise it; mark it retrieved so asyncio does not warn
            raise
        except BaseException:
            future.cancel()
            raise
        else:
            future.set_result(outcome)
            return outcome
        finally:
            del self._inflight[key]

    async def _attempts(self, item: str, request: Request, key: str) -> Outcome:
        """The retry policy (tenacity) around single requests; the ledger records how it ended.

        The first attempt runs before tenacity: most calls succeed at once, and a tenacity loop
        costs about as much CPU per call as the rest of the engine. When it fails, tenacity takes
        over with that failure as its attempt 1 (replayed, not re-sent), so waits, retry_after and
        the attempt limit are tenacity's alone.
        """
        errors: list[tuple[str, str]] = []
        try:
            result = await self._one_request(request, errors)
        except BackendError as error:
            if not _worth_retrying(error) or self.max_attempts < 2:
                return self._record_failure(item, request, key, error, len(errors), errors)
            first: list[BackendError] = [error]
        else:
            return self._record_answer(item, request, key, result, 1, errors)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts), wait=self._wait, retry=retry_if_exception(_worth_retrying),
            sleep=asyncio.sleep, reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    if first:
                        raise first.pop()  # attempt 1, already made above
                    result = await self._one_request(request, errors)
        except BackendError as error:
            return self._record_failure(item, request, key, error, len(errors), errors)
        return self._record_answer(item, request, key, result, len(errors) + 1, errors)

    async def _one_request(self, request: Request, errors: list[tuple[str, str]]) -> Result:
        """One request under the concurrency and rate limits; a failure is counted, classified and
        raised (a fatal one as RunStopped)."""
        self._check_open()
        async with self._semaphore:
            self._check_open()
            reserved = await self._throttle(request)
            self._check_open()
            task = asyncio.current_task()
            assert task is not None
            self._calling.add(task)
            self.usage.calls += 1
            result: Result | None = None
            error: BackendError | None = None
            try:
                result = await self.backend.generate(request)
            except BackendError as exc:
                error = exc
            except Exception as exc:  # noqa: BLE001 - classified below, never swallowed silently
                error = self._classify_unexpected(exc)
            finally:
                self._calling.discard(task)
                used = (result.input_tokens + result.output_tokens) if result else 0
                for limits in self._limits or ():
                    if limits.tpm is not None:
                        limits.tpm.give_back(reserved - used)
        if error is not None:
            errors.append((error.error_class.value, error.code))
            self.usage.errors[f"{error.error_class.value}:{error.code}"] += 1
            if error.error_class is ErrorClass.FATAL:
                self._stop(error, errors)
            raise error
        assert result is not None
        return result

    async def _throttle(self, request: Request) -> float:
        """Wait for the endpoint's (and this role's) rate limits; returns the tokens reserved against tpm."""
        if self._limits is None:
            shared = endpoint_limits(self.endpoint, *self._endpoint_rates)
            self._limits = [limits for limits in (shared, self._role_limits) if limits.rpm or limits.tpm]
        for limits in self._limits:
            if limits.rpm is not None:
                await limits.rpm.acquire(1.0)
        if not any(limits.tpm for limits in self._limits):
            return 0.0
        reserve = estimate_tokens(request, self.provider, self.model, count_text=self.count_text) + request.params.max_tokens
        for limits in self._limits:
            if limits.tpm is not None:
                await limits.tpm.acquire(reserve)
        return float(reserve)

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """The wait before retry number `attempt` (the same tenacity wait the retry loop uses)."""
        state = RetryCallState(retry_object=AsyncRetrying(), fn=None, args=(), kwargs={})
        state.attempt_number = attempt
        state.set_exception((BackendError, BackendError("", ErrorClass.RETRYABLE, retry_after=retry_after), None))
        return self._wait(state)

    def _classify_unexpected(self, exc: Exception) -> BackendError:
        if isinstance(exc, (TimeoutError, ConnectionError)):
            return BackendError(f"{type(exc).__name__}: {exc}", ErrorClass.RETRYABLE, code=type(exc).__name__.lower())
        name = type(exc).__name__
        if name not in self._warned:
            self._warned.add(name)
            log.warning("backend %s:%s raised an unclassified %s", self.provider, self.model, name, exc_info=exc)
        return BackendError(f"{name}: {exc}", ErrorClass.RETRYABLE, code=f"unexpected:{name}")

    # stopping --------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._stopped is not None:
            raise self._stopped
        gate = CALL_GATE.get()
        if self._closing or (gate is not None and gate.closed):
            raise CallAbandoned()

    def _stop(self, error: BackendError, errors: list[tuple[str, str]]) -> None:
        """A fatal error: count it, refuse every further call, and raise RunStopped."""
        self.ledger.add_errors(self.stage, self.provider, self.model, errors)
        if self._stopped is None:
            self._stopped = RunStopped(
                f"{self.provider}:{self.model} answered {error} [{error.code}]. "
                "No retry can fix this (check the API key, billing or quota). Everything answered so "
                "far is in the ledger: run the same command again to continue.",
                error,
            )
        raise self._stopped

    async def _drain(self, active: set[asyncio.Task[Outcome]]) -> None:
        """Ctrl-C: start nothing new; give calls at the provider grace_s to land in the ledger."""
        self._closing = True
        waiting = [t for t in active if t not in self._calling]
        for task in waiting:
            task.cancel()
        in_flight = [t for t in active if t in self._calling]
        if in_flight:
            await asyncio.wait(in_flight, timeout=self.grace_s)
        await _cancel_all(active)
        self.flush()

    def _notify(self, outcome: Outcome) -> None:
        if self.on_progress is not None:
            self.on_progress(self.usage, outcome)


def _results(done: Iterable[asyncio.Task[Outcome]]) -> list[Outcome]:
    """Results of finished tasks; every exception is retrieved, and RunStopped wins over others."""
    outcomes: list[Outcome] = []
    failure: BaseException | None = None
    for task in done:
        if task.cancelled():
            continue
        exc = task.exception()
        if exc is None:
            outcomes.append(task.result())
        elif isinstance(exc, CallAbandoned):
            continue
        elif failure is None or isinstance(exc, RunStopped):
            failure = exc
    if failure is not None:
        raise failure
    return outcomes


async def _cancel_all(tasks: set[asyncio.Task[Outcome]]) -> None:
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


def combined_usage(*engines: Engine) -> dict[str, Any]:
    """Calls, cache hits, tokens and cost of all engines together (for the progress bar)."""
    keys = ("calls", "cache_hits", "input_tokens", "output_tokens", "cost")
    return {k: sum(getattr(e.usage, k) for e in engines) for k in keys}
