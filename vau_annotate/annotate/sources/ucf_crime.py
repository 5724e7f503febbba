"""UCF-Crime temporal annotations: `Name.mp4  Class  s1 e1 s2 e2`, one video per line.

Start/end are frame numbers (-1 = no span; up to two spans in the official file, any even count
accepted here), whitespace separated. Normal videos have class `Normal` and -1s. A line with only
a name (the official train list, `Abuse/Abuse001_x264.mp4`) takes its class from the name. Frames
stay frames here: ingest converts them with each video's probed fps.
"""

from __future__ import annotations

import re
from pathlib import Path

from vau_annotate.annotate.classes import Taxonomy
from vau_annotate.annotate.sources.base import (
    ParsedSource,
    Problem,
    SourceFormatError,
    SourceRow,
    looks_like,
    merge_rows,
    parse_frame,
    read_text,
    resolve_label,
    span_problem,
    wrong_source_hint,
)

_NUMBER = re.compile(r"-?\d+(?:\.0*)?")


def parse(path: Path, taxonomy: Taxonomy) -> ParsedSource:
    """Parse a UCF-Crime temporal annotation file into SourceRows (spans in frames)."""
    text = read_text(path)
    guess = looks_like(text)
    if guess not in (None, "ucf-crime"):
        raise SourceFormatError(f"{path} is not a UCF-Crime temporal annotation file{wrong_source_hint(text, 'ucf-crime')}")
    rows: list[SourceRow] = []
    problems: list[Problem] = []
    records = 0
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        records += 1
        row, problem = _parse_line(tokens, number, taxonomy)
        if row:
            rows.append(row)
        if problem:
            problems.append(problem)
    if not records:
        raise SourceFormatError(f"{path} holds no annotation line (only blank or # comment lines): there is nothing to ingest")
    if not rows:
        first = next(line for line in text.splitlines() if line.strip())
        raise SourceFormatError(f"{path}: no line reads as `Name.mp4 Class start end start end` (first line: {first[:80]!r}){wrong_source_hint(text, 'ucf-crime')}")
    merged, duplicates = merge_rows(rows, mode="none")
    return ParsedSource(rows=merged, problems=problems + duplicates, records=records)


def _parse_line(tokens: list[str], number: int, taxonomy: Taxonomy) -> tuple[SourceRow | None, Problem | None]:
    name = tokens[0]
    rest = tokens[1:]
    raw_class = None
    if rest and not _NUMBER.fullmatch(rest[0]):
        raw_class, rest = rest[0], rest[1:]
    where = {"row": number, "line": " ".join(tokens)}
    if len(rest) % 2:
        return None, Problem(name, f"malformed line: {len(rest)} frame numbers, expected start/end pairs", where)
    try:
        frames = [parse_frame(t) for t in rest]
    except ValueError:
        return None, Problem(name, f"unparsable frame number: {' '.join(rest)}", where)
    row = SourceRow(name=name, rows=[number], lookup=[name], span_unit="frames")
    for start, end in zip(frames[::2], frames[1::2]):
        problem = span_problem(start, end)
        if problem:
            return None, Problem(name, problem, where)
        if start is not None and end is not None:
            row.spans.append((float(start), float(end)))
    problem = resolve_label(row, raw_class, taxonomy)
    if problem:
        problem.detail.update(where)
        return None, problem
    return row, None
