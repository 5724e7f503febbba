"""The demo's dataset and models: clips and their VAU-Bench CSV (from `data/demo_clips.json`), the
recorded teacher (`data/demo_teacher.json`), and the tiny offline Qwen2.5-VL.

The clips are synthetic colour gradients encoded as real H.264 files; what they are "about" lives in
the JSON as data (class, span, questions, reasoning), as does every recorded teacher reply.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from vau_annotate.annotate.rundir import atomic_write_text
from vau_annotate.annotate.synth import make_clip

TEACHER_SCRIPT = "demo_teacher.json"  # package data: vau_annotate/data/
REAL_TEACHER_SCRIPT = "demo_teacher_real.json"  # the recorded replies about the real clip
REAL_CLIP = "vtest.avi"  # the real sample clip (OpenCV's pedestrian scene) in $VAU_REAL_DATA
CLIPS_FILE = "demo_clips.json"
SOURCE_DIR = "source"
CSV_NAME = "vau_bench_demo.csv"
FPS = 10
WIDTH, HEIGHT = 320, 240
TINY_DIR = "tiny-model"
# settings of the demo's stages
SAMPLE_POLICY = "uniform:16"
SAMPLE_PIXELS = 224 * 224
CAPTION_POLICY = "uniform:8"  # the recorded captioner answers one batch of 8 frames per video
CAPTION_BATCH = 8
REFLECT_PIXELS = 28 * 28 * 16  # the tiny model's own pixel budget: larger frames only cost time
BASE_MAX_TOKENS = 24  # the tiny model's text is noise; a few tokens show that as well as many
REAL_CAPTIONER = "dashscope:qwen-vl-max"
REAL_REASONER = "openai:gpt-4o"
CSV_COLUMNS = ("Video Name", "Question", "Option 1", "Option 2", "Option 3", "Option 4", "Correct Option",
               "Key Object", "Description", "Reasoning", "Anomaly Class", "Start Time", "End Time")


@dataclass(frozen=True)
class Question:
    """One VAU-Bench multiple-choice row; `correct` is the Correct Option cell exactly as written."""

    text: str
    options: tuple[str, str, str, str]
    correct: str


@dataclass(frozen=True)
class DemoClip:
    """One video of the demo dataset: the file on disk and the CSV rows that describe it."""

    file: str
    csv_name: str
    seconds: int
    anomaly_class: str
    start: str
    end: str
    key_object: str
    description: str
    reasoning: str
    questions: tuple[Question, ...]
    truncated: bool = False
    real: Path | None = None  # a real video file to copy instead of a synthetic clip (VAU_REAL_DATA)




@dataclass(frozen=True)
class SourceFiles:
    """Where the demo dataset lies: the annotation CSV and the folder of videos."""

    csv: Path
    videos: Path


def write_source(root: Path, clips: tuple[DemoClip, ...]) -> SourceFiles:
    """The demo dataset under `root`: clips that already exist are kept (they are deterministic)."""
    videos = root / "videos"
    for clip in clips:
        target = videos / clip.file
        if target.exists():
            continue
        if clip.real is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(clip.real, target.with_suffix(".partial"))
            target.with_suffix(".partial").replace(target)
        else:
            write_clip(clip, target, root / ".partial")
    csv_path = root / CSV_NAME
    atomic_write_text(csv_path, annotation_csv(clips))
    return SourceFiles(csv_path, videos)


def write_clip(clip: DemoClip, target: Path, scratch: Path) -> None:
    """Encode the clip in a scratch folder and move it into place, so a killed run leaves no half file.

    A truncated clip keeps the first third of its bytes: the MP4 index (written at the end) is
    lost, as when a download or copy is cut off.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    made = make_clip(scratch / clip.file, seconds=clip.seconds, fps=FPS, width=WIDTH, height=HEIGHT)
    if clip.truncated:
        data = made.read_bytes()
        made.write_bytes(data[: len(data) // 3])
    target.parent.mkdir(parents=True, exist_ok=True)
    made.replace(target)
    shutil.rmtree(scratch, ignore_errors=True)


def annotation_csv(clips: tuple[DemoClip, ...]) -> str:
    """The VAU-Bench CSV: one row per question; a video without questions gets one row of -1 cells."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for clip in clips:
        tail = [clip.key_object, clip.description, clip.reasoning, clip.anomaly_class, clip.start, clip.end]
        for q in clip.questions:
            writer.writerow([clip.csv_name, q.text, *q.options, q.correct, *tail])
        if not clip.questions:
            writer.writerow([clip.csv_name, "-1", "-1", "-1", "-1", "-1", "-1", *tail])
    return buffer.getvalue()


# -- the models ------------------------------------------------------------------------------------


def teacher_script(name: str = TEACHER_SCRIPT) -> Path:
    """A recorded teacher script shipped with the package."""
    return Path(str(resources.files("vau_annotate").joinpath(f"data/{name}")))


def install_teacher(run: Path, clips: tuple[DemoClip, ...]) -> Path:
    """A copy of the recorded script in the run directory, so the run shows what answered it.

    With the real clip, its replies come first: the mock backend's first matching rule answers, and
    one synthetic rule ("The correct answer is normal") would match the real clip's request too.
    """
    rules = json.loads(teacher_script().read_text(encoding="utf-8"))
    if any(clip.real is not None for clip in clips):
        rules = json.loads(teacher_script(REAL_TEACHER_SCRIPT).read_text(encoding="utf-8")) + rules
    target = run / "recorded_teacher.json"
    atomic_write_text(target, json.dumps(rules, indent=1, ensure_ascii=False) + "\n")
    return target.resolve()


def ensure_tiny_model(directory: Path) -> Path:
    """The tiny random-weight Qwen2.5-VL, built once per run directory (complete or absent)."""
    from vau_annotate.train.tiny import build_tiny_model

    if (directory / "config.json").is_file():
        return directory.resolve()
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    build_tiny_model(partial)
    partial.replace(directory)
    return directory.resolve()


def _clip(entry: dict, real: Path | None = None) -> DemoClip:
    entry = dict(entry)
    questions = tuple(Question(q["text"], tuple(q["options"]), q["correct"]) for q in entry.pop("questions"))
    return DemoClip(**entry, questions=questions, real=real)


def load_clips(real_data: Path | None = None) -> tuple[DemoClip, ...]:
    """The demo dataset as shipped in `data/demo_clips.json`, plus the real clip when `real_data`
    (the folder of `$VAU_REAL_DATA`) holds it."""
    data = json.loads(resources.files("vau_annotate").joinpath(f"data/{CLIPS_FILE}").read_text(encoding="utf-8"))
    clips = [_clip(entry) for entry in data["clips"]]
    real = data["real_clip"]
    if real_data is not None and (real_data / real["file"]).is_file():
        clips.append(_clip(real, real_data / real["file"]))
    return tuple(clips)


CLIPS: tuple[DemoClip, ...] = load_clips()  # the synthetic dataset alone
