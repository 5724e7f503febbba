"""VideoRecord: one video with everything its source annotations say about it.

Times are canonical seconds. Normalised spans and frame indices are derived from these, never
stored as the truth. Source quirks (-1,-1 = unknown span; 0,0 = normal) are resolved at ingest.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

Label = Literal["normal", "abnormal", "unlabeled"]
Source = Literal["vau-bench", "ucf-crime", "vad-reasoning", "folder"]
ClassSource = Literal["annotation", "file-name", "label"]
LETTERS = ("A", "B", "C", "D")


class Span(BaseModel):
    """A time interval in seconds, start < end."""

    start: float = Field(ge=0.0)
    end: float = Field(ge=0.0)

    @model_validator(mode="after")
    def _ordered(self) -> Span:
        if self.end <= self.start:
            raise ValueError(f"span end {self.end} is not after start {self.start}")
        return self

    @property
    def length(self) -> float:
        return self.end - self.start

    def normalised(self, duration: float, digits: int = 3) -> tuple[float, float]:
        """The span as fractions of the video length (Vad-R1 `<when>`)."""
        return (round(min(self.start / duration, 1.0), digits), round(min(self.end / duration, 1.0), digits))


class MCQ(BaseModel):
    """A multiple-choice question about the video with exactly four options."""

    question: str
    options: list[str] = Field(min_length=4, max_length=4)
    answer: Literal["A", "B", "C", "D"]

    @property
    def answer_text(self) -> str:
        return self.options[LETTERS.index(self.answer)]


class VideoRecord(BaseModel):
    """One video and its labels, probed metadata and any existing annotations."""

    id: str = Field(description="Stable id, unique within a run (file stem unless the source says otherwise).")
    path: str = Field(description="Video path relative to the --videos directory.")
    source: Source
    label: Label
    category: str | None = Field(default=None, description="Canonical class name in `taxonomy`; 'Normal' for normal videos. An "
                                "unknown class that is kept (Vad-Reasoning) is the name as given, with a warning.")
    class_source: ClassSource | None = Field(default=None, description="Where the class came from: the annotation's class field, "
                                             "the video's file name (a fallback), or only its normal/abnormal label.")
    source_class: str | None = Field(default=None, description="The class exactly as the annotation wrote it.")
    taxonomy: str | None = Field(default=None, description="Name of the taxonomy `category` belongs to ('vau-bench', 'vad-reasoning', a --classes file).")
    vau_bench_class: str | None = Field(default=None, description="The VAU-Bench class `category` corresponds to, None when it has none.")
    spans: list[Span] = Field(default_factory=list, description="Abnormal spans in seconds.")
    span_known: bool = Field(default=False, description="False for abnormal videos whose span is unknown.")
    duration: float | None = None
    fps: float | None = None
    num_frames: int | None = None
    width: int | None = None
    height: int | None = None
    mcqs: list[MCQ] = Field(default_factory=list)
    key_object: str | None = None
    description: str | None = None
    reasoning: dict[str, str] = Field(default_factory=dict, description="Structured reasoning (key → text).")
    think: str | None = Field(default=None, description="Existing Vad-Reasoning <think> text, if any.")
    answer: str | None = Field(default=None, description="Existing Vad-Reasoning <answer> text, if any.")
    source_name: str | None = Field(default=None, description="The name the source annotations used.")
    warnings: list[str] = Field(default_factory=list, description="Conflicts ingest resolved without rejecting the video "
                                "('phrase: specifics'), e.g. a span on a normal video (left out of grounding data).")

    @field_validator("spans")
    @classmethod
    def _sorted(cls, spans: list[Span]) -> list[Span]:
        return sorted(spans, key=lambda s: s.start)

    @model_validator(mode="after")
    def _consistent(self) -> VideoRecord:
        if self.label == "normal" and self.spans:
            raise ValueError("a normal video cannot have abnormal spans")
        if self.span_known and not self.spans:
            raise ValueError("span_known is set but no span is given")
        if self.duration is not None:
            for span in self.spans:
                if span.end > self.duration + 0.5:
                    raise ValueError(f"span [{span.start}, {span.end}] ends after the video ({self.duration:.2f} s)")
        return self

    def to_row(self) -> dict:
        """A flat, Arrow-friendly dict (nested lists/dicts kept as JSON-compatible values)."""
        return self.model_dump(mode="json")
