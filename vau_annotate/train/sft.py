"""`vau-annotate train sft`: supervised fine-tuning of a Qwen2.5-VL-family model on an exported chat config.

Built on transformers' `Trainer` with our video collator (train/data.py): the trainer brings the
optimiser, schedule, gradient accumulation, bf16, gradient checkpointing, checkpoints + resume,
and — through `accelerate launch` with the shipped DeepSpeed ZeRO-2/3 or FSDP configs — multi-GPU
and multi-node, with no distributed code of ours. TRL's `SFTTrainer` adds nothing here: its
collator handles images only and its dataset preparation would have to be skipped anyway.

What is trained: assistant tokens only (system, user, video and padding carry -100), so a model
learns to produce the target chain, not to reproduce the prompt.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vau_annotate.train.config import dump_yaml, load_recipe
from vau_annotate.train.data import SFTCollator

log = logging.getLogger(__name__)

SFT_CONFIGS = ("p2c_sft", "reflect_sft", "reflect_sft_conditioned")
LANGUAGE_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class SFTRecipe:
    """Every key a `train sft` recipe may set (flat YAML; override any with key=value)."""

    model: str  # local model directory or Hub id
    dataset: str  # local export directory (OUT of `vau-annotate export`) or Hub dataset id
    dataset_config: str = "p2c_sft"
    train_split: str = "train"
    eval_split: str | None = None
    max_samples: int | None = None  # first N training rows (smoke runs)
    videos_root: str | None = None  # where `--frames path` rows' relative video paths live
    output_dir: str = "runs/sft"
    # video: per-frame pixel budget given to the processor (None = the row's / processor's own)
    max_pixels: int | None = None
    min_pixels: int | None = None
    decoder: str = "auto"
    # what is trained
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(default_factory=lambda: list(LANGUAGE_PROJECTIONS))
    merge_lora: bool = True  # write final/ as a merged full model (loadable by `hf:`)
    freeze_vision: bool = False
    # optimisation
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 1  # per device
    grad_accum: int = 1
    learning_rate: float = 1e-5
    weight_decay: float = 0.0
    warmup: float = 0.0  # < 1: fraction of the training steps; >= 1: a number of steps
    lr_scheduler: str = "cosine"
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"
    bf16: bool = False
    gradient_checkpointing: bool = False
    attn_implementation: str | None = None  # sdpa | flash_attention_2 | eager
    seed: int = 42
    # logging and checkpoints
    logging_steps: int = 1
    save_steps: int = 500
    save_total_limit: int | None = 2
    resume: str | None = "auto"  # auto (last checkpoint in output_dir, if any) | none | PATH
    report_to: list[str] = field(default_factory=list)  # tensorboard, wandb (used when installed)
    dataloader_workers: int = 0
    deepspeed: str | None = None  # a DeepSpeed JSON/YAML (or use `accelerate launch --config_file`)


def load_sft_recipe(config: str | Path | None, overrides: list[str] | dict[str, Any] = ()) -> SFTRecipe:
    return load_recipe(SFTRecipe, config, overrides)


# ---------------------------------------------------------------------------------------------
# pieces
# ---------------------------------------------------------------------------------------------


def load_rows(recipe: SFTRecipe, split: str):
    """The split of the chat config from a local export directory or the Hub."""
    from datasets import load_dataset

    source = Path(recipe.dataset).expanduser()
    looks_local = recipe.dataset.startswith(("/", ".", "~")) or recipe.dataset.count("/") != 1
    if not source.exists() and looks_local:
        raise FileNotFoundError(f"dataset: no export folder {recipe.dataset} (a Hub id looks like owner/name)")
    rows = load_dataset(str(source) if source.exists() else recipe.dataset, recipe.dataset_config, split=split)
    if "messages" not in rows.column_names:
        raise ValueError(f"{recipe.dataset} [{recipe.dataset_config}] has no messages column: SFT needs one of {', '.join(SFT_CONFIGS)}")
    if recipe.max_samples is not None and split == recipe.train_split:
        rows = rows.select(range(min(recipe.max_samples, len(rows))))
    return rows


def available_reporters(wanted: list[str]) -> list[str]:
    """The requested loggers that are installed; the others are named in a warning, not fatal."""
    from transformers.integrations import get_available_reporting_integrations

    installed = set(get_available_reporting_integrations())
    kept = [name for name in wanted if name in installed]
    missing = [name for name in wanted if name not in installed]
    if missing:
        log.warning("report_to: %s not installed; logging to log.jsonl only for those", ", ".join(missing))
    return kept


def load_model(recipe: SFTRecipe):
    """Model + processor; LoRA adapters on the language model only when `lora`."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(recipe.model)
    kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if recipe.bf16 else torch.float32}
    if recipe.attn_implementation:
        kwargs["attn_implementation"] = recipe.attn_implementation
    model = AutoModelForImageTextToText.from_pretrained(recipe.model, **kwargs)
    if recipe.freeze_vision:
        for name, parameter in model.named_parameters():
            if ".visual." in f".{name}":
                parameter.requires_grad_(False)
    if recipe.lora:
        from peft import LoraConfig, get_peft_model

        # a regex so the vision tower's own qkv/proj/MLP layers stay untouched
        targets = rf"^(?!.*visual).*\.({'|'.join(recipe.lora_target_modules)})$"
        model = get_peft_model(model, LoraConfig(r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout, target_modules=targets, task_type="CAUSAL_LM"))
        if recipe.gradient_checkpointing:
            model.enable_input_require_grads()
    return model, processor


def training_arguments(recipe: SFTRecipe):
    from transformers import TrainingArguments

    # transformers 5.24 renamed gradient_checkpointing to activation_checkpointing (old name deprecated)
    fields = TrainingArguments.__dataclass_fields__
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    extra: dict[str, Any] = {}
    if recipe.gradient_checkpointing:
        extra = {checkpointing: True, f"{checkpointing}_kwargs": {"use_reentrant": False}}
    import torch

    if recipe.bf16 and not torch.cuda.is_available():
        extra["use_cpu"] = True  # transformers refuses bf16 without a GPU unless told it is a CPU run
    return TrainingArguments(
        **extra,
        output_dir=recipe.output_dir,
        num_train_epochs=recipe.epochs,
        max_steps=recipe.max_steps,
        per_device_train_batch_size=recipe.batch_size,
        per_device_eval_batch_size=recipe.batch_size,
        gradient_accumulation_steps=recipe.grad_accum,
        learning_rate=recipe.learning_rate,
        weight_decay=recipe.weight_decay,
        warmup_steps=recipe.warmup,
        lr_scheduler_type=recipe.lr_scheduler,
        max_grad_norm=recipe.max_grad_norm,
        optim=recipe.optim,
        bf16=recipe.bf16,
        logging_steps=recipe.logging_steps,
        save_strategy="steps",
        save_steps=recipe.save_steps,
        save_total_limit=recipe.save_total_limit,
        eval_strategy="steps" if recipe.eval_split else "no",
        eval_steps=recipe.save_steps if recipe.eval_split else None,
        report_to=available_reporters(recipe.report_to) or "none",
        seed=recipe.seed,
        remove_unused_columns=False,  # the collator needs frames, frame_times, messages
        dataloader_num_workers=recipe.dataloader_workers,
        deepspeed=recipe.deepspeed,
    )


def jsonl_logger(path: Path):
    """A TrainerCallback appending every log record (loss, lr, grad norm, step) as one JSON line."""
    from transformers import TrainerCallback

    class JsonlLogger(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if state.is_world_process_zero and logs:
                record = {"step": state.global_step, "epoch": state.epoch, "time": round(time.time(), 3), **logs}
                with path.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record) + "\n")

    return JsonlLogger()


def resume_point(recipe: SFTRecipe) -> str | None:
    """auto → the newest checkpoint-N under output_dir (None when there is none)."""
    from transformers.trainer_utils import get_last_checkpoint

    if recipe.resume is None or recipe.resume.lower() in ("none", "false", "no"):
        return None
    if recipe.resume.lower() in ("auto", "true", "yes"):
        out = Path(recipe.output_dir)
        return get_last_checkpoint(str(out)) if out.is_dir() else None
    if not Path(recipe.resume).is_dir():
        raise FileNotFoundError(f"resume: no checkpoint directory {recipe.resume}")
    return recipe.resume


@dataclass
class SFTResult:
    output_dir: Path
    final_dir: Path
    global_step: int
    train_loss: float
    resumed_from: str | None
    seconds: float


def save_final(trainer: Any, processor: Any, recipe: SFTRecipe) -> Path:
    """output_dir/final: a model directory the `hf:` backend and eval can load (LoRA merged
    when `merge_lora`; otherwise the adapter, with the base model named in its config)."""
    final = Path(recipe.output_dir) / "final"
    model = trainer.model
    if recipe.lora and recipe.merge_lora:
        model.save_pretrained(Path(recipe.output_dir) / "adapter")
        model = model.merge_and_unload()
    if trainer.is_world_process_zero():
        if recipe.lora and recipe.merge_lora:
            model.save_pretrained(final)
        else:
            trainer.save_model(str(final))
        processor.save_pretrained(final)
    return final


def train_sft(recipe: SFTRecipe) -> SFTResult:
    """Run (or resume) SFT as the recipe says; returns where the model went and the last loss."""
    from transformers import Trainer, set_seed

    started = time.perf_counter()
    set_seed(recipe.seed)
    out = Path(recipe.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    dump_yaml(recipe, out / "recipe.yaml")
    train_rows = load_rows(recipe, recipe.train_split)
    eval_rows = load_rows(recipe, recipe.eval_split) if recipe.eval_split else None
    model, processor = load_model(recipe)
    collator = SFTCollator(
        processor, videos_root=recipe.videos_root, max_pixels=recipe.max_pixels, min_pixels=recipe.min_pixels, decoder=recipe.decoder,
    )
    trainer = Trainer(
        model=model,
        args=training_arguments(recipe),
        train_dataset=train_rows,
        eval_dataset=eval_rows,
        data_collator=collator,
        processing_class=processor,
        callbacks=[jsonl_logger(out / "log.jsonl")],
    )
    resumed = resume_point(recipe)
    output = trainer.train(resume_from_checkpoint=resumed)
    final = save_final(trainer, processor, recipe)
    loss = float(output.training_loss) if output.training_loss is not None else math.nan
    return SFTResult(out, final, trainer.state.global_step, loss, resumed, time.perf_counter() - started)
