"""Writers of other trainers' data formats, one small module each, in one registry.

`vau-annotate export --format NAME` calls `FORMATS[NAME](context, folder)`. A writer reads rows
through the context (the same row builders and per-video splits as the Hugging Face export, with
video as a relative path: these trainers decode video themselves, with qwen-vl-utils) and writes
one file per split into `folder`. To add a format, add a module and one line below.
"""

from __future__ import annotations

from vau_annotate.pipelines.formats.base import FormatContext, FormatWriter
from vau_annotate.pipelines.formats import easyr1, vad_r1, vau_bench, verl, video_r1

FORMATS: dict[str, FormatWriter] = {
    "verl": verl.write,
    "easyr1": easyr1.write,
    "video-r1": video_r1.write,
    "vad-r1": vad_r1.write,
    "vau-bench": vau_bench.write,
}

__all__ = ["FORMATS", "FormatContext", "FormatWriter"]
