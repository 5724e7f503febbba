"""Vad-Reasoning JSONL (Vad-R1's release): `source`, `video`, `anomaly_type`, `start`, `end`,
`total_frames`, `path`, `think`, `answer`; `start`/`end` are frame numbers (0, 0 for a normal
video; null when the span is unknown). One line per accepted chain of thought."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from vau_annotate.pipelines.formats.base import FormatContext, SplitFiles


def write(context: FormatContext, folder: Path) -> None:
    files = SplitFiles(folder, "jsonl")
    for split, video, record in context.chains("vad-r1"):
        v = video.record
        start = end = None
        if v.label == "normal":
            start = end = 0
        elif v.span_known and v.spans and v.fps:
            start, end = round(v.spans[0].start * v.fps), round(max(s.end for s in v.spans) * v.fps)
        files.write(split, json.dumps({
            "source": v.source, "video": PurePosixPath(v.path).name, "anomaly_type": record.category, "start": start, "end": end,
            "total_frames": v.num_frames, "path": v.path, "think": record.think, "answer": record.answer,
        }, ensure_ascii=False) + "\n")
    files.close()
