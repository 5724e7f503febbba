"""Per task: the prompt a model under test gets, how its reply is read, and what each item scores.

Prompts follow the papers' evaluation scripts (files in prompts/eval_*.txt):
- QA, TAG, CLS: VAU-R1's `src/evaluation/inference_{qa,tag,cls}_qwen.py`, with and without the
  think instruction (`Acc w/o think`, `Acc w/ think`, VAU-R1 Table 2); TAG answers in `<glue>`.
- reasoning: VAU-R1's two-turn description ("five sentences") then analysis conversation, judged
  by VAU-Eval (judges.py).
- p2c: Vad-R1's Perception-to-Cognition answer (`<think>` + `<which>…<how>`), read for detection
  (`<which>`) and grounding (`<when>`, fractions of the video length, Vad-R1 Sec. 3.1).
- reflect: SRVAU-R1's two-round answer `<think><answer><reflection><think><answer>`; the first
  and last `<answer>` are the initial and final answers (SRVAU-R1 Sec. 3.2).

Every prompt states the sampling fps and the video length, because hosted backends receive
frames, not a video container (a deviation from the papers' scripts, which pass the file to Qwen's
processor; see README).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vau_annotate.annotate import answers
from vau_annotate.annotate.backends.base import Message, Request, SamplingParams, TextPart, VideoPart
from vau_annotate.annotate.tags import extract_all, extract_tag
from vau_annotate.pipelines.eval_items import EvalItem
from vau_annotate.prompts import Prompt, load_prompt

# VAU-R1's class list (inference_cls_qwen.py FIXED_OPTION); classes found in the data are appended
VAU_CLASSES = (
    "Abuse", "Agriculture", "Arrest", "Arson", "Assault", "Explosion", "Fighting", "Fire", "Food Safety", "Medical Abnormality",
    "Natural Hazard", "Normal", "Object_falling", "People_falling", "Robbery", "Shooting", "Stealing", "Traffic_accident",
    "Vandalism", "Water_incident",
)
THINK_TASKS = ("qa", "tag", "cls")  # tasks whose prompt has a with / without think variant
REFLECT_MIN_IOU = 0.5  # a reflect-tag answer is correct at IoU ≥ 0.5 (the reflect stage's initial threshold)
NORMAL = "Normal"


@dataclass(frozen=True)
class Ask:
    """One model request for one item in one mode (`mode`: "think" | "no_think" | "" for tasks
    with one prompt). The request itself is built when it is sent (`request()`), so the frames of
    a large test split are read from disk one item at a time instead of all at once."""

    item: EvalItem
    mode: str
    prompt: Prompt
    classes: tuple[str, ...] = VAU_CLASSES
    max_tokens: int = 1024
    temperature: float = 0.0

    @property
    def key(self) -> str:
        """Unique per request: exported configs reuse row ids (grpo_qa and grpo_reflect both have `V#qa0`)."""
        base = f"{self.item.task}/{self.item.id}"
        return f"{base}|{self.mode}" if self.mode else base

    def request(self) -> Request:
        """The first (or only) request: the video, then the rendered prompt. Raises when the video cannot be read."""
        part = self.item.video()
        prompt, text = render_prompt(self.item, self.mode, part.fps, duration_of(self.item, part), self.classes)
        return Request(messages=(Message("user", (part, TextPart(text))),),
                       params=SamplingParams(max_tokens=self.max_tokens, temperature=self.temperature),
                       prompt_name=prompt.name, prompt_hash=prompt.hash)


def modes_for(task: str, think: str) -> list[str]:
    if task not in THINK_TASKS:
        return [""]
    return {"on": ["think"], "off": ["no_think"], "both": ["no_think", "think"]}[think]


def format_options(options: tuple[str, ...]) -> str:
    return "\n".join(f"{letter}. {text}" for letter, text in zip("ABCD", options))


def prompt_name(item: EvalItem, mode: str) -> str:
    if item.task == "reflect":
        return f"eval_reflect_{item.sub_task or 'qa'}"
    if item.task == "reasoning":
        return "eval_reasoning_description"
    return f"eval_{item.task}" + ("_think" if mode == "think" else "")


def duration_of(item: EvalItem, part: VideoPart) -> float:
    if item.duration:
        return float(item.duration)
    return (part.timestamps[-1] + (1.0 / part.fps if part.fps else 0.0)) if part.timestamps else 0.0


def render_prompt(item: EvalItem, mode: str, fps: float, duration: float, classes: tuple[str, ...] = VAU_CLASSES) -> tuple[Prompt, str]:
    """The prompt file of an item in a mode, rendered (also what the lmms-eval task's doc_to_text shows)."""
    prompt = load_prompt(prompt_name(item, mode))
    values = {
        "fps": f"{fps:.2g}", "duration": f"{duration:.1f}", "question": item.question,
        "options": format_options(item.options), "classes": ", ".join(f"'{c}'" for c in classes),
    }
    return prompt, prompt.render(**{k: v for k, v in values.items() if k in prompt.variables})


def build_ask(item: EvalItem, mode: str, classes: tuple[str, ...], max_tokens: int, temperature: float = 0.0) -> Ask:
    return Ask(item, mode, load_prompt(prompt_name(item, mode)), classes, max_tokens, temperature)


def follow_up(first: Request, reply: str) -> Request:
    """VAU-R1's second reasoning turn: the description conversation, then the analysis question."""
    prompt = load_prompt("eval_reasoning_analysis")
    messages = first.messages + (Message.text("assistant", reply), Message.text("user", prompt.render()))
    return Request(messages=messages, params=first.params, prompt_name=prompt.name, prompt_hash=prompt.hash)


def class_options(items: list[EvalItem]) -> tuple[str, ...]:
    extra = sorted({i.category for i in items if i.task == "cls" and i.category and i.category not in VAU_CLASSES})
    return VAU_CLASSES + tuple(extra)


# -- reading replies -------------------------------------------------------------------------------

def judge_reflect(item: EvalItem, answer: str | None) -> tuple[Any, bool]:
    """(prediction, correct) of one round of a reflect reply; what does not parse is wrong."""
    if answer is None:
        return None, False
    if item.sub_task == "tag":
        if answers.predicts_abnormal(answer) is False:
            return "normal", item.label == "normal"
        spans = answers.parse_spans(answer, item.duration)
        if not spans:
            return None, False
        if item.span is None:
            return [list(s) for s in spans], False
        return [list(s) for s in spans], answers.spans_iou(spans, item.span) >= REFLECT_MIN_IOU
    letter = answers.extract_choice(answer, list(item.options))
    return letter, letter is not None and letter == item.answer


def score(item: EvalItem, reply: str | None) -> tuple[Any, dict[str, Any]]:
    """(parsed prediction, per-item scores) of a reply; None (a failed call) scores as unparsable."""
    text = reply or ""
    if item.task == "qa":
        letter = answers.extract_choice(text, list(item.options)) if reply is not None else None
        return letter, {"correct": letter is not None and letter == item.answer}
    if item.task == "tag":
        spans = answers.answer_spans(text, item.duration) if reply is not None else []  # <glue> first (VAU-R1)
        iou = answers.spans_iou(spans, item.span) if spans and item.span is not None else 0.0
        return [list(s) for s in spans], {"iou": round(iou, 6)}
    if item.task == "cls":
        predicted = answers.extract_class(text) if reply is not None else None  # <answer> first, via the alias table
        correct = predicted is not None and predicted == item.answer
        binary = predicted is not None and (predicted == NORMAL) == (item.answer == NORMAL)
        return predicted, {"correct": correct, "binary_correct": binary}
    if item.task == "p2c":
        abnormal = answers.predicts_abnormal(text) if reply is not None else None  # <which> first
        when = extract_tag(text, "when")
        spans = answers.parse_spans(when, item.duration) if when else []  # fractions of the length → seconds
        scores: dict[str, Any] = {"detection_correct": abnormal is not None and abnormal == (item.label == "abnormal")}
        if item.label == "abnormal" and item.span is not None:
            scores["iou"] = round(answers.spans_iou(spans, item.span), 6) if spans else 0.0
        return {"abnormal": abnormal, "spans": [list(s) for s in spans]}, scores
    if item.task == "reflect":
        rounds = extract_all(text, "answer")
        initial, initial_ok = judge_reflect(item, rounds[0] if rounds else None)
        final, final_ok = judge_reflect(item, rounds[-1] if len(rounds) >= 2 else None)
        transition = ("C" if initial_ok else "W") + "→" + ("C" if final_ok else "W")
        return {"initial": initial, "final": final}, {"initial_correct": initial_ok, "final_correct": final_ok, "transition": transition}
    if item.task == "reasoning":
        return None, {}
    raise ValueError(f"unknown task {item.task!r}")
