"""Vad-Reasoning (Vad-R1) JSONL: one video per line with its existing <think>/<answer> text.

Keys: source, video, anomaly_type, start, end, total_frames, path, think, answer. `start`/`end`
are frame indices (ingest converts them with the probed fps and compares `total_frames` with the
probed frame count). `path` is absolute on the machine that made the file; ingest re-roots it
under --videos by matching its trailing components. A JSON array file is read the same way.
Classes are read in Vad-R1's own taxonomy (`data/classes_vad_reasoning.json`, chosen by ingest);
an `anomaly_type` it does not know is kept as written, with a warning on the record.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from vau_annotate.annotate.classes import Taxonomy
from vau_annotate.annotate.sources.base import (
    ParsedSource,
    parse_records,
    Problem,
    SourceFormatError,
    SourceRow,
    is_zero_span,
    json_records,
    looks_like,
    merge_rows,
    parse_frame,
    present,
    read_text,
    resolve_label,
    span_problem,
    wrong_source_hint,
)

KEYS = ("source", "video", "anomaly_type", "start", "end", "total_frames", "path", "think", "answer")


def parse(path: Path, taxonomy: Taxonomy) -> ParsedSource:
    """Parse a Vad-Reasoning JSONL (or JSON array) file into SourceRows (spans in frames)."""
    text = read_text(path)
    guess = looks_like(text)
    if guess not in (None, "vad-reasoning"):
        raise SourceFormatError(f"{path} is not a Vad-Reasoning JSONL file{wrong_source_hint(text, 'vad-reasoning')}")
    records = json_records(text)
    objects = [value for _, value in records if isinstance(value, dict)]
    if not objects:
        raise SourceFormatError(f"{path}: no line is a JSON object; expected JSONL with keys {', '.join(KEYS)}{wrong_source_hint(text, 'vad-reasoning')}")
    if not any({"video", "path"} & set(obj) for obj in objects):
        found = sorted({key for obj in objects for key in obj})[:10]
        raise SourceFormatError(f"{path}: no record has a 'video' or 'path' key (found keys: {', '.join(found)}); expected {', '.join(KEYS)}")
    rows, problems = parse_records(records, _parse_record, taxonomy)
    merged, duplicates = merge_rows(rows, mode="none")
    return ParsedSource(rows=merged, problems=problems + duplicates, records=len(records))


def _parse_record(value: Any, number: int, taxonomy: Taxonomy) -> tuple[SourceRow | None, Problem | None]:
    if isinstance(value, json.JSONDecodeError):
        return None, Problem(f"line {number}", f"invalid JSON: {value.msg} at column {value.colno}", {"row": number})
    if not isinstance(value, dict):
        return None, Problem(f"line {number}", f"malformed record: expected a JSON object, got {type(value).__name__}", {"row": number})
    video = present(value.get("video"))
    original = present(value.get("path"))
    name = video or (PurePosixPath(original.replace("\\", "/")).name if original else None)
    if name is None:
        return None, Problem(f"line {number}", "missing video name: neither 'video' nor 'path' is given", {"row": number})
    where = {"row": number}
    try:
        start, end, total = (parse_frame(value.get(key)) for key in ("start", "end", "total_frames"))
    except (ValueError, TypeError):
        shown = {key: value.get(key) for key in ("start", "end", "total_frames")}
        return None, Problem(name, f"unparsable frame number: {shown}", {**where, **shown})
    row = SourceRow(name=name, rows=[number], lookup=[p for p in (original, video) if p], span_unit="frames", total_frames=total)
    if not is_zero_span(start, end):
        problem = span_problem(start, end)
        if problem:
            return None, Problem(name, problem, {**where, "start": start, "end": end})
        if start is not None and end is not None:
            row.spans = [(float(start), float(end))]
    # an unknown class never costs the record its think/answer: kept as given, with a warning
    problem = resolve_label(row, present(value.get("anomaly_type")), taxonomy, default_when_empty="normal", keep_unknown=True)
    if problem:
        problem.detail.update(where)
        return None, problem
    row.think = present(value.get("think"))
    row.answer = present(value.get("answer"))
    return row, None
