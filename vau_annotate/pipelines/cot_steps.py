"""Vad-R1's Perception-to-Cognition chain (Figure 2, section 3.1) and what each step is given.

    abnormal video                                   normal video
    step 1  global perception   all captions         step 1  perception   all captions
    step 2  local perception    abnormal-frame captions (the annotated span; all frames when unknown) + step 1
    step 3  shallow cognition   abnormal-frame captions + description + category + steps 1–2
    step 4  deep cognition      description + category + steps 1–3
                                                     step 2  cognition    all captions + step 1
    answer  <which><what><when><where><why><how>     answer  <which><what><why>
            steps 1–4 + category + span + annotated location / key object

`SEES` names, per prompt, the values it is rendered with — nothing else reaches the model (a
template that asked for more would fail to render), so this table is the figure, enforced.
The reasoner is a text model: the captions are its evidence of what the frames show.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from vau_annotate.annotate.backends import Message, Request, SamplingParams
from vau_annotate.annotate.tags import extract_tag
from vau_annotate.pipelines.cot_facts import VideoFacts
from vau_annotate.prompts import load_prompt
from vau_annotate.schemas.cot import Caption, format_when, step_names

REPAIR_PROMPT = "cot_repair"
ANSWER = "answer"


@dataclass(frozen=True)
class StepSpec:
    """One step of the chain: its tag name, its prompt file, and its title in later prompts."""

    name: str
    prompt: str
    title: str


CHAINS: dict[str, tuple[StepSpec, ...]] = {
    "abnormal": (
        StepSpec("step1", "cot_global", "global perception"),
        StepSpec("step2", "cot_local", "local perception"),
        StepSpec("step3", "cot_shallow", "shallow cognition"),
        StepSpec("step4", "cot_deep", "deep cognition"),
    ),
    "normal": (
        StepSpec("step1", "cot_global", "perception"),
        StepSpec("step2", "cot_normal_cognition", "cognition"),
    ),
}
ANSWER_PROMPTS: dict[str, str] = {"abnormal": "cot_answer", "normal": "cot_answer_normal"}

# prompt → the values it is rendered with ('previous' = the steps written so far)
SEES: dict[str, tuple[str, ...]] = {
    "cot_global": ("duration", "captions"),
    "cot_local": ("duration", "span", "abnormal_captions", "previous"),
    "cot_shallow": ("duration", "span", "category", "description", "abnormal_captions", "previous"),
    "cot_deep": ("duration", "category", "description", "previous"),
    "cot_normal_cognition": ("duration", "captions", "previous"),
    "cot_answer": ("duration", "category", "span", "when_rule", "where_rule", "previous"),
    "cot_answer_normal": ("duration", "category", "previous"),
}


def format_captions(captions: Sequence[Caption]) -> str:
    return "\n".join(f"[{c.timestamp:.1f} s] {c.text}" for c in captions)


def abnormal_captions(captions: Sequence[Caption], span_s: tuple[float, float] | None) -> list[Caption]:
    """Captions inside the span (all of them when it is unknown; the nearest one when none falls inside)."""
    if span_s is None:
        return list(captions)
    inside = [c for c in captions if span_s[0] <= c.timestamp <= span_s[1]]
    if inside or not captions:
        return inside
    middle = (span_s[0] + span_s[1]) / 2
    return [min(captions, key=lambda c: abs(c.timestamp - middle))]


local_captions = abnormal_captions  # the name step 2 of the figure uses


def describe_span(facts: VideoFacts) -> str:
    if facts.label == "normal":
        return "none (the video is normal)"
    if facts.span is None or facts.span_s is None:
        return "not annotated (unknown)"
    return f"{facts.span_s[0]:.1f} s to {facts.span_s[1]:.1f} s, that is {format_when(facts.span)} of the video length"


def when_rule(facts: VideoFacts) -> str:
    """How the answer's `<when>` is decided: copied from the annotation, or estimated from the steps."""
    if facts.span is not None:
        return f"the annotated span as fractions of the video length: {format_when(facts.span)}"
    return "the span is not annotated: estimate it from the times the steps give, as fractions of the video length with 3 decimals, such as [0.250, 0.600]"


def where_rule(facts: VideoFacts) -> str:
    """How the answer's `<where>` is decided: from the annotated location / key object, else from the steps."""
    known = [f"location: {facts.location}" if facts.location else "", f"key object: {facts.key_object}" if facts.key_object else ""]
    known = [k for k in known if k]
    if known:
        return f"the annotators give the place of the event ({'; '.join(known)}); say where the event happens in those terms, in one sentence"
    return "where in the scene the event happens, in one sentence, as the steps describe it"


def format_previous(chain: Sequence[StepSpec], texts: Sequence[str]) -> str:
    """The steps written so far, labelled, for the next prompt."""
    if not texts:
        return "(none yet)"
    return "\n\n".join(f"Step {i} ({spec.title}): {text}" for i, (spec, text) in enumerate(zip(chain, texts), 1))


def step_values(facts: VideoFacts, captions: Sequence[Caption], chain: Sequence[StepSpec], previous: Sequence[str], prompt: str) -> dict[str, str]:
    """The values `prompt` sees (SEES), and nothing more."""
    every = {
        "duration": lambda: f"{facts.length:.1f}",
        "captions": lambda: format_captions(captions),
        "abnormal_captions": lambda: format_captions(abnormal_captions(captions, facts.span_s)),
        "span": lambda: describe_span(facts),
        "category": lambda: facts.category,
        "description": lambda: facts.description,
        "when_rule": lambda: when_rule(facts),
        "where_rule": lambda: where_rule(facts),
        "previous": lambda: format_previous(chain, previous),
    }
    return {name: every[name]() for name in SEES[prompt]}


def text_request(prompt_name: str, values: dict[str, str], max_tokens: int, temperature: float) -> Request:
    prompt = load_prompt(prompt_name)
    params = SamplingParams(max_tokens=max_tokens, temperature=temperature)
    return Request(messages=(Message.text("user", prompt.render(**values)),), params=params, prompt_name=prompt.name, prompt_hash=prompt.hash)


def step_request(facts: VideoFacts, captions: Sequence[Caption], chain: Sequence[StepSpec], previous: Sequence[str], prompt: str,
                 max_tokens: int, temperature: float) -> Request:
    """The request of one step (or the answer) given the steps written before it."""
    return text_request(prompt, step_values(facts, captions, chain, previous, prompt), max_tokens, temperature)


def repair_request(original: Request, reply: str, failures: Sequence[str]) -> Request:
    """The original conversation, the failing reply, and the failures listed: one chance to fix them."""
    prompt = load_prompt(REPAIR_PROMPT)
    text = prompt.render(failures="\n".join(f"- {line}" for line in failures))
    messages = (*original.messages, Message.text("assistant", reply), Message.text("user", text))
    return Request(messages=messages, params=original.params, prompt_name=prompt.name, prompt_hash=prompt.hash)


_STEP_HEADING = re.compile(r"^\s*(?:\*\*)?\s*step\s*\d+\b[^:\n]{0,40}:\s*(?:\*\*)?\s*", re.I)


def clean_step(text: str) -> str:
    """A step reply as plain prose: a wrapping `<stepN>`/`<think>` pair or a 'Step 2 (…):' heading removed."""
    text = (text or "").strip()
    for tag in ("think", *step_names("abnormal")):
        inner = extract_tag(text, tag)
        if inner is not None and text.lower().startswith(f"<{tag}>") and text.lower().endswith(f"</{tag}>"):
            text = inner
    return _STEP_HEADING.sub("", text, count=1).strip()


def prompt_names() -> list[str]:
    """Every prompt of the chain (their hashes go into run.json)."""
    return sorted({*SEES, REPAIR_PROMPT})
