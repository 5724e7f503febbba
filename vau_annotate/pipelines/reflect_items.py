"""SRVAU-R1's items and how a reply is judged against their ground truth.

An item is one question about one video: a multiple-choice question (QA, one item per MCQ) or the
temporal anomaly grounding question (TAG, one item per video with a usable truth). A reply is
judged by what can be read from it; a reply that does not parse is wrong (SRVAU-R1 section 3).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from vau_annotate.annotate.tags import extract_letter, extract_tag, parse_span, temporal_iou
from vau_annotate.prompts import load_fragment
from vau_annotate.schemas import MCQ, VideoRecord
from vau_annotate.schemas.reflection import Attempt, Task

TASKS: tuple[Task, ...] = ("qa", "tag")
NORMAL = "normal"
TAG_QUESTION_FRAGMENT = "reflect_tag_question"

_NORMAL_ANSWER = re.compile(r"^\W*(?:normal|none|no anomal\w*|nothing abnormal(?: happens)?)\W*$", re.I)


@dataclass(frozen=True)
class Truth:
    """The ground truth of one item: a letter (QA), a span in seconds, or neither (a normal video)."""

    letter: str | None = None
    span: tuple[float, float] | None = None

    @property
    def text(self) -> str:
        if self.letter is not None:
            return self.letter
        if self.span is not None:
            return format_span(self.span)
        return NORMAL


@dataclass(frozen=True)
class ReflectItem:
    """One question about one video: what the base is asked and what the right answer is."""

    id: str
    video: VideoRecord
    task: Task
    truth: Truth
    mcq: MCQ | None = None

    @property
    def question(self) -> str:
        return self.mcq.question if self.mcq is not None else load_fragment(TAG_QUESTION_FRAGMENT)

    @property
    def options(self) -> list[str]:
        return list(self.mcq.options) if self.mcq is not None else []


def format_span(span: tuple[float, float]) -> str:
    return f"[{round(span[0], 2)}, {round(span[1], 2)}]"


def tag_truth(video: VideoRecord) -> Truth | str:
    """The grounding truth of a video, or why it cannot have one (a skip reason).

    Several abnormal spans become their hull: the answer format holds one span, and the hull is
    the one span that can match them all.
    """
    if video.label == "normal":
        return Truth()
    if video.label != "abnormal":
        return "tag: unlabeled video"
    if not video.span_known or not video.spans:
        return "tag: abnormal video with unknown span"
    return Truth(span=(video.spans[0].start, max(s.end for s in video.spans)))


def build_items(videos: Iterable[VideoRecord], tasks: Iterable[Task]) -> tuple[list[ReflectItem], Counter[str]]:
    """Every item the tasks ask for, in manifest order, and how many were skipped for which reason."""
    wanted = set(tasks)
    items: list[ReflectItem] = []
    skipped: Counter[str] = Counter()
    for video in videos:
        if "qa" in wanted:
            if not video.mcqs:
                skipped["qa: video has no multiple-choice question"] += 1
            for i, mcq in enumerate(video.mcqs):
                items.append(ReflectItem(f"{video.id}#qa{i}", video, "qa", Truth(letter=mcq.answer), mcq))
        if "tag" in wanted:
            truth = tag_truth(video)
            if isinstance(truth, str):
                skipped[truth] += 1
            else:
                items.append(ReflectItem(f"{video.id}#tag", video, "tag", truth))
    return items, skipped


# -- judging a reply ---------------------------------------------------------------------------------

def predict_tag(text: str) -> str | tuple[float, float] | None:
    """The grounding answer of a reply: 'normal', a span, or None. The answer tag wins over free text."""
    answer = extract_tag(text, "answer")
    if answer is not None:
        if _NORMAL_ANSWER.match(answer):
            return NORMAL
        span = parse_span(answer)
        if span is not None:
            return span
    return parse_span(text)


def judge_tag(text: str, truth: Truth, min_iou: float) -> tuple[str | None, bool, float | None]:
    """(prediction, correct, IoU): 'normal' is right only for a normal video, a span only by IoU."""
    predicted = predict_tag(text)
    if predicted is None:
        return None, False, None
    if predicted == NORMAL:
        return NORMAL, truth.span is None, None
    assert isinstance(predicted, tuple)
    if truth.span is None:
        return format_span(predicted), False, None
    iou = temporal_iou(predicted, truth.span)
    return format_span(predicted), iou >= min_iou, round(iou, 4)


def judge_reply(item: ReflectItem, text: str, min_iou: float) -> Attempt:
    """A reply parsed and judged against the item's truth; what does not parse is wrong."""
    think, answer = extract_tag(text, "think"), extract_tag(text, "answer")
    if item.task == "qa":
        letter = extract_letter(text, item.options)
        return Attempt(text=text, think=think, answer=answer, prediction=letter, correct=letter == item.truth.letter)
    prediction, correct, iou = judge_tag(text, item.truth, min_iou)
    return Attempt(text=text, think=think, answer=answer, prediction=prediction, correct=correct, iou=iou)
