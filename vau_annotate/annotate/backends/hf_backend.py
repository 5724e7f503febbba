"""`hf:MODEL`: in-process generation with transformers, on CPU or GPU.

MODEL is a local model directory (or a name in the local Hugging Face cache; fetching from the hub
needs `allow_download=True`). The engine calls `generate()` concurrently; a micro-batcher gathers
those calls for a few milliseconds and runs them as one left-padded `model.generate`, so the
engine's concurrency becomes batch size. `generate_batch()` runs a list at once.

Videos arrive as sampled JPEG frames plus their true sampling rate. They go to the processor as a
frame array with `video_metadata` (`fps`, `frames_indices` 0..n-1) and `do_sample_frames=False`,
so every frame is kept and Qwen2.5-VL derives `second_per_grid_ts` = 2 / fps — the time scale of
its temporal M-RoPE positions — from the real rate instead of a default. The processor also returns
`mm_token_type_ids`, which `generate` needs to build 3-D positions (without it Qwen2.5-VL silently
falls back to 1-D RoPE).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Sequence

from vau_annotate.annotate.backends._local import (
    MicroBatcher,
    Outcome,
    Prepared,
    cut_at_stop,
    first_error,
    prepare,
    resolve_model_path,
    run_isolated,
)
from vau_annotate.annotate.backends.base import BackendError, ErrorClass, Request, Result, SamplingParams
from vau_annotate.annotate.backends.registry import ModelSpec

DTYPES = ("auto", "float32", "bfloat16", "float16")


def create(
    spec: ModelSpec,
    *,
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int = 8,
    batch_wait_ms: float = 5.0,
    allow_download: bool = False,
    **_: Any,
) -> HFBackend:
    """Factory registered for `hf:`; unknown options are ignored so one option set fits all providers."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    if spec.base_url:
        raise BackendError("hf: runs in-process and takes no @BASE_URL; use openai:MODEL@URL for a server", ErrorClass.FATAL, code="bad_spec")
    path = resolve_model_path("hf", spec.model, allow_download=allow_download)
    return HFBackend(spec.model, path, device=device, dtype=dtype, batch_size=batch_size, batch_wait_s=batch_wait_ms / 1000.0, allow_download=allow_download)


class HFBackend:
    provider = "hf"

    def __init__(self, model: str, path: str, *, device: str = "auto", dtype: str = "auto", batch_size: int = 8, batch_wait_s: float = 0.005, allow_download: bool = False) -> None:
        try:
            import torch
            import transformers  # noqa: F401
        except ImportError as exc:
            raise BackendError(f"hf: needs torch and transformers ({exc.name} is missing): install vau-annotate[train]", ErrorClass.FATAL, code="not_installed") from None
        self.model = model
        self.path = path
        self.device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
        self.dtype = _torch_dtype(dtype, self.device)
        self.processor, self.net = _load(path, self.dtype, local_only=not allow_download)
        self.net.to(self.device).eval()
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.tokenizer.padding_side = "left"
        self.eos_ids = _eos_ids(self.net, self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.eos_ids)
        self._lock = threading.Lock()
        self._batcher = MicroBatcher(self._run_outcomes, batch_size=batch_size, wait_s=batch_wait_s)

    def __repr__(self) -> str:
        return f"HFBackend(model={self.model!r}, device={self.device}, dtype={self.dtype})"

    async def generate(self, request: Request) -> Result:
        return await self._batcher.submit(request)

    async def generate_batch(self, requests: Sequence[Request]) -> list[Result]:
        """All requests in one `generate` per distinct sampling setting; raises the first item's error."""
        return first_error(await asyncio.to_thread(self._run_outcomes, list(requests)))

    async def aclose(self) -> None:
        import torch

        self.net = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- batches -------------------------------------------------------------------------------------
    def _run_outcomes(self, requests: list[Request]) -> list[Outcome]:
        """Decode media per request (a bad frame fails only its own item), then generate per group
        of identical sampling parameters."""
        outcomes: list[Outcome | None] = [None] * len(requests)
        groups: dict[SamplingParams, list[tuple[int, Request, Prepared]]] = {}
        for index, request in enumerate(requests):
            try:
                groups.setdefault(request.params, []).append((index, request, prepare(request)))
            except Exception as exc:
                outcomes[index] = BackendError(f"hf: cannot decode an image or video frame of this request ({type(exc).__name__})", ErrorClass.PERMANENT, code="bad_media")
        for params, members in groups.items():
            prepared = {id(request): prep for _, request, prep in members}

            def run(batch: list[Request], params: SamplingParams = params, prepared: dict[int, Prepared] = prepared) -> list[Result]:
                return self._generate([prepared[id(request)] for request in batch], params)

            for (index, _, _), outcome in zip(members, run_isolated("hf", run, [request for _, request, _ in members])):
                outcomes[index] = outcome
        return outcomes  # type: ignore[return-value]

    def _generate(self, prepared: list[Prepared], params: SamplingParams) -> list[Result]:
        import torch

        if self.net is None:
            raise BackendError("hf: the backend was closed", ErrorClass.FATAL, code="closed")
        with self._lock:
            started = time.perf_counter()
            inputs = self._inputs(prepared)
            if params.seed is not None:
                torch.manual_seed(params.seed)
            with torch.inference_mode():
                output = self.net.generate(**inputs, **self._generation_kwargs(params))
            latency = time.perf_counter() - started
        prompt_len = inputs["input_ids"].shape[1]
        input_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        return [self._result(row[prompt_len:].tolist(), int(n), params, latency) for row, n in zip(output, input_tokens)]

    def _inputs(self, prepared: list[Prepared]) -> Any:
        texts = [self.processor.apply_chat_template(p.conversation, add_generation_prompt=True, tokenize=False) for p in prepared]
        images = [image for p in prepared for image in p.images]
        videos = [video for p in prepared for video in p.videos]
        if (images or videos) and not hasattr(self.processor, "image_processor"):
            raise BackendError(f"hf: {self.model} has no image/video processor: it cannot take images or videos", ErrorClass.PERMANENT, code="no_vision")
        kwargs: dict[str, Any] = {"text": texts, "padding": True, "return_tensors": "pt"}
        if images:
            kwargs["images"] = images
        if videos:
            kwargs["videos"] = videos
            kwargs["video_metadata"] = [{k: v for k, v in meta.items() if k != "do_sample_frames"} for p in prepared for meta in p.video_metadata]
            kwargs["do_sample_frames"] = False
        inputs = self.processor(**kwargs)
        return inputs.to(self.device)

    def _generation_kwargs(self, params: SamplingParams) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_new_tokens": params.max_tokens, "pad_token_id": self.pad_id, "eos_token_id": sorted(self.eos_ids)}
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=None)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        return kwargs

    def _result(self, generated: list[int], input_tokens: int, params: SamplingParams, latency: float) -> Result:
        """Tokens up to the first end-of-sequence (counted, like servers do) or padding (a stop string ended it)."""
        count, ended = len(generated), False
        for position, token in enumerate(generated):
            if token in self.eos_ids:
                count, ended = position + 1, True
                break
            if token == self.pad_id:
                count, ended = position, True
                break
        text = self.tokenizer.decode(generated[:count], skip_special_tokens=True)
        text, hit = cut_at_stop(text, params.stop)
        return Result(text=text, finish_reason="stop" if ended or hit else "length", input_tokens=input_tokens, output_tokens=count, latency_s=latency)


def _torch_dtype(name: str, device: Any) -> Any:
    """bf16 on CUDA (what Qwen2.5-VL was trained in), float32 elsewhere (CPU bf16 matmuls are slow or missing)."""
    import torch

    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


def _load(path: str, dtype: Any, *, local_only: bool) -> tuple[Any, Any]:
    """Processor + model; vision-language first, plain causal LM for text-only checkpoints."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(path, local_files_only=local_only)
        try:
            net = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype, local_files_only=local_only)
        except ValueError:
            net = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=local_only)
    except (OSError, ValueError) as exc:
        raise BackendError(f"hf: cannot load {path}: {exc}", ErrorClass.FATAL, code="model_not_found") from None
    return processor, net


def _eos_ids(net: Any, tokenizer: Any) -> set[int]:
    configured = getattr(getattr(net, "generation_config", None), "eos_token_id", None)
    ids = set(configured if isinstance(configured, (list, tuple)) else [configured] if configured is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids

