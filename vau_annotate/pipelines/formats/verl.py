"""verl RL parquet: `data_source`, `prompt` (chat, `<video>` where the video goes), `ability`,
`reward_model` {`style`, `ground_truth`}, `extra_info` (the solution columns), and `videos` as
dicts `{video, fps, max_frames, min_pixels, max_pixels}` that verl's RLHFDataset hands to
qwen-vl-utils (verl docs: "Prepare Data for Post-Training"; multimodal datasets). A reward
function `compute_score(data_source, solution_str, ground_truth, extra_info)` reads them.
"""

from __future__ import annotations

from pathlib import Path

from vau_annotate.pipelines.formats.base import FormatContext, ground_truth, system_text, user_text
from vau_annotate.pipelines.formats.parquet_rows import SplitParquet

VIDEO_TOKEN = "<video>"
MAX_FRAMES = 32


def schema():
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    video = pa.struct([("video", pa.string()), ("fps", pa.float32()), ("nframes", pa.int32()), ("max_frames", pa.int32()),
                       ("min_pixels", pa.int32()), ("max_pixels", pa.int32())])
    extra = pa.struct([
        ("split", pa.string()), ("index", pa.int64()), ("id", pa.string()), ("video_id", pa.string()), ("task", pa.string()),
        ("reflect_task", pa.string()), ("answer", pa.string()), ("options", pa.list_(pa.string())), ("span", pa.list_(pa.float32())),
        ("duration", pa.float32()), ("label", pa.string()), ("category", pa.string()), ("when_source", pa.string()),
        ("span_known", pa.bool_()), ("question", pa.string()),
    ])
    return pa.schema([
        ("data_source", pa.string()), ("prompt", pa.list_(message)), ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])), ("extra_info", extra),
        ("videos", pa.list_(video)),
    ])


def write(context: FormatContext, folder: Path) -> None:
    out = SplitParquet(folder, schema())
    index = 0
    for config in context.grpo_configs():
        for split, row in context.rows(config):
            prompt = [{"role": "user", "content": VIDEO_TOKEN + user_text(row["prompt"])}]
            system = system_text(row["prompt"])
            if system:
                prompt.insert(0, {"role": "system", "content": system})
            extra = {k: row[k] for k in ("id", "video_id", "task", "reflect_task", "answer", "options", "span", "duration",
                                         "label", "category", "when_source", "span_known", "question")}
            out.add(split, {
                "data_source": f"vau_annotate/{row['task']}", "prompt": prompt, "ability": f"video_anomaly_{row['task']}",
                "reward_model": {"style": "rule", "ground_truth": ground_truth(row)},
                "extra_info": {"split": split, "index": index, **extra},
                "videos": [{"video": row["video"], "fps": row["fps"], "nframes": row["nframes"], "max_frames": MAX_FRAMES,
                            "min_pixels": row["min_pixels"], "max_pixels": row["max_pixels"]}],
            })
            index += 1
    out.close()
