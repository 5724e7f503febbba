"""From the reasoner's replies to Vad-Reasoning's two strings: `think` and `answer`.

    think  = <think><step1>…</step1>…<stepN></stepN></think>
    answer = <answer><which>…</which>…</answer>

The tool writes `<which>` as the canonical class and, when the abnormal span is annotated, `<when>`
as that span (the reasoner's own `<when>` is still checked against it by the `when` gate); with no
annotated span the reasoner's `<when>` is published and the record says `when_source: model`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from vau_annotate.annotate.backends import Request
from vau_annotate.annotate.checks import GateReport
from vau_annotate.annotate.checks.cot import CotCandidate
from vau_annotate.annotate.classes import Taxonomy
from vau_annotate.annotate.tags import extract_tag, parse_span
from vau_annotate.pipelines.cot_facts import VideoFacts
from vau_annotate.pipelines.cot_steps import ANSWER, clean_step
from vau_annotate.schemas.cot import CotAnswer, answer_fields, format_when, step_names


@dataclass(frozen=True)
class Exchange:
    """One part of the chain (a step or the answer): the request that made it and its reply."""

    part: str
    request: Request
    reply: str


def assemble_think(steps: Sequence[str], label: str) -> str:
    """`<think><step1>…</step1>…</think>` in Vad-Reasoning's format."""
    body = "".join(f"<{name}>{text}</{name}>" for name, text in zip(step_names(label), steps))
    return f"<think>{body}</think>"


def answer_values(reply: str, facts: VideoFacts, taxonomy: Taxonomy) -> dict[str, str]:
    """The answer fields to publish: `<which>` canonical when recognised, `<when>` from the truth when known."""
    values = {name: " ".join((extract_tag(reply, name) or "").split()) for name in answer_fields(facts.label)}
    values["which"] = taxonomy.lookup(values["which"]) or values["which"]
    if "when" in values:
        span = facts.span or parse_span(values["when"])
        if span is not None:
            values["when"] = format_when((round(span[0], 3), round(span[1], 3)))
    return values


def assemble_answer(values: dict[str, str], label: str) -> str:
    """`<answer><which>…</which>…</answer>` with the label's fields in Vad-R1 order."""
    body = "".join(f"<{name}>{values.get(name, '')}</{name}>" for name in answer_fields(label))
    return f"<answer>{body}</answer>"


def parsed_answer(values: dict[str, str]) -> CotAnswer:
    when = parse_span(values.get("when"))
    return CotAnswer(which=values["which"], what=values["what"], when=when, where=values.get("where"), why=values["why"], how=values.get("how"))


def make_candidate(facts: VideoFacts, steps: Sequence[Exchange], answer: Exchange, taxonomy: Taxonomy) -> CotCandidate:
    texts = tuple(clean_step(e.reply) for e in steps)
    values = answer_values(answer.reply, facts, taxonomy)
    return CotCandidate(
        label=facts.label, category=facts.category, steps=texts, reply=answer.reply,
        think=assemble_think(texts, facts.label), answer=assemble_answer(values, facts.label), span=facts.span,
    )


def repair_targets(report: GateReport, parts: Sequence[str]) -> dict[str, list[str]]:
    """part → failure lines; findings about the whole reasoning ('think', '') go to every step."""
    steps = [p for p in parts if p != ANSWER]
    out: dict[str, list[str]] = {}
    for part, lines in report.by_part().items():
        for target in ([part] if part in parts else steps):
            out.setdefault(target, []).extend(lines)
    return out
