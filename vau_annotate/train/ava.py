"""AVA-GRPO's anomaly self-verification (Vad-R1, arXiv 2505.19877, the AVA-GRPO section).

Vad-R1 rewards a completion a second time by asking the policy again about an edited video:

- the completion says **abnormal** and gives a `<when>` span: the frames inside that span are
  removed and the question is asked again; if the policy now answers **normal**, the span really
  held the anomaly and the completion earns an extra **+0.5**;
- the completion says **normal**: the start or the end of the video (chosen at random) is cut off
  and the question is asked again; if the policy now answers **abnormal**, the first answer was not
  a stable judgement and the completion is penalised **-0.2**.

This module does the frame surgery (pure functions over the frame list and its timestamps, so a test
can check exactly which frames go) and drives the re-ask through a callable, so it works the same
with `model.generate` and with the colocated vLLM engine. The reward value for a pair of answers is
the rewards module's business (`vau_annotate.train.rewards`); we pass it the first and the
re-asked completion.

Choices where the paper is silent (also in README, "train grpo"):
- a span predicted in normalised [0, 1] form is converted with the row's duration by the parser;
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


def drop_span(frames: Sequence[Any], times: Sequence[float], span: tuple[float, float]) -> EditedVideo:
    """Remove every frame whose timestamp lies in the closed interval `span` (seconds)."""
    if len(frames) != len(times):
        raise ValueError(f"{len(frames)} frames but {len(times)} timestamps")
    start, end = sorted((float(span[0]), float(span[1])))
    removed = [i for i, t in enumerate(times) if start <= float(t) <= end]
    kept = [i for i in range(len(frames)) if i not in set(removed)]
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
    """One completion's verification: what was edited, what the policy said then, the reward."""

    reward: float
    edit: str | None  # None: nothing to verify (unparseable answer, empty edit)
    removed: int
    reasked: str | None


# (completion text, row) -> (is_abnormal or None when no judgement, predicted span in seconds or None)
Judge = Callable[[str, dict], tuple[bool | None, tuple[float, float] | None]]
# (first completion, re-asked completion, row) -> reward (Vad-R1: +0.5 / -0.2 / 0)
PairReward = Callable[[str, str, dict], float]
# (row, frames, times, completions to verify) -> re-asked completion texts, one per entry
Ask = Callable[[dict, list[Any], list[float]], str]


def verify(
    completion: str,
    row: dict,
    frames: Sequence[Any],
    times: Sequence[float],
    *,
    judge: Judge,
    pair_reward: PairReward,
    ask: Ask,
    rng: random.Random,
    trim_fraction: float = 0.25,
) -> Verification:
    """Edit the video according to the completion's own answer, re-ask, and score the pair."""
    abnormal, span = judge(completion, row)
    if abnormal is None:
        return Verification(0.0, None, 0, None)
    if abnormal:
        if span is None:
            return Verification(0.0, None, 0, None)
        edited = drop_span(frames, times, span)
    else:
        edited = trim_end(frames, times, rng, trim_fraction)
    if not edited.removed or not edited.frames:
        return Verification(0.0, None, len(edited.removed), None)
    reasked = ask(row, edited.frames, edited.times)
    return Verification(float(pair_reward(completion, reasked, row)), edited.edit, len(edited.removed), reasked)
