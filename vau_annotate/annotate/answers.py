"""Robust reading of a model's answer: the choice letter, time spans, the class, normal vs abnormal.

Shared by the GRPO rewards (`train/rewards.py`) and the evaluator, so that a reply is parsed the
same way when it is rewarded and when it is scored. Built on `annotate/tags.py` (tag extraction,
the VAU-Bench letter fallbacks, interval IoU); this module adds what the three recipes' outputs need
beyond a single `[s, e]`:

- spans in seconds, normalised to the video length (Vad-R1 `<when>[0.250, 0.600]</when>`),
  percentages, or clock times (`00:01:05`, `1:05`, as VAU-Bench's TAG evaluation accepts), several
  segments per answer, reversed spans dropped or swapped by an explicit rule;
- IoU of segment *unions* (several predicted segments against several true ones);
- classes through the taxonomy's alias table (`annotate/classes.py`);
- the normal-vs-abnormal decision from Vad-R1's `<which>`, VAU-R1's `Anomaly` / `No anomaly`
  answers, or a span.
"""

from __future__ import annotations

import re
from typing import Literal, Sequence

from vau_annotate.annotate.classes import NORMAL, Taxonomy, class_key, default_taxonomy
from vau_annotate.annotate.tags import extract_letter, extract_tag

Span = tuple[float, float]

# ---------------------------------------------------------------------------------------------
# multiple choice

_OPTION_PREFIX = re.compile(r"^\s*(?:\(?[A-Ha-h]\)?\s*[.:)]\s*|\(?[A-Ha-h]\)\s*)")
_ARTICLE_A = re.compile(r"^\s*A\s+[a-z]")  # "A man falls": the article, not option A


def _norm_text(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^0-9a-z]+", " ", text.lower())).strip()


def option_text(option: str) -> str:
    """An option without its own letter prefix ('B. Fighting' → 'Fighting')."""
    return _OPTION_PREFIX.sub("", option, count=1).strip()


def _option_hits(body: str, options: Sequence[str], exact: bool) -> set[str]:
    said = _norm_text(body)
    hits: set[str] = set()
    for i, option in enumerate(options):
        wanted = _norm_text(option_text(option))
        if not wanted:
            continue
        if (said == wanted) if exact else re.search(rf"(?:^| ){re.escape(wanted)}(?: |$)", said):
            hits.add(chr(ord("A") + i))
    return hits


def extract_choice(text: str | None, options: Sequence[str] | None = None) -> str | None:
    """The option letter a reply chose, or None when it cannot be told.

    Order: the answer (the `<answer>` tag, else the whole reply) equal to one option's text;
    then the letter forms of `tags.extract_letter` ("B", "(B)", "B.", "Option B", "the answer is
    B", a lone capital inside `<answer>`); then one option's text quoted inside the answer. An
    answer that starts with the article "A" ("A man falls") is not read as option A. Options may
    carry their own prefix ('B. Fighting') or not; a letter is returned upper case.
    """
    if not text or not text.strip():
        return None
    answer = extract_tag(text, "answer")
    body = answer if answer is not None else text
    opts = list(options or [])
    if opts:
        exact = _option_hits(body, opts, exact=True)
        if len(exact) == 1:
            return exact.pop()
    letter = extract_letter(text)
    if letter == "A" and _ARTICLE_A.match(body) and not re.match(r"^\s*A\s*[.:)]", body):
        letter = None
    if letter is not None:
        return letter
    if opts:
        quoted = _option_hits(body, opts, exact=False)
        if len(quoted) == 1:
            return quoted.pop()
    return None


# ---------------------------------------------------------------------------------------------
# time spans

# A time: clock form (H:MM:SS(.f) or M:SS(.f)) or a plain number, with an optional unit.
_TIME = r"(?:\d{1,2}:)?\d{1,2}:\d{2}(?:\.\d+)?|\d+(?:\.\d+)?"
_UNIT = r"(?:\s*(?:%|s\b|secs?\b|seconds?\b))?"
_SEP = r"\s*(?:,|-|–|—|~|to|and)\s*"
_SPAN_RE = re.compile(
    rf"(?P<open>[\[(])?\s*(?:from\s+|between\s+)?(?P<a>{_TIME})(?P<ua>{_UNIT}){_SEP}(?P<b>{_TIME})(?P<ub>{_UNIT})\s*(?P<close>[\])])?",
    re.I,
)
# Where a span answer lives, in order of preference: Vad-R1 `<when>`, VAU-R1 `<glue>`, `<answer>`.
SPAN_TAGS = ("when", "glue", "answer")


def clock_to_seconds(value: str) -> float:
    """'1:05' → 65.0, '00:01:05.5' → 65.5, '12.5' → 12.5."""
    seconds = 0.0
    for part in value.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


def span_scope(text: str) -> str:
    """The part of a reply that holds its span: the first of `<when>`, `<glue>`, `<answer>`, else all.

    A Vad-R1 answer (it has `<which>`) keeps its span in `<when>` only: a normal video's answer has
    no `<when>`, and numbers in its `<what>` / `<why>` ("2 to 3 people") are not a span.
    """
    if extract_tag(text, "which") is not None:
        return extract_tag(text, "when") or ""
    for tag in SPAN_TAGS:
        inner = extract_tag(text, tag)
        if inner is not None:
            return inner
    return text


def parse_spans(
    text: str | None,
    duration: float | None = None,
    *,
    unit: Literal["auto", "seconds", "fraction"] = "auto",
    reversed_spans: Literal["drop", "swap"] = "drop",
) -> list[Span]:
    """Every time span written in `text`, in seconds, in order of appearance.

    Accepted forms: `[12.5, 30]`, `(12.5s - 30s)`, `12.5 to 30 seconds`, `from 1:05 to 1:20`,
    `between 00:01:05 and 00:01:20`, `[25%, 60%]`, `[0.25, 0.60]`. Comma-separated pairs count
    only inside brackets (a bare "3, 4" is a list, not a span). Units:

    - `unit="auto"`: a span is normalised (×`duration`) when it is written in percent, or when
      `duration` is known and longer than 1 s and *every* number of every span in the text lies
      in [0, 1] with no seconds unit or clock form (Vad-R1 writes `<when>` this way). Otherwise
      numbers are seconds. Without a duration, fractions stay as written.
    - `unit="seconds"` / `"fraction"` force one reading.

    Reversed spans (`[30, 12]`) are dropped by default: IoU of an inverted interval is 0 in
    VAU-Bench's evaluation and our `tags.temporal_iou`, so a reversed span earns nothing rather
    than a silent repair; `reversed_spans="swap"` reads it as `[12, 30]`. Zero-length spans are
    dropped (VAU-Bench's "no detection" case). With a duration, spans are clipped to [0, duration]
    and spans wholly outside it dropped.
    """
    if not text:
        return []
    raw: list[tuple[float, float, bool, bool]] = []  # start, end, percent, explicit seconds/clock
    for match in _SPAN_RE.finditer(text):
        bracketed = match.group("open") is not None and match.group("close") is not None
        if "," in _between(match) and not bracketed:
            continue
        a, b = match.group("a"), match.group("b")
        units = (match.group("ua") + match.group("ub")).lower()
        percent = "%" in units
        explicit = ":" in a or ":" in b or "s" in units
        raw.append((clock_to_seconds(a), clock_to_seconds(b), percent, explicit))
    if not raw:
        return []
    if unit == "fraction":
        fraction_all = True
    elif unit == "seconds":
        fraction_all = False
    else:
        fraction_all = (
            duration is not None
            and duration > 1.0
            and all(not explicit and 0.0 <= s <= 1.0 and 0.0 <= e <= 1.0 for s, e, percent, explicit in raw if not percent)
        )
    spans: list[Span] = []
    for start, end, percent, _explicit in raw:
        if percent:
            start, end = start / 100.0, end / 100.0
        if percent or fraction_all:
            if duration is not None:
                start, end = start * duration, end * duration
        if end < start:
            if reversed_spans == "drop":
                continue
            start, end = end, start
        if duration is not None:
            if start >= duration:
                continue
            start, end = max(0.0, start), min(float(duration), end)
        if end <= start:
            continue
        spans.append((float(start), float(end)))
    return spans


def answer_spans(reply: str | None, duration: float | None = None, **options) -> list[Span]:
    """The spans of a whole reply, read from its `<when>` / `<glue>` / `<answer>` (see `span_scope`).

    Reasoning text often mentions times ("from 3 to 5 s the man runs"); only the answer counts.
    """
    return parse_spans(span_scope(reply or ""), duration, **options)


def _between(match: re.Match[str]) -> str:
    """The separator text between the two times of a span match."""
    return match.string[match.end("ua") : match.start("b")]


def merge_spans(spans: Sequence[Span]) -> list[Span]:
    """Sorted, non-overlapping union of intervals (empty and inverted ones ignored)."""
    merged: list[list[float]] = []
    for start, end in sorted((float(s), float(e)) for s, e in spans if e > s):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


def _total(spans: Sequence[Span]) -> float:
    return sum(e - s for s, e in spans)


def spans_iou(pred: Sequence[Span] | Span | None, gt: Sequence[Span] | Span | None) -> float:
    """IoU of the union of predicted segments against the union of true segments.

    |∪pred ∩ ∪gt| / |∪pred ∪ ∪gt|; 0.0 when either side is empty. For one segment each this equals
    `tags.temporal_iou`. A single `(start, end)` tuple is accepted on either side.
    """
    p, g = merge_spans(_as_list(pred)), merge_spans(_as_list(gt))
    if not p or not g:
        return 0.0
    inter, i, j = 0.0, 0, 0
    while i < len(p) and j < len(g):
        inter += max(0.0, min(p[i][1], g[j][1]) - max(p[i][0], g[j][0]))
        if p[i][1] < g[j][1]:
            i += 1
        else:
            j += 1
    union = _total(p) + _total(g) - inter
    return inter / union if union > 0 else 0.0


def _as_list(spans: Sequence[Span] | Span | None) -> list[Span]:
    if spans is None:
        return []
    if len(spans) == 2 and all(isinstance(x, (int, float)) for x in spans):  # a single (s, e)
        return [(float(spans[0]), float(spans[1]))]  # type: ignore[index]
    return [(float(s), float(e)) for s, e in spans]  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# classes and normal vs abnormal

# Where a class answer lives: Vad-R1 `<which>`, then `<answer>`.
CLASS_TAGS = ("which", "answer")
_CLASS_LEAD = re.compile(r"^\s*(?:the\s+)?(?:anomaly\s+)?(?:class|category|type|label|answer)?\s*(?:is|:)?\s*", re.I)


def _spelling_regex(spelling: str) -> re.Pattern[str]:
    words = [w for w in re.split(r"[\s_\-]+", spelling.strip()) if w]
    body = r"[\s_\-]*".join(re.escape(w) for w in words)
    return re.compile(rf"(?<![0-9a-z]){body}s?(?![0-9a-z])", re.I)


def _class_regexes(taxonomy: Taxonomy) -> list[tuple[str, re.Pattern[str]]]:
    cached = _REGEX_CACHE.get(id(taxonomy))
    if cached is None or cached[0] is not taxonomy:
        pairs = [(info.name, _spelling_regex(sp)) for info in taxonomy.classes for sp in (info.name, *info.aliases)]
        cached = (taxonomy, pairs)
        _REGEX_CACHE[id(taxonomy)] = cached
    return cached[1]


_REGEX_CACHE: dict[int, tuple[Taxonomy, list[tuple[str, re.Pattern[str]]]]] = {}


def _class_scope(text: str) -> str:
    for tag in CLASS_TAGS:
        inner = extract_tag(text, tag)
        if inner is not None:
            return inner
    return text


def extract_class(text: str | None, taxonomy: Taxonomy | None = None) -> str | None:
    """The canonical class a reply names, via the taxonomy's alias table; None when unclear.

    Looks in `<which>`, else `<answer>`, else the whole reply. The scope as a whole is looked up
    first ('road accident' → Traffic_accident, 'Fighting.' → Fighting); otherwise every class
    spelling is searched as whole words, and the answer counts only when exactly one canonical
    class is named (a reply naming two classes is ambiguous, not a lucky hit).
    """
    if not text or not text.strip():
        return None
    tax = taxonomy or default_taxonomy()
    scope = _class_scope(text)
    for candidate in (scope, _CLASS_LEAD.sub("", scope, count=1)):
        name = tax.lookup(candidate.strip().strip(".").strip())
        if name:
            return name
    found = {name for name, regex in _class_regexes(tax) if regex.search(scope)}
    if len(found) == 1:
        return found.pop()
    return None


_NEGATED = re.compile(
    r"\b(?:no|not|nothing|without|none|non)[\s\-]+(?:\w+[\s\-]+){0,2}?(?:abnormal\w*|anomal\w*|unusual)\b|\bnon-?anomalous\b",
    re.I,
)
_NOT_NORMAL = re.compile(r"\b(?:not|isn't|isnt)\s+(?:\w+\s+)?normal\b", re.I)
_ABNORMAL = re.compile(r"\b(?:abnormal\w*|anomal\w*|yes)\b", re.I)
_NORMAL = re.compile(r"\b(?:normal|no|none)\b", re.I)


def predicts_abnormal(text: str | None, taxonomy: Taxonomy | None = None) -> bool | None:
    """Whether a reply says the video is abnormal (True), normal (False), or cannot be told (None).

    Reads Vad-R1's `<which>` first (a class: Normal → False, any other class → True; or the words
    below), then `<answer>` (VAU-R1 TAG writes `Anomaly` / `No anomaly`, our reflection prompts
    `normal` or a span), then the whole reply. Negations ("no anomaly", "nothing abnormal",
    "not abnormal", "non-anomalous") mean normal; "not normal", "abnormal", "anomaly", "yes"
    mean abnormal; "normal", "no", "none" mean normal; a time span or a non-normal class name means abnormal.
    """
    if not text or not text.strip():
        return None
    tax = taxonomy or default_taxonomy()
    for scope in _abnormal_scopes(text):
        verdict = _verdict(scope, tax)
        if verdict is not None:
            return verdict
    return None


def _abnormal_scopes(text: str) -> list[str]:
    scopes = [inner for inner in (extract_tag(text, "which"), extract_tag(text, "answer")) if inner is not None]
    return scopes or [text]


def _verdict(scope: str, tax: Taxonomy) -> bool | None:
    name = tax.lookup(scope.strip().strip("."))
    if name is not None:
        return name != NORMAL
    if _NEGATED.search(scope):
        return False
    if _NOT_NORMAL.search(scope) or _ABNORMAL.search(scope):
        return True
    if _NORMAL.search(scope):
        return False
    if parse_spans(scope):
        return True
    named = extract_class(scope, tax)
    if named is not None:
        return named != NORMAL
    return None


def is_normal_class(name: str | None, taxonomy: Taxonomy | None = None) -> bool:
    """True when `name` is the Normal class under any of its spellings."""
    return name is not None and class_key(name) != "" and (taxonomy or default_taxonomy()).is_normal(name)
