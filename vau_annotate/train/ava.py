"""AVA-GRPO's anomaly self-verification (Vad-R1, arXiv 2505.19877, the AVA-GRPO section).

Vad-R1 rewards a completion a second time by asking the policy again about an edited video:

- the completion says **abnormal** and gives a `<when>` span: the frames inside that span are
  removed and the question is asked again; if the policy now answers **normal**, the span really
  held the anomaly and the completion earns an extra **+0.5**;
- the completion says **normal**: the start or the end of the video (chosen at random) is cut off
  and the question is asked again; if the policy now answers **abnormal**, the first answer was not
  a stable judgement and the completion is penalised **-0.2**.

This module does the frame surgery (pure functions over the frame list and its timestamps, so a test
can check exactly which frames go) and drives the re-ask through a callable. The reward value for a
pair of answers is the rewards module's business (`rewards.anomaly_verification`, applied by the
registered reward `ava` to a row copy carrying the re-asked reply as `trimmed_completion`).

Choices where the paper is silent (also in README, "train grpo"):
- a span predicted in normalised [0, 1] form is converted with the row's duration by the parser;
  several predicted segments are all removed;
- the re-ask is greedy (temperature 0): it asks what the current policy concludes, not a sample;
- a frame is inside the span when `start <= t <= end` (its timestamp, seconds);
- if removing the span would leave no frame, or the span removes none, there is nothing to verify
  and the reward is 0;
- the trim for a normal answer removes `trim_fraction` (default 0.25) of the frames, at least one,
  from the start or the end with equal probability.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Sequence


@dataclass(frozen=True)
class EditedVideo:
    """The frames kept after an edit, their timestamps, and which original indices were removed."""

    frames: list[Any]
    times: list[float]
    removed: list[int]
    edit: str  # "drop_span" | "trim_start" | "trim_end"


def drop_spans(frames: Sequence[Any], times: Sequence[float], spans: Sequence[tuple[float, float]]) -> EditedVideo:
    """Remove every frame whose timestamp lies in one of the closed intervals `spans` (seconds)."""
    if len(frames) != len(times):
        raise ValueError(f"{len(frames)} frames but {len(times)} timestamps")
    bounds = [tuple(sorted((float(a), float(b)))) for a, b in spans]
    removed = [i for i, t in enumerate(times) if any(a <= float(t) <= b for a, b in bounds)]
    gone = set(removed)
    kept = [i for i in range(len(frames)) if i not in gone]
    return EditedVideo([frames[i] for i in kept], [float(times[i]) for i in kept], removed, "drop_span")


def trim_end(frames: Sequence[Any], times: Sequence[float], rng: random.Random, fraction: float = 0.25) -> EditedVideo:
    """Cut `fraction` of the frames (at least one, never all) off the start or the end, side at random."""
    if len(frames) != len(times):
        raise ValueError(f"{len(frames)} frames but {len(times)} timestamps")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"trim fraction must be in (0, 1), got {fraction}")
    n = len(frames)
    cut = min(max(1, round(n * fraction)), n - 1) if n > 1 else 0
    if rng.random() < 0.5:
        removed, kept, edit = list(range(cut)), list(range(cut, n)), "trim_start"
    else:
        removed, kept, edit = list(range(n - cut, n)), list(range(n - cut)), "trim_end"
    return EditedVideo([frames[i] for i in kept], [float(times[i]) for i in kept], removed, edit)


@dataclass(frozen=True)
class Verification:
    """One completion's verification: which edit was made, how many frames went, the re-asked reply."""

    edit: str | None  # None: nothing to verify (no verdict, no span, or an edit that removes nothing / everything)
    removed: int
    reasked: str | None


def judge(completion: str, row: dict) -> tuple[bool | None, list[tuple[float, float]]]:
    """The completion's verdict (abnormal / normal / None) and its predicted spans in seconds.

    Spans are read from `<when>` (Vad-R1; normalised [0, 1] spans are scaled by the row's duration)
    or `<answer>` by the shared parser, so AVA trims what the reward parser would score."""
    from vau_annotate.annotate.answers import answer_spans, predicts_abnormal

    duration = row.get("duration")
    return predicts_abnormal(completion), answer_spans(completion, float(duration) if duration else None)


# (row, frames, times) -> the policy's reply on those frames
Ask = Callable[[dict, list[Any], list[float]], str]


def plan(completion: str, row: dict, frames: Sequence[Any], times: Sequence[float], *, rng: random.Random, trim_fraction: float = 0.25) -> EditedVideo | None:
    """The edit a completion's own verdict calls for, or None when there is nothing to verify
    (no verdict, abnormal without a span, or an edit that removes no frame or all of them)."""
    abnormal, spans = judge(completion, row)
    if abnormal is None or (abnormal and not spans):
        return None
    edited = drop_spans(frames, times, spans) if abnormal else trim_end(frames, times, rng, trim_fraction)
    if not edited.removed or not edited.frames:
        return None
    return edited


def verify(completion: str, row: dict, frames: Sequence[Any], times: Sequence[float], *, ask: Ask, rng: random.Random, trim_fraction: float = 0.25) -> Verification:
    """Edit the video according to the completion's own verdict and ask the policy again.

    The reward for the (first, re-asked) pair is `rewards.anomaly_verification`, applied by
    `rewards.ava` to the row copy that carries `trimmed_completion`. (The GRPO loop plans every
    completion's edit first and re-asks them all in one sampler call; this is the one-at-a-time form.)"""
    edited = plan(completion, row, frames, times, rng=rng, trim_fraction=trim_fraction)
    if edited is None:
        return Verification(None, 0, None)
    return Verification(edited.edit, len(edited.removed), ask(row, edited.frames, edited.times))
