"""Annotation-file parsers, one module per source format; `parse_source` picks by name.

Parsers read files only (no video I/O) and return `ParsedSource`: one `SourceRow` per video in
the source's own units plus a `Problem` per unusable row. Whole-file trouble (unreadable file,
columns of another format) raises `SourceFormatError`.
"""

from __future__ import annotations

from pathlib import Path

from vau_annotate.annotate.classes import Taxonomy
from vau_annotate.annotate.sources import folder, ucf_crime, vad_reasoning, vau_bench
from vau_annotate.annotate.sources.base import VIDEO_EXTENSIONS, ParsedSource, Problem, SourceFormatError, SourceRow

PARSERS = {
    "vau-bench": vau_bench.parse,
    "ucf-crime": ucf_crime.parse,
    "vad-reasoning": vad_reasoning.parse,
}
SOURCES = ("vau-bench", "ucf-crime", "vad-reasoning", "folder")
FRAME_SOURCES = ("ucf-crime", "vad-reasoning")


def parse_source(source: str, annotations: Path | None, taxonomy: Taxonomy) -> ParsedSource:
    """Parse `annotations` as `source` (for 'folder' it is the optional manifest)."""
    if source == "folder":
        return folder.parse(annotations, taxonomy)
    if source not in PARSERS:
        raise SourceFormatError(f"unknown source {source!r}; known: {', '.join(SOURCES)}")
    if annotations is None:
        raise SourceFormatError(f"--source {source} needs an annotation file")
    return PARSERS[source](annotations, taxonomy)


__all__ = [
    "FRAME_SOURCES", "PARSERS", "SOURCES", "VIDEO_EXTENSIONS", "ParsedSource", "Problem",
    "SourceFormatError", "SourceRow", "parse_source",
]
