"""`vllm:` roles under `--executor ray`: Ray Data's LLM batch inference (`ray.data.llm`) over every
GPU of a Ray cluster, behind the same `generate()` as any backend.

Why a backend and not a pipeline mode (as for `--batch`): build-cot and reflect run every item as a
chain of awaited calls, and the engine records each answer in the ledger. This backend answers
`generate()` with a future and gathers the requests that arrive together (every in-flight item's
next step) into a *round*: one `ray.data.from_items(rows)` through a processor built by
`build_processor(vLLMEngineProcessorConfig(...))`, run in a worker thread off the event loop; the
reply rows come back by row id (the ledger call key) and complete the futures. A P2C chain's
dependent steps therefore go in successive rounds by themselves, and resume, gates and rejects are
the engine's and the pipeline's as for every other backend.

Same provider ("vllm") and model string as the in-process `vllm:` backend, hence the same ledger
keys: a run can move between the two (e.g. start on one GPU box, finish on a cluster) without
asking anything twice.

Resources (vLLMEngineProcessorConfig, Ray 2.60): each replica is one vLLM engine with
`tensor_parallel_size × pipeline_parallel_size` GPUs (Ray Data LLM reserves them: the engine actor
itself when that is 1, a placement group of GPU bundles for the engine's Ray workers otherwise);
`concurrency` replicas run at once, each fed `batch_size` rows, so a job spreads over every GPU.
`should_continue_on_error=True` turns a failing row into a row with `__inference_error__` instead of
a failed job (`ray_llm_rows.row_error` classifies it). Each round is its own Ray Data job, so the
engines start once per round: rounds are made as large as `round` allows.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from dataclasses import replace
from typing import Any

from vau_annotate.annotate.backends._local import resolve_model_path
from vau_annotate.annotate.backends.base import BackendError, ErrorClass, Request, Result
from vau_annotate.annotate.backends.ray_llm_rows import (
    ROW_ID,
    RayLLMOptions,
    engine_inputs,
    missing_row,
    reply_columns,
    request_row,
    row_outcome,
)
from vau_annotate.annotate.backends.registry import ModelSpec
from vau_annotate.annotate.ledger import call_key

INSTALL_HINT = "Ray Data LLM needs `ray[data]` and vLLM beside it: install vau-annotate[ray-llm] on the GPU nodes"

Outcome = Result | BackendError


def create(spec: ModelSpec, options: RayLLMOptions, *, address: str | None = None, allow_download: bool = False,
           engine_options: dict[str, Any] | None = None, **_: Any) -> RayLLMBackend:
    """The Ray Data LLM backend of a `vllm:` spec. Nothing starts until the first round."""
    if spec.base_url:
        raise BackendError("vllm: runs on the cluster and takes no @BASE_URL; use openai:MODEL@URL for a vLLM server", ErrorClass.FATAL, code="bad_spec")
    try:
        import ray.data  # noqa: F401
        from ray.data.llm import build_processor, vLLMEngineProcessorConfig  # noqa: F401
    except ImportError:
        raise BackendError(f"--executor ray: ray.data.llm cannot be imported: {INSTALL_HINT}", ErrorClass.FATAL, code="not_installed") from None
    path = resolve_model_path("vllm", spec.model, allow_download=allow_download)
    return RayLLMBackend(spec.model, path, options, address=address, engine_options=engine_options)


class RayLLMBackend:
    """`generate()` → a future; requests gathered into rounds, each one Ray Data LLM job (module docstring)."""

    provider = "vllm"

    def __init__(self, model: str, model_path: str, options: RayLLMOptions, *, address: str | None = None,
                 engine_options: dict[str, Any] | None = None) -> None:
        self.model = model  # the spec's model string: the ledger key of the in-process vllm: backend
        self.model_path = model_path
        self.options = options
        self.round_size = options.round_size
        self.address = address
        self.engine_options = dict(engine_options or {})
        self.rounds: list[int] = []  # rows per finished round (summaries, tests)
        self._queue: dict[str, tuple[Request, asyncio.Future[Outcome]]] = {}
        self._drainer: asyncio.Task[None] | None = None
        self._setup = threading.Lock()
        self._processor: Any = None
        self._render: Any = None
        self._started_ray = False

    def __repr__(self) -> str:
        return f"RayLLMBackend(model={self.model!r}, {self.options.recorded()})"

    # -- the Backend protocol --------------------------------------------------------------------
    async def generate(self, request: Request) -> Result:
        started = time.perf_counter()
        key = call_key(self.provider, self.model, request)
        queued = self._queue.get(key)
        if queued is not None:  # the same call twice in one round: one row, both wait for it
            outcome = await asyncio.shield(queued[1])
        else:
            loop = asyncio.get_running_loop()
            future: asyncio.Future[Outcome] = loop.create_future()
            self._queue[key] = (request, future)
            if self._drainer is None or self._drainer.done():
                self._drainer = loop.create_task(self._drain())
            outcome = await future
        if isinstance(outcome, BackendError):
            raise outcome
        # the caller waited for its round too: its latency counts from the call
        return replace(outcome, latency_s=time.perf_counter() - started)

    async def aclose(self) -> None:
        if self._drainer is not None and not self._drainer.done():
            self._drainer.cancel()
        if self._started_ray:
            import ray

            await asyncio.to_thread(ray.shutdown)
            self._started_ray = False

    # -- rounds ----------------------------------------------------------------------------------
    async def _drain(self) -> None:
        """One round at a time: wait until no request arrived for `gather_s` (or a round is full),
        run it, resolve its futures; what arrived meanwhile is the next round."""
        while self._queue:
            seen = -1
            while len(self._queue) != seen and len(self._queue) < self.round_size:
                seen = len(self._queue)
                await asyncio.sleep(self.options.gather_s)
            keys = list(self._queue)[: self.round_size]
            batch = {key: self._queue.pop(key) for key in keys}
            live = {key: request for key, (request, future) in batch.items() if not future.cancelled()}
            if not live:
                continue
            try:
                outcomes = await asyncio.to_thread(self.run_round, live)
            except asyncio.CancelledError:
                for _, future in batch.values():
                    future.cancel()
                raise
            except BackendError as exc:
                outcomes = {key: exc for key in live}
            except Exception as exc:  # noqa: BLE001 - the job as a whole failed: not any item's fault
                error = BackendError(f"ray-llm: the Ray Data job failed ({type(exc).__name__}: {str(exc)[:500]}); "
                                     "the run stops, run the command again to continue", ErrorClass.FATAL, code="ray_job_failed")
                outcomes = {key: error for key in live}
            for key, (_, future) in batch.items():
                if not future.done():
                    future.set_result(outcomes.get(key) or missing_row(key))

    def run_round(self, requests: dict[str, Request]) -> dict[str, Outcome]:
        """One Ray Data LLM job over `requests` (row id → request); blocking, so run in a thread."""
        import ray

        processor = self._ensure_processor()
        outcomes: dict[str, Outcome] = {}
        rows = []
        for key, request in requests.items():
            try:
                rows.append(request_row(key, request, self._render))
            except Exception as exc:  # noqa: BLE001 - a conversation the chat template refuses fails its item
                outcomes[key] = BackendError(f"ray-llm: the chat template cannot render this request ({type(exc).__name__}: {exc})",
                                             ErrorClass.PERMANENT, code="bad_request")
        if rows:
            for row in processor(ray.data.from_items(rows)).take_all():
                outcomes[str(row[ROW_ID])] = row_outcome(row)
        self.rounds.append(len(rows))
        return outcomes

    # -- set-up (first round) ------------------------------------------------------------------------
    def _ensure_processor(self) -> Any:
        with self._setup:
            if self._processor is None:
                self._connect()
                self._check_resources()
                self._render = chat_renderer(self.model_path)
                self._processor = build(self.model_path, self.options, self.engine_options)
            return self._processor

    def _connect(self) -> None:
        """Join the cluster at `address` (`auto`: the one this machine belongs to), or start a local
        one whose workers import this very package (our preprocess runs there)."""
        import ray

        if ray.is_initialized():
            return
        init: dict[str, Any] = {"address": self.address, "include_dashboard": False, "log_to_driver": False}
        if self.address is None:
            init["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}}
        ray.init(**init)
        self._started_ray = True

    def _check_resources(self) -> None:
        """A local cluster without the GPUs a replica needs would wait for them forever: say so now.
        (A remote cluster may autoscale, so it is trusted.)"""
        import ray

        needed = self.options.devices_per_replica
        gpus = ray.cluster_resources().get("GPU", 0)
        if self.options.device == "gpu" and self.address is None and gpus < needed:
            raise BackendError(f"ray-llm: the local Ray cluster has {gpus:g} GPU(s), one replica needs tp×pp = {needed}; "
                               "join a GPU cluster with --ray-address, or use device=cpu with vLLM's CPU build",
                               ErrorClass.FATAL, code="no_gpu")


def chat_renderer(model_path: str) -> Any:
    """The model's own chat template, as the in-process backend applies it (`LLM.get_tokenizer()` is
    the Hugging Face tokenizer of the same directory)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)

    def render(conversation: list[dict[str, Any]]) -> str:
        return tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)

    return render


def processor_config(model_path: str, options: RayLLMOptions, engine_options: dict[str, Any] | None = None) -> Any:
    """The `vLLMEngineProcessorConfig` of a role: our rows bring the rendered prompt and decoded
    media, so Ray's chat-template, tokenize and detokenize stages are off (vLLM tokenizes the prompt
    and detokenizes the reply itself, as in-process); engine metrics export is off (it needs a
    Prometheus endpoint we do not run)."""
    from ray.data.llm import vLLMEngineProcessorConfig

    return vLLMEngineProcessorConfig(
        model_source=model_path,
        engine_kwargs=options.engine_kwargs(engine_options),
        concurrency=options.concurrency,
        batch_size=options.batch_size,
        should_continue_on_error=True,
        chat_template_stage=False,
        tokenize_stage=False,
        detokenize_stage=False,
        log_engine_metrics=False,
        placement_group_config=options.placement_group_config(),
    )


def build(model_path: str, options: RayLLMOptions, engine_options: dict[str, Any] | None = None) -> Any:
    from ray.data.llm import build_processor

    return build_processor(processor_config(model_path, options, engine_options), preprocess=engine_inputs, postprocess=reply_columns)
