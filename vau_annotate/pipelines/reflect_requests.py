"""What the base model and the teacher are shown for one item: the frames as one video, and the prompts.

The base sees the video and the single-round question (no hint of reflection). The teacher sees the
same video, the question, the base's reply verbatim, the verdict and the ground truth, and is asked
for SRVAU-R1's reflection (its four aspects) and a revised round that shows how the reflection
changed the reasoning (`prompts/_reflect_teacher.txt`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from vau_annotate.annotate.backends import Message, Request, SamplingParams, TextPart, VideoPart
from vau_annotate.annotate.checks import GateReport
from vau_annotate.annotate.media import video_part
from vau_annotate.annotate.rundir import RunDir
from vau_annotate.pipelines.reflect_items import ReflectItem
from vau_annotate.prompts import Prompt, load_prompt
from vau_annotate.schemas import FrameSet, VideoRecord
from vau_annotate.schemas.reflection import Attempt

REPAIR_PROMPT = "reflect_repair"


def spread(count: int, n: int) -> list[int]:
    """`n` positions evenly over `count`, first and last included."""
    if n >= count:
        return list(range(count))
    if n == 1:
        return [count // 2]
    return [round(i * (count - 1) / (n - 1)) for i in range(n)]


def video_input(run_root: Path, frames: FrameSet, max_frames: int) -> VideoPart:
    """The frames as one video, thinned evenly to `max_frames`; the fps follows what is kept."""
    if len(frames.paths) <= max_frames:
        return video_part(run_root, frames)
    part = video_part(run_root, frames, spread(len(frames.paths), max_frames))
    span = part.timestamps[-1] - part.timestamps[0]
    return replace(part, fps=round((len(part.timestamps) - 1) / span, 6) if span > 0 else part.fps)


def video_duration(video: VideoRecord, part: VideoPart) -> float:
    """The video's length: probed at ingest, else the time the frames cover."""
    if video.duration:
        return video.duration
    return part.timestamps[-1] + (1.0 / part.fps if part.fps else 0.0)


def format_options(options: list[str]) -> str:
    return "\n".join(f"{letter}. {text}" for letter, text in zip("ABCD", options))


def ground_truth_text(item: ReflectItem) -> str:
    """The truth as the teacher reads it (a QA letter comes with its option's text)."""
    if item.mcq is not None:
        return f"{item.mcq.answer}. {item.mcq.answer_text}"
    return item.truth.text


def verdict(attempt: Attempt) -> str:
    if attempt.correct:
        return "correct"
    return "wrong" if attempt.prediction is not None else "wrong: no answer could be read from the reply"


def prompt_values(item: ReflectItem, part: VideoPart, duration: float) -> dict[str, str]:
    """Placeholders shared by the base and teacher prompts of an item."""
    return {
        "fps": f"{part.fps:.2g}",
        "duration": f"{duration:.1f}",
        "question": item.question,
        "options": format_options(item.options),
    }


def initial_prompt(item: ReflectItem) -> Prompt:
    return load_prompt(f"reflect_initial_{item.task}")


def teacher_prompt(item: ReflectItem) -> Prompt:
    return load_prompt(f"reflect_teacher_{item.task}")


def render_teacher(item: ReflectItem, values: dict[str, str], initial: Attempt) -> str:
    return teacher_prompt(item).render(
        **values, initial=initial.text.strip() or "(an empty reply)", ground_truth=ground_truth_text(item),
        verdict=verdict(initial), letter=item.truth.letter or "",
    )


def video_request(prompt: Prompt, text: str, part: VideoPart, max_tokens: int, temperature: float) -> Request:
    """One user turn: the video, then the rendered prompt."""
    return Request(
        messages=(Message("user", (part, TextPart(text))),),
        params=SamplingParams(max_tokens=max_tokens, temperature=temperature),
        prompt_name=prompt.name, prompt_hash=prompt.hash,
    )


@dataclass(frozen=True)
class ReadyItem:
    """An item ready to ask: its video, the prompt values, and the base model's request."""

    item: ReflectItem
    part: VideoPart
    values: dict[str, str]
    base_prompt: Prompt
    prompt_text: str
    base_request: Request

    duration: float

    def teacher_request(self, initial: Attempt, max_tokens: int, temperature: float) -> Request:
        text = render_teacher(self.item, self.values, initial)
        return video_request(teacher_prompt(self.item), text, self.part, max_tokens, temperature)


def prepare(rd: RunDir, item: ReflectItem, policy: str, max_pixels: int, max_frames: int, base_max_tokens: int, temperature: float) -> ReadyItem | None:
    """The item's frames and base request; None when its video has no frames at the stage's sampling."""
    frames = rd.load_frameset(item.video.id, policy, max_pixels)
    if frames is None or not frames.paths:
        return None
    part = video_input(rd.root, frames, max_frames)
    duration = video_duration(item.video, part)
    values = prompt_values(item, part, duration)
    prompt = initial_prompt(item)
    text = prompt.render(**values)
    return ReadyItem(item, part, values, prompt, text, video_request(prompt, text, part, base_max_tokens, temperature), duration)


def repair_request(first: Request, reply: str, problems: list[str], truth: str) -> Request:
    """The first conversation, the failed reply, and a turn listing what to fix."""
    prompt = load_prompt(REPAIR_PROMPT)
    text = prompt.render(failures="\n".join(f"- {p}" for p in problems), ground_truth=truth)
    messages = first.messages + (Message.text("assistant", reply), Message.text("user", text))
    return Request(messages=messages, params=first.params, prompt_name=prompt.name, prompt_hash=prompt.hash)


def report_problems(report: GateReport) -> list[str]:
    """Failures as lines the teacher can act on: 'gate: part: message'."""
    return [f"{r.gate}: {f}" for r in report.failures for f in r.findings]
