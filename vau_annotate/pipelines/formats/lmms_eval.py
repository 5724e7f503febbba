"""lmms-eval interop: an exported dataset as an lmms-eval task folder (YAML + utils.py).

lmms-eval (0.7.3) has no VAU-Bench, UCF-Crime or Vad-Reasoning task. This writes one: a task per
exported GRPO config (QA with and without think, TAG with and without think, CLS with and
without think, P2C, reflect) and a group `vau` over them, so the same test split runs in the
harness model teams already use:

    vau-annotate export --run RUN --out OUT --format lmms-eval      # from run directories, or
    write_lmms_eval_task(EXPORTED_DATASET_OR_HUB_ID, OUT)          # from an exported dataset
    lmms-eval --model qwen2_5_vl --model_args pretrained=… --tasks vau --include_path OUT

Each YAML uses lmms-eval's documented keys (`task`, `dataset_path`, `dataset_kwargs`,
`test_split`, `output_type`, `doc_to_visual`, `doc_to_text`, `doc_to_target`, `process_results`,
`metric_list`, `generation_kwargs`, `lmms_eval_specific_kwargs`, `metadata`); a local export is
read as parquet through `dataset_kwargs.data_files`, a Hub dataset by `dataset_path` +
`dataset_name`. utils.py imports the hooks of `vau_annotate.pipelines.eval_lmms_hooks`, so the
prompts, answer parsing and metrics are exactly those of `vau-annotate eval` (vau-annotate must be
installed next to lmms-eval).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vau_annotate.pipelines.eval_lmms_hooks import TASK_METRICS, aggregator_name

if TYPE_CHECKING:
    from vau_annotate.pipelines.formats.base import FormatContext

GROUP = "vau"
HIGHER_IS_BETTER = {"unparsable": False, "c_to_w": False}


@dataclass(frozen=True)
class LmmsTask:
    name: str  # lmms-eval task name
    task: str  # our task (qa, tag, cls, p2c, reflect)
    config: str  # exported config it reads
    think: bool = False


LMMS_TASKS: tuple[LmmsTask, ...] = (
    LmmsTask("vau_qa", "qa", "grpo_qa"), LmmsTask("vau_qa_think", "qa", "grpo_qa", True),
    LmmsTask("vau_tag", "tag", "grpo_tag"), LmmsTask("vau_tag_think", "tag", "grpo_tag", True),
    LmmsTask("vau_cls", "cls", "grpo_cls"), LmmsTask("vau_cls_think", "cls", "grpo_cls", True),
    LmmsTask("vau_p2c", "p2c", "grpo_p2c"), LmmsTask("vau_reflect", "reflect", "grpo_reflect"),
)
UTILS = '''"""Hooks of the vau-annotate lmms-eval tasks: the prompts, parsers and metrics of `vau-annotate eval`."""

from vau_annotate.pipelines.eval_lmms_hooks import *  # noqa: F401,F403
from vau_annotate.pipelines.eval_lmms_hooks import doc_to_target, doc_to_text, doc_to_visual, process_results  # noqa: F401
'''


class LmmsEvalError(ValueError):
    """The dataset has none of the configs an lmms-eval task can be made from."""


def _configs_of(dataset: str) -> list[str]:
    import datasets

    return list(datasets.get_dataset_config_names(dataset))


def _data_files(dataset_dir: Path, config: str, split: str, location: Path | None = None) -> list[str]:
    """Absolute paths of a config's split files, as they will be once the folder is at `location`."""
    found = sorted((dataset_dir / config).glob(f"{split}-*.parquet"))
    base = (location or dataset_dir).resolve()
    return [str(base / p.relative_to(dataset_dir)) for p in found]


def task_yaml(spec: LmmsTask, dataset: str, split: str, max_new_tokens: int, location: Path | None = None) -> str:
    """One task's YAML (written by hand: lmms-eval's `!function` tag is not plain YAML)."""
    local = Path(dataset).is_dir()
    lines = [f"task: {spec.name}"]
    if local:
        files = _data_files(Path(dataset), spec.config, split, location)
        lines += ["dataset_path: parquet", "dataset_kwargs:", "  data_files:", f"    {split}:"] + [f"      - {_quote(f)}" for f in files]
    else:
        lines += [f"dataset_path: {_quote(dataset)}", f"dataset_name: {spec.config}"]
    lines += [
        f"test_split: {split}",
        "output_type: generate_until",
        "doc_to_visual: !function utils.doc_to_visual",
        "doc_to_text: !function utils.doc_to_text",
        "doc_to_target: !function utils.doc_to_target",
        "process_results: !function utils.process_results",
        "generation_kwargs:",
        f"  max_new_tokens: {max_new_tokens}",
        "  temperature: 0",
        "  do_sample: false",
        "lmms_eval_specific_kwargs:",
        "  default:",
        f"    think: {'true' if spec.think else 'false'}",
        "metric_list:",
    ]
    for metric in TASK_METRICS[spec.task]:
        lines += [f"  - metric: {metric}", f"    aggregation: !function utils.{aggregator_name(spec.task, metric)}",
                  f"    higher_is_better: {'false' if not HIGHER_IS_BETTER.get(metric, True) else 'true'}"]
    lines += ["metadata:", "  version: 1.0", f"  source_config: {spec.config}", ""]
    return "\n".join(lines)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_lmms_eval_task(dataset: str | Path, out_dir: str | Path, *, split: str = "test", max_new_tokens: int = 1024,
                         tasks: tuple[str, ...] | None = None, location: Path | None = None) -> list[str]:
    """Write the task folder for every config the dataset has; returns the lmms-eval task names.

    `dataset`: an exported directory (read as parquet files) or a Hub dataset id; `location`: where
    that directory will be when the tasks run (export writes into a temporary folder, then renames it).
    """
    dataset = str(dataset)
    known = set(_configs_of(dataset))
    chosen = [t for t in LMMS_TASKS if t.config in known and (tasks is None or t.task in tasks)]
    if Path(dataset).is_dir():
        chosen = [t for t in chosen if _data_files(Path(dataset), t.config, split)]
    if not chosen:
        raise LmmsEvalError(f"{dataset} has none of the configs lmms-eval tasks are made from ({', '.join(sorted({t.config for t in LMMS_TASKS}))}) with a {split!r} split")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for spec in chosen:
        (out / f"{spec.name}.yaml").write_text(task_yaml(spec, dataset, split, max_new_tokens, location))
    group = [f"group: {GROUP}", "task:"] + [f"  - {t.name}" for t in chosen] + ["metadata:", "  version: 1.0", ""]
    (out / f"_{GROUP}.yaml").write_text("\n".join(group))
    (out / "utils.py").write_text(UTILS)
    (out / "README.md").write_text(_readme(dataset, [t.name for t in chosen]))
    return [t.name for t in chosen]


def _readme(dataset: str, names: list[str]) -> str:
    return (f"# vau-annotate tasks for lmms-eval\n\nData: `{dataset}`. Tasks: {', '.join(names)} (group `{GROUP}`).\n\n"
            "```bash\npip install lmms-eval vau-annotate\n"
            f"lmms-eval --model qwen2_5_vl --model_args pretrained=Qwen/Qwen2.5-VL-3B-Instruct --tasks {GROUP} --include_path .\n```\n\n"
            "Prompts, answer parsing and metrics are those of `vau-annotate eval` (see utils.py).\n")


LEFT_OUT = "row of the train/validation split (lmms-eval tasks read the test split)"


def write(context: FormatContext, folder: Path) -> None:
    """`vau-annotate export --format lmms-eval`: the GRPO configs' test rows + the task folder.

    Rows are the export's `--frames path` rows (the same builders and per-video split as the
    Hugging Face export) with each video's path made absolute (its run's --videos folder), written
    to `folder/data/<config>/test-00000-of-00001.parquet` with a card; the task YAMLs and utils.py
    go to `folder`. lmms-eval's video models then read the files themselves.
    """
    import datasets

    data = folder / "data"
    written: list[str] = []
    for config in context.grpo_configs():
        result = context.result(config)
        rows = []
        for split, row in context.rows(config):
            if split != "test":
                result.rows[split] -= 1
                result.skips[LEFT_OUT] += 1
                continue
            video = context.inputs.videos.get(row["video_id"])
            root = video.run.dir.load_meta().videos if video is not None else None
            if root and row.get("video"):
                row = {**row, "video": str(Path(root) / row["video"])}
            rows.append(row)
        if rows:
            (data / config).mkdir(parents=True, exist_ok=True)
            datasets.Dataset.from_list(rows).to_parquet(str(data / config / "test-00000-of-00001.parquet"))
            written.append(config)
    if not written:
        raise LmmsEvalError("no GRPO row fell in the test split: nothing for lmms-eval to evaluate (see --split)")
    card = ["---", "configs:"] + [line for c in written for line in (f"- config_name: {c}", "  data_files:", "  - split: test", f"    path: {c}/test-*.parquet")]
    (data / "README.md").write_text("\n".join(card + ["---", "", "Test rows for the lmms-eval tasks beside this folder.", ""]))
    write_lmms_eval_task(data, folder, location=Path(context.options.out).resolve() / "data")
