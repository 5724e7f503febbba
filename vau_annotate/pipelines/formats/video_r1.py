"""Video-R1 JSON (a list per split): `problem_id`, `problem`, `problem_type`, `options`,
`data_type`, `path`, `solution`, `process`, `data_source` — the fields of Video-R1-260k /
Video-R1-COT-165k. Multiple-choice QA becomes "multiple choice" (solution `<answer>B</answer>`);
Vad-R1 chains become "free-form" with the chain as `process` (Video-R1's CoT-SFT field). Video-R1
has no temporal-IoU problem type, so grounding rows are not written in this format.
"""

from __future__ import annotations

import json
from pathlib import Path

from vau_annotate.pipelines.formats.base import FormatContext, SplitFiles
from vau_annotate.pipelines.export_rows import P2C_PROMPT, seconds
from vau_annotate.prompts import load_prompt
from vau_annotate.schemas.video import LETTERS


def write(context: FormatContext, folder: Path) -> None:
    files = SplitFiles(folder, "json", header="[\n", footer="\n]\n", separator=",\n")
    number = 0
    for split, row in context.rows("grpo_qa"):
        number += 1
        files.write(split, json.dumps({
            "problem_id": number, "problem": row["question"], "data_type": "video", "problem_type": "multiple choice",
            "options": [f"{letter}. {text}" for letter, text in zip(LETTERS, row["options"])], "process": "",
            "solution": f"<answer>{row['answer']}</answer>", "path": row["video"], "data_source": f"vau_annotate/{row['source']}",
        }, ensure_ascii=False))
    for split, video, record in context.chains("p2c"):
        number += 1
        problem = load_prompt(P2C_PROMPT).render(duration=seconds(record.duration if record.duration is not None else video.record.duration))
        files.write(split, json.dumps({
            "problem_id": number, "problem": problem, "data_type": "video", "problem_type": "free-form", "options": [],
            "process": record.think, "solution": record.answer, "path": video.record.path, "data_source": f"vau_annotate/{video.record.source}",
        }, ensure_ascii=False))
    files.close()
