"""Generic gates every generating stage can reuse: sentences, words, neutrality, repetition, tags.

Each factory takes a `texts` function that picks named parts out of a candidate
(`lambda c: {"step1": c.steps[0], ...}`) plus the gate's thresholds, so the same gate serves the
CoT chain, reflection triples and anything later without knowing their record types. The pure
measuring functions (`split_sentences`, `count_words`, `Lexicon.find`, `overlap`, `tag_problems`)
are exported too, for tests and for stages that want the number rather than a verdict.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence, TypeVar

from vau_annotate.annotate.checks import Finding, Gate
from vau_annotate.annotate.tags import extract_tag, strip_outside, tag_sequence, unbalanced_tags

S = TypeVar("S")
Texts = Callable[[S], Mapping[str, str]]
Band = Callable[[S], "tuple[int, int] | None"]

# -- measuring ---------------------------------------------------------------------------------

# Abbreviations whose trailing period does not end a sentence.
_ABBREVIATIONS = {"e.g", "i.e", "etc", "vs", "approx", "mr", "mrs", "ms", "dr", "st", "no", "fig", "sec", "min"}
_SENTENCE_END = re.compile(r"([.!?]+)[\"')\]]*\s+")
_WORD = re.compile(r"[A-Za-z0-9]+(?:['’\-][A-Za-z0-9]+)*")
_TAG = re.compile(r"</?[A-Za-z][\w]*>")
_ANY_TAG = re.compile(r"</?([A-Za-z][\w]*)>")


def split_sentences(text: str) -> list[str]:
    """Sentences of plain prose: split after . ! ? followed by space, not after abbreviations or inside numbers."""
    clean = _TAG.sub(" ", text or "").strip()
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(clean):
        before = clean[start:match.start()].split()
        last = before[-1].lower().rstrip(".") if before else ""
        if match.group(1) == "." and (last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha())):
            continue
        sentences.append(clean[start:match.end()].strip())
        start = match.end()
    sentences.append(clean[start:].strip())
    return [s for s in sentences if _WORD.search(s)]


def count_words(text: str) -> int:
    """Words as a reader counts them (tags removed; 'car's' and 'left-hand' are one word each)."""
    return len(_WORD.findall(_TAG.sub(" ", text or "")))


def _normal_words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(_TAG.sub(" ", text or ""))]


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = _normal_words(text)
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def overlap(a: str, b: str, n: int = 4) -> float:
    """Share of the shorter text's word n-grams that also occur in the other (0 = none, 1 = contained)."""
    grams_a, grams_b = ngrams(a, n), ngrams(b, n)
    if not grams_a or not grams_b:
        return 0.0
    return len(grams_a & grams_b) / min(len(grams_a), len(grams_b))


def shared_sentences(a: str, b: str, min_words: int = 6) -> list[str]:
    """Sentences of `b` (at least `min_words` long) that also occur, word for word, in `a`."""
    seen = {" ".join(_normal_words(s)) for s in split_sentences(a)}
    return [s for s in split_sentences(b) if len(_normal_words(s)) >= min_words and " ".join(_normal_words(s)) in seen]


@dataclass(frozen=True)
class Lexicon:
    """Terms an annotation must not use, by category (see data/neutrality_lexicon.txt)."""

    terms: Mapping[str, tuple[str, ...]]

    @classmethod
    def parse(cls, text: str) -> Lexicon:
        terms: dict[str, list[str]] = {}
        category = "other"
        for raw in text.splitlines():
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith("[") and line.endswith("]"):
                category = line[1:-1].strip()
                continue
            terms.setdefault(category, []).append(line.lower())
        return cls({k: tuple(v) for k, v in terms.items()})

    @classmethod
    def load(cls, path: str | Path | None = None) -> Lexicon:
        """The given lexicon file, or the bundled one."""
        if path is not None:
            return cls.parse(Path(path).read_text(encoding="utf-8"))
        return default_lexicon()

    def find(self, text: str) -> list[tuple[str, str]]:
        """(category, term) of every listed term found in the text, each once, in lexicon order."""
        return [(category, term) for category, term, pattern in self._patterns if pattern.search(text or "")]

    @property
    def _patterns(self) -> list[tuple[str, str, re.Pattern[str]]]:
        return _compile(tuple((c, t) for c, ts in self.terms.items() for t in ts))


@lru_cache(maxsize=8)
def _compile(pairs: tuple[tuple[str, str], ...]) -> list[tuple[str, str, re.Pattern[str]]]:
    out = []
    for category, term in pairs:
        body = r"[\s\-]+".join(re.escape(word) for word in re.split(r"[\s\-]+", term))
        out.append((category, term, re.compile(rf"(?<![\w-]){body}(?![\w-])", re.I)))
    return out


@lru_cache(maxsize=1)
def default_lexicon() -> Lexicon:
    text = resources.files("vau_annotate").joinpath("data/neutrality_lexicon.txt").read_text(encoding="utf-8")
    return Lexicon.parse(text)


def tag_problems(text: str, expected: Sequence[str]) -> list[str]:
    """What keeps `text` from being exactly the top-level tags `expected`, each non-empty, nothing outside.

    `expected=()` means the text must contain no tags at all (plain prose inside a tag).
    """
    names = sorted({m.group(1).lower() for m in _ANY_TAG.finditer(text or "")})
    if not expected:
        return [f"contains tags it must not: {', '.join(f'<{n}>' for n in names)}"] if names else []
    problems = [f"<{t}> is not closed (or not opened)" for t in unbalanced_tags(text, tuple(names))]
    if problems:
        return problems
    sequence = tag_sequence(text)
    if sequence != list(expected):
        return [f"tags are {_show(sequence)}, expected {_show(expected)}"]
    if strip_outside(text, tuple(expected)):
        problems.append("has text outside the tags")
    for tag in expected:
        if extract_tag(text, tag) == "":
            problems.append(f"<{tag}> is empty")
    return problems


def _show(tags: Iterable[str]) -> str:
    shown = "".join(f"<{t}>" for t in tags)
    return shown or "none"


# -- gate factories ----------------------------------------------------------------------------

def sentence_count_gate(name: str, texts: Texts[S], low: int, high: int) -> Gate[S]:
    """Every part has between `low` and `high` sentences."""

    def find(candidate: S) -> list[Finding]:
        out = []
        for part, text in texts(candidate).items():
            n = len(split_sentences(text))
            if not low <= n <= high:
                out.append(Finding(part, f"has {n} sentence{'s' if n != 1 else ''}; write {low}–{high}"))
        return out

    return Gate(name, f"every part has {low}–{high} sentences", find)


def word_band_gate(name: str, texts: Texts[S], band: Band[S], what: str = "the text") -> Gate[S]:
    """The parts together have a word count inside `band(candidate)` (None = no band applies).

    A miss is reported on every part with a per-part target, so a repair can lengthen or shorten
    each part evenly instead of guessing which one to change.
    """

    def find(candidate: S) -> list[Finding]:
        limits = band(candidate)
        parts = texts(candidate)
        if limits is None or not parts:
            return []
        low, high = limits
        counts = {part: count_words(text) for part, text in parts.items()}
        total = sum(counts.values())
        if low <= total <= high:
            return []
        target = round((low + high) / 2 / len(parts))
        direction = "too short" if total < low else "too long"
        return [
            Finding(part, f"{what} is {direction} ({total} words; {low}–{high} wanted): this part has {n} words, aim for about {target}")
            for part, n in counts.items()
        ]

    return Gate(name, f"{what} has a word count inside its band", find)


def lexicon_gate(name: str, texts: Texts[S], lexicon: Lexicon | Callable[[], Lexicon]) -> Gate[S]:
    """No part uses a term of the lexicon (terms are reported with their category)."""

    def find(candidate: S) -> list[Finding]:
        words = lexicon() if callable(lexicon) else lexicon
        out = []
        for part, text in texts(candidate).items():
            hits = words.find(text)
            if hits:
                listed = ", ".join(f"'{term}' ({category})" for category, term in hits)
                out.append(Finding(part, f"uses {listed}; use neutral words such as 'a person' or 'the driver'"))
        return out

    return Gate(name, "no word or phrase of the neutrality lexicon", find)


def repetition_gate(name: str, texts: Texts[S], threshold: float = 0.5, n: int = 4, min_sentence_words: int = 6) -> Gate[S]:
    """No part repeats an earlier one: n-gram overlap below `threshold` and no sentence copied verbatim.

    The later part of a repeating pair is blamed, since the earlier one said it first.
    """

    def find(candidate: S) -> list[Finding]:
        items = list(texts(candidate).items())
        out = []
        for j, (later, text_j) in enumerate(items):
            for earlier, text_i in items[:j]:
                share = overlap(text_i, text_j, n)
                copied = shared_sentences(text_i, text_j, min_sentence_words)
                if share >= threshold:
                    out.append(Finding(later, f"repeats {earlier} ({share:.0%} of its {n}-word phrases are shared); add new content instead"))
                elif copied:
                    out.append(Finding(later, f"copies a sentence of {earlier}: \"{_clip(copied[0])}\""))
        return out

    return Gate(name, f"no part repeats another (≥ {threshold:.0%} shared {n}-grams or a copied sentence)", find)


def tag_layout_gate(name: str, layouts: Callable[[S], Iterable[tuple[str, str, Sequence[str]]]]) -> Gate[S]:
    """Every (part, text, expected top-level tags) triple is well formed (see `tag_problems`)."""

    def find(candidate: S) -> list[Finding]:
        return [Finding(part, problem) for part, text, expected in layouts(candidate) for problem in tag_problems(text, expected)]

    return Gate(name, "well-formed tags in exactly the expected order", find)


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
