"""What every source parser produces, plus the small helpers they share.

A parser turns one annotation file into `SourceRow`s (one per video, in the source's own units)
and `Problem`s (rows it could not use, with a reason a person understands). It never opens a
video: matching names to files, probing, converting frames to seconds and checking spans against
the real duration happen once, in `pipelines/ingest.py`, for all sources alike.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

from vau_annotate.annotate.classes import NORMAL, Taxonomy
from vau_annotate.schemas.video import MCQ, ClassSource, Label

SpanUnit = Literal["seconds", "frames"]
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp")
MISSING = {"", "-1", "-1.0", "nan"}  # how sources write "nothing"; not "None": it can be an answer option


class SourceFormatError(Exception):
    """The whole file cannot be read as the chosen source (wrong columns, not JSON, unreadable)."""


@dataclass
class Problem:
    """One annotation row that cannot be used; `reason` is 'short phrase: specifics'."""

    item: str
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class SourceRow:
    """Everything one source says about one video, before the file is found and probed."""

    name: str
    rows: list[int]
    lookup: list[str] = field(default_factory=list)
    hint: str | None = None
    label: Label = "unlabeled"
    category: str | None = None
    spans: list[tuple[float, float]] = field(default_factory=list)
    span_unit: SpanUnit = "seconds"
    span_known: bool = False
    mcqs: list[MCQ] = field(default_factory=list)
    key_object: str | None = None
    description: str | None = None
    reasoning: dict[str, str] = field(default_factory=dict)
    think: str | None = None
    answer: str | None = None
    total_frames: int | None = None
    class_source: ClassSource | None = None
    source_class: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def where(self) -> dict[str, Any]:
        """Row numbers for a reject's detail."""
        return {"rows": self.rows} if len(self.rows) > 1 else {"row": self.rows[0]}


@dataclass
class ParsedSource:
    """A parser's result; `records` counts the annotation records read (for the summary).

    `include_unlisted` asks ingest to add every video the file does not name (folder source);
    `mentioned` are all names the file uses, rejected rows included, so that a video whose row
    was rejected is not silently re-added as unlabeled. `warnings` are whole-file remarks that
    cost no row (an optional column missing, a delimiter other than the comma).
    """

    rows: list[SourceRow]
    problems: list[Problem]
    records: int
    include_unlisted: bool = False
    mentioned: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def present(value: Any) -> str | None:
    """The stripped text of a field, or None for the ways sources write 'nothing' (-1, nan, '')."""
    if value is None:
        return None
    if isinstance(value, float) and value != value:
        return None
    text = str(value).strip()
    return None if text.lower() in MISSING else text


def parse_time(value: Any) -> float | None:
    """Seconds from '12.5', '00:12.5', '1:02:03'; None for missing; ValueError when unreadable."""
    text = present(value)
    if text is None:
        return None
    if ":" in text:
        parts = text.split(":")
        if len(parts) > 3:
            raise ValueError(text)
        seconds = 0.0
        for part in parts:
            seconds = seconds * 60 + float(part)
        return seconds
    number = float(text)
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(text)
    return number


def parse_frame(value: Any) -> int | None:
    """A frame index from 123, '123', '123.0'; None for missing/-1; ValueError when unreadable."""
    text = present(value)
    if text is None:
        return None
    number = float(text)
    if number != int(number):
        raise ValueError(text)
    return int(number)


def span_problem(start: float | None, end: float | None) -> str | None:
    """Why a (start, end) pair in source units is unusable, or None when it is fine or absent."""
    if start is None and end is None:
        return None
    if start is None or end is None:
        return f"incomplete span: start {start}, end {end}"
    if start < 0 or end < 0:
        return f"negative time: start {start}, end {end}"
    if end < start:
        return f"span end before start: end {end} < start {start}"
    if end == start:
        return f"empty span: start and end are both {start}"
    return None


def is_zero_span(start: float | None, end: float | None) -> bool:
    return start == 0 and end == 0


def resolve_label(
    row: SourceRow, raw_class: str | None, taxonomy: Taxonomy, default_when_empty: Label = "unlabeled", infer: bool = True,
    keep_unknown: bool = False, benchmark: str | None = None,
) -> Problem | None:
    """Fill row.category/label/class_source from a raw class and row.spans; a Problem when unusable.

    Normal class → normal. A span on a normal row is a conflict the row survives: the video and
    its questions are kept, the span is left out (so it never becomes grounding data) and a
    warning on the record says so. Any other class → abnormal, span known when one is given.
    No class → class read off the file name (when `infer`: dataset files are named after their
    class, arbitrary folders are not), mapped to `benchmark`'s own label for it, else the spans
    decide. An unknown class is a Problem, unless `keep_unknown` (sources whose records carry
    paid-for reasoning text): then it is kept as given, with a warning.
    """
    where = row.where
    category = None
    if raw_class is not None:
        row.source_class = raw_class
        category = taxonomy.lookup(raw_class)
        if category is None:
            near = taxonomy.near(raw_class)
            hint = f" (near: {', '.join(near)})" if near else ""
            if not keep_unknown:
                return Problem(row.name, f"unknown class: {raw_class!r}{hint}", {**where, "class": raw_class, "near_matches": near})
            category = raw_class
            row.warnings.append(f"unknown class: {raw_class!r} is not in the {taxonomy.name} taxonomy{hint}; kept as given")
        row.class_source = "annotation"
    elif infer:
        category = taxonomy.infer_from_name(row.name, within=benchmark)
        if category is not None:
            row.class_source = "file-name"
    row.category = category
    if category == NORMAL:
        if row.spans:
            shown = ", ".join(f"{s:g}-{e:g}" for s, e in row.spans)
            row.warnings.append(f"normal video with a span: class Normal but span {shown} ({row.span_unit}) given; the span is left out of grounding data")
            row.spans = []
        row.label = "normal"
    elif category is not None or row.spans:
        row.label = "abnormal"
    else:
        row.label = default_when_empty
    row.span_known = bool(row.spans) and row.label == "abnormal"
    return None


def parse_records(
    records: Iterable[tuple[int, Any]], parse: Callable[[Any, int, Taxonomy], tuple[SourceRow | None, Problem | None]], taxonomy: Taxonomy
) -> tuple[list[SourceRow], list[Problem]]:
    """Run a source's per-record parser over numbered records, keeping rows and problems apart."""
    rows: list[SourceRow] = []
    problems: list[Problem] = []
    for number, record in records:
        row, problem = parse(record, number, taxonomy)
        if row:
            rows.append(row)
        if problem:
            problems.append(problem)
    return rows, problems


def merge_rows(rows: Iterable[SourceRow], mode: Literal["mcqs", "spans", "none"]) -> tuple[list[SourceRow], list[Problem]]:
    """Fold rows naming the same video into one (first row wins the per-video fields).

    mode 'mcqs' (VAU-Bench: one question per row, class and span repeated): later rows add their
    questions and must agree on class and span. 'spans' (folder manifests): later rows add spans.
    'none' (UCF-Crime, Vad-Reasoning: one line per video): a repeated video is a problem.
    """
    merged: dict[str, SourceRow] = {}
    problems: list[Problem] = []
    for row in rows:
        key = (row.lookup[0] if row.lookup else row.name).strip()
        first = merged.get(key)
        if first is None:
            merged[key] = row
            continue
        conflict = _conflict(first, row, compare_spans=(mode != "spans"))
        if mode == "none":
            problems.append(Problem(row.name, f"duplicate video: already annotated in row {first.rows[0]}", {"row": row.rows[0], "first_row": first.rows[0]}))
        elif conflict:
            problems.append(Problem(row.name, f"conflicting annotations: {conflict}", {"row": row.rows[0], "first_row": first.rows[0]}))
        else:
            _absorb(first, row, mode)
    return list(merged.values()), problems


def _conflict(first: SourceRow, other: SourceRow, compare_spans: bool) -> str | None:
    if first.label != other.label or first.category != other.category:
        return f"row {other.rows[0]} says {other.category or other.label}, row {first.rows[0]} says {first.category or first.label}"
    if compare_spans and (first.spans != other.spans or first.span_known != other.span_known):
        return f"row {other.rows[0]} has span {other.spans or 'unknown'}, row {first.rows[0]} has {first.spans or 'unknown'}"
    return None


def _absorb(first: SourceRow, other: SourceRow, mode: str) -> None:
    first.rows.extend(other.rows)
    for mcq in other.mcqs:
        if mcq not in first.mcqs:
            first.mcqs.append(mcq)
    if mode == "spans":
        for span in other.spans:
            if span not in first.spans:
                first.spans.append(span)
        first.span_known = bool(first.spans) and first.label == "abnormal"
    first.key_object = first.key_object or other.key_object
    first.description = first.description or other.description
    first.reasoning = first.reasoning or other.reasoning
    first.think = first.think or other.think
    first.answer = first.answer or other.answer
    for warning in other.warnings:
        if warning not in first.warnings:
            first.warnings.append(warning)


def read_text(path: Path) -> str:
    """The file's text (UTF-8, BOM tolerated); SourceFormatError when it cannot be read."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SourceFormatError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceFormatError(f"{path} is not UTF-8 text (byte {exc.start}): is it the annotation file?") from None
    if not text.strip():
        raise SourceFormatError(f"{path} is empty")
    return text


DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "vertical bar"}


def csv_delimiter(text: str) -> tuple[str, str | None]:
    """The delimiter of a CSV (the one that splits its header into the most cells; ties → comma)
    and a warning when it is not the comma (spreadsheets in many locales save with ';')."""
    first = text.lstrip("\ufeff").splitlines()[0] if text.strip() else ""
    counts = {d: len(next(csv.reader(io.StringIO(first), delimiter=d), [])) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: (counts[d], d == ","))
    if best == "," or counts[best] <= counts[","]:
        return ",", None
    return best, f"{DELIMITERS[best]}-separated file: read with {best!r} as the delimiter"


def looks_like(text: str) -> str | None:
    """A guess at which source format `text` is, for error messages about the wrong --source."""
    head = text.lstrip()[:4096]
    if head.startswith(("{", "[")):
        first = head.splitlines()[0]
        if "anomaly_type" in first or '"think"' in first or "total_frames" in first:
            return "vad-reasoning"
        if '"video"' in first:
            return "folder"
        return None
    header = next(csv.reader(io.StringIO(head.splitlines()[0]), delimiter=csv_delimiter(head)[0]), [])
    columns = {c.strip().lower() for c in header}
    if {"video name", "question"} <= columns:
        return "vau-bench"
    if "video" in columns:
        return "folder"
    tokens = head.splitlines()[0].split()
    if tokens and tokens[0].lower().endswith(VIDEO_EXTENSIONS) and all(re.fullmatch(r"-?\d+", t) for t in tokens[2:]):
        return "ucf-crime"
    return None


def wrong_source_hint(text: str, chosen: str) -> str:
    """' (it looks like a X file: try --source X)' or '' — appended to whole-file errors."""
    guess = looks_like(text)
    if guess and guess != chosen:
        return f"; it looks like a {guess} file: try --source {guess}"
    return ""


def json_records(text: str) -> list[tuple[int, Any]]:
    """(line number, parsed value) per JSONL line — or per element of a JSON array file.

    A line that is not JSON yields the JSONDecodeError as its value so the caller can reject
    just that line.
    """
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, list):
            return [(i + 1, item) for i, item in enumerate(data)]
    out: list[tuple[int, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            out.append((number, exc))
    return out
