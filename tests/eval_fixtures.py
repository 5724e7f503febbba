"""Test data for the evaluator: a small exported dataset laid out as CONTRACT.md says, built here.

`write_exported(root, {config: rows})` writes `root/README.md` (card with `configs:`) and
`root/<config>/test-00000-of-00001.parquet`, so `datasets.load_dataset(root, config, split="test")`
reads it the way it reads the export stage's output. Every video gets distinct frames
(`video_frames(shade)`), so a loopback peer can tell which video a request shows without being
told anything about its ground truth.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

from PIL import Image

FRAME_TIMES = [0.0, 2.5, 5.0, 7.5]
SAMPLE_FPS = 0.4


def video_frames(shade: int, count: int = len(FRAME_TIMES)) -> list[bytes]:
    """`count` 16×16 JPEGs unique to `shade` (the first frame identifies the video)."""
    out = []
    for i in range(count):
        buffer = io.BytesIO()
        Image.new("RGB", (16, 16), (shade, (40 * i) % 256, 200 - shade // 2)).save(buffer, "JPEG", quality=95)
        out.append(buffer.getvalue())
    return out


def frame_key(jpeg: bytes) -> str:
    return base64.b64encode(jpeg).decode()


def text_message(role: str, text: str) -> dict[str, Any]:
    return {"role": role, "content": [{"type": "text", "text": text}]}


def user_video_message(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "video", "text": ""}, {"type": "text", "text": text}]}


def grpo_row(row_id: str, video_id: str, shade: int, task: str, *, answer: str = "", options: list[str] | None = None,
             span: list[float] | None = None, duration: float = 10.0, label: str = "abnormal", category: str = "Fighting",
             question: str = "", reflect_task: str = "") -> dict[str, Any]:
    """A GRPO-config row with the solution columns of CONTRACT.md and embedded frames."""
    return {
        "id": row_id, "video_id": video_id, "source": "vau-bench", "frames": [{"bytes": b, "path": None} for b in video_frames(shade)],
        "frame_times": FRAME_TIMES, "sample_fps": SAMPLE_FPS, "max_pixels": 200704,
        "prompt": [text_message("system", "You are a helpful assistant."), user_video_message(question or "Watch the video.")],
        "task": task, "answer": answer, "options": options or [], "span": span, "duration": duration, "label": label,
        "category": category, "when_source": "annotation" if span else "none", "span_known": span is not None,
        "question": question, "reflect_task": reflect_task,
    }


def path_row(row_id: str, video_id: str, video: str, task: str, **solution: Any) -> dict[str, Any]:
    """A `--frames path` GRPO row: the video's path relative to the videos root and how to sample it."""
    row = grpo_row(row_id, video_id, 0, task, **solution)
    for key in ("frames", "frame_times", "sample_fps"):
        del row[key]
    return {**row, "video": video, "fps": None, "nframes": 4, "min_pixels": 3136}


def sft_row(row_id: str, video_id: str, shade: int, assistant: str, label: str = "abnormal", category: str = "Fighting") -> dict[str, Any]:
    """A p2c_sft row: system, user (video + question), assistant (the reference reasoning)."""
    return {
        "id": row_id, "video_id": video_id, "source": "vad-reasoning", "frames": [{"bytes": b, "path": None} for b in video_frames(shade)],
        "frame_times": FRAME_TIMES, "sample_fps": SAMPLE_FPS, "max_pixels": 200704,
        "messages": [text_message("system", "You are a helpful assistant."), user_video_message("Is there any anomaly?"),
                     text_message("assistant", assistant)],
        "label": label, "category": category, "duration": 10.0,
    }


def write_exported(root: Path, configs: dict[str, list[dict[str, Any]]]) -> Path:
    import datasets

    image_list = datasets.List(datasets.Image())
    card = ["---", "configs:"]
    for name, rows in configs.items():
        features = _features(rows[0], image_list)
        ds = datasets.Dataset.from_list(rows, features=features)
        (root / name).mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(root / name / "test-00000-of-00001.parquet"))
        card += [f"- config_name: {name}", "  data_files:", "  - split: test", f"    path: {name}/test-*.parquet"]
    card += ["---", "", "Test data made by tests/eval_fixtures.py.", ""]
    (root / "README.md").write_text("\n".join(card))
    return root


def _features(row: dict[str, Any], image_list: Any) -> Any:
    import datasets

    part = {"type": datasets.Value("string"), "text": datasets.Value("string")}
    message = {"role": datasets.Value("string"), "content": datasets.List(part)}
    known = {
        "frames": image_list, "frame_times": datasets.List(datasets.Value("float32")), "sample_fps": datasets.Value("float32"),
        "max_pixels": datasets.Value("int32"), "prompt": datasets.List(message), "messages": datasets.List(message),
        "options": datasets.List(datasets.Value("string")), "span": datasets.List(datasets.Value("float32")),
        "duration": datasets.Value("float32"), "span_known": datasets.Value("bool"), "fps": datasets.Value("float32"),
        "nframes": datasets.Value("int32"), "min_pixels": datasets.Value("int32"),
    }
    return datasets.Features({k: known.get(k, datasets.Value("string")) for k in row})
