"""VAU-Bench CSV, its 13 columns: Video Name, Question, Option 1–4, Correct Option, Key Object,
Description, Reasoning, Anomaly Class, Start Time, End Time. One line per multiple-choice question;
times in seconds, `0.0,0.0` for a normal video and `-1.0,-1.0` for an unknown span (the quirks
VAU-Bench itself uses, which ingest resolves). Files are train.csv / val.csv / test.csv, so
`ingest --source vau-bench` and `export --split column` read them back with their splits."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from vau_annotate.pipelines.formats.base import FormatContext, SplitFiles

COLUMNS = ["Video Name", "Question", "Option 1", "Option 2", "Option 3", "Option 4", "Correct Option", "Key Object",
           "Description", "Reasoning", "Anomaly Class", "Start Time", "End Time"]


def _line(values: list) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()


def write(context: FormatContext, folder: Path) -> None:
    files = SplitFiles(folder, "csv", header=_line(COLUMNS))
    result = context.result("vau-bench")
    for split, video in context.videos():
        v = video.record
        if not v.mcqs:
            result.skips["video has no multiple-choice question"] += 1
            continue
        if v.label == "normal":
            start, end, category = 0.0, 0.0, "Normal"
        elif v.span_known and v.spans:
            start, end, category = v.spans[0].start, max(s.end for s in v.spans), v.category or ""
        else:
            start, end, category = -1.0, -1.0, v.category or ""
        reasoning = repr(dict(v.reasoning)) if v.reasoning else ""
        for mcq in v.mcqs:
            files.write(split, _line([v.source_name or v.id, mcq.question, *mcq.options, mcq.answer, v.key_object or "",
                                      v.description or "", reasoning, category, start, end]))
            result.rows[split] += 1
    files.close()
