"""CotRecord: one video's Perception-to-Cognition chain of thought in Vad-R1's format.

The record keeps what produced the chain (frame captions with their timestamps, the steps, the
parsed answer fields) next to the two strings a trainer consumes, in Vad-Reasoning's format:

    think  = <think><step1>…</step1><step2>…</step2><step3>…</step3><step4>…</step4></think>
    answer = <answer><which>…</which><what>…</what><when>[s, e]</when><where>…</where><why>…</why><how>…</how></answer>

Normal videos have two steps (perception, cognition) and only `<which>`, `<what>`, `<why>`.
`<when>` is normalised to the video length with 3 decimals; `when_source` says whether it is the
annotated span or, when none is known, the reasoner's estimate. Provenance says which models and
prompt versions made the record, what it cost, and which gates needed a repair.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

CotLabel = Literal["normal", "abnormal"]

ABNORMAL_FIELDS: tuple[str, ...] = ("which", "what", "when", "where", "why", "how")
NORMAL_FIELDS: tuple[str, ...] = ("which", "what", "why")
STEP_COUNTS: dict[str, int] = {"abnormal": 4, "normal": 2}


def answer_fields(label: str) -> tuple[str, ...]:
    """The tagged fields of a label's answer, in Vad-R1 order."""
    return ABNORMAL_FIELDS if label == "abnormal" else NORMAL_FIELDS


def step_names(label: str) -> tuple[str, ...]:
    """`step1` … `stepN` for a label's chain."""
    return tuple(f"step{i}" for i in range(1, STEP_COUNTS[label] + 1))


def format_when(span: tuple[float, float]) -> str:
    """A normalised span as Vad-R1 writes it: `[0.125, 0.500]`."""
    return f"[{span[0]:.3f}, {span[1]:.3f}]"


class Caption(BaseModel):
    """A dense description of one sampled frame."""

    frame_index: int = Field(description="Index of the frame in the video (presentation order).")
    timestamp: float = Field(description="Presentation time of the frame in seconds.")
    text: str


class CotAnswer(BaseModel):
    """The parsed answer fields; `when` is the normalised span actually written into `answer`."""

    which: str
    what: str
    when: tuple[float, float] | None = None
    where: str | None = None
    why: str
    how: str | None = None


class CotProvenance(BaseModel):
    """What made the record: models, sampling, prompt versions, usage, and gate history."""

    captioner: str = Field(description="Model spec of the frame captioner (no key, no secret).")
    reasoner: str = Field(description="Model spec of the model that wrote the steps and the answer.")
    caption_policy: str
    max_pixels: int
    caption_batch: int
    prompt_hashes: dict[str, str] = Field(default_factory=dict, description="Prompt name → content hash of every prompt used.")
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    repaired_gates: list[str] = Field(default_factory=list, description="Gates that failed first and passed after the repair.")
    repaired_parts: list[str] = Field(default_factory=list, description="Steps / 'answer' that were re-asked.")
    budget_repairs: list[str] = Field(default_factory=list, description="Parts whose reply stopped at its token limit and were asked again with a larger budget.")
    refused_frames: list[int] = Field(default_factory=list, description="Frame indices the captioner refused to describe (left out of the captions).")
    description_source: str = Field(default="none", description="Where the event description shown to the reasoner came from: description | reasoning | answer | none.")
    warnings: dict[str, str] = Field(default_factory=dict, description="Warn-level gates that did not pass: gate → message.")
    created: str = ""


class CotRecord(BaseModel):
    """One video's chain of thought, ready for export (`think` + `answer`) and for audit (everything else)."""

    video_id: str
    label: CotLabel
    category: str = Field(description="Canonical ground-truth class ('Normal' for normal videos).")
    duration: float | None = Field(default=None, description="Video length in seconds.")
    span: tuple[float, float] | None = Field(default=None, description="Ground-truth abnormal span, normalised to [0, 1]; None when unknown or normal.")
    when_source: Literal["annotation", "model"] | None = Field(
        default=None, description="Where the answer's <when> comes from: the annotated span, or the reasoner's own estimate "
                                  "(abnormal video with no known span; leave such records out of grounding data). None for normal videos.")
    captions: list[Caption]
    steps: list[str] = Field(description="Step texts in order: 4 for abnormal videos, 2 for normal ones.")
    fields: CotAnswer
    think: str
    answer: str
    provenance: CotProvenance

    @model_validator(mode="after")
    def _shape(self) -> CotRecord:
        expected = STEP_COUNTS[self.label]
        if len(self.steps) != expected:
            raise ValueError(f"a {self.label} chain has {expected} steps, not {len(self.steps)}")
        if not (self.think.startswith("<think>") and self.think.endswith("</think>")):
            raise ValueError("think must be one <think>…</think> block")
        if not (self.answer.startswith("<answer>") and self.answer.endswith("</answer>")):
            raise ValueError("answer must be one <answer>…</answer> block")
        return self
