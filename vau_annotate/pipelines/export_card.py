"""The dataset card (README.md with YAML `configs:`), generated from what was exported.

It says what each config is for and how to load it, counts per split, categories and durations,
which teacher / base models and prompts made the records (names and content hashes), what they
cost, what the gates rejected, the papers to cite and the license the user chose. Model specs are
scrubbed of URL credentials and query strings, and any value of a known secret variable that
still appears is replaced, so no key or token can reach the card.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vau_annotate.annotate.rundir import atomic_write_text
from vau_annotate.pipelines.export_rows import category_of, cot_usage, reflection_usage, used_prompt_hashes
from vau_annotate.pipelines.export_source import Inputs, cot_records, reflection_records
from vau_annotate.schemas.rows import SPLITS

if TYPE_CHECKING:
    from vau_annotate.pipelines.export import ConfigResult, ExportOptions

SECRET_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "OPENAI_API_KEY", "DASHSCOPE_API_KEY")
DURATION_BINS = ((0, 30, "< 30 s"), (30, 60, "30–60 s"), (60, 180, "1–3 min"), (180, 600, "3–10 min"), (600, float("inf"), "≥ 10 min"))

PURPOSE = {
    "p2c_sft": "SFT on Vad-R1 Perception-to-Cognition chains: system, user (video + reasoning question), assistant (`<think>` steps + `<answer>` with `<which><what><when><where><why><how>`).",
    "reflect_sft": "SFT on SRVAU-R1 reflection triples, full form: one completion `<think><answer><reflection><think><answer>`.",
    "reflect_sft_conditioned": "SFT on SRVAU-R1 reflection triples, conditioned form (Eq. 1): the user turn holds the question, the initial round and the reflection; the assistant gives the revised round.",
    "grpo_qa": "GRPO, VAU-Bench multiple-choice QA: `answer` is the letter A–D.",
    "grpo_tag": "GRPO, temporal anomaly grounding: `span` is [start, end] in seconds (null for normal videos).",
    "grpo_cls": "GRPO, anomaly classification: `answer` is the class name; `options` lists the classes.",
    "grpo_p2c": "GRPO on Vad-R1's weakly labelled RL set: video-level `label` and `category`; `span` only where known (`when_source`).",
    "grpo_reflect": "GRPO / RFT with SRVAU-R1's reflection prompt (`reflect_task` qa|tag says how to judge the answers).",
    "captions": "Per-frame captions with their timestamps (the evidence the chains were written from).",
}

CITATIONS = """```bibtex
@article{huang2025vadr1,
  title   = {Vad-R1: Towards Video Anomaly Reasoning via Perception-to-Cognition Chain-of-Thought},
  author  = {Huang, Chao and Wang, Benfeng and Wen, Jie and Liu, Chengliang and Wang, Wei and Shen, Li and Cao, Xiaochun},
  journal = {arXiv preprint arXiv:2505.19877},
  year    = {2025}
}
@article{zhu2025vaur1,
  title   = {VAU-R1: Advancing Video Anomaly Understanding via Reinforcement Fine-Tuning},
  author  = {Zhu, Liyun and Chen, Qixiang and Shen, Xi and Cun, Xiaodong},
  journal = {arXiv preprint arXiv:2505.23504},
  year    = {2025}
}
@article{srvaur1_2026,
  title   = {SRVAU-R1: Enhancing Video Anomaly Understanding via Reflection-Aware Learning},
  author  = {Ye, Muchao and Cao, Shengting and Zhao, Zihao},
  journal = {arXiv preprint arXiv:2602.01004},
  year    = {2026}
}
```"""


def scrub_spec(spec: str) -> str:
    """A model spec without URL user-info or query string (where a careless key could hide)."""
    spec = re.sub(r"(https?://)[^/@\s]*@", r"\1", spec)
    return re.sub(r"\?[^\s]*", "", spec)


def redact(text: str) -> str:
    """Replace the value of any secret variable set in the environment (belt and braces)."""
    for name in SECRET_VARIABLES:
        value = os.environ.get(name)
        if value and len(value) >= 6:
            text = text.replace(value, f"<{name}>")
    return text


@dataclass
class CardFacts:
    """Everything the card says, gathered in one pass over the runs."""

    configs: dict[str, dict[str, int]]
    skips: dict[str, Counter]
    categories: dict[str, Counter] = field(default_factory=dict)
    durations: dict[str, Counter] = field(default_factory=dict)
    models: dict[str, set[str]] = field(default_factory=dict)
    prompts: dict[str, str] = field(default_factory=dict)
    usage: dict[str, list[float]] = field(default_factory=dict)
    rejects: Counter = field(default_factory=Counter)
    frames: str = "embed"
    split: str = ""
    license: str = "other"

    @classmethod
    def gather(cls, inputs: Inputs, results: dict[str, ConfigResult], options: ExportOptions) -> CardFacts:
        facts = cls({c: dict(r.rows) for c, r in results.items()}, {c: r.skips for c, r in results.items()},
                    frames=options.video.mode, license=options.license)
        facts.split = (f"by video, hashed ratios {', '.join(f'{r:.3g}' for r in options.split.ratios)} with seed {options.split.seed}"
                       if options.split.mode == "ratio" else "by video, the split of the source annotation file (train / val / test)")
        from vau_annotate.pipelines.export import Splitter

        splitter = Splitter(inputs, options.split)
        for vid, video in inputs.videos.items():
            split = splitter(vid)
            facts.categories.setdefault(category_of(video) or "(unlabeled)", Counter())[split] += 1
            duration = video.record.duration
            label = next((name for lo, hi, name in DURATION_BINS if duration is not None and lo <= duration < hi), "unknown")
            facts.durations.setdefault(label, Counter())[split] += 1
        facts.models = {"captioner": set(), "reasoner": set(), "base": set(), "teacher": set()}
        facts.usage = {"build-cot": [0, 0, 0.0], "reflect": [0, 0, 0.0]}
        for _, record in cot_records(inputs.runs):
            facts.models["captioner"].add(scrub_spec(record.provenance.captioner))
            facts.models["reasoner"].add(scrub_spec(record.provenance.reasoner))
            facts.prompts.update(record.provenance.prompt_hashes)
            _add(facts.usage["build-cot"], cot_usage(record))
        for _, record in reflection_records(inputs.runs):
            facts.models["base"].add(scrub_spec(record.provenance.base_model))
            facts.models["teacher"].add(scrub_spec(record.provenance.teacher_model))
            facts.prompts.update(record.provenance.prompt_hashes)
            _add(facts.usage["reflect"], reflection_usage(record))
        facts.prompts.update(used_prompt_hashes())
        for run in inputs.runs:
            for reject in run.dir.load_rejects():
                facts.rejects[(reject.stage, reject.reason.split(":")[0].strip())] += 1
        return facts


def _add(total: list[float], usage: tuple[int, int, float]) -> None:
    for i, value in enumerate(usage):
        total[i] += value


def _yaml(facts: CardFacts) -> str:
    lines = ["---", f"license: {facts.license}", "task_categories:", "- video-text-to-text", "tags:",
             "- video-anomaly-understanding", "- video-anomaly-detection", "- reasoning", "configs:"]
    for config, counts in facts.configs.items():
        splits = [s for s in SPLITS if counts.get(s)]
        if splits:  # datasets refuses a split (or config) without data: list only what has rows
            lines += [f"- config_name: {config}", "  data_files:"]
            lines += [f"  - split: {split}\n    path: {config}/{split}-*" for split in splits]
    return "\n".join(lines + ["---", ""])


def _table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def render_card(facts: CardFacts) -> str:
    parts = [_yaml(facts), "# Video anomaly understanding reasoning dataset", "",
             "Made with `vau-annotate export` from run directories of `vau-annotate` (ingest → sample → build-cot → reflect). "
             f"Video is {'embedded as sampled JPEG frames (`frames`, `frame_times`, `sample_fps`)' if facts.frames == 'embed' else 'referenced by a relative path (`video`) with qwen-vl-utils sampling parameters (`fps` / `nframes`, `max_pixels`, `min_pixels`)'}. "
             f"Splits: {facts.split}; no video is in two splits.", "", "## Configs", ""]
    rows = [[f"`{c}`", PURPOSE.get(c, ""), *(counts.get(s, 0) for s in SPLITS)] for c, counts in facts.configs.items()]
    parts += [_table(["config", "use", *SPLITS], rows), ""]
    empty = [c for c, counts in facts.configs.items() if not any(counts.values())]
    if empty:
        parts += [f"Empty (no rows, so not listed in `configs:`): {', '.join(f'`{c}`' for c in empty)}.", ""]
    left_out = [[f"`{c}`", reason, n] for c, skips in facts.skips.items() for reason, n in skips.most_common()]
    if left_out:
        parts += ["Left out while exporting:", "", _table(["config", "reason", "items"], left_out), ""]
    parts += ["## How to load", "", "```python", "from datasets import load_dataset", ""]
    parts += [f'{c} = load_dataset("PATH_OR_REPO_ID", "{c}")' for c, counts in facts.configs.items() if any(counts.values())]
    parts += ["```", "", "Chat columns (`messages`, `prompt`) are lists of `{role, content}`; every content part is `{type, text}`; "
              "the video part is `{\"type\": \"video\", \"text\": \"\"}`, placed first in the user turn, and stands for the row's video.", ""]
    parts += ["## Categories (videos per split)", "", _table(["category", *SPLITS], [[k, *(v[s] for s in SPLITS)] for k, v in sorted(facts.categories.items())]), ""]
    parts += ["## Durations (videos per split)", "", _table(["duration", *SPLITS], [[k, *(v[s] for s in SPLITS)] for k, v in facts.durations.items()]), ""]
    models = [[role, ", ".join(f"`{m}`" for m in sorted(specs)) or "—"] for role, specs in facts.models.items()]
    parts += ["## Models", "", _table(["role", "model"], models), ""]
    usage = [[stage, int(u[0]), int(u[1]), f"${u[2]:.4f}"] for stage, u in facts.usage.items()]
    parts += ["## Tokens and cost", "", _table(["stage", "input tokens", "output tokens", "cost"], usage), ""]
    parts += ["## Prompts", "", _table(["prompt", "content hash"], [[f"`{n}`", f"`{h}`"] for n, h in sorted(facts.prompts.items())]), ""]
    rejects = [[stage, reason, n] for (stage, reason), n in sorted(facts.rejects.items())]
    parts += ["## Rejected by the quality gates", "", _table(["stage", "reason", "items"], rejects) if rejects else "Nothing was rejected.", ""]
    parts += ["## License", "", f"`{facts.license}` (set with `--license`). The videos keep the licenses of their source datasets.", ""]
    parts += ["## Citation", "", "The recipes are those of Vad-R1, VAU-R1 and SRVAU-R1:", "", CITATIONS, ""]
    return redact("\n".join(parts))


def write_card(folder: Path, facts: CardFacts) -> None:
    atomic_write_text(folder / "README.md", render_card(facts))

