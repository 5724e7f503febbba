"""GRPO for Qwen2.5-VL on video, as one readable recipe (torchtune-style), on `accelerate`.

    vau-annotate train grpo --config vau_annotate/train/configs/grpo_vau_qwen2_5_vl_3b.yaml [key=value ...]

One step, for each of the step's prompts (exported `grpo_*` rows, see CONTRACT.md):
1. rollout: G completions sampled at temperature 1 WITH the video (`rollout.py`; `model.generate`,
   or a colocated vLLM engine when `rollout: vllm`);
2. rewards: the configured reward functions of `train/rewards.py`, weighted and summed, plus the
   AVA-GRPO verification reward when `ava: true` (`ava.py`), each logged as its own component;
3. advantages: normalised within each prompt's group (`scale_rewards: false` keeps only the centring);
4. log-probs of the policy (with grad), the old policy (`num_iterations` > 1; else the detached
   policy) and the frozen reference (LoRA: the same model with its adapter disabled), every one
   recomputed with the video tensors;
5. loss: clipped ratio (`epsilon`) + `beta` * k3 KL, token mean over the step (`grpo_loss.py`),
   accumulated over the step's groups, then one optimizer step.

Distribution is accelerate's: `accelerate launch --config_file configs/accelerate/zero2.yaml -m
vau_annotate.cli train grpo ...` runs the same code on several GPUs / nodes; each process takes its
own slice of every global batch. Checkpoints (`checkpoint-N/`: accelerate state + `trainer_state.json`)
resume the step count and the data order exactly; `log.jsonl` gets one line per step.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from accelerate.utils import DistributedType

from vau_annotate.train import ava as ava_mod
from vau_annotate.train.grpo_loss import LossParts, group_advantages, grpo_loss
from vau_annotate.train.rollout import Group, HFSampler, Prompt, SamplingSettings, VLLMSampler, pad_completions, sequence_logprobs

TASKS = ("qa", "tag", "cls", "p2c", "reflect")
STATE_FILE = "trainer_state.json"


@dataclass
class GRPOConfig:
    """Every knob of a GRPO run; YAML recipes set these, `key=value` overrides them."""

    model: str
    dataset: str
    dataset_config: list[str] = field(default_factory=lambda: ["grpo_qa"])
    split: str = "train"
    videos_root: str | None = None  # for rows exported with --frames path
    output_dir: str = "outputs/grpo"
    # GRPO (DeepSeekMath Eq. 3; defaults of VAU-R1 / Video-R1)
    num_generations: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    min_new_tokens: int = 0  # >0 forbids ending earlier (benchmarks compare equal-length rollouts)
    beta: float = 0.04
    epsilon: float = 0.2
    epsilon_high: float | None = None
    scale_rewards: bool = True
    num_iterations: int = 1
    # reward names from train/rewards.py's registry and their weights; empty = each row's task
    # defaults (rewards.DEFAULT_WEIGHTS). "ava" turns on AVA-GRPO's re-ask (Vad-R1).
    rewards: list[str] = field(default_factory=list)
    reward_weights: list[float] = field(default_factory=list)
    ava_trim_fraction: float = 0.25
    ava_max_new_tokens: int | None = None
    # per-frame pixel budget of the prompt's video (None: the processor's own)
    max_pixels: int | None = None
    min_pixels: int | None = None
    # optimisation
    learning_rate: float = 1e-6
    weight_decay: float = 0.0
    lr_scheduler: str = "constant"
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    gradient_accumulation_steps: int = 1  # prompts (groups) per process per step; one group = one micro-batch
    max_steps: int = 100
    bf16: bool = False
    gradient_checkpointing: bool = False
    freeze_vision: bool = True
    lora: bool = False
    lora_r: int = 64
    lora_alpha: int = 128
    lora_dropout: float = 0.05
    merge_lora: bool = True  # final/ = merged full model; the adapter goes to OUTPUT/adapter
    lora_target: str = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    # rollout engine
    rollout: str = "generate"  # generate | vllm
    vllm_gpu_memory_utilization: float = 0.3
    vllm_max_model_len: int | None = None
    # bookkeeping
    seed: int = 0
    save_steps: int = 50
    save_total_limit: int | None = 2
    resume: bool | str = False  # true: latest checkpoint in output_dir; a path: that checkpoint
    log_completions: bool = True

    @classmethod
    def load(cls, name_or_file: str | Path | None = None, overrides: Sequence[str] | dict[str, Any] = ()) -> GRPOConfig:
        """A shipped recipe by name or a YAML file, then `key=value` overrides (train/config.py)."""
        from vau_annotate.train.config import load_recipe

        config = load_recipe(cls, name_or_file, overrides)
        config.validate()
        return config

    def validate(self) -> None:
        if self.num_generations < 2:
            raise ValueError("num_generations must be >= 2: group-normalised advantages need a group")
        if self.rollout not in ("generate", "vllm"):
            raise ValueError(f"rollout must be generate or vllm, not {self.rollout!r}")
        if self.num_iterations < 1 or self.gradient_accumulation_steps < 1 or self.max_steps < 1:
            raise ValueError("num_iterations, gradient_accumulation_steps and max_steps must be >= 1")
        if not 0.0 < self.ava_trim_fraction < 1.0:
            raise ValueError("ava_trim_fraction must be in (0, 1)")
        if self.reward_weights and len(self.reward_weights) != len(self.rewards):
            raise ValueError(f"{len(self.reward_weights)} reward_weights for {len(self.rewards)} rewards")
        if self.rewards:
            from vau_annotate.train.rewards import resolve

            resolve(self.rewards)  # unknown names fail here, before any model loads

    @property
    def weights(self) -> dict[str, float] | None:
        """Reward name → weight; None means each row's task defaults."""
        if not self.rewards:
            return None
        return dict(zip(self.rewards, self.reward_weights or [1.0] * len(self.rewards)))


# -- data order --------------------------------------------------------------------------------------
def step_rows(step: int, n_rows: int, per_process: int, world: int, rank: int, seed: int) -> list[int]:
    """Row indices this process trains on at `step` (0-based).

    The data is an endless stream of epochs, each a seeded permutation (`seed + epoch`) of all rows;
    step s takes the next `per_process * world` positions and process r every world-th of them.
    A pure function of the step, so a resumed run continues the exact order without saved iterators.
    """
    if n_rows < 1:
        raise ValueError("the dataset has no rows")
    global_batch = per_process * world
    positions = range(step * global_batch + rank, (step + 1) * global_batch, world)
    cache: dict[int, list[int]] = {}
    out = []
    for position in positions:
        epoch, offset = divmod(position, n_rows)
        if epoch not in cache:
            order = list(range(n_rows))
            random.Random(seed + epoch).shuffle(order)
            cache[epoch] = order
        out.append(cache[epoch][offset])
    return out


# -- checkpoints -------------------------------------------------------------------------------------
def latest_checkpoint(output_dir: Path) -> Path | None:
    """The checkpoint with the highest step that finished writing (its state file exists)."""
    done = [p for p in output_dir.glob("checkpoint-*") if (p / STATE_FILE).exists() and p.name.split("-")[-1].isdigit()]
    return max(done, key=lambda p: int(p.name.split("-")[-1])) if done else None


def resolve_resume(config: GRPOConfig) -> Path | None:
    if config.resume in (False, None, "", "false", "no"):
        return None
    if config.resume in (True, "true", "yes", "auto"):
        return latest_checkpoint(Path(config.output_dir))
    path = Path(str(config.resume))
    if not (path / STATE_FILE).exists():
        raise FileNotFoundError(f"resume: {path} is not a finished checkpoint (no {STATE_FILE})")
    return path


def trim_log(log_path: Path, last_step: int) -> None:
    """Drop log lines past the resumed step (a crashed run may have logged steps it never saved)."""
    if not log_path.exists():
        return
    kept = [line for line in log_path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= last_step]
    log_path.write_text("".join(line + "\n" for line in kept))


# -- the recipe ---------------------------------------------------------------------------------------
class GRPORecipe:
    """Holds the model(s), optimizer, data and samplers; `train()` runs the steps."""

    def __init__(self, config: GRPOConfig) -> None:
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.config = config
        self.accelerator = Accelerator(mixed_precision="bf16" if config.bf16 else "no", gradient_accumulation_steps=config.gradient_accumulation_steps)
        set_seed(config.seed, device_specific=True)
        self.output_dir = Path(config.output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.output_dir / "log.jsonl"
        self.rows = load_rows(config)
        self.row_ids = [str(x) for x in self.rows["id"]] if "id" in self.rows.column_names else [str(i) for i in range(len(self.rows))]
        self._load_model()
        self.sampler = self._make_sampler()
        self.rng = random.Random(config.seed + 7919 * self.accelerator.process_index)
        self.step = 0
        self.rejected = 0

    # -- setup -------------------------------------------------------------------------------------
    def _load_model(self) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor, get_scheduler

        config = self.config
        self.processor = AutoProcessor.from_pretrained(config.model)
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"
        model = AutoModelForImageTextToText.from_pretrained(config.model, dtype=torch.float32)
        self.eos_ids = _eos_ids(model, self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.eos_ids)
        self.suppress_ids = vision_token_ids(model.config)
        if config.freeze_vision:
            for name, param in model.named_parameters():
                if ".visual." in f".{name}":
                    param.requires_grad_(False)
        if config.gradient_checkpointing:
            # only the loss passes (train mode, use_cache=False) checkpoint; generation keeps its KV cache
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.ref_model = None
        if config.lora:
            from peft import LoraConfig, get_peft_model

            if config.gradient_checkpointing:
                model.enable_input_require_grads()
            lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout, target_modules=config.lora_target, task_type="CAUSAL_LM")
            model = get_peft_model(model, lora)
        elif config.beta != 0.0:
            self.ref_model = AutoModelForImageTextToText.from_pretrained(config.model, dtype=torch.bfloat16 if config.bf16 else torch.float32).eval()
            self.ref_model.requires_grad_(False)
            self.ref_model.to(self.accelerator.device)
        trainable = [p for p in model.parameters() if p.requires_grad]
        if not trainable:
            raise ValueError("nothing to train: every parameter is frozen")
        optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
        scheduler = get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=config.warmup_steps, num_training_steps=config.max_steps * config.num_iterations)
        # The scheduler stays ours (accelerate's wrapper steps it once per process, which would run a
        # multi-GPU schedule num_processes times too fast); it is registered so checkpoints carry it.
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.scheduler = scheduler
        self.accelerator.register_for_checkpointing(self.scheduler)

    def _make_sampler(self) -> HFSampler | VLLMSampler:
        if self.config.rollout == "vllm":
            accelerator = self.accelerator
            sampler = VLLMSampler(
                self.config.model, suppress_ids=self.suppress_ids, gpu_memory_utilization=self.config.vllm_gpu_memory_utilization,
                max_model_len=self.config.vllm_max_model_len, seed=self.config.seed, dtype="bfloat16" if self.config.bf16 else "auto",
                rank=accelerator.process_index, local_rank=accelerator.local_process_index, world_size=accelerator.num_processes,
            )
            accelerator.wait_for_everyone()
            return sampler
        return HFSampler(self.eos_ids, self.pad_id, self.suppress_ids)

    @property
    def unwrapped(self) -> Any:
        return self.accelerator.unwrap_model(self.model)

    # -- prompts and rollouts ------------------------------------------------------------------------
    def encode(self, row: dict, frames: list[Any], times: list[float]) -> Prompt:
        """The row's prompt (messages without the assistant turn) with these frames, ready to generate."""
        from vau_annotate.train.data import build_inputs, render, to_qwen_messages

        messages = to_qwen_messages(row["prompt"])
        inputs = build_inputs(self.processor, messages, frames, times, add_generation_prompt=True, max_pixels=self.config.max_pixels, min_pixels=self.config.min_pixels, padding_side="left")
        inputs = {k: v.to(self.accelerator.device) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        return Prompt(inputs=inputs, text=render(self.processor, messages, add_generation_prompt=True), frames=list(frames), times=list(times))

    def row_video(self, row: dict) -> tuple[list[Any], list[float]]:
        """The row's frames and their times (embedded JPEGs, or decoded from `video` for path rows)."""
        from vau_annotate.train.data import row_frames

        return row_frames(row, self.config.videos_root)

    def prepare_rows(self, rows: list[dict]) -> tuple[list[dict], list[tuple[list, list]], list[Prompt]]:
        """Frames and encoded prompts of the step's rows. A row that cannot become model inputs (a
        missing video file, no frames) is skipped and recorded in `rejects.jsonl` with the reason;
        the run then ends with status "partial"."""
        from vau_annotate.train.data import RowError

        kept_rows, videos, prompts, reasons = [], [], [], []
        for row in rows:
            try:
                frames, times = self.row_video(row)
                prompts.append(self.encode(row, frames, times))
            except RowError as exc:
                self.rejected += 1
                reasons.append(f"{row.get('id')}: {exc}")
                with (self.output_dir / "rejects.jsonl").open("a") as rejects:
                    rejects.write(json.dumps({"step": self.step + 1, "id": row.get("id"), "reason": str(exc)}) + "\n")
                continue
            kept_rows.append(row)
            videos.append((frames, times))
        if not kept_rows:
            raise ValueError(f"step {self.step + 1}: none of its rows could be read ({'; '.join(reasons)})")
        return kept_rows, videos, prompts

    def rollout(self, prompts: Sequence[Prompt], n: int, settings: SamplingSettings) -> list[Group]:
        self.model.eval()
        with self._generation_model() as model:
            sampled = self.sampler.sample(model, prompts, n, settings)
        groups = []
        for prompt, sequences in zip(prompts, sampled):
            ids, mask = pad_completions(sequences, self.eos_ids, self.pad_id, device=self.accelerator.device)
            texts = [self.tokenizer.decode(ids[i][mask[i].bool()], skip_special_tokens=True) for i in range(ids.shape[0])]
            groups.append(Group(prompt=prompt, completion_ids=ids, mask=mask, texts=texts))
        return groups

    @contextlib.contextmanager
    def _generation_model(self):
        """The bare model for `generate` (ZeRO-3 parameters gathered by TRL's helper)."""
        from trl.models.utils import unwrap_model_for_generation

        with unwrap_model_for_generation(self.model, self.accelerator) as model:
            yield model

    def ask_many(self, items: Sequence[tuple[dict, list[Any], list[float]]]) -> list[str]:
        """AVA's re-asks: one greedy answer of the current policy per (row, edited frames, times),
        all in one call of the rollout sampler (vLLM when it is on)."""
        if not items:
            return []
        settings = SamplingSettings(max_new_tokens=self.config.ava_max_new_tokens or self.config.max_new_tokens, temperature=0.0)
        prompts = [self.encode(row, frames, times) for row, frames, times in items]
        with self._generation_model() as model:
            sampled = self.sampler.sample(model, prompts, 1, settings)
        return [self.tokenizer.decode([t for t in tokens[0] if t not in self.eos_ids], skip_special_tokens=True) for tokens in sampled]

    # -- rewards -----------------------------------------------------------------------------------
    def score(self, groups: Sequence[Group], rows: Sequence[dict], videos: Sequence[tuple[list, list]]) -> tuple[torch.Tensor, dict[str, list[float]], list[str]]:
        """Total reward per completion (group order), each component's values, and AVA's edits.

        For every completion whose row weighs the `ava` reward, AVA-GRPO edits the video by the
        completion's own verdict and re-asks the policy first; the reply rides along in a copy of
        the row as `trimmed_completion`, which `rewards.ava` scores."""
        from vau_annotate.train import rewards

        weights = self.config.weights
        completions: list[str] = []
        scored_rows: list[dict] = []
        edits: list[str] = []
        asks: list[tuple[int, tuple[dict, list, list[float]]]] = []
        for row, group, (frames, times) in zip(rows, groups, videos):
            uses_ava = (weights if weights is not None else rewards.default_weights(str(row.get("task", "")))).get("ava", 0.0) != 0.0
            for text in group.texts:
                if uses_ava:
                    edited = ava_mod.plan(text, row, frames, times, rng=self.rng, trim_fraction=self.config.ava_trim_fraction)
                    edits.append(edited.edit if edited is not None else "none")
                    if edited is not None:
                        asks.append((len(completions), (row, edited.frames, edited.times)))
                completions.append(text)
                scored_rows.append(dict(row))
        for (index, _), reply in zip(asks, self.ask_many([item for _, item in asks])):
            scored_rows[index]["trimmed_completion"] = reply
        totals, components = rewards.combine(completions, scored_rows, weights)
        return torch.tensor(totals, dtype=torch.float32), components, edits

    # -- the step ----------------------------------------------------------------------------------
    def train_step(self) -> dict[str, Any]:
        config = self.config
        started = time.perf_counter()
        accelerator = self.accelerator
        indices = step_rows(self.step, len(self.rows), config.gradient_accumulation_steps, accelerator.num_processes, accelerator.process_index, config.seed)
        rows, videos, prompts = self.prepare_rows([self.rows[i] for i in indices])
        settings = SamplingSettings(max_new_tokens=config.max_new_tokens, temperature=config.temperature, top_p=config.top_p, min_new_tokens=config.min_new_tokens)
        groups = self.rollout(prompts, config.num_generations, settings)
        rollout_s = time.perf_counter() - started

        rewards, components, edits = self.score(groups, rows, videos)
        advantages = group_advantages(rewards, config.num_generations, scale_std=config.scale_rewards).to(accelerator.device)

        with torch.no_grad():
            ref_logps = [self.reference_logprobs(group) for group in groups] if config.beta != 0.0 else [None] * len(groups)
            old_logps = [sequence_logprobs(self.model, g.prompt, g.completion_ids, g.mask) for g in groups] if config.num_iterations > 1 else None

        self.model.train()
        tokens = sum(float(g.mask.sum().item()) for g in groups)
        totals = {"loss": 0.0, "kl": 0.0, "clipped": 0.0, "ratio": 0.0, "tokens": 0.0}
        grad_norm = None
        # One optimizer step per iteration over the step's groups, accumulated with accelerate's own
        # mechanism so DDP skips the all-reduce and DeepSpeed steps only at the boundary (the last
        # group). accelerate divides each backward by the accumulation count (DeepSpeed by its
        # configured one); our loss is already each group's share of the step's token mean, so it
        # is multiplied back.
        accelerator.gradient_accumulation_steps = len(groups)
        scale = float(config.gradient_accumulation_steps if accelerator.distributed_type == DistributedType.DEEPSPEED else len(groups))
        for _ in range(config.num_iterations):
            accelerator.step = 0
            for index, group in enumerate(groups):
                adv = advantages[index * config.num_generations : (index + 1) * config.num_generations]
                with accelerator.accumulate(self.model):
                    logp = sequence_logprobs(self.model, group.prompt, group.completion_ids, group.mask)
                    old = old_logps[index] if old_logps is not None else logp.detach()
                    parts: LossParts = grpo_loss(logp, old, ref_logps[index], adv, group.mask, epsilon=config.epsilon, epsilon_high=config.epsilon_high, beta=config.beta, normaliser=tokens)
                    accelerator.backward(parts.loss * scale)
                totals["loss"] += float(parts.loss.item())
                totals["kl"] += parts.kl_sum
                totals["clipped"] += parts.clipped_tokens
                totals["ratio"] += parts.ratio_sum
                totals["tokens"] += parts.tokens
            if not accelerator.sync_gradients:
                raise RuntimeError("gradient accumulation boundary missed: no optimizer step would be taken")
            if config.max_grad_norm and config.max_grad_norm > 0:
                grad_norm = float(accelerator.clip_grad_norm_(self.model.parameters(), config.max_grad_norm))
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.sampler.sync(self.unwrapped)
        self.step += 1

        lengths = [n for g in groups for n in g.lengths]
        denom = max(totals["tokens"], 1.0)
        record: dict[str, Any] = {
            "step": self.step,
            "epoch": self.step * config.gradient_accumulation_steps * accelerator.num_processes / len(self.rows),
            "loss": totals["loss"] / config.num_iterations,
            "reward": float(rewards.mean()),
            "reward_std": float(rewards.view(-1, config.num_generations).std(dim=1).mean()),
            "rewards": {name: sum(values) / len(values) for name, values in components.items()},
            "kl": totals["kl"] / denom,
            "clip_fraction": totals["clipped"] / denom,
            "ratio_mean": totals["ratio"] / denom,
            "completion_length": sum(lengths) / len(lengths),
            "completion_length_min": min(lengths),
            "completion_length_max": max(lengths),
            "truncated_fraction": sum(1 for g in groups for i in range(len(g.texts)) if not _ended(g.completion_ids[i], g.mask[i], self.eos_ids)) / len(lengths),
            "grad_norm": grad_norm,
            "learning_rate": self.scheduler.get_last_lr()[0],
            "rollout": self.sampler.name,
            "rollout_s": rollout_s,
            "step_s": time.perf_counter() - started,
            "rows": [self.row_ids[i] for i in indices],
            "rejected": len(indices) - len(rows),
        }
        if edits:
            record["ava_edits"] = {edit: edits.count(edit) for edit in sorted(set(edits))}
        if config.log_completions:
            record["sample"] = {"row": str(rows[0].get("id")), "completion": groups[0].texts[0], "reward": float(rewards[0])}
        return record

    @torch.no_grad()
    def reference_logprobs(self, group: Group) -> torch.Tensor:
        """Log-probs under the frozen reference: the base model (LoRA adapters disabled) or a copy."""
        if self.ref_model is not None:
            return sequence_logprobs(self.ref_model, group.prompt, group.completion_ids, group.mask)
        with self.unwrapped.disable_adapter():
            return sequence_logprobs(self.model, group.prompt, group.completion_ids, group.mask)

    # -- loop, checkpoints --------------------------------------------------------------------------
    def train(self) -> Path:
        config = self.config
        resume_from = resolve_resume(config)
        if resume_from is not None:
            self.load_checkpoint(resume_from)
        elif self.accelerator.is_main_process and self.log_path.exists():
            self.log_path.unlink()  # a fresh run starts a fresh log
        (self.output_dir / "config.json").write_text(json.dumps(asdict(config), indent=2, default=str))
        while self.step < config.max_steps:
            record = self.train_step()
            if not all(math.isfinite(record[key]) for key in ("loss", "kl")):
                raise FloatingPointError(f"step {self.step}: non-finite loss or KL ({record['loss']}, {record['kl']})")
            if self.accelerator.is_main_process:
                with self.log_path.open("a") as log:
                    log.write(json.dumps(record) + "\n")
            if config.save_steps and self.step % config.save_steps == 0:
                self.save_checkpoint()
        return self.save_final()

    def save_checkpoint(self) -> Path:
        path = self.output_dir / f"checkpoint-{self.step}"
        self.accelerator.save_state(str(path))
        if self.accelerator.is_main_process:
            (path / STATE_FILE).write_text(json.dumps({"step": self.step, "seed": self.config.seed, "rng": self.rng.getstate()}, default=list))
            self._prune_checkpoints()
        self.accelerator.wait_for_everyone()
        return path

    def load_checkpoint(self, path: Path) -> None:
        state = json.loads((path / STATE_FILE).read_text())
        self.accelerator.load_state(str(path))
        self.step = int(state["step"])
        self.sampler.sync(self.unwrapped)  # a vLLM engine started from the initial weights
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        if self.accelerator.is_main_process:
            trim_log(self.log_path, self.step)

    def _prune_checkpoints(self) -> None:
        limit = self.config.save_total_limit
        if not limit:
            return
        done = sorted((p for p in self.output_dir.glob("checkpoint-*") if (p / STATE_FILE).exists()), key=lambda p: int(p.name.split("-")[-1]))
        for old in done[:-limit]:
            shutil.rmtree(old, ignore_errors=True)

    def save_final(self) -> Path:
        """OUTPUT/final: a model directory `hf:` and eval load directly (LoRA: merged when
        `merge_lora`, the adapter itself kept in OUTPUT/adapter), as train sft writes it."""
        path = self.output_dir / "final"
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            model = self.unwrapped
            if self.config.lora and self.config.merge_lora:
                model.save_pretrained(self.output_dir / "adapter")
                model = model.merge_and_unload()
            model.save_pretrained(path)
            self.processor.save_pretrained(path)
        return path


# -- helpers ------------------------------------------------------------------------------------------
def load_rows(config: GRPOConfig) -> Any:
    """The exported GRPO rows of every configured dataset config, in a fixed order (a `datasets`
    table: rows are read, frames decoded, only when a step uses them)."""
    from datasets import concatenate_datasets

    from vau_annotate.schemas.rows import load_export  # reads a local export's shards by path: never stale

    parts = [load_export(config.dataset, name, split=config.split) for name in config.dataset_config]
    rows = parts[0] if len(parts) == 1 else concatenate_datasets(parts)
    if len(rows) == 0:
        raise ValueError(f"{config.dataset} {config.dataset_config} split {config.split!r} has no rows")
    missing = [column for column in ("prompt", "task") if column not in rows.column_names]
    if missing:
        raise ValueError(f"{config.dataset} {config.dataset_config} are not GRPO rows: no {', '.join(missing)} column")
    bad = sorted(set(rows["task"]) - set(TASKS))
    if bad:
        raise ValueError(f"unknown task(s) {bad} in {config.dataset}; known: {', '.join(TASKS)}")
    return rows


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids = model.generation_config.eos_token_id if model.generation_config is not None else None
    found = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        found.add(tokenizer.eos_token_id)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end >= 0:
        found.add(im_end)
    return found


def vision_token_ids(model_config: Any) -> list[int]:
    """Ids of the image / video placeholders and vision delimiters: never valid in a completion."""
    names = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    return sorted({int(getattr(model_config, name)) for name in names if getattr(model_config, name, None) is not None})


def _ended(ids: torch.Tensor, mask: torch.Tensor, eos_ids: set[int]) -> bool:
    n = int(mask.sum().item())
    return n > 0 and int(ids[n - 1]) in eos_ids


def run(config: GRPOConfig) -> Path:
    """Train and return the final model directory."""
    return GRPORecipe(config).train()
