"""Rollouts for GRPO: G sampled completions per prompt, and their log-probs recomputed WITH the video.

Why this file exists: TRL's GRPOTrainer samples from the video but computes its loss from the token
ids alone (no `pixel_values_videos` / `video_grid_thw` in its loss forward), so a video row trains on
text. Here one prompt's group of G completions is one micro-batch whose forward gets the prompt's
video tensors tiled G times (as Video-R1's fork does), plus `mm_token_type_ids` extended over the
completion (without it Qwen2.5-VL silently falls back to 1-D RoPE) and `second_per_grid_ts`, the
time step of its temporal M-RoPE.

Both samplers forbid the vision placeholder tokens (`<|video_pad|>`, `<|vision_start|>`, …) in
completions: one sampled by chance would make the loss pass expect a video that is not there.

Two samplers share one interface (`sample(prompts, n) -> list[list[list[int]]]`):
- `HFSampler`: `model.generate(num_return_sequences=G)`; transformers encodes the video once and
  expands the encoder output to the G sequences.
- `VLLMSampler`: a colocated `vllm.LLM` in the training process; after every optimizer step the
  policy's weights are loaded into it (`sync`), LoRA merged first. It needs a GPU build of vLLM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from vau_annotate.train.grpo_loss import token_logprobs

# Tensors a Qwen2.5-VL prompt carries besides the ids; each is tiled once per completion.
VIDEO_KEYS = ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")
IMAGE_KEYS = ("pixel_values", "image_grid_thw")


@dataclass
class Prompt:
    """One encoded prompt (batch of 1) and what a sampler needs to re-create it."""

    inputs: dict[str, torch.Tensor]  # input_ids, attention_mask, mm_token_type_ids, video tensors
    text: str  # the templated prompt (vLLM takes text + raw frames)
    frames: list[Any] = field(default_factory=list)  # PIL images, in time order
    times: list[float] = field(default_factory=list)

    @property
    def length(self) -> int:
        return int(self.inputs["input_ids"].shape[1])


@dataclass
class Group:
    """G completions of one prompt, right-padded, with the mask of their real tokens."""

    prompt: Prompt
    completion_ids: torch.Tensor  # (G, T) long
    mask: torch.Tensor  # (G, T) float: 1 up to and including the end-of-turn token
    texts: list[str]

    @property
    def lengths(self) -> list[int]:
        return [int(n) for n in self.mask.sum(dim=1).tolist()]


def pad_completions(sequences: Sequence[Sequence[int]], eos_ids: set[int], pad_id: int, device: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists; the mask keeps each sequence up to and including its first end token."""
    cut: list[list[int]] = []
    for seq in sequences:
        seq = list(seq)
        end = next((i for i, token in enumerate(seq) if token in eos_ids), None)
        cut.append(seq[: end + 1] if end is not None else seq)
    width = max(1, max(len(seq) for seq in cut))
    ids = torch.full((len(cut), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(cut), width), dtype=torch.float32, device=device)
    for row, seq in enumerate(cut):
        if seq:
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long, device=device)
            mask[row, : len(seq)] = 1.0
    return ids, mask


def tile_prompt(inputs: dict[str, torch.Tensor], copies: int) -> dict[str, torch.Tensor]:
    """The prompt's tensors for `copies` sequences: per-token tensors repeated along the batch, the
    visual tensors (one entry per video / image, flattened patches) concatenated `copies` times, so
    sequence i finds its own copy of the video in order."""
    tiled: dict[str, torch.Tensor] = {}
    for key, value in inputs.items():
        if not isinstance(value, torch.Tensor):
            continue
        if key in ("input_ids", "attention_mask", "mm_token_type_ids"):
            tiled[key] = value.repeat(copies, 1)
        elif key in VIDEO_KEYS or key in IMAGE_KEYS:
            tiled[key] = torch.cat([value] * copies, dim=0)
    return tiled


def loss_inputs(prompt: Prompt, completion_ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Forward inputs for prompt + completions: ids, attention, modality types and the video tensors."""
    copies = completion_ids.shape[0]
    tiled = tile_prompt(prompt.inputs, copies)
    completion_ids = completion_ids.to(tiled["input_ids"].device)
    mask = mask.to(tiled["input_ids"].device)
    tiled["input_ids"] = torch.cat([tiled["input_ids"], completion_ids], dim=1)
    tiled["attention_mask"] = torch.cat([tiled["attention_mask"], mask.to(tiled["attention_mask"].dtype)], dim=1)
    if "mm_token_type_ids" in tiled:
        zeros = torch.zeros_like(completion_ids, dtype=tiled["mm_token_type_ids"].dtype)
        tiled["mm_token_type_ids"] = torch.cat([tiled["mm_token_type_ids"], zeros], dim=1)
    return tiled


def sequence_logprobs(model: Any, prompt: Prompt, completion_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token log-probs (G, T) of the completions under `model`, computed WITH the prompt's video.

    Only the last T+1 positions' logits are materialised (`logits_to_keep`), which is where the
    memory of a long video prompt would otherwise go.
    """
    inputs = loss_inputs(prompt, completion_ids, mask)
    width = completion_ids.shape[1]
    logits = model(**inputs, use_cache=False, logits_to_keep=width + 1).logits
    return token_logprobs(logits[:, :-1, :], inputs["input_ids"][:, -width:])


# -- samplers ----------------------------------------------------------------------------------------
@dataclass
class SamplingSettings:
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    min_new_tokens: int = 0


class HFSampler:
    """Rollouts with `model.generate` on the (unwrapped) policy itself."""

    name = "generate"

    def __init__(self, eos_ids: set[int], pad_id: int, suppress_ids: Sequence[int] = ()) -> None:
        self.eos_ids, self.pad_id, self.suppress_ids = eos_ids, pad_id, list(suppress_ids)

    @torch.no_grad()
    def sample(self, model: Any, prompts: Sequence[Prompt], n: int, settings: SamplingSettings) -> list[list[list[int]]]:
        """For each prompt, `n` completions as token lists (end token kept, padding dropped)."""
        out: list[list[list[int]]] = []
        for prompt in prompts:
            kwargs: dict[str, Any] = {"max_new_tokens": settings.max_new_tokens, "pad_token_id": self.pad_id, "eos_token_id": sorted(self.eos_ids), "num_return_sequences": n}
            if self.suppress_ids:
                kwargs["suppress_tokens"] = self.suppress_ids
            if settings.min_new_tokens:
                kwargs["min_new_tokens"] = settings.min_new_tokens
            if settings.temperature > 0:
                kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=0)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            generated = model.generate(**prompt.inputs, **kwargs)[:, prompt.length :]
            out.append([_strip_padding(row.tolist(), self.eos_ids, self.pad_id) for row in generated])
        return out

    def sync(self, model: Any) -> None:
        """Nothing to do: generation runs on the policy's own weights."""


class VLLMSampler:
    """A colocated vLLM engine (same process and GPU as training), weights synced after each step.

    Rollout dominates GRPO time on GPU; vLLM's paged attention and continuous batching make it several
    times faster than `generate`. The engine is started from the policy's initial checkpoint with
    `gpu_memory_utilization` (default 0.3) so the trainer keeps the rest; `sync` pushes the current
    weights (LoRA merged in, then un-merged) through `load_weights`, the way TRL's colocate mode
    does. GPU check: `benchmarks/bench_grpo.py --device-check` runs one step each way.
    """

    name = "vllm"

    def __init__(self, model_path: str, *, suppress_ids: Sequence[int] = (), gpu_memory_utilization: float = 0.3, max_model_len: int | None = None, seed: int = 0, dtype: str = "auto", rank: int = 0, local_rank: int = 0, world_size: int = 1) -> None:
        import os

        try:
            from vllm import LLM
        except ImportError:
            raise RuntimeError("rollout=vllm needs the vllm package (a GPU build: pip install 'vau-annotate[vllm]')") from None
        from trl.trainer.utils import ensure_master_addr_port

        # One engine per training process, run inside it ("external_launcher"), so its model is
        # reachable for `load_weights`; the same environment TRL's colocate mode sets up.
        os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(local_rank), "WORLD_SIZE": str(world_size)})
        ensure_master_addr_port()
        options: dict[str, Any] = {
            "model": model_path,
            "gpu_memory_utilization": gpu_memory_utilization,
            "limit_mm_per_prompt": {"image": 0, "video": 1},
            "seed": seed + rank,
            "dtype": dtype,
            "distributed_executor_backend": "external_launcher",
            "max_num_batched_tokens": 4096,
            "enable_prefix_caching": False,  # weights change every step: cached prefixes would be stale
        }
        if max_model_len is not None:
            options["max_model_len"] = max_model_len
        self.llm = LLM(**options)
        self.suppress_ids = list(suppress_ids)

    def sample(self, model: Any, prompts: Sequence[Prompt], n: int, settings: SamplingSettings) -> list[list[list[int]]]:
        import numpy as np
        from vllm import SamplingParams

        requests = []
        for prompt in prompts:
            video = np.stack([np.asarray(frame.convert("RGB")) for frame in prompt.frames])
            requests.append({"prompt": prompt.text, "multi_modal_data": {"video": [(video, frames_metadata(prompt.times))]}})
        params = SamplingParams(n=n, temperature=settings.temperature, top_p=settings.top_p, max_tokens=settings.max_new_tokens, min_tokens=settings.min_new_tokens, logit_bias={i: -100.0 for i in self.suppress_ids} or None)
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        return [[list(choice.token_ids) for choice in output.outputs] for output in outputs]

    @torch.no_grad()
    def sync(self, model: Any) -> None:
        """Load the policy's current weights into the engine (PEFT adapters merged for the copy)."""
        engine_model = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        is_peft = hasattr(model, "merge_adapter")
        if is_peft:
            model.merge_adapter()
        try:
            for name, param in model.named_parameters() if not is_peft else model.state_dict().items():
                if is_peft:
                    if "lora_" in name or "modules_to_save" in name and "original_module" in name:
                        continue
                    name = name.removeprefix("base_model.model.").replace(".base_layer", "")
                engine_model.load_weights([(name, param.data if hasattr(param, "data") else param)])
        finally:
            if is_peft:
                model.unmerge_adapter()
        self.llm.reset_prefix_cache()


def frames_metadata(times: Sequence[float]) -> dict[str, Any]:
    """transformers-style metadata for already-sampled frames: their true rate, every frame kept."""
    count = len(times)
    fps = (count - 1) / (times[-1] - times[0]) if count >= 2 and times[-1] > times[0] else 1.0
    return {"total_num_frames": count, "fps": fps, "duration": count / fps, "frames_indices": list(range(count)), "video_backend": "jpeg_sequence"}


def _strip_padding(tokens: list[int], eos_ids: set[int], pad_id: int) -> list[int]:
    """Up to and including the first end token; trailing padding removed when no end token came."""
    for i, token in enumerate(tokens):
        if token in eos_ids:
            return tokens[: i + 1]
    while tokens and tokens[-1] == pad_id:
        tokens = tokens[:-1]
    return tokens
