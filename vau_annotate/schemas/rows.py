"""The exported-row contract (CONTRACT.md): one typed dict and one `datasets.Features` per config.

Trainers (train/data.py), the GRPO rewards and the evaluator read these columns, so their names
are fixed here once. Rows are plain dicts; the Features give them their Arrow types so that an
exported parquet file loads with `datasets.load_dataset(DIR, CONFIG)` and every message part keeps
exactly its two string keys (`type`, `text`): with one fixed struct, Arrow never adds `None` keys.
"""

from __future__ import annotations

from typing import Literal, TypedDict

FramesMode = Literal["embed", "path"]
FRAMES_MODES: tuple[str, ...] = ("embed", "path")
SPLITS: tuple[str, ...] = ("train", "validation", "test")

SFT_CONFIGS: tuple[str, ...] = ("p2c_sft", "reflect_sft", "reflect_sft_conditioned")
GRPO_CONFIGS: tuple[str, ...] = ("grpo_qa", "grpo_tag", "grpo_cls", "grpo_p2c", "grpo_reflect")
CONFIGS: tuple[str, ...] = SFT_CONFIGS + GRPO_CONFIGS + ("captions",)
GRPO_TASK: dict[str, str] = {"grpo_qa": "qa", "grpo_tag": "tag", "grpo_cls": "cls", "grpo_p2c": "p2c", "grpo_reflect": "reflect"}


class Part(TypedDict):
    """One content part: `{"type": "text", "text": ...}` or the video part `{"type": "video", "text": ""}`."""

    type: str
    text: str


class ChatMessage(TypedDict):
    role: str
    content: list[Part]


def text_part(text: str) -> Part:
    return {"type": "text", "text": text}


VIDEO_PART: Part = {"type": "video", "text": ""}


def message(role: str, text: str, *, video: bool = False) -> ChatMessage:
    """A chat turn; a user turn that shows the video carries the video part first (Qwen's order)."""
    parts: list[Part] = [dict(VIDEO_PART)] if video else []  # type: ignore[list-item]
    parts.append(text_part(text))
    return {"role": role, "content": parts}


class GrpoSolution(TypedDict):
    """What the reward functions and the evaluator read next to the prompt."""

    task: str
    answer: str
    options: list[str]
    span: list[float] | None
    duration: float | None
    label: str
    category: str
    when_source: str
    span_known: bool
    question: str
    reflect_task: str


def _features():  # -> datasets.Features pieces; imported lazily (datasets is slow to import)
    from datasets import Image, List, Value

    part = {"type": Value("string"), "text": Value("string")}
    messages = List({"role": Value("string"), "content": List(part)})
    return Image, List, Value, messages


def video_features(mode: FramesMode) -> dict:
    """Columns that carry the video: embedded frames, or a relative path plus sampling parameters."""
    Image, List, Value, _ = _features()
    if mode == "embed":
        return {"frames": List(Image()), "frame_times": List(Value("float32")), "sample_fps": Value("float32"), "max_pixels": Value("int32")}
    return {"video": Value("string"), "fps": Value("float32"), "nframes": Value("int32"), "max_pixels": Value("int32"), "min_pixels": Value("int32")}


def features(config: str, mode: FramesMode):
    """The `datasets.Features` of one config in one frames mode (column order is the file's order)."""
    from datasets import Features

    Image, List, Value, messages = _features()
    base = {"id": Value("string"), "video_id": Value("string"), "source": Value("string")}
    if config == "captions":
        extra = {"image": Image()} if mode == "embed" else {"video": Value("string")}
        return Features({**base, "frame_index": Value("int32"), "timestamp": Value("float32"), "text": Value("string"), **extra})
    if config == "p2c_sft":
        cols = {"messages": messages, "label": Value("string"), "category": Value("string"), "duration": Value("float32")}
    elif config in ("reflect_sft", "reflect_sft_conditioned"):
        cols = {"messages": messages, "task": Value("string"), "label": Value("string")}
    elif config in GRPO_CONFIGS:
        cols = {
            "prompt": messages, "task": Value("string"), "answer": Value("string"), "options": List(Value("string")),
            "span": List(Value("float32")), "duration": Value("float32"), "label": Value("string"), "category": Value("string"),
            "when_source": Value("string"), "span_known": Value("bool"), "question": Value("string"), "reflect_task": Value("string"),
        }
    else:
        raise KeyError(f"unknown config {config!r} (known: {', '.join(CONFIGS)})")
    return Features({**base, **cols, **video_features(mode)})
