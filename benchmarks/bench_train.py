"""SFT step time and peak memory: our video collator vs the same rows through TRL's SFTTrainer as images.

  ours      transformers Trainer + `vau_annotate.train.data.SFTCollator`: the frames go through the
            processor's video path (2 frames per temporal patch, true fps, `mm_token_type_ids`),
            labels on assistant tokens only.
  TRL       `trl.SFTTrainer` with its own vision collator, the same frames given as one image per
            frame (TRL's collator takes images only), `assistant_only_loss=True`. This is what a
            user of TRL gets for video today: no temporal merge, so twice the visual tokens.

Both run the same model, rows, batch size, optimiser and step count, each in a fresh process (so
peak memory is its own); the first --warmup steps are not timed. Printed: median seconds per
optimiser step, peak memory (CUDA: max allocated; CPU: peak RSS of the process, which includes
~0.5 GB of imports both pay), sequence length, and ours / TRL ratios (target ≤ 1.0).

    python benchmarks/bench_train.py [--size tiny|3b] [--frames 8] [--rows 4] [--batch 2]
                                     [--steps 6] [--warmup 2] [--max-pixels N] [--bf16] [--repeats 2]

--size 3b builds a randomly initialised model with Qwen2.5-VL-3B's shapes (no download) and is
meant for a GPU: `--size 3b --frames 16 --max-pixels 100352 --bf16` is Vad-R1's SFT setting.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ANSWER = (
    "<think>A man walks along the street, then grabs a bag from a woman and runs towards the parking lot.</think>"
    "<answer><which>abnormal</which><what>Robbery</what><when>1.0s - 2.0s</when></answer>"
)

# Qwen2.5-VL-3B-Instruct's config.json shapes (text 36 layers × 2048, vision 32 blocks × 1280).
QWEN_3B_TEXT = {"hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36, "num_attention_heads": 16,
                "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True,
                "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}}
QWEN_3B_VISION = {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "out_hidden_size": 2048,
                  "fullatt_block_indexes": [7, 15, 23, 31], "window_size": 112, "tokens_per_second": 2}


def frame_size(max_pixels: int) -> tuple[int, int]:
    """A 2:1 frame whose area is the budget, sides multiples of 28 (448×224 for 128·28·28)."""
    rows = max(1, int((max_pixels / (28 * 28) / 2) ** 0.5))
    return 2 * rows * 28, rows * 28


def make_rows(n: int, frames: int, max_pixels: int) -> list[dict]:
    """Contract p2c_sft rows with real synthetic frames (annotate/synth.py), JPEG-encoded."""
    from vau_annotate.annotate.synth import frame_image
    from vau_annotate.annotate.video import encode_jpeg

    width, height = frame_size(max_pixels)
    rows = []
    for i in range(n):
        jpegs = [encode_jpeg(frame_image(i * 100 + k * 7, width, height)) for k in range(frames)]
        rows.append({
            "id": f"v{i}", "frames": [{"bytes": data, "path": None} for data in jpegs],
            "frame_times": [k * 0.5 for k in range(frames)], "sample_fps": 2.0,
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "You are an expert in video anomaly analysis."}]},
                {"role": "user", "content": [{"type": "video", "text": ""}, {"type": "text", "text": "Is there an anomaly? Think, then answer."}]},
                {"role": "assistant", "content": [{"type": "text", "text": ANSWER}]},
            ],
        })
    return rows


def as_image_rows(rows: list[dict]) -> list[dict]:
    """The same rows the way TRL's vision collator wants them: one image placeholder per frame."""
    from PIL import Image
    import io

    out = []
    for row in rows:
        images = [Image.open(io.BytesIO(frame["bytes"])).convert("RGB") for frame in row["frames"]]
        messages = []
        for message in row["messages"]:
            parts = []
            for part in message["content"]:
                if part["type"] == "video":
                    parts.extend({"type": "image"} for _ in images)
                else:
                    parts.append({"type": "text", "text": part["text"]})
            messages.append({"role": message["role"], "content": parts})
        out.append({"images": images, "messages": messages})
    return out


def build_model(size: str, bf16: bool, workdir: Path, max_pixels: int):
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from vau_annotate.train import tiny

    tokenizer = tiny.build_tokenizer()
    processor = tiny.build_processor(tokenizer)
    processor.video_processor.size = {"shortest_edge": tiny.MIN_PIXELS, "longest_edge": max_pixels}
    processor.image_processor.size = {"shortest_edge": tiny.MIN_PIXELS, "longest_edge": max_pixels}
    processor.video_processor.max_video_tokens = 1 << 20
    config = tiny.build_config(tokenizer)
    if size == "3b":
        text = {k: v for k, v in config.text_config.to_dict().items() if k not in ("layer_types", "max_window_layers")} | QWEN_3B_TEXT
        vision = config.vision_config.to_dict() | QWEN_3B_VISION
        config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=config.image_token_id,
                                  video_token_id=config.video_token_id, vision_start_token_id=config.vision_start_token_id,
                                  vision_end_token_id=config.vision_end_token_id, tie_word_embeddings=True)
    dtype = torch.bfloat16 if bf16 else torch.float32
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration(config).to(dtype)
    return model, processor


class StepTimer:
    """Wall time of each optimiser step (synchronised on CUDA)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def callback(self):
        import torch
        from transformers import TrainerCallback

        timer = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                timer._start = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                timer.times.append(time.perf_counter() - timer._start)

        return Callback()


def child(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    import resource

    import torch
    from datasets import Dataset

    from vau_annotate.train.data import SFTCollator
    from vau_annotate.train.sft import load_sft_recipe, training_arguments

    workdir = Path(tempfile.mkdtemp(prefix="bench-train-"))
    model, processor = build_model(args.size, args.bf16, workdir, args.max_pixels)
    rows = make_rows(args.rows, args.frames, args.max_pixels)
    recipe = load_sft_recipe(None, {
        "model": "-", "dataset": "-", "output_dir": str(workdir / variant), "batch_size": args.batch,
        "max_steps": args.warmup + args.steps, "learning_rate": 1e-5, "save_steps": 10**6, "logging_steps": 10**6,
        "bf16": args.bf16, "gradient_checkpointing": args.size == "3b", "seed": 0,
    })
    timer = StepTimer()
    sample = None
    if variant == "ours":
        from transformers import Trainer

        collator = SFTCollator(processor)
        sample = collator(rows[: args.batch])
        trainer = Trainer(model=model, args=training_arguments(recipe), train_dataset=Dataset.from_list(rows * 64),
                          data_collator=collator, processing_class=processor, callbacks=[timer.callback()])
    else:
        from trl import SFTConfig, SFTTrainer
        from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

        base = training_arguments(recipe).to_dict()
        keep = {key: value for key, value in base.items() if key in SFTConfig.__dataclass_fields__ and not key.startswith("_")}
        keep.update(max_length=None, assistant_only_loss=True, dataset_kwargs={"skip_prepare_dataset": True}, remove_unused_columns=False,
                    report_to="none", push_to_hub_token=None)
        keep = {key: value for key, value in keep.items() if key in SFTConfig.__dataclass_fields__}
        config = SFTConfig(**keep)
        image_rows = as_image_rows(rows)
        collator = DataCollatorForVisionLanguageModeling(processor, assistant_only_loss=True)
        sample = collator([dict(row) for row in image_rows[: args.batch]])
        trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(image_rows * 64),
                             processing_class=processor, data_collator=collator, callbacks=[timer.callback()])
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    timed = timer.times[args.warmup:]
    return {
        "variant": variant,
        "s_per_step": statistics.median(timed),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "peak_cuda_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        "seq_len": int(sample["input_ids"].shape[1]),
        "trained_tokens": int((sample["labels"] != -100).sum()),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }


def run_child(variant: str, argv: list[str]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "--child", variant, *argv], capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"{variant} run failed (exit {done.returncode})")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("tiny", "3b"), default="tiny")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--max-pixels", type=int, default=28 * 28 * 16)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each variant, alternated; the fastest counts")
    parser.add_argument("--child", choices=("ours", "trl"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args)))
        return
    argv = [a for a in sys.argv[1:] if not a.startswith("--repeats")]
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "trl": []}
    for _ in range(args.repeats):  # alternated, best of each: a shared machine's load hits both alike
        for variant in runs:
            runs[variant].append(run_child(variant, argv))
    ours, trl = (min(runs[variant], key=lambda r: r["s_per_step"]) for variant in ("ours", "trl"))
    memory = "peak_cuda_gib" if ours["peak_cuda_gib"] is not None else "peak_rss_gib"
    print(f"SFT on {args.size} Qwen2.5-VL ({ours['device']}{', bf16' if args.bf16 else ''}), {args.frames} frames "
          f"≤ {args.max_pixels} px, batch {args.batch}, {args.steps} timed steps after {args.warmup}, best of {args.repeats}")
    print(f"{'':<28}{'s/step':>10}{memory:>16}{'seq len':>10}{'trained tok':>13}")
    for name, result in (("ours (video collator)", ours), ("TRL SFTTrainer (images)", trl)):
        print(f"{name:<28}{result['s_per_step']:>10.3f}{result[memory]:>16.2f}{result['seq_len']:>10}{result['trained_tokens']:>13}")
    print(f"ratio ours / TRL: time {ours['s_per_step'] / trl['s_per_step']:.2f}, memory {ours[memory] / trl[memory]:.2f} (target ≤ 1.0)")


if __name__ == "__main__":
    main()
