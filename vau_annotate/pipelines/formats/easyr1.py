"""EasyR1 RL parquet: `prompt` (text with `<video>`), `answer`, `videos` (paths decoded at train
time by qwen-vl-utils), plus the solution columns a reward file can read (EasyR1's default
`data.prompt_key=prompt`, `answer_key=answer`, `video_key=videos`)."""

from __future__ import annotations

from pathlib import Path

from vau_annotate.pipelines.formats.base import FormatContext, ground_truth, user_text
from vau_annotate.pipelines.formats.parquet_rows import SplitParquet

VIDEO_TOKEN = "<video>"


def schema():
    import pyarrow as pa

    return pa.schema([
        ("prompt", pa.string()), ("answer", pa.string()), ("videos", pa.list_(pa.string())), ("id", pa.string()),
        ("task", pa.string()), ("reflect_task", pa.string()), ("options", pa.list_(pa.string())), ("span", pa.list_(pa.float32())),
        ("duration", pa.float32()), ("label", pa.string()), ("category", pa.string()), ("when_source", pa.string()),
        ("fps", pa.float32()), ("max_pixels", pa.int32()), ("min_pixels", pa.int32()),
    ])


def write(context: FormatContext, folder: Path) -> None:
    out = SplitParquet(folder, schema())
    for config in context.grpo_configs():
        for split, row in context.rows(config):
            out.add(split, {
                "prompt": VIDEO_TOKEN + user_text(row["prompt"]), "answer": ground_truth(row), "videos": [row["video"]],
                **{k: row[k] for k in ("id", "task", "reflect_task", "options", "span", "duration", "label", "category", "when_source",
                                       "fps", "max_pixels", "min_pixels")},
            })
    out.close()
