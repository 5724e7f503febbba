"""The quality gates of the Vad-R1 chain of thought (`build-cot`).

A `CotCandidate` is a finished draft: the step texts, the answer as the reasoner wrote it, and
the assembled `think`/`answer` strings. The gates, in the order they run and are reported:

    structure    exact Vad-R1 layout: steps are plain prose; the reply carries each field of the
                 label once (abnormal: which what when where why how; normal: which what why);
                 `think`/`answer` are exactly the tags in order, none empty
    category     `<which>` names the ground-truth class (canonical names, case/underscore tolerant)
    when         abnormal only: `<when>` parses as [s, e], lies in [0, 1] (inside the video), s < e
                 (non-degenerate), and overlaps the ground-truth span with IoU ≥ 0.5 when the span is
                 known; with no known span it is the reasoner's estimate (`when_source: model`)
    sentences    every step has 4–6 sentences (Vad-R1's annotation guideline)
    length       think word count inside Vad-R1's bands (normal 140–261, abnormal 233–456);
                 rejects by default, a warning with `--length-gate warn`
    neutrality   no term of the neutrality lexicon in the steps or the answer
    repetition   no step repeats an earlier one
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from vau_annotate.annotate.checks import Finding, Gate, GateRegistry
from vau_annotate.annotate.checks.common import (
    Lexicon,
    default_lexicon,
    lexicon_gate,
    repetition_gate,
    sentence_count_gate,
    tag_problems,
    word_band_gate,
)
from vau_annotate.annotate.classes import Taxonomy, default_taxonomy
from vau_annotate.annotate.tags import extract_all, extract_tag, parse_span, temporal_iou
from vau_annotate.schemas.cot import ABNORMAL_FIELDS, answer_fields, step_names

THINK_WORD_BANDS: dict[str, tuple[int, int]] = {"normal": (140, 261), "abnormal": (233, 456)}
STEP_SENTENCES = (4, 6)  # Vad-R1 section 3.2: each step is written in 4-6 sentences
MIN_WHEN_IOU = 0.5
REPETITION_THRESHOLD = 0.5
ANSWER = "answer"
THINK = "think"


@dataclass(frozen=True)
class CotCandidate:
    """A finished draft of one video's chain, as the gates see it."""

    label: str
    category: str
    steps: tuple[str, ...]
    reply: str  # the answer step's reply as the reasoner wrote it
    think: str
    answer: str
    span: tuple[float, float] | None = None  # ground truth, normalised; None when unknown or normal

    @property
    def step_texts(self) -> dict[str, str]:
        return dict(zip(step_names(self.label), self.steps))

    def field(self, name: str) -> str | None:
        return extract_tag(self.reply, name)


def answer_prose(candidate: CotCandidate) -> str:
    """The free-text answer fields (what, where, why, how) joined, for lexicon checks."""
    names = [n for n in answer_fields(candidate.label) if n not in ("which", "when")]
    return "\n".join(v for v in (candidate.field(n) for n in names) if v)


# -- CoT-specific gate functions -----------------------------------------------------------------

def reply_field_problems(reply: str, label: str) -> list[str]:
    """Each expected field exactly once and non-empty; no field of the other label's layout."""
    problems = []
    for name in answer_fields(label):
        found = extract_all(reply, name)
        if not found:
            problems.append(f"<{name}> is missing")
        elif len(found) > 1:
            problems.append(f"<{name}> appears {len(found)} times")
        elif not found[0]:
            problems.append(f"<{name}> is empty")
    extra = [n for n in ABNORMAL_FIELDS if n not in answer_fields(label) and extract_all(reply, n)]
    if extra:
        problems.append(f"a {label} answer has no {', '.join(f'<{n}>' for n in extra)}")
    return problems


def structure_findings(candidate: CotCandidate) -> list[Finding]:
    """Layout problems, reported on the part that causes them; the assembled strings are checked last."""
    names = step_names(candidate.label)
    findings = [Finding(part, "is empty") for part, text in candidate.step_texts.items() if not text.strip()]
    findings += [Finding(part, p) for part, text in candidate.step_texts.items() for p in tag_problems(text, ())]
    findings += [Finding(ANSWER, p) for p in reply_field_problems(candidate.reply, candidate.label)]
    if findings:
        return findings
    layouts = (
        (THINK, candidate.think, (THINK,)),
        (THINK, extract_tag(candidate.think, THINK) or "", names),
        (ANSWER, candidate.answer, (ANSWER,)),
        (ANSWER, extract_tag(candidate.answer, ANSWER) or "", answer_fields(candidate.label)),
    )
    return [Finding(part, p) for part, text, expected in layouts for p in tag_problems(text, expected)]


def category_findings(candidate: CotCandidate, taxonomy: Taxonomy) -> list[Finding]:
    which = candidate.field("which")
    if not which:
        return [Finding(ANSWER, "no <which> given")]
    name = taxonomy.lookup(which)
    truth = taxonomy.lookup(candidate.category) or candidate.category
    if name == truth:
        return []
    known = f" (not a known class; near: {', '.join(taxonomy.near(which)) or 'none'})" if name is None else ""
    return [Finding(ANSWER, f"<which> says '{which}'{known}, but the video's class is '{truth}'")]


def when_findings(candidate: CotCandidate) -> list[Finding]:
    if candidate.label != "abnormal":
        return []
    raw = candidate.field("when")
    if not raw:
        return [Finding(ANSWER, "no <when> given")]
    span = parse_span(raw)
    if span is None:
        return [Finding(ANSWER, f"<when> '{raw}' does not parse as [start, end]")]
    start, end = span
    if not (0.0 <= start <= 1.0 and 0.0 <= end <= 1.0):
        return [Finding(ANSWER, f"<when> {raw} is not normalised to [0, 1] (fractions of the video length)")]
    if start >= end:
        return [Finding(ANSWER, f"<when> {raw} does not start before it ends")]
    if candidate.span is not None:
        iou = temporal_iou(span, candidate.span)
        if iou < MIN_WHEN_IOU:
            truth = f"[{candidate.span[0]:.3f}, {candidate.span[1]:.3f}]"
            return [Finding(ANSWER, f"<when> {raw} overlaps the annotated span {truth} with IoU {iou:.2f} < {MIN_WHEN_IOU}")]
    return []


# -- the registry --------------------------------------------------------------------------------

def _steps(candidate: CotCandidate) -> Mapping[str, str]:
    return candidate.step_texts


def _steps_and_answer(candidate: CotCandidate) -> Mapping[str, str]:
    return {**candidate.step_texts, ANSWER: answer_prose(candidate)}


def _think_band(candidate: CotCandidate) -> tuple[int, int] | None:
    return THINK_WORD_BANDS.get(candidate.label)


def _bind(find: Callable[..., list[Finding]], *args: object) -> Callable[[CotCandidate], list[Finding]]:
    return lambda candidate: find(candidate, *args)


def cot_gates(taxonomy: Taxonomy | None = None, lexicon: Lexicon | None = None) -> GateRegistry[CotCandidate]:
    """Every CoT gate, registered by name in reporting order."""
    taxonomy = taxonomy or default_taxonomy()
    registry: GateRegistry[CotCandidate] = GateRegistry("cot")
    low, high = STEP_SENTENCES
    gates: Sequence[Gate[CotCandidate]] = (
        Gate("structure", "exact Vad-R1 layout of think and answer for the video's label", structure_findings),
        Gate("category", "<which> names the ground-truth class", _bind(category_findings, taxonomy)),
        Gate("when", "<when> parses, lies in [0, 1], starts before it ends, IoU ≥ 0.5 with a known span", when_findings),
        sentence_count_gate("sentences", _steps, low, high),
        word_band_gate("length", _steps, _think_band, what="the reasoning (all steps together)"),
        lexicon_gate("neutrality", _steps_and_answer, lexicon or default_lexicon),
        repetition_gate("repetition", _steps, threshold=REPETITION_THRESHOLD),
    )
    for gate in gates:
        registry.register(gate)
    return registry

