"""`--batch`: the same `openai:` calls through the OpenAI Batch API (or DashScope's OpenAI-compatible
batch), at half the price, without changing how a pipeline asks for them.

Why a backend and not a pipeline mode: build-cot and reflect already run every item as a chain of
awaited calls. This backend answers `generate()` with a future: requests that arrive together
(every item's next step) are gathered for `gather_s`, written as JSONL files within the provider's
limits (50,000 requests; 200 MB at OpenAI, 500 MB at DashScope; one model per file), uploaded and
submitted; a poller completes the futures when the job ends. So the P2C chain's dependent steps go
out in successive batch rounds by themselves, and the engine still writes every answer to the ledger.

Resume: every upload and job is stored in the ledger database (`batch_store`) before anything
waits on it. A restarted command asks for the same calls (same ledger keys = `custom_id`s); those
already in a submitted job wait for that job instead of being submitted again.

Failures: a request the job answered with an error gets the error class the synchronous call would
have had; a request missing from a finished job's output (expired, cancelled, or an output file
that lost lines) is RETRYABLE — the engine retries it in the next round, or it stays pending for the
next run — so nothing is lost or paid twice.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from dataclasses import dataclass, field
from typing import Any

from vau_annotate.annotate.backends.base import BackendError, ErrorClass, Request, Result
from vau_annotate.annotate.backends.openai_backend import OpenAIBackend, classify_status
from vau_annotate.annotate.batch_store import BatchJob, BatchStore
from vau_annotate.annotate.ledger import call_key

ENDPOINT = "/v1/chat/completions"
MAX_REQUESTS = 50_000
MAX_BYTES_OPENAI = 200 * 1024 * 1024
MAX_BYTES_DASHSCOPE = 500 * 1024 * 1024
PRICE_FACTOR = 0.5  # both providers bill batch calls at half the synchronous price


def max_bytes_for(base_url: str | None) -> int:
    """The per-file size limit of the provider behind a base URL."""
    return MAX_BYTES_DASHSCOPE if base_url and "dashscope" in base_url else MAX_BYTES_OPENAI


def chunk_lines(lines: list[tuple[str, bytes]], max_requests: int, max_bytes: int) -> list[list[tuple[str, bytes]]]:
    """Split (custom_id, JSONL line) pairs into files within the request and byte limits."""
    chunks: list[list[tuple[str, bytes]]] = []
    current: list[tuple[str, bytes]] = []
    size = 0
    for custom_id, line in lines:
        if len(line) > max_bytes:
            raise BackendError(f"batch: one request is {len(line)} bytes, over the {max_bytes}-byte file limit",
                               ErrorClass.PERMANENT, code="too_large")
        if current and (len(current) >= max_requests or size + len(line) > max_bytes):
            chunks.append(current)
            current, size = [], 0
        current.append((custom_id, line))
        size += len(line)
    if current:
        chunks.append(current)
    return chunks


@dataclass
class _Outcomes:
    """A finished job's answers by custom_id: a chat completion body, or a BackendError."""

    answers: dict[str, Any] = field(default_factory=dict)
    status: str = ""


class BatchingBackend:
    """An `openai:` backend whose calls go through the Batch API (see the module docstring)."""

    provider = "openai"
    price_factor = PRICE_FACTOR

    def __init__(
        self,
        inner: OpenAIBackend,
        store: BatchStore,
        *,
        gather_s: float = 2.0,
        poll_s: float = 30.0,
        max_requests: int = MAX_REQUESTS,
        max_bytes: int | None = None,
        completion_window: str = "24h",
    ) -> None:
        self.inner = inner
        self.model = inner.model
        self.base_url = inner.base_url or ""
        self.store = store
        self.gather_s = gather_s
        self.poll_s = poll_s
        self.max_requests = max_requests
        self.max_bytes = max_bytes or max_bytes_for(inner.base_url)
        self.completion_window = completion_window
        self._queue: dict[str, tuple[bytes, asyncio.Future[Any]]] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._jobs: dict[str, asyncio.Task[_Outcomes]] = {}
        self.submitted: list[str] = []  # batch ids this process submitted (for summaries and tests)

    def __repr__(self) -> str:
        return f"BatchingBackend({self.inner!r})"

    @property
    def client(self) -> Any:
        return self.inner._client

    # -- the Backend protocol --------------------------------------------------------------------
    async def generate(self, request: Request) -> Result:
        key = call_key(self.provider, self.model, request)
        started = time.perf_counter()
        batch_id = self.store.latest_batch_of(key)
        if batch_id is not None:
            outcomes = await self._job(batch_id)
            answer = outcomes.answers.get(key)
            if answer is not None and not (isinstance(answer, BackendError) and answer.retryable):
                return self._answer(answer, started)
            if answer is None and outcomes.status == "failed":
                raise _failed(batch_id, self.store.get(batch_id))
            # missing from a finished job, or answered with a transient error: submit it again below
        body = self.inner._request_kwargs(request)
        line = json.dumps({"custom_id": key, "method": "POST", "url": ENDPOINT, "body": body}, separators=(",", ":")).encode() + b"\n"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        existing = self._queue.get(key)
        if existing is not None:  # the same call twice in one round: one line, both wait for it
            return self._answer(await asyncio.shield(existing[1]), started)
        self._queue[key] = (line, future)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_when_quiet())
        body_or_error = await future
        return self._answer(body_or_error, started)

    async def aclose(self) -> None:
        for task in [self._flusher, *self._jobs.values()]:
            if task is not None and not task.done():
                task.cancel()
        await self.inner.aclose()

    # -- gathering and submitting ----------------------------------------------------------------
    async def _flush_when_quiet(self) -> None:
        """Wait until no new request arrived for `gather_s` (or the queue fills a file), then submit."""
        seen = -1
        while len(self._queue) != seen and len(self._queue) < self.max_requests:
            seen = len(self._queue)
            await asyncio.sleep(self.gather_s)
        queue, self._queue = self._queue, {}
        lines = [(key, line) for key, (line, _) in queue.items()]
        try:
            for chunk in chunk_lines(lines, self.max_requests, self.max_bytes):
                batch_id = await self._submit(chunk)
                self._resolve_when_done(batch_id, {key: queue[key][1] for key, _ in chunk})
        except BackendError as exc:
            for _, future in queue.values():
                if not future.done():
                    future.set_exception(exc)
        except Exception as exc:  # noqa: BLE001 - an SDK/HTTP failure of the upload: retryable
            error = self.inner._classify(exc)
            for _, future in queue.values():
                if not future.done():
                    future.set_exception(error)

    async def _submit(self, chunk: list[tuple[str, bytes]]) -> str:
        data = b"".join(line for _, line in chunk)
        name = f"vau-annotate-{int(time.time())}-{len(chunk)}.jsonl"
        uploaded = await self.client.files.create(file=(name, io.BytesIO(data), "application/jsonl"), purpose="batch")
        batch = await self.client.batches.create(
            input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window=self.completion_window,
            metadata={"tool": "vau-annotate", "model": self.model[:500]},
        )
        now = time.time()
        job = BatchJob(batch.id, self.provider, self.model, self.base_url, uploaded.id, batch.status, len(chunk),
                       0, 0, 0, 0, None, None, None, now, now)
        self.store.add(job, [key for key, _ in chunk])
        self.submitted.append(batch.id)
        return batch.id

    def _resolve_when_done(self, batch_id: str, futures: dict[str, asyncio.Future[Any]]) -> None:
        task = self._job_task(batch_id)

        def deliver(done: asyncio.Task[_Outcomes]) -> None:
            if done.cancelled():
                return
            error = done.exception()
            for key, future in futures.items():
                if future.done():
                    continue
                if error is not None:
                    future.set_exception(error)
                    continue
                outcomes = done.result()
                if key in outcomes.answers:
                    future.set_result(outcomes.answers[key])
                elif outcomes.status == "failed":
                    future.set_exception(_failed(batch_id, self.store.get(batch_id)))
                else:
                    future.set_exception(_missing(batch_id, outcomes.status))

        task.add_done_callback(deliver)

    # -- polling and reading results -------------------------------------------------------------
    def _job_task(self, batch_id: str) -> asyncio.Task[_Outcomes]:
        task = self._jobs.get(batch_id)
        if task is None:
            task = asyncio.create_task(self._poll(batch_id))
            self._jobs[batch_id] = task
        return task

    async def _job(self, batch_id: str) -> _Outcomes:
        return await asyncio.shield(self._job_task(batch_id))

    async def _poll(self, batch_id: str) -> _Outcomes:
        while True:
            batch = await self.client.batches.retrieve(batch_id)
            counts = batch.request_counts
            errors = json.dumps([e.model_dump() for e in (batch.errors.data or [])]) if batch.errors and batch.errors.data else None
            self.store.update(batch_id, status=batch.status, completed=counts.completed if counts else 0,
                              failed=counts.failed if counts else 0, output_file_id=batch.output_file_id,
                              error_file_id=batch.error_file_id, errors=errors)
            if batch.status in ("completed", "failed", "expired", "cancelled"):
                return await self._read_outcomes(batch_id, batch)
            await asyncio.sleep(self.poll_s)

    async def _read_outcomes(self, batch_id: str, batch: Any) -> _Outcomes:
        outcomes = _Outcomes(status=batch.status)
        input_tokens = output_tokens = 0
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            content = await self.client.files.content(file_id)
            for raw in content.text.splitlines():
                if not raw.strip():
                    continue
                try:
                    line = json.loads(raw)
                except json.JSONDecodeError:
                    continue  # a damaged line: its request counts as missing (retryable)
                custom_id = line.get("custom_id")
                if not custom_id:
                    continue
                outcomes.answers[custom_id] = self._line_outcome(line)
                usage = ((line.get("response") or {}).get("body") or {}).get("usage") or {}
                input_tokens += int(usage.get("prompt_tokens") or 0)
                output_tokens += int(usage.get("completion_tokens") or 0)
        self.store.update(batch_id, input_tokens=input_tokens, output_tokens=output_tokens)
        return outcomes

    def _line_outcome(self, line: dict[str, Any]) -> Any:
        response = line.get("response") or {}
        status = int(response.get("status_code") or 0)
        body = response.get("body") or {}
        if status == 200 and isinstance(body, dict):
            return body
        error = line.get("error") or (body.get("error") if isinstance(body, dict) else None) or {}
        return classify_status(status or 500, error.get("code"), error.get("type"), str(error.get("message") or "batch request failed"),
                               {}, secret=self.inner._secret, api_key_env=self.inner._api_key_env)

    def _answer(self, outcome: Any, started: float) -> Result:
        if isinstance(outcome, BackendError):
            raise outcome
        return self.inner._result(outcome, time.perf_counter() - started)


def _failed(batch_id: str, job: BatchJob | None) -> BackendError:
    """A job the provider refused as a whole (e.g. its input file failed validation)."""
    detail = job.errors if job is not None and job.errors else "no reason given"
    return BackendError(f"batch {batch_id} failed: {detail}", ErrorClass.PERMANENT, code="batch_failed")


def _missing(batch_id: str, status: str) -> BackendError:
    return BackendError(f"batch {batch_id} ended {status} without an answer for this request; it will be submitted again",
                        ErrorClass.RETRYABLE, code="batch_missing")
