"""A plain folder of videos, optionally with a manifest saying what some of them show.

The manifest (CSV with a header, or JSONL) has columns `video, label, category, start, end`; only
`video` is required, times are seconds, several rows for one video add spans. It is the
ANNOTATIONS argument, or `manifest.csv` / `manifest.jsonl` in the folder. Videos the manifest
does not name are ingested as label "unlabeled" (ingest adds them: it owns the file listing).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from vau_annotate.annotate.classes import NORMAL, Taxonomy
from vau_annotate.annotate.sources.base import (
    ParsedSource,
    csv_delimiter,
    parse_records,
    Problem,
    SourceFormatError,
    SourceRow,
    is_zero_span,
    json_records,
    merge_rows,
    parse_time,
    present,
    read_text,
    resolve_label,
    span_problem,
    wrong_source_hint,
)
from vau_annotate.schemas.video import Label

COLUMNS = ("video", "label", "category", "start", "end")
MANIFEST_NAMES = ("manifest.csv", "manifest.jsonl")
LABELS: dict[str, Label] = {
    "normal": "normal", "0": "normal",
    "abnormal": "abnormal", "anomaly": "abnormal", "anomalous": "abnormal", "1": "abnormal",
    "unlabeled": "unlabeled", "unlabelled": "unlabeled", "unknown": "unlabeled",
}


def find_manifest(folder: Path) -> Path | None:
    """The folder's own manifest.csv / manifest.jsonl, if it has one."""
    for name in MANIFEST_NAMES:
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def parse(manifest: Path | None, taxonomy: Taxonomy) -> ParsedSource:
    """Rows of the manifest (none without one); ingest adds every unlisted video as unlabeled."""
    if manifest is None:
        return ParsedSource(rows=[], problems=[], records=0, include_unlisted=True)
    text = read_text(manifest)
    warnings: list[str] = []
    records = _json_rows(text, manifest) if _is_json(text) else _csv_rows(text, manifest, warnings)
    if not records:
        raise SourceFormatError(f"{manifest} has a header but no rows: there is nothing to ingest (remove it to ingest the folder unlabeled)")
    rows, problems = parse_records(records, _parse_record, taxonomy)
    merged, conflicts = merge_rows(rows, mode="spans")
    mentioned = [name for _, record in records if isinstance(record, dict) and (name := present(record.get("video")))]
    return ParsedSource(rows=merged, problems=problems + conflicts, records=len(records), include_unlisted=True, mentioned=mentioned,
                        warnings=warnings)


def _is_json(text: str) -> bool:
    return text.lstrip().startswith(("{", "["))


def _csv_rows(text: str, path: Path, warnings: list[str]) -> list[tuple[int, Any]]:
    delimiter, note = csv_delimiter(text)
    if note:
        warnings.append(note)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = [c.strip().lower() for c in (reader.fieldnames or [])]
    if "video" not in header:
        raise SourceFormatError(
            f"{path} lacks the folder-manifest column 'video' (columns: {', '.join(COLUMNS)}; "
            f"found: {', '.join(header[:8]) or 'no header'}){wrong_source_hint(text, 'folder')}"
        )
    reader.fieldnames = header
    try:
        return [(index, record) for index, record in enumerate(reader, start=2)]
    except csv.Error as exc:
        raise SourceFormatError(f"{path}: CSV cannot be read past line {reader.line_num}: {exc}") from None


def _json_rows(text: str, path: Path) -> list[tuple[int, Any]]:
    records = json_records(text)
    if not any(isinstance(value, dict) and "video" in value for _, value in records):
        raise SourceFormatError(f"{path}: no record has a 'video' key (columns: {', '.join(COLUMNS)}){wrong_source_hint(text, 'folder')}")
    return records


def _parse_record(record: Any, number: int, taxonomy: Taxonomy) -> tuple[SourceRow | None, Problem | None]:
    if not isinstance(record, dict):
        reason = f"invalid JSON: {record.msg}" if hasattr(record, "msg") else "malformed record: expected an object"
        return None, Problem(f"row {number}", reason, {"row": number})
    if None in record:
        return None, Problem(present(record.get("video")) or f"row {number}", "malformed row: more cells than header columns", {"row": number})
    name = present(record.get("video"))
    if name is None:
        return None, Problem(f"row {number}", "missing video name: the video cell is empty", {"row": number})
    row = SourceRow(name=name, rows=[number], lookup=[name])
    try:
        start, end = parse_time(record.get("start")), parse_time(record.get("end"))
    except (ValueError, TypeError):
        return None, Problem(name, f"unparsable time: start {record.get('start')!r}, end {record.get('end')!r}", {"row": number})
    if not is_zero_span(start, end):
        problem = span_problem(start, end)
        if problem:
            return None, Problem(name, problem, {"row": number})
        if start is not None and end is not None:
            row.spans = [(start, end)]
    problem = resolve_label(row, present(record.get("category")), taxonomy, infer=False)
    if problem:
        problem.detail["row"] = number
        return None, problem
    problem = _apply_label(row, present(record.get("label")))
    if problem:
        problem.detail["row"] = number
    return (None, problem) if problem else (row, None)


def _apply_label(row: SourceRow, raw: str | None) -> Problem | None:
    """Reconcile an explicit label with what category and span already imply."""
    if raw is None:
        return None
    label = LABELS.get(raw.lower())
    if label is None:
        return Problem(row.name, f"unknown label: {raw!r} (use normal, abnormal or unlabeled)", {"label": raw})
    if row.label != "unlabeled" and label != row.label:
        implied = f"category {row.category}" if row.category else "a span"
        return Problem(row.name, f"conflicting annotations: label {label} but {implied} implies {row.label}", {"label": raw})
    row.label = label
    if label == "normal":
        row.category = NORMAL
    return None
