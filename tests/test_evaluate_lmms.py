"""lmms-eval interop: the task folder written from an export loads in lmms-eval and scores like `eval`.

The YAML is always checked against lmms-eval's documented task keys (TaskConfig, 0.7.3) and its
hooks are run on hand-computed replies. When a Python with lmms-eval is available
(`LMMS_EVAL_PYTHON`, default: this interpreter; `pip install 'vau-annotate[lmms]'`), the folder
is also loaded by lmms-eval's own TaskManager in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from eval_fixtures import write_exported
from test_evaluate import CLS, QA, REFLECT, TAG, dataset_rows

from vau_annotate.pipelines import eval_lmms_hooks as hooks
from vau_annotate.pipelines.formats.lmms_eval import LmmsEvalError, write_lmms_eval_task

# lmms_eval/api/task.py TaskConfig fields (0.7.3), the keys a task YAML may use
DOCUMENTED_KEYS = {
    "task", "task_alias", "tag", "group", "group_alias", "dataset_path", "dataset_name", "dataset_kwargs", "training_split",
    "validation_split", "test_split", "fewshot_split", "full_docs", "process_results_use_image", "process_docs", "doc_to_visual",
    "doc_to_text", "doc_to_target", "doc_to_choice", "doc_to_messages", "process_results", "use_prompt", "description",
    "target_delimiter", "fewshot_delimiter", "fewshot_config", "num_fewshot", "metric_list", "output_type", "generation_kwargs",
    "repeats", "filter_list", "should_decontaminate", "doc_to_decontamination_query", "cluster_key", "score_key", "metadata",
    "lmms_eval_specific_kwargs", "model_specific_generation_kwargs", "model_specific_target_kwargs", "reasoning_tags",
}
OUTPUT_TYPES = {"loglikelihood", "multiple_choice", "generate_until", "generate_until_multi_round"}


class _Loader(yaml.SafeLoader):
    """A YAML loader that reads lmms-eval's `!function module.name` tag as a marker string."""


_Loader.add_constructor("!function", lambda loader, node: f"!function {loader.construct_scalar(node)}")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lmms")
    write_exported(root / "ds", dataset_rows())
    names = write_lmms_eval_task(root / "ds", root / "task")
    assert names == ["vau_qa", "vau_qa_think", "vau_tag", "vau_tag_think", "vau_cls", "vau_cls_think", "vau_p2c", "vau_reflect"]
    return root


def test_yaml_uses_documented_keys_and_existing_hooks(folder):
    for path in sorted((folder / "task").glob("vau_*.yaml")):
        config = yaml.load(path.read_text(), Loader=_Loader)
        assert set(config) <= DOCUMENTED_KEYS, set(config) - DOCUMENTED_KEYS
        assert config["output_type"] in OUTPUT_TYPES and config["test_split"] == "test"
        assert config["dataset_path"] == "parquet"
        files = config["dataset_kwargs"]["data_files"]["test"]
        assert files and all(Path(f).is_file() for f in files)
        for key in ("doc_to_visual", "doc_to_text", "doc_to_target", "process_results"):
            assert config[key].startswith("!function utils."), key
            assert callable(getattr(hooks, config[key].split(".", 1)[1]))
        for metric in config["metric_list"]:
            assert callable(getattr(hooks, metric["aggregation"].split(".", 1)[1]))
    group = yaml.safe_load((folder / "task" / "_vau.yaml").read_text())
    assert group["group"] == "vau" and len(group["task"]) == 8
    assert "eval_lmms_hooks import" in (folder / "task" / "utils.py").read_text()


def _docs(config: str) -> list[dict]:
    return dataset_rows()[config]


def _score(task: str, config: str, replies: dict[str, str]) -> dict[str, float]:
    docs = [d for d in _docs(config) if d["video_id"] in replies]
    records = [hooks.process_results(d, [replies[d["video_id"]]]) for d in docs]
    return {metric: getattr(hooks, hooks.aggregator_name(task, metric))([r[metric] for r in records]) for metric in hooks.TASK_METRICS[task]}


def test_hooks_give_the_same_metrics_as_eval():
    assert _score("qa", "grpo_qa", QA["no_think"]) == {"accuracy": 0.5, "unparsable": 1.0}
    tag = _score("tag", "grpo_tag", {**TAG["no_think"], "v5": "<glue>[1, 2]</glue>"})  # v5 is normal: not grounded
    assert tag["miou"] == pytest.approx(2 / 3) and tag["r_at_0.3"] == 1.0 and tag["r_at_0.5"] == 0.5
    cls = _score("cls", "grpo_cls", CLS["think"])
    assert cls["accuracy"] == pytest.approx(2 / 3) and cls["binary_accuracy"] == pytest.approx(2 / 3)
    reflect = _score("reflect", "grpo_reflect", REFLECT)
    assert reflect == {"initial_accuracy": pytest.approx(2 / 3), "final_accuracy": pytest.approx(2 / 3), "w_to_c": 1.0, "c_to_w": 1.0}


def test_prompt_follows_the_think_switch():
    doc = _docs("grpo_qa")[0]
    plain = hooks.doc_to_text(doc, {"think": False})
    think = hooks.doc_to_text(doc, {"think": True})
    assert "Please only output one option letter" in plain and "<think>" not in plain
    assert "<think> your detailed reasoning process here </think>" in think and "A. a man runs" in think
    assert len(hooks.doc_to_visual(doc)) == 4 and hooks.doc_to_target(doc) == "A"


def test_no_usable_config_is_a_clear_error(tmp_path):
    write_exported(tmp_path / "ds", {"p2c_sft": dataset_rows()["p2c_sft"]})
    with pytest.raises(LmmsEvalError, match="none of the configs"):
        write_lmms_eval_task(tmp_path / "ds", tmp_path / "task")


def _lmms_python() -> str | None:
    python = os.environ.get("LMMS_EVAL_PYTHON", sys.executable)
    found = subprocess.run([python, "-c", "import lmms_eval.tasks"], capture_output=True)
    return python if found.returncode == 0 else None


def test_lmms_eval_task_manager_loads_and_scores_the_folder(folder):
    python = _lmms_python()
    if python is None:
        pytest.skip("lmms-eval is not installed (pip install 'vau-annotate[lmms]' or set LMMS_EVAL_PYTHON)")
    script = textwrap.dedent(f"""
        import json
        from lmms_eval.tasks import TaskManager
        manager = TaskManager(include_path={str(folder / 'task')!r}, include_defaults=False)
        tasks = manager.load_task_or_group(["vau_qa", "vau_tag", "vau_reflect"])
        replies = {json.dumps({"vau_qa": QA["no_think"], "vau_tag": {**TAG["no_think"], "v5": "<glue>[1, 2]</glue>"}, "vau_reflect": REFLECT})}
        out = {{}}
        for name, task in tasks.items():
            docs = list(task.test_docs())
            records = [task.process_results(d, [replies[name][d["video_id"]]]) for d in docs]
            out[name] = {{m: agg([r[m] for r in records]) for m, agg in task.aggregation().items()}}
            out[name]["_frames"] = len(task.doc_to_visual(docs[0]))
            out[name]["_text"] = task.doc_to_text(docs[0])
        print("RESULT" + json.dumps(out))
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([python, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT", 1)[1])
    assert result["vau_qa"]["accuracy"] == 0.5 and result["vau_qa"]["unparsable"] == 1.0 and result["vau_qa"]["_frames"] == 4
    assert result["vau_tag"]["miou"] == pytest.approx(2 / 3) and result["vau_tag"]["r_at_0.5"] == 0.5
    assert result["vau_reflect"]["w_to_c"] == 1.0 and result["vau_reflect"]["c_to_w"] == 1.0
    assert "### Question:" in result["vau_qa"]["_text"]


def test_export_format_lmms_eval_from_a_real_run(demo_run, tmp_path):  # noqa: F811
    from typer.testing import CliRunner

    from vau_annotate.cli import app

    out = tmp_path / "lmms"
    res = CliRunner().invoke(app, ["export", "--run", str(demo_run), "--out", str(out), "--format", "lmms-eval", "--split", "ratio:0.4,0.1,0.5"])
    assert res.exit_code == 0, res.output
    assert "train/validation split" in res.output  # rows outside the test split are reported as left out
    tasks = sorted(p.stem for p in out.glob("vau_*.yaml"))
    assert "vau_qa" in tasks and (out / "utils.py").is_file() and (out / "_vau.yaml").is_file()
    import datasets

    qa = datasets.load_dataset(str(out / "data"), "grpo_qa", split="test", cache_dir=str(tmp_path / "cache"))
    assert len(qa) >= 1 and all(Path(row["video"]).is_absolute() and Path(row["video"]).is_file() for row in qa)
    for row in qa:
        assert hooks.doc_to_visual(row) == [row["video"]]
        assert "### Question:" in hooks.doc_to_text(row, {"think": False}) and row["question"] in hooks.doc_to_text(row, {"think": False})
        record = hooks.process_results(row, [f"<answer>{row['answer']}</answer>"])
        assert record["accuracy"]["scores"] == {"correct": True}
    config = yaml.load((out / "vau_qa.yaml").read_text(), Loader=_Loader)
    assert set(config) <= DOCUMENTED_KEYS and all(Path(f).is_file() for f in config["dataset_kwargs"]["data_files"]["test"])
