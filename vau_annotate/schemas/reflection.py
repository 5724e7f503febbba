"""ReflectionRecord: one SRVAU-R1 reflection triple — initial attempt, reflection, revised attempt.

The base model answers a question about a video (`initial`); a teacher who knows the ground truth
critiques that answer (`reflection`) and writes a revised reasoning and answer (`revised`). The
record keeps both attempts verbatim plus how each was judged, so the two SFT renderings (the full
two-round completion and SRVAU-R1's conditioned form, Eq. 1) are derived, never stored twice.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Task = Literal["qa", "tag"]
Transition = Literal["C→C", "W→C", "W→W", "C→W"]


def transition_of(initial_correct: bool, revised_correct: bool) -> Transition:
    """SRVAU-R1's effectiveness classes: C = correct, W = wrong, before → after reflection."""
    return f"{'C' if initial_correct else 'W'}→{'C' if revised_correct else 'W'}"  # type: ignore[return-value]


def tagged(think: str, answer: str) -> str:
    """One reasoning round in the training format."""
    return f"<think>{think}</think><answer>{answer}</answer>"


class Attempt(BaseModel):
    """One `<think>/<answer>` round and its judgement against the ground truth."""

    text: str = Field(description="The model's reply verbatim (kept even when it does not parse).")
    think: str | None = Field(default=None, description="Content of <think>, None when absent.")
    answer: str | None = Field(default=None, description="Content of <answer>, None when absent.")
    prediction: str | None = Field(default=None, description="Normalised answer: letter A-D, '[s, e]' or 'normal'; None when nothing parses.")
    correct: bool = Field(description="Whether `prediction` matches the ground truth (unparsed = wrong).")
    iou: float | None = Field(default=None, description="Temporal IoU with the ground-truth span (grounding task only).")

    def round(self) -> str:
        """This attempt as `<think>…</think><answer>…</answer>`.

        A reply without tags becomes the think, and the answer read from it by the fallbacks (if any)
        the answer, so the round says what the model said and what it was judged to have answered.
        """
        think = self.think if self.think is not None else self.text.strip()
        answer = self.answer if self.answer is not None else (self.prediction or "")
        return tagged(think, answer)


class Usage(BaseModel):
    """Tokens and cost of the calls one role made for this record (repair included)."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0


class ReflectionProvenance(BaseModel):
    """Which models and prompts produced the record, and what it cost."""

    base_model: str
    teacher_model: str
    prompt_hashes: dict[str, str] = Field(default_factory=dict, description="Prompt name → content hash of every template used.")
    sampling: str = Field(description="Frame sampling policy the models saw, e.g. 'fps:1'.")
    max_pixels: int
    num_frames: int
    usage: dict[str, Usage] = Field(default_factory=dict, description="'base' / 'teacher' → tokens and cost.")
    repaired: bool = Field(default=False, description="The teacher's first reply failed a gate and was repaired once.")
    created: str = ""

    @property
    def cost(self) -> float:
        return sum(u.cost for u in self.usage.values())


class ReflectionRecord(BaseModel):
    """One accepted reflection triple about one question on one video."""

    id: str = Field(description="Item id: '<video_id>#qa<i>' or '<video_id>#tag'.")
    video_id: str
    task: Task
    label: str = Field(description="Video label: normal | abnormal.")
    category: str | None = None
    question: str
    options: list[str] = Field(default_factory=list, description="The four options (QA); empty for grounding.")
    ground_truth: str = Field(description="Letter A-D, '[s, e]' in seconds, or 'normal'.")
    prompt: str = Field(description="The user text the base model saw with the video (the SFT input).")
    initial: Attempt
    reflection: str
    revised: Attempt
    transition: Transition
    provenance: ReflectionProvenance

    def two_round(self) -> dict[str, str]:
        """Full SFT form: the model reasons, reflects and reasons again in one completion."""
        completion = self.initial.round() + f"<reflection>{self.reflection}</reflection>" + self.revised.round()
        return {"prompt": self.prompt, "completion": completion}

    def conditioned(self) -> dict[str, str]:
        """SRVAU-R1 Eq. 1: given question, initial round and reflection, produce the revised round."""
        context = f"{self.prompt}\n\n{self.initial.round()}<reflection>{self.reflection}</reflection>"
        return {"prompt": context, "completion": self.revised.round()}
