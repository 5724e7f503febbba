"""Quality gates of SRVAU-R1 reflection triples (the `reflect` stage).

The candidate is the teacher's reply together with what the pipeline judged about it. Gates:

    format           exactly <reflection><think><answer>, each non-empty, nothing outside, no nested tags
    reflection       the critique's length is inside its word budget (a critique, not a bare verdict)
    revised-answer   the revised answer matches the ground truth (grounding: IoU ≥ the revised threshold)
    revision         the revised reasoning is not a copy of the initial one
    refers-back      the revised reasoning shows how the reflection changed it (SRVAU-R1's samples:
                     "Oh, I see, …", "Wait, let me confirm — …"): it opens with such a turn and takes
                     up what the reflection raised (a time it named, or its key words)
    no-leak          neither the reflection nor the revised reasoning says the answer was given
                     ("the ground truth says", "the correct answer is"), and the reflection points at
                     problems instead of stating the answer (the right letter or span)
    chronology       the times the revised reasoning mentions never go back
    neutrality       no term of the neutrality lexicon in the reflection or the revised reasoning

Generic gates come from `checks.common`; the reflect-specific measurements (times mentioned,
similarity) are plain functions here so tests and reports can use the numbers directly.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

from vau_annotate.annotate.checks import WHOLE, Finding, Gate, GateRegistry
from vau_annotate.annotate.checks.common import Lexicon, lexicon_gate, tag_layout_gate, word_band_gate
from vau_annotate.annotate.checks.common import split_sentences
from vau_annotate.annotate.tags import extract_tag, parse_span
from vau_annotate.schemas.reflection import Attempt

STAGE = "reflect"
REPLY_TAGS = ("reflection", "think", "answer")

_NUM = r"(\d+(?:\.\d+)?)"
_UNIT = r"(?:s|secs?|seconds?)\b"
_LINK = r"(?:-|–|—|~|to|and|until|till)"
# Order matters: a range or a bracketed span is one event (its start), so it must win over the
# single times inside it; a clock time mm:ss is read as minutes and seconds.
_TIME_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("span", re.compile(rf"\[\s*{_NUM}\s*(?:{_UNIT})?\s*[,\-–~]\s*{_NUM}\s*(?:{_UNIT})?\s*\]", re.I)),
    ("range", re.compile(rf"\b{_NUM}\s*(?:{_UNIT})?\s*{_LINK}\s*{_NUM}\s*{_UNIT}", re.I)),
    ("clock", re.compile(r"\b(\d{1,2}):([0-5]\d(?:\.\d+)?)\b")),
    ("single", re.compile(rf"\b{_NUM}\s*{_UNIT}", re.I)),
)
# A duration ("for 5 seconds", "5 seconds later") is not a point in the video and must not count.
_DURATION_BEFORE = re.compile(r"\b(?:for|lasting|lasts?|within|after|over|another|takes?|took|spends?|spent)\s+(?:(?:about|around|nearly|almost|roughly|some|just|only|over|under|less than|more than)\s+)?$", re.I)
_DURATION_AFTER = re.compile(r"^\s*(?:later|long|afterwards|after|earlier|before|apart)\b", re.I)
_WORD = re.compile(r"[a-z0-9]+")


def mentioned_times(text: str) -> list[float]:
    """Times in seconds the text mentions, in reading order; a range or span counts as its start.

    Recognised: `[3.0, 8.5]`, `3–8 s`, `from 3 s to 8 s`, `between 3 and 8 seconds`, `00:12`,
    `12.5 s`, `12 seconds`. Bare numbers are not times (counts, ages and option numbers would be),
    and durations ("for 5 seconds", "3 s later") are not moments.
    """
    text = text or ""
    moments = [
        (match.start(), _seconds(kind, match))
        for kind, match in _time_matches(text)
        if not (kind in ("range", "single") and _is_duration(text, match.start(), match.end()))
    ]
    return [seconds for _, seconds in sorted(moments)]


def _time_matches(text: str) -> list[tuple[str, re.Match[str]]]:
    """Non-overlapping time expressions; where two overlap, the earlier pattern (the wider form) wins."""
    matches: list[tuple[str, re.Match[str]]] = []
    for kind, pattern in _TIME_PATTERNS:
        for match in pattern.finditer(text):
            if not any(match.start() < m.end() and m.start() < match.end() for _, m in matches):
                matches.append((kind, match))
    return matches


def _seconds(kind: str, match: re.Match[str]) -> float:
    if kind == "clock":
        return int(match.group(1)) * 60 + float(match.group(2))
    return float(match.group(1))


def _is_duration(text: str, start: int, end: int) -> bool:
    """Whether the time at text[start:end] is a length of time rather than a moment."""
    return bool(_DURATION_BEFORE.search(text[max(0, start - 40):start]) or _DURATION_AFTER.match(text[end:end + 20]))


def chronology_failure(text: str, tolerance: float = 0.0) -> str | None:
    """Why the text is not chronological: the first time it goes back to; None when it never does."""
    times = mentioned_times(text)
    for earlier, later in zip(times, times[1:]):
        if later + tolerance < earlier:
            return f"not chronological: the reasoning goes back from {earlier:g} s to {later:g} s; mention times in increasing order"
    return None


def _words(text: str) -> list[str]:
    return _WORD.findall((text or "").lower())


def similarity(a: str, b: str) -> float:
    """Word-level similarity in [0, 1] (difflib ratio), blind to case, spacing and punctuation."""
    return difflib.SequenceMatcher(None, _words(a), _words(b), autojunk=False).ratio()


def copy_failure(revised: str, initial: str, max_similarity: float = 0.9) -> str | None:
    """Why the revised reasoning does not count as a revision: it (nearly) repeats the initial one."""
    score = similarity(revised, initial)
    if score >= max_similarity:
        return f"revised reasoning repeats the initial one (similarity {score:.2f} ≥ {max_similarity:.2f}); rewrite it"
    return None


def answer_failure(correct: bool, prediction: str | None, truth: str, iou: float | None = None, min_iou: float | None = None) -> str | None:
    """Why the revised answer is not accepted: it is missing, or it does not match the ground truth."""
    if correct:
        return None
    if prediction is None:
        return f"revised answer cannot be read; it must be {truth}"
    if iou is not None and min_iou is not None:
        return f"revised answer {prediction} overlaps the ground truth {truth} with IoU {iou:.2f} < {min_iou:.2f}"
    return f"revised answer {prediction} is not the ground truth {truth}"


# A revision that takes up its reflection opens with a turn like SRVAU-R1's samples.
REVISION_TURNS = re.compile(
    r"\b(?:oh,? i see|i see now|wait|let me (?:confirm|check|re-?check|re-?examine|look again|verify|reconsider)|"
    r"on (?:a )?(?:closer|second) look|looking (?:again|more closely)|re-?examin\w*|taking (?:a|another) (?:closer )?look|"
    r"i (?:overlooked|missed|had missed|had overlooked)|actually|hmm)\b", re.I)
_STOPWORDS = frozenset("""
    about above after again against also among another answer around because been before being below between both
    could does doing down during each even every from further have having here into itself just like more most much
    must only other over reasoning reflection same should some still such than that their them then there these they
    this those through under until very video were what when where which while with would your frames frame model
    correct answer option options event events first second initial revised shows show seen""".split())
LEAK = re.compile(
    r"\b(?:ground[- ]truth|correct answer (?:is|was)|right answer (?:is|was)|the (?:given|provided) answer|"
    r"(?:was|were|been|am) (?:told|given) (?:that|the)|according to the (?:label|annotation)s?|the annotations? (?:say|says|state)|"
    r"the teacher|the (?:base )?model(?:'s)? (?:reply|answer|replied|answered))\b", re.I)


def _content_words(text: str) -> set[str]:
    return {w for w in _words(text) if len(w) >= 4 and not w.isdigit() and w not in _STOPWORDS}


def refers_back_failure(think: str, reflection: str) -> str | None:
    """Why the revised reasoning does not show the reflection's effect; None when it does.

    It must open (first two sentences) with a turn back to the reflection, and take up what the
    reflection raised: a time it mentioned, or at least two of its content words.
    """
    opening = " ".join(split_sentences(think)[:2])
    if not REVISION_TURNS.search(opening):
        return ("the revised reasoning does not show how the reflection changes it: open with a turn back to it, "
                "e.g. \"Oh, I see, …\" or \"Wait, let me confirm — …\", then re-examine what it raised")
    times = set(mentioned_times(reflection))
    if times & set(mentioned_times(think)):
        return None
    shared = _content_words(reflection) & _content_words(think)
    if len(shared) >= 2:
        return None
    return "the revised reasoning does not take up what the reflection raised (none of its times, too few of its key words); re-examine those points"


def leak_failure(reflection: str, think: str, truth: str) -> str | None:
    """Why the texts give the answer away; None when they reason to it.

    A reflection points at problems; it must not state the right letter ('the answer is B',
    '(B)') or the right span, and neither text may say the answer was given to it.
    """
    for part, text in (("reflection", reflection), ("revised reasoning", think)):
        hit = LEAK.search(text or "")
        if hit:
            return f"the {part} says '{hit.group(0)}': reason from the video, never from a given answer or label"
    if re.fullmatch(r"[A-D]", truth):
        stated = re.search(rf"\b(?:answer|option|choice)\s*(?:is|should be|must be|:)?\s*\(?{truth}\b\)?|\({truth}\)", reflection or "")
        if stated:
            return f"the reflection states the answer ('{stated.group(0)}'): point at what to re-examine instead"
    span = parse_span(truth)
    if span is not None:
        for match in re.finditer(r"\[[^\]]*\]", reflection or ""):
            found = parse_span(match.group(0))
            if found is not None and abs(found[0] - span[0]) < 0.05 and abs(found[1] - span[1]) < 0.05:
                return f"the reflection states the answer span {match.group(0)}: point at the moments to re-examine instead"
    return None


@dataclass(frozen=True)
class ReflectCandidate:
    """A teacher reply and the pipeline's judgement of it: everything the gates need."""

    reply: str
    initial_think: str
    revised: Attempt
    truth: str
    min_iou: float | None = None

    @property
    def reflection(self) -> str:
        return extract_tag(self.reply, "reflection") or ""

    @property
    def think(self) -> str:
        return extract_tag(self.reply, "think") or ""


@dataclass(frozen=True)
class ReflectGateConfig:
    """Thresholds of the reflect gates (command-line options feed these)."""

    reflection_words: tuple[int, int] = (12, 120)
    max_similarity: float = 0.9
    chronology_tolerance: float = 0.0
    lexicon: Path | None = None


def _layouts(c: ReflectCandidate) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(WHOLE, c.reply, REPLY_TAGS), ("reflection", c.reflection, ()), ("think", c.think, ())]


def _found(part: str, message: str | None) -> list[Finding]:
    return [Finding(part, message)] if message else []


def reflect_gates(config: ReflectGateConfig = ReflectGateConfig()) -> GateRegistry[ReflectCandidate]:
    """The reflect stage's gates, in the order they run and are reported."""
    registry: GateRegistry[ReflectCandidate] = GateRegistry(STAGE)
    registry.register(tag_layout_gate("format", _layouts))
    registry.register(word_band_gate("reflection", lambda c: {"reflection": c.reflection}, lambda c: config.reflection_words, "the reflection"))
    registry.register(Gate(
        "revised-answer", "the revised answer matches the ground truth",
        lambda c: _found("answer", answer_failure(c.revised.correct, c.revised.prediction, c.truth, c.revised.iou, c.min_iou)),
    ))
    registry.register(Gate(
        "revision", f"the revised reasoning differs from the initial one (similarity < {config.max_similarity:.2f})",
        lambda c: _found("think", copy_failure(c.think, c.initial_think, config.max_similarity)),
    ))
    registry.register(Gate(
        "refers-back", "the revised reasoning turns back to the reflection and takes up what it raised",
        lambda c: _found("think", refers_back_failure(c.think, c.reflection)),
    ))
    registry.register(Gate(
        "no-leak", "no 'the ground truth says'; the reflection points at problems without stating the answer",
        lambda c: _found("reflection", leak_failure(c.reflection, c.think, c.truth)),
    ))
    registry.register(Gate(
        "chronology", "times mentioned in the revised reasoning never go back",
        lambda c: _found("think", chronology_failure(c.think, config.chronology_tolerance)),
    ))
    registry.register(lexicon_gate("neutrality", lambda c: {"reflection": c.reflection, "think": c.think}, lambda: Lexicon.load(config.lexicon)))
    return registry
