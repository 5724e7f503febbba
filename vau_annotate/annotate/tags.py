"""Parsing of the tagged formats the three recipes use.

`<think>/<answer>/<reflection>` (SRVAU-R1, VAU-R1), `<step1>…<step4>` and
`<which>/<what>/<when>/<where>/<why>/<how>` (Vad-R1), time spans `[s, e]`, and the multiple-choice
letter with the fallbacks VAU-Bench's evaluation uses when a model ignores the format.

SRVAU-R1 writes `<reflection>` in its prompts and data but `<reflect>` in its reward section; the
parser reads both spellings as one tag (`TAG_ALIASES`), so rewards and evaluators accept either,
while everything this tool writes uses `<reflection>`.
"""

from __future__ import annotations

import re

_SPAN = re.compile(r"\[\s*(-?\d+(?:\.\d+)?)\s*(?:s|sec|seconds)?\s*[,\-–~]\s*(-?\d+(?:\.\d+)?)\s*(?:s|sec|seconds)?\s*\]", re.I)


# canonical tag → every spelling the parser accepts for it
TAG_ALIASES: dict[str, tuple[str, ...]] = {"reflection": ("reflection", "reflect")}
_CANONICAL = {alias: tag for tag, aliases in TAG_ALIASES.items() for alias in aliases}


def canonical_tag(name: str) -> str:
    """The canonical name of a tag spelling ('reflect' → 'reflection')."""
    return _CANONICAL.get(name.lower(), name.lower())


def tag_pattern(tag: str) -> re.Pattern[str]:
    """`<tag>…</tag>` (any accepted spelling, opening and closing alike); the content is group 2."""
    names = "|".join(re.escape(n) for n in TAG_ALIASES.get(canonical_tag(tag), (tag,)))
    return re.compile(rf"<({names})>(.*?)</\1>", re.S | re.I)


def extract_tag(text: str, tag: str) -> str | None:
    """Content of the first `<tag>…</tag>`, stripped; None when absent."""
    match = tag_pattern(tag).search(text or "")
    return match.group(2).strip() if match else None


def extract_all(text: str, tag: str) -> list[str]:
    """Contents of every `<tag>…</tag>` in order (e.g. both answers of a two-round reflection)."""
    return [m.group(2).strip() for m in tag_pattern(tag).finditer(text or "")]


def tag_sequence(text: str) -> list[str]:
    """Top-level opening tag names in order of appearance, e.g. ['think', 'answer']."""
    sequence: list[str] = []
    depth_tag: str | None = None
    for match in re.finditer(r"<(/?)([a-zA-Z][\w]*)>", text or ""):
        closing, name = match.group(1) == "/", canonical_tag(match.group(2))
        if depth_tag is None and not closing:
            depth_tag = name
            sequence.append(name)
        elif depth_tag == name and closing:
            depth_tag = None
    return sequence


def unbalanced_tags(text: str, tags: tuple[str, ...]) -> list[str]:
    """Tags whose opening and closing counts differ (malformed output)."""
    low = (text or "").lower()
    return [t for t in tags if low.count(f"<{t}>") != low.count(f"</{t}>")]  # each spelling must close itself


def strip_outside(text: str, tags: tuple[str, ...]) -> str:
    """Text outside the given top-level tags (should be whitespace in a well-formed answer)."""
    rest = text or ""
    for tag in tags:
        rest = tag_pattern(tag).sub("", rest)
    return rest.strip()


def parse_span(text: str | None) -> tuple[float, float] | None:
    """First `[start, end]` in the text as floats; None when none parses."""
    if not text:
        return None
    match = _SPAN.search(text)
    if not match:
        return None
    return float(match.group(1)), float(match.group(2))


def temporal_iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Intersection over union of two intervals; 0 for empty or inverted ones."""
    if a[1] <= a[0] or b[1] <= b[0]:
        return 0.0
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


_LETTER_PATTERNS = (
    re.compile(r"^\s*\(?([A-D])\)?\s*(?:[.:)]|$)", re.I),  # "B", "(B)", "B.", "B: text"
    re.compile(r"\b(?:answer|option|choice)\s*(?:is|:)?\s*\(?([A-D])\b\)?", re.I),  # "the answer is B"
    re.compile(r"\(([A-D])\)", re.I),  # "... (C) ..."
    re.compile(r"\b([A-D])\b"),  # a lone capital letter
)


def extract_letter(text: str | None, options: list[str] | None = None) -> str | None:
    """The multiple-choice letter a model chose.

    Looks in the `<answer>` tag first, then in the whole text: a bare letter ("B", "(B)", "B."),
    then "answer is X" / "option X", then "(X)"; a lone capital letter counts only inside the
    answer tag (in free text "A man walks" would match). Finally an option's text quoted
    verbatim, when exactly one option matches. None when nothing matches.
    """
    if not text:
        return None
    answer = extract_tag(text, "answer")
    for candidate, patterns in ((answer, _LETTER_PATTERNS), (text, _LETTER_PATTERNS[:3])):
        if not candidate:
            continue
        for pattern in patterns:
            match = pattern.search(candidate)
            if match:
                return match.group(1).upper()
    if options:
        lowered = (answer or text).lower()
        hits = {"ABCD"[i] for i, opt in enumerate(options) if opt and opt.strip().lower() in lowered}
        if len(hits) == 1:
            return hits.pop()
    return None
