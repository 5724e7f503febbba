"""ReflectionRecord: one SRVAU-R1 reflection triple — initial attempt, reflection, revised attempt.

The base model answers a question about a video (`initial`); a teacher who knows the ground truth
critiques that answer (`reflection`) and writes a revised reasoning and answer (`revised`). The
record keeps both attempts verbatim plus how each was judged, so the two SFT renderings (the full
two-round completion and SRVAU-R1's conditioned form, Eq. 1) are derived, never stored twice.

The two-round rendering pairs the five-part target with SRVAU-R1's Self-Reflection SFT prompt
(`prompts/reflect_sft_system.txt` + `reflect_sft_user.txt`), not with the single-round prompt the
base model saw; `render_reflect_prompt` renders those and the RFT prompt (`reflect_rft`) for any
question, so export builds its GRPO prompts with the same words.
"""

from __future__ import annotations

import string
from typing import Literal, Sequence

from pydantic import BaseModel, Field

from vau_annotate.prompts import load_fragment, load_prompt

SFT_SYSTEM_PROMPT = "reflect_sft_system"
SFT_USER_PROMPT = "reflect_sft_user"
RFT_PROMPT = "reflect_rft"

Task = Literal["qa", "tag"]
Transition = Literal["C→C", "W→C", "W→W", "C→W"]


def transition_of(initial_correct: bool, revised_correct: bool) -> Transition:
    """SRVAU-R1's effectiveness classes: C = correct, W = wrong, before → after reflection."""
    return f"{'C' if initial_correct else 'W'}→{'C' if revised_correct else 'W'}"  # type: ignore[return-value]


def reflect_prompt_values(task: str, question: str, options: Sequence[str] = (), fps: float | None = None,
                          duration: float | None = None) -> dict[str, str]:
    """The placeholders of the SFT user and RFT prompts for one question (QA: with its four options)."""
    note = string.Template(load_fragment("reflect_video")).substitute(fps=f"{fps:g}" if fps else "1")
    if task == "tag" and duration:
        note += f" It lasts {duration:.1f} seconds."
    block = "Options:\n" + "\n".join(f"{letter}. {text}" for letter, text in zip("ABCD", options)) + "\n" if options else ""
    return {"video_note": note, "question": question, "options_block": block, "answer_format": load_fragment(f"reflect_answer_{task}")}


def render_reflect_prompt(name: str, task: str, question: str, options: Sequence[str] = (), fps: float | None = None,
                          duration: float | None = None) -> str:
    """`reflect_sft_user` or `reflect_rft` rendered for one question."""
    return load_prompt(name).render(**reflect_prompt_values(task, question, options, fps, duration))


def sampling_fps(policy: str) -> float | None:
    """The fps of an 'fps:F' sampling policy; None for other policies."""
    kind, _, value = policy.partition(":")
    try:
        return float(value) if kind == "fps" else None
    except ValueError:
        return None


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
    truncated: bool = Field(default=False, description="The reply stopped at its token limit (kept for the base's initial attempt only, as the base really answered).")

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
    duration: float | None = Field(default=None, description="Video length in seconds (the grounding prompts state it).")
    question: str
    options: list[str] = Field(default_factory=list, description="The four options (QA); empty for grounding.")
    ground_truth: str = Field(description="Letter A-D, '[s, e]' in seconds, or 'normal'.")
    prompt: str = Field(description="The user text the base model saw with the video (the SFT input).")
    initial: Attempt
    reflection: str
    revised: Attempt
    transition: Transition
    provenance: ReflectionProvenance

    def sft_prompts(self) -> tuple[str, str]:
        """(system, user) of SRVAU-R1's Self-Reflection SFT prompt for this record's question."""
        user = render_reflect_prompt(SFT_USER_PROMPT, self.task, self.question, self.options, sampling_fps(self.provenance.sampling), self.duration)
        return load_prompt(SFT_SYSTEM_PROMPT).render(), user

    def two_round(self) -> dict[str, str]:
        """Full SFT form: under the Self-Reflection SFT prompt, the model reasons, answers, reflects,
        reasons again and answers, in one completion of five parts."""
        system, user = self.sft_prompts()
        completion = self.initial.round() + f"<reflection>{self.reflection}</reflection>" + self.revised.round()
        return {"system": system, "prompt": user, "completion": completion}

    def conditioned(self) -> dict[str, str]:
        """SRVAU-R1 Eq. 1: given the question (as the base saw it), the initial round and the
        reflection, produce the revised round."""
        system, _ = self.sft_prompts()
        context = f"{self.prompt}\n\n{self.initial.round()}<reflection>{self.reflection}</reflection>"
        return {"system": system, "prompt": context, "completion": self.revised.round()}
