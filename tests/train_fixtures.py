"""Small datasets in the exported-row contract's shape (CONTRACT.md), written the way export writes
them (`OUT/README.md` with `configs:`, `OUT/<config>/<split>-00000-of-00001.parquet`), so the
trainer tests need nothing from the export pipeline: real JPEG frames, real H.264 clips."""

from __future__ import annotations

from pathlib import Path

from media import random_jpeg as jpeg

SYSTEM = "You are an expert in video anomaly analysis."
QUESTION = "Is there an anomaly in the video? Think step by step, then answer with the tags."


def chat(answer: str, question: str = QUESTION) -> list[dict]:
    """Contract messages: system, user (video part first, then the question), assistant target."""
    return [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
        {"role": "user", "content": [{"type": "video", "text": ""}, {"type": "text", "text": question}]},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]


ANSWERS = (
    "<think>A man walks along the street, then grabs a bag and runs.</think>"
    "<answer><which>abnormal</which><what>Robbery</what><when>1.0s - 2.0s</when></answer>",
    "<think>People walk calmly across the intersection.</think><answer><which>normal</which><what>Normal</what></answer>",
)


def embed_row(index: int, frames: int = 4, fps: float = 2.0, seed: int | None = None) -> dict:
    """A `--frames embed` p2c_sft row: JPEG frames with their times and the sampling rate."""
    seed = index * 100 if seed is None else seed
    return {
        "id": f"v{index}#p2c",
        "video_id": f"v{index}",
        "source": "synthetic",
        "frames": [{"bytes": jpeg(seed + k), "path": None} for k in range(frames)],
        "frame_times": [k / fps for k in range(frames)],
        "sample_fps": fps,
        "max_pixels": 28 * 28 * 16,
        "messages": chat(ANSWERS[index % 2]),
        "label": "abnormal" if index % 2 == 0 else "normal",
        "category": "Robbery" if index % 2 == 0 else "Normal",
        "duration": frames / fps,
    }


def path_row(index: int, video: str, fps: float | None = 2.0, nframes: int | None = None) -> dict:
    """A `--frames path` p2c_sft row: the video's path relative to the videos root plus how to sample it."""
    return {
        "id": f"p{index}#p2c",
        "video_id": f"p{index}",
        "source": "synthetic",
        "video": video,
        "fps": fps,
        "nframes": nframes,
        "max_pixels": 28 * 28 * 16,
        "min_pixels": 28 * 28 * 4,
        "messages": chat(ANSWERS[index % 2]),
        "label": "abnormal" if index % 2 == 0 else "normal",
        "category": "Robbery" if index % 2 == 0 else "Normal",
        "duration": 2.0,
    }


def _message_features():
    from datasets import List, Value

    part = {"type": Value("string"), "text": Value("string")}
    return List({"role": Value("string"), "content": List(part)})


def embed_features():
    from datasets import Features, Image, List, Value

    return Features({
        "id": Value("string"), "video_id": Value("string"), "source": Value("string"),
        "frames": List(Image()), "frame_times": List(Value("float32")), "sample_fps": Value("float32"),
        "max_pixels": Value("int32"), "messages": _message_features(),
        "label": Value("string"), "category": Value("string"), "duration": Value("float32"),
    })


def path_features():
    from datasets import Features, Value

    return Features({
        "id": Value("string"), "video_id": Value("string"), "source": Value("string"),
        "video": Value("string"), "fps": Value("float32"), "nframes": Value("int32"),
        "max_pixels": Value("int32"), "min_pixels": Value("int32"), "messages": _message_features(),
        "label": Value("string"), "category": Value("string"), "duration": Value("float32"),
    })


def write_export(out: Path, config: str, splits: dict[str, list[dict]], features) -> Path:
    """Write rows as export does: one parquet shard per split and a card naming the config."""
    from datasets import Dataset

    out.mkdir(parents=True, exist_ok=True)
    lines = ["---", "configs:", f"- config_name: {config}", "  data_files:"]
    for split, rows in splits.items():
        shard = out / config / f"{split}-00000-of-00001.parquet"
        shard.parent.mkdir(parents=True, exist_ok=True)
        Dataset.from_list(rows, features=features).to_parquet(str(shard))
        lines += [f"  - split: {split}", f"    path: {config}/{split}-*.parquet"]
    (out / "README.md").write_text("\n".join(lines + ["---", "", "Test export.", ""]), encoding="utf-8")
    return out


def embed_export(out: Path, rows: int = 4, frames: int = 4) -> Path:
    return write_export(out, "p2c_sft", {"train": [embed_row(i, frames) for i in range(rows)]}, embed_features())


def path_export(out: Path, videos_root: Path, rows: int = 2) -> Path:
    """Real H.264 clips under videos_root and path rows pointing at them."""
    from vau_annotate.annotate.synth import make_clip

    for i in range(rows):
        make_clip(videos_root / "clips" / f"p{i}.mp4", seconds=2.0, fps=10, width=112, height=84)
    return write_export(out, "p2c_sft", {"train": [path_row(i, f"clips/p{i}.mp4") for i in range(rows)]}, path_features())
