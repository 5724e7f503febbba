"""Seconds per GRPO step (G = 4): our video loop vs TRL's GRPOTrainer on the same rows as images.

TRL's GRPOTrainer has no video path in its loss (see README, "train grpo"), so the baseline gets the
same frames as a list of images, its only visual path. Both sides: the offline tiny Qwen2.5-VL, the
same rows (1 prompt per step, G = 4 completions of exactly --tokens tokens, `min_new_tokens` =
`max_new_tokens` so neither side wins by stopping early), the same reward (VAU-R1 format), beta 0.04,
full fine-tuning, float32 on CPU. The two loops alternate for --rounds rounds; each round's first
step is warm-up. Median and best step are reported. Target: ours / TRL <= 1.0.

    python benchmarks/bench_grpo.py [--steps 6] [--rounds 2] [--frames 4] [--tokens 16]

GPU check (needs a CUDA GPU and, for the second row, vLLM): one GRPO step of a random-weight
model of Qwen2.5-VL-3B's size in bf16, rollout by `model.generate` vs the colocated vLLM engine:

    python benchmarks/bench_grpo.py --device-check [--frames 16] [--tokens 256]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SYSTEM = "You are an expert in video anomaly analysis."
QUESTION = "What does the man do? A. walks B. runs C. falls D. fights. Think in <think></think>, answer in <answer></answer>."


def jpeg(seed: int, height: int = 84, width: int = 112) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_rows(out: Path, rows: int, frames: int, size: tuple[int, int] = (84, 112)) -> Path:
    """A `grpo_qa` export (CONTRACT.md shape, embedded frames) of `rows` rows."""
    from datasets import Dataset, Features, Image, List, Value

    part = {"type": Value("string"), "text": Value("string")}
    features = Features({
        "id": Value("string"), "video_id": Value("string"), "source": Value("string"),
        "frames": List(Image()), "frame_times": List(Value("float32")), "sample_fps": Value("float32"),
        "prompt": List({"role": Value("string"), "content": List(part)}),
        "task": Value("string"), "answer": Value("string"), "options": List(Value("string")),
        "span": List(Value("float32")), "duration": Value("float32"), "label": Value("string"), "category": Value("string"),
    })
    records = [{
        "id": f"v{i}#qa0", "video_id": f"v{i}", "source": "bench",
        "frames": [{"bytes": jpeg(i * 100 + k, *size), "path": None} for k in range(frames)],
        "frame_times": [k / 2.0 for k in range(frames)], "sample_fps": 2.0,
        "prompt": [{"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
                   {"role": "user", "content": [{"type": "video", "text": ""}, {"type": "text", "text": QUESTION}]}],
        "task": "qa", "answer": "B", "options": ["walks", "runs", "falls", "fights"], "span": None,
        "duration": frames / 2.0, "label": "abnormal", "category": "Robbery",
    } for i in range(rows)]
    shard = out / "grpo_qa" / "train-00000-of-00001.parquet"
    shard.parent.mkdir(parents=True, exist_ok=True)
    Dataset.from_list(records, features=features).to_parquet(str(shard))
    (out / "README.md").write_text("---\nconfigs:\n- config_name: grpo_qa\n  data_files:\n  - split: train\n    path: grpo_qa/train-*.parquet\n---\n")
    return out


def time_ours(model: Path, dataset: Path, out: Path, steps: int, tokens: int, **extra) -> list[float]:
    from vau_annotate.train.grpo import GRPOConfig, GRPORecipe

    values = {
        "model": str(model), "dataset": str(dataset), "dataset_config": "grpo_qa", "output_dir": str(out),
        "gradient_accumulation_steps": 1, "max_steps": steps, "max_new_tokens": tokens, "min_new_tokens": tokens,
        "rewards": "format_vau_r1", "learning_rate": 1e-5, "save_steps": 0, "log_completions": False,
    }
    values.update(extra)
    recipe = GRPORecipe(GRPOConfig.load("grpo_tiny", values))
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        recipe.train_step()
        times.append(time.perf_counter() - started)
    return times


def time_trl(model: Path, dataset: Path, out: Path, steps: int, tokens: int) -> list[float]:
    """TRL GRPOTrainer, the same rows with their frames as `images`."""
    import torch
    from datasets import load_dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from vau_annotate.train.data import row_frames
    from vau_annotate.train.rewards import format_vau_r1

    rows = load_dataset(str(dataset), "grpo_qa", split="train", download_mode="force_redownload", cache_dir=str(out / "cache"))
    trl_rows = [{
        "prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}],
        "images": row_frames(row)[0],
    } for row in rows]
    from datasets import Dataset

    train = Dataset.from_list(trl_rows)

    def format_reward(completions, **_):
        return [format_vau_r1(c[0]["content"] if isinstance(c, list) else c, {}) for c in completions]

    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter() - self.started)

    args = GRPOConfig(
        output_dir=str(out), per_device_train_batch_size=4, num_generations=4, max_completion_length=tokens,
        generation_kwargs={"min_new_tokens": tokens}, temperature=1.0, beta=0.04, learning_rate=1e-5,
        max_steps=steps, logging_steps=10**6, save_strategy="no", report_to="none", use_cpu=not torch.cuda.is_available(),
        bf16=False, seed=0, dataloader_num_workers=0, shuffle_dataset=False,
    )
    trainer = GRPOTrainer(model=str(model), reward_funcs=format_reward, args=args, train_dataset=train, callbacks=[Clock()])
    trainer.train()
    return times


def after_warmup(times: list[float]) -> list[float]:
    return times[1:] if len(times) > 1 else times


def cpu_benchmark(args: argparse.Namespace) -> int:
    """Alternate the two loops `--rounds` times (ours, TRL, ours, TRL, ...): on a shared machine
    load comes in bursts, and alternating spreads them over both sides. Each round's first step is
    warm-up. Reported: the median and the best step of each side, and both ratios."""
    from vau_annotate.train.tiny import build_tiny_model

    ours: list[float] = []
    trl: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_tiny_model(root / "tiny")
        dataset = write_rows(root / "export", rows=max(4, args.steps), frames=args.frames)
        for round_ in range(args.rounds):
            ours_times = time_ours(model, dataset, root / f"ours{round_}", args.steps, args.tokens)
            print(f"round {round_ + 1} ours, s per step:", " ".join(f"{t:.3f}" for t in ours_times), flush=True)
            trl_times = time_trl(model, dataset, root / f"trl{round_}", args.steps, args.tokens)
            print(f"round {round_ + 1} TRL,  s per step:", " ".join(f"{t:.3f}" for t in trl_times), flush=True)
            ours += after_warmup(ours_times)
            trl += after_warmup(trl_times)
    median_ours, median_trl = statistics.median(ours), statistics.median(trl)
    print(f"GRPO step, tiny Qwen2.5-VL, 1 prompt x G=4, {args.tokens} tokens, {args.frames} frames ({len(ours)} timed steps each, {args.rounds} alternated rounds)")
    print(f"  {'':36s} {'median':>8s} {'best':>8s}")
    print(f"  {'ours (video tensors in the loss)':36s} {median_ours:8.3f} {min(ours):8.3f} s/step")
    print(f"  {'TRL GRPOTrainer (frames as images)':36s} {median_trl:8.3f} {min(trl):8.3f} s/step")
    print(f"  {'ratio ours / TRL':36s} {median_ours / median_trl:8.2f} {min(ours) / min(trl):8.2f}  (target <= 1.0)")
    return 0


def build_3b_sized(out: Path) -> Path:
    """A random-weight model with Qwen2.5-VL-3B-Instruct's architecture sizes (text 2048 x 36 layers,
    16 heads / 2 KV heads, MLP 11008; vision 32 blocks of 1280) and the tiny tokenizer, in bf16."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from vau_annotate.train.tiny import build_config, build_processor, build_tokenizer

    tokenizer = build_tokenizer()
    config = build_config(tokenizer)
    text = config.text_config
    text.hidden_size, text.num_hidden_layers, text.intermediate_size = 2048, 36, 11008
    text.num_attention_heads, text.num_key_value_heads = 16, 2
    text.rope_parameters["mrope_section"] = [16, 24, 24]
    text.initializer_range = 0.02
    vision = config.vision_config
    vision.depth, vision.hidden_size, vision.intermediate_size, vision.num_heads = 32, 1280, 3420, 16
    vision.out_hidden_size, vision.fullatt_block_indexes, vision.window_size = 2048, [7, 15, 23, 31], 112
    vision.initializer_range = 0.02
    config.initializer_range = 0.02
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen2_5_VLForConditionalGeneration(config).to(torch.bfloat16)
    model.generation_config.eos_token_id = [text.eos_token_id]
    model.save_pretrained(out)
    build_processor(tokenizer).save_pretrained(out)
    del model
    torch.cuda.empty_cache()
    return out


def device_check(args: argparse.Namespace) -> int:
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        print("--device-check needs a CUDA GPU")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_3b_sized(root / "qwen2.5-vl-3b-sized")
        dataset = write_rows(root / "export", rows=4, frames=args.frames, size=(252, 448))
        common = {"bf16": True, "gradient_checkpointing": True, "max_pixels": 128 * 28 * 28, "learning_rate": 1e-6, "freeze_vision": True}
        rows = []
        generate = time_ours(model, dataset, root / "generate", 3, args.tokens, **common)
        rows.append(("generate", statistics.median(after_warmup(generate))))
        if importlib.util.find_spec("vllm") is not None:
            torch.cuda.empty_cache()
            vllm = time_ours(model, dataset, root / "vllm", 3, args.tokens, rollout="vllm", vllm_gpu_memory_utilization=0.25, **common)
            rows.append(("vllm (colocated)", statistics.median(after_warmup(vllm))))
        else:
            print("vllm is not installed: only the generate row")
    print(f"GRPO step, random-weight Qwen2.5-VL-3B-sized model, bf16, 1 prompt x G=4, {args.tokens} tokens, {args.frames} frames at 128*28*28")
    for name, seconds in rows:
        print(f"  rollout {name:18s} {seconds:8.2f} s/step")
    if len(rows) == 2:
        print(f"  ratio vllm / generate     {rows[1][1] / rows[0][1]:8.2f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="alternated rounds of both loops (CPU benchmark)")
    parser.add_argument("--device-check", action="store_true")
    args = parser.parse_args()
    if args.device_check:
        args.frames = args.frames if args.frames != 4 else 16
        args.tokens = args.tokens if args.tokens != 16 else 256
        return device_check(args)
    return cpu_benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
