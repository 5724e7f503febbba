"""VAU-Bench (VAU-R1) CSV: one multiple-choice question per row, several rows per video.

Columns: Video Name, Question, Option 1..4, Correct Option, Key Object, Description, Reasoning,
Anomaly Class, Start Time, End Time. Quirks resolved here, once:

- `-1,-1` = anomaly with unknown span; `0,0` on class Normal = normal video (on another class
  it is read as "span unknown" too: 0–0 is no interval).
- Rows whose QA fields are all `-1` carry only class and span (the video has no question).
- Video names carry a dataset prefix (`ecva_`, `ucf_`, `msad_`) that the file on disk lacks.
- `Reasoning` is a Python-dict string or `### Key: value` markdown (sometimes without the
  colon, sometimes cut off mid-string).
- `Correct Option` is a letter, or the option's text, 'Option 2', 'B. text', '(B)'.
"""

from __future__ import annotations

import ast
import csv
import difflib
import io
import json
import re
from pathlib import Path
from typing import Any

from vau_annotate.annotate.classes import VAU_BENCH, Taxonomy
from vau_annotate.annotate.sources.base import (
    ParsedSource,
    csv_delimiter,
    Problem,
    SourceFormatError,
    SourceRow,
    is_zero_span,
    merge_rows,
    parse_time,
    present,
    read_text,
    resolve_label,
    span_problem,
    wrong_source_hint,
)
from vau_annotate.schemas.video import LETTERS, MCQ

COLUMNS = (
    "Video Name", "Question", "Option 1", "Option 2", "Option 3", "Option 4", "Correct Option",
    "Key Object", "Description", "Reasoning", "Anomaly Class", "Start Time", "End Time",
)
REQUIRED = ("Video Name",)  # a row can do without anything else: no question, no class (file name), no span (unknown)
QUESTION_COLUMNS = ("Question", "Option 1", "Option 2", "Option 3", "Option 4", "Correct Option")
PREFIXES = ("ecva_", "ucf_", "msad_")
REASONING_KEYS = ("Specific Anomaly Type", "Location", "Key Evidence", "Detailed Explanation", "Cause and Effect", "Conclusion")
TEXT_KEY = "Text"


class RowError(ValueError):
    """A row that cannot be used; the message is the reject reason ('phrase: specifics')."""


# -- file ------------------------------------------------------------------------------------


def parse(path: Path, taxonomy: Taxonomy) -> ParsedSource:
    """Parse a VAU-Bench CSV into one SourceRow per video (questions merged) plus row problems.

    Only `Video Name` is required. A missing optional column reads as empty in every row, with a
    warning (Key Object, Description, Reasoning → none; Anomaly Class → from the file name;
    Start/End Time → span unknown; any question column → the file's questions are not read).
    """
    text = read_text(path)
    delimiter, delimiter_note = csv_delimiter(text)
    reader = csv.DictReader(io.StringIO(text, newline=""), restkey="__extra__", delimiter=delimiter)
    spelled = {c.lower(): c for c in COLUMNS}
    header = [spelled.get(c.strip().lower(), c.strip()) for c in (reader.fieldnames or [])]
    _check_header(header, text, path)
    warnings = [delimiter_note] if delimiter_note else []
    absent = [c for c in COLUMNS if c not in header]
    if absent:
        lost_questions = [c for c in QUESTION_COLUMNS if c in absent]
        effect = "; questions are not read (a question needs all of " + ", ".join(QUESTION_COLUMNS) + ")" if lost_questions else ""
        warnings.append(f"missing optional column(s): {', '.join(absent)} read as empty in every row{effect}")
    reader.fieldnames = header
    rows: list[SourceRow] = []
    problems: list[Problem] = []
    records = 0
    try:
        for index, record in enumerate(reader, start=2):
            records += 1
            try:
                rows.append(_parse_row(record, index, reader.line_num, header, taxonomy))
            except RowError as exc:
                name = present(record.get("Video Name")) or f"row {index}"
                problems.append(Problem(name, str(exc), {"row": index, "line": reader.line_num}))
    except csv.Error as exc:
        raise SourceFormatError(f"{path}: CSV cannot be read past line {reader.line_num}: {exc}") from None
    if records == 0:
        raise SourceFormatError(f"{path} has a header but no rows: there is nothing to ingest")
    merged, merge_problems = merge_rows(rows, mode="mcqs")
    return ParsedSource(rows=merged, problems=problems + merge_problems, records=records, warnings=warnings)


def _check_header(header: list[str], text: str, path: Path) -> None:
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise SourceFormatError(
            f"{path} lacks the required VAU-Bench column(s) {', '.join(missing)} "
            f"(found: {', '.join(header[:8]) or 'no header'}; a VAU-Bench file has {', '.join(COLUMNS)})"
            f"{wrong_source_hint(text, 'vau-bench')}"
        )


def _parse_row(record: dict[str, Any], index: int, line: int, header: list[str], taxonomy: Taxonomy) -> SourceRow:
    _check_shape(record, header)
    name = present(record.get("Video Name"))
    if name is None:
        raise RowError("missing video name: the Video Name cell is empty")
    row = SourceRow(name=name, rows=[index], lookup=lookup_names(name), hint=dataset_hint(name))
    start, end = _times(record)
    raw_class = present(record.get("Anomaly Class"))
    zero = is_zero_span(start, end)
    if not zero and (problem := span_problem(start, end)):
        raise RowError(problem)
    if start is not None and end is not None and not zero:
        row.spans = [(start, end)]
    problem = resolve_label(row, raw_class, taxonomy, benchmark=VAU_BENCH)
    if problem:
        raise RowError(problem.reason)
    mcq = parse_mcq(record) if all(c in header for c in QUESTION_COLUMNS) else None
    if mcq:
        row.mcqs.append(mcq)
    row.key_object = present(record.get("Key Object"))
    row.description = present(record.get("Description"))
    row.reasoning = parse_reasoning(record.get("Reasoning") or "")
    return row


def _check_shape(record: dict[str, Any], header: list[str]) -> None:
    """csv.DictReader pads short rows with None and collects surplus cells under restkey."""
    if record.get("__extra__"):
        raise RowError(f"malformed row: {len(header) + len(record['__extra__'])} cells, header has {len(header)}")
    short = [c for c in header if record.get(c) is None]
    if short:
        raise RowError(f"malformed row: {len(header) - len(short)} cells, header has {len(header)}")


def _times(record: dict[str, Any]) -> tuple[float | None, float | None]:
    values = []
    for column in ("Start Time", "End Time"):
        try:
            values.append(parse_time(record.get(column)))
        except ValueError:
            raise RowError(f"unparsable time: {column} is {record.get(column)!r}") from None
    return values[0], values[1]


# -- names -----------------------------------------------------------------------------------


def strip_prefix(name: str) -> str | None:
    """The name without its VAU-Bench dataset prefix, or None when it has none."""
    lowered = name.lower()
    for prefix in PREFIXES:
        if lowered.startswith(prefix) and len(name) > len(prefix):
            return name[len(prefix):]
    return None


def dataset_hint(name: str) -> str | None:
    """'ecva' / 'ucf' / 'msad' from the prefix: a folder of that name breaks ties on disk."""
    stripped = strip_prefix(name)
    return name[: len(name) - len(stripped) - 1].lower() if stripped else None


def lookup_names(name: str) -> list[str]:
    """Names to look for on disk, best first: as written, then without the dataset prefix."""
    stripped = strip_prefix(name)
    return [name, stripped] if stripped else [name]


# -- questions -------------------------------------------------------------------------------


def parse_mcq(record: dict[str, Any]) -> MCQ | None:
    """The row's question, or None for a row without one (all QA cells -1 or empty)."""
    question = present(record.get("Question"))
    options = [present(record.get(f"Option {i}")) for i in range(1, 5)]
    correct = present(record.get("Correct Option"))
    if question is None and not any(options) and correct is None:
        return None
    if question is None:
        raise RowError("incomplete question: options given but the Question cell is empty")
    empty = [f"Option {i + 1}" for i, option in enumerate(options) if option is None]
    if empty:
        raise RowError(f"incomplete question: {', '.join(empty)} empty")
    if correct is None:
        raise RowError("incomplete question: Correct Option is empty")
    return MCQ(question=question, options=[o for o in options if o], answer=answer_letter(correct, options))


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().strip("\"'").strip()).rstrip(".").casefold()


def answer_letter(correct: str, options: list[str | None]) -> str:
    """Map a Correct Option cell to A-D; RowError when it names no option.

    Accepts a letter ('B', 'b', '(B)', 'B.', 'B)'), 'Option 2', a bare 1-4, the option's text,
    'B. text' / '(B) text' whose text agrees with option B, and near-exact text (≥ 0.9 similar
    to exactly one option: stray quotes, a trailing period, double spaces).
    """
    texts = [_norm(o or "") for o in options]
    cell = correct.strip()
    if _norm(cell) in texts:
        return LETTERS[texts.index(_norm(cell))]
    letter = re.fullmatch(r"\(?([A-Da-d])\)?[.):]?", cell)
    if letter:
        return letter.group(1).upper()
    numbered = re.fullmatch(r"(?:option\s*)?([1-4])[.):]?", cell, flags=re.IGNORECASE)
    if numbered:
        return LETTERS[int(numbered.group(1)) - 1]
    prefixed = re.fullmatch(r"\(?([A-Da-d])(?:\)|[.):])\s*(.+)", cell, flags=re.DOTALL)
    if prefixed:
        chosen = LETTERS.index(prefixed.group(1).upper())
        if _similar(_norm(prefixed.group(2)), texts[chosen]):
            return LETTERS[chosen]
        raise RowError(f"correct option matches no option: {correct!r} names option {LETTERS[chosen]} but its text differs")
    close = [i for i, text in enumerate(texts) if _similar(_norm(cell), text)]
    if len(close) == 1:
        return LETTERS[close[0]]
    raise RowError(f"correct option matches no option: {correct!r}")


def _similar(a: str, b: str) -> bool:
    return bool(a) and bool(b) and (a == b or difflib.SequenceMatcher(None, a, b).ratio() >= 0.9)


# -- reasoning -------------------------------------------------------------------------------


def parse_reasoning(text: str) -> dict[str, str]:
    """Structured reasoning from either form the benchmark uses; {} when absent.

    Dict strings are read with ast.literal_eval; cut-off dict strings and `### Key: value`
    markdown are split on their keys. List values (Key Evidence) become '; '-joined text so both
    forms give the same shape. Text with no structure is kept whole under 'Text'.
    """
    cleaned = present(text)
    if cleaned is None:
        return {}
    if cleaned.startswith("{"):
        parsed = _literal_dict(cleaned)
        if parsed is not None:
            return parsed
        split = _split_dict_string(cleaned)
        if split:
            return split
    if "#" in cleaned:
        parsed = _markdown_sections(cleaned)
        if parsed:
            return parsed
    return {TEXT_KEY: cleaned}


def _literal_dict(text: str) -> dict[str, str] | None:
    for loader in (ast.literal_eval, json.loads):
        try:
            value = loader(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, dict):
            return {str(k).strip(): flatten(v) for k, v in value.items()}
    return None


def flatten(value: Any) -> str:
    """A reasoning value as text: lists joined with '; ', nested dicts as JSON."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "; ".join(flatten(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value).strip()


def _split_dict_string(text: str) -> dict[str, str]:
    """Recover the known keys of a dict string that was cut off (no closing brace)."""
    pattern = re.compile(r"""['"](%s)['"]\s*:\s*""" % "|".join(map(re.escape, REASONING_KEYS)))
    marks = list(pattern.finditer(text))
    out: dict[str, str] = {}
    for mark, following in zip(marks, marks[1:] + [None]):
        raw = text[mark.end(): following.start() if following else len(text)].strip().rstrip("},").strip()
        out[mark.group(1)] = _unquote(raw)
    return out


def _unquote(raw: str) -> str:
    try:
        value = ast.literal_eval(raw)
        return flatten(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return raw.strip("\"'").strip()


def _markdown_sections(text: str) -> dict[str, str]:
    sections = re.split(r"(?:^|\s)#{2,6}\s+", text)
    out: dict[str, str] = {}
    preamble = sections[0].strip()
    if preamble:
        out[TEXT_KEY] = preamble
    for section in sections[1:]:
        key, value = _section_key(section.strip())
        if key and key in out:
            if value and value not in out[key].split("\n"):  # a repeated block adds nothing
                out[key] = f"{out[key]}\n{value}"
        elif key:
            out[key] = value
    return out


def _section_key(section: str) -> tuple[str, str]:
    """Split '### Key: value' — or '### Location The event…' (no colon) — into key and value."""
    lowered = section.lower().lstrip("*")
    for known in sorted(REASONING_KEYS, key=len, reverse=True):
        if lowered.startswith(known.lower()):
            rest = section.lstrip("*")[len(known):].lstrip("*").lstrip()
            return known, _list_text(rest[1:].strip() if rest.startswith(":") else rest)
    head, colon, rest = section.partition(":")
    if colon and len(head) <= 60 and len(head.split()) <= 6:
        return head.strip(" *"), _list_text(rest.strip())
    first, _, rest = section.partition(" ")
    return first.strip(" *:"), _list_text(rest.strip())


def _list_text(value: str) -> str:
    """'['a', 'b']' inside markdown becomes 'a; b', matching the dict form."""
    if value.startswith("[") and value.endswith("]"):
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return value
        if isinstance(parsed, list):
            return flatten(parsed)
    return value
