"""Every reward against hand-computed cases, the batch combiner, and the verl / EasyR1 adapters."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from vau_annotate.train import rewards as R

OPTIONS = ["Robbery", "Fighting", "Arson", "Nothing unusual"]
QA = {"task": "qa", "answer": "B", "options": OPTIONS, "span": None, "duration": 30.0, "label": "abnormal",
      "category": "Fighting", "when_source": "none", "span_known": False, "question": "What happens?", "reflect_task": ""}
TAG = {**QA, "task": "tag", "answer": "", "options": [], "span": [10.0, 20.0], "duration": 40.0, "span_known": True,
       "when_source": "annotation"}
TAG_NORMAL = {**TAG, "span": None, "span_known": False, "label": "normal", "category": "Normal", "when_source": "none"}
TAG_UNKNOWN = {**TAG, "span": None, "span_known": False, "when_source": "none"}
CLS = {**QA, "task": "cls", "answer": "Traffic_accident", "options": [], "category": "Traffic_accident"}
P2C = {**TAG, "task": "p2c"}
P2C_NORMAL = {**TAG_NORMAL, "task": "p2c"}
REFLECT_QA = {**QA, "task": "reflect", "reflect_task": "qa"}
REFLECT_TAG = {**TAG, "task": "reflect", "reflect_task": "tag"}

P2C_ABNORMAL_REPLY = (
    "<think><step1>A street.</step1><step2>Two men.</step2><step3>They fight.</step3><step4>Harm.</step4></think>"
    "<answer><which>Fighting</which><what>a fight</what><when>[0.250, 0.500]</when><where>street</where>"
    "<why>violence</why><how>punches</how></answer>"
)
P2C_NORMAL_REPLY = (
    "<think><step1>A street with walkers.</step1><step2>Nothing departs from routine.</step2></think>"
    "<answer><which>Normal</which><what>people walk</what><why>routine traffic</why></answer>"
)


def reflect_reply(first: str, final: str, reflection: str = "I misread the scene.", tag: str = "reflection") -> str:
    return f"<think>first look</think><answer>{first}</answer><{tag}>{reflection}</{tag}><think>second look</think><answer>{final}</answer>"


# --- format -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply,row,expected",
    [
        ("<think>they fight</think>\n<answer>B</answer>", QA, 1.0),
        ("<answer>B</answer>", QA, 0.0),  # no think
        ("<think>x</think><answer>B</answer> and more", QA, 0.0),  # text after the answer
        ("<think>x</think><answer> </answer>", QA, 0.0),  # empty answer
        ("<think>x</think><answer>A</answer><think>y</think><answer>B</answer>", QA, 0.0),  # two rounds
        ("<think>x</think><answer>B", QA, 0.0),  # unclosed
        ("<think>x</think><answer>Anomaly</answer><glue>[10, 20]</glue>", TAG, 1.0),  # VAU-R1 grounding tag
        ("<think>x</think><answer>[10.0, 20.0]</answer>", TAG, 1.0),  # our grpo_tag prompt: span in answer
        ("<think>x</think><answer>normal</answer>", TAG, 1.0),  # an explicit normal verdict is well-formed
        ("<think>x</think><answer>something odd</answer>", TAG, 0.0),  # TAG without span or verdict
    ],
)
def test_format_vau_r1(reply, row, expected):
    assert R.format_vau_r1(reply, row) == expected


def test_format_p2c_follows_the_models_own_verdict():
    assert R.format_p2c(P2C_ABNORMAL_REPLY, P2C) == 1.0
    assert R.format_p2c(P2C_NORMAL_REPLY, P2C_NORMAL) == 1.0
    # structure is judged by the reply's own <which>, not by the truth (correctness is not format)
    assert R.format_p2c(P2C_NORMAL_REPLY, P2C) == 1.0
    # abnormal verdict with only two steps
    two_steps = P2C_ABNORMAL_REPLY.replace("<step3>They fight.</step3><step4>Harm.</step4>", "")
    assert R.format_p2c(two_steps, P2C) == 0.0
    # normal verdict carrying <when>
    assert R.format_p2c(P2C_NORMAL_REPLY.replace("<why>", "<when>[0.1, 0.2]</when><why>"), P2C_NORMAL) == 0.0
    # answer tags out of order
    swapped = P2C_ABNORMAL_REPLY.replace("<what>a fight</what><when>[0.250, 0.500]</when>", "<when>[0.250, 0.500]</when><what>a fight</what>")
    assert R.format_p2c(swapped, P2C) == 0.0
    # <when> without a span
    assert R.format_p2c(P2C_ABNORMAL_REPLY.replace("[0.250, 0.500]", "early on"), P2C) == 0.0
    # a second round after the answer
    assert R.format_p2c(P2C_ABNORMAL_REPLY + "<think>again</think><answer>x</answer>", P2C) == 0.0
    # an empty step
    assert R.format_p2c(P2C_ABNORMAL_REPLY.replace("Two men.", " "), P2C) == 0.0
    # unreadable <which>
    assert R.format_p2c(P2C_ABNORMAL_REPLY.replace("Fighting", "hmm"), P2C) == 0.0


def test_format_reflect_five_parts():
    assert R.format_reflect(reflect_reply("A", "B"), REFLECT_QA) == 1.0
    assert R.format_reflect(reflect_reply("A", "B", tag="reflect"), REFLECT_QA) == 1.0
    assert R.format_reflect("<think>a</think><answer>A</answer><reflection>r</reflection><think>b</think>", REFLECT_QA) == 0.0
    assert R.format_reflect(reflect_reply("A", "B") + " trailing", REFLECT_QA) == 0.0
    assert R.format_reflect(reflect_reply("A", "B", reflection=" "), REFLECT_QA) == 0.0
    assert R.format_reflect("<think>a</think><answer>A</answer>", REFLECT_QA) == 0.0


# --- accuracy -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply,expected",
    [("<answer>B</answer>", 1.0), ("<answer>(B)</answer>", 1.0), ("<answer>B.</answer>", 1.0), ("Option B", 1.0),
     ("<answer>Fighting</answer>", 1.0), ("<answer>A</answer>", 0.0), ("<answer>no idea</answer>", 0.0), ("", 0.0)],
)
def test_accuracy_choice(reply, expected):
    assert R.accuracy_choice(reply, QA) == expected


def test_accuracy_class_uses_the_alias_table():
    assert R.accuracy_class("<answer>Road accident</answer>", CLS) == 1.0
    assert R.accuracy_class("<answer>RoadAccidents</answer>", CLS) == 1.0
    assert R.accuracy_class("<answer>Fighting</answer>", CLS) == 0.0
    assert R.accuracy_class("<answer>Fighting or a road accident</answer>", CLS) == 0.0  # two classes: not a hit
    assert R.accuracy_class("<answer>Normal</answer>", {**CLS, "answer": "Normal", "category": "Normal", "label": "normal"}) == 1.0


def test_accuracy_which_and_binary():
    assert R.accuracy_which(P2C_ABNORMAL_REPLY, P2C) == 1.0
    assert R.accuracy_which(P2C_ABNORMAL_REPLY.replace("Fighting", "Brawl"), P2C) == 1.0  # alias
    assert R.accuracy_which(P2C_ABNORMAL_REPLY.replace("Fighting", "Robbery"), P2C) == 0.0
    assert R.accuracy_which(P2C_NORMAL_REPLY, P2C_NORMAL) == 1.0
    assert R.accuracy_which("<answer>Fighting</answer>", P2C) == 0.0  # no <which>
    assert R.accuracy_binary(P2C_ABNORMAL_REPLY.replace("Fighting", "Robbery"), P2C) == 1.0  # wrong class, right verdict
    assert R.accuracy_binary(P2C_NORMAL_REPLY, P2C) == 0.0
    assert R.accuracy_binary("<answer>No anomaly</answer>", TAG_NORMAL) == 1.0
    assert R.accuracy_binary("", TAG_NORMAL) == 0.0  # unreadable is never right


def test_accuracy_dispatches_on_task():
    assert R.accuracy("<answer>B</answer>", QA) == 1.0
    assert R.accuracy("<answer>Traffic accident</answer>", CLS) == 1.0
    assert R.accuracy(P2C_ABNORMAL_REPLY, P2C) == 1.0
    assert R.accuracy("<answer>[1, 2]</answer>", TAG) == 1.0  # tag: the verdict
    assert R.accuracy(reflect_reply("B", "A"), REFLECT_QA) == 1.0  # reflect: the first answer


# --- temporal IoU ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply,row,expected",
    [
        ("<think>x</think><answer>[15, 25]</answer>", TAG, 5 / 15),  # seconds: ∩ 15–20, ∪ 10–25
        ("<answer>Anomaly</answer><glue>[0.25, 0.5]</glue>", TAG, 1.0),  # fractions × 40 s = [10, 20]
        ("<answer>[00:00:10, 00:00:20]</answer>", TAG, 1.0),  # clock times
        ("<answer>[8, 12] and [18, 22]</answer>", TAG, 4 / 14),  # union: ∩ = 2 + 2, ∪ = [8, 22]
        ("<answer>[20, 10]</answer>", TAG, 0.0),  # reversed: not a span
        ("<answer>normal</answer>", TAG, 0.0),  # missed anomaly
        ("", TAG, 0.0),  # empty: never a free reward
        ("<answer>normal</answer>", TAG_NORMAL, 1.0),  # normal video, explicit normal verdict
        ("<answer>No anomaly</answer>", TAG_NORMAL, 1.0),
        ("", TAG_NORMAL, 0.0),  # normal video, empty reply: nothing earned
        ("<answer>[1, 2]</answer>", TAG_NORMAL, 0.0),  # false alarm
        ("<answer>[10, 20]</answer>", TAG_UNKNOWN, 0.0),  # unknown span: no signal
        (P2C_ABNORMAL_REPLY, P2C, 1.0),  # <when> [0.25, 0.5] × 40 s
        (P2C_NORMAL_REPLY, P2C_NORMAL, 1.0),
        (P2C_NORMAL_REPLY.replace("people walk", "2 to 3 people walk"), P2C_NORMAL, 1.0),  # numbers in <what> are no span
        ("<answer>[10, 20]</answer>", QA, 0.0),  # QA asks no span
    ],
)
def test_iou(reply, row, expected):
    assert R.iou(reply, row) == pytest.approx(expected)


def test_iou_reads_the_answer_not_the_reasoning():
    reply = "<think>from 10 to 20 s a man runs</think><answer>[30, 40]</answer>"
    assert R.iou(reply, TAG) == 0.0


# --- SRVAU-R1 --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first,final,expected",
    [("B", "B", 0.25), ("A", "B", 0.5), ("A", "C", 0.0), ("B", "A", -0.25)],
)
def test_reflection_effectiveness_transitions(first, final, expected):
    assert R.reflection_effectiveness(reflect_reply(first, final), REFLECT_QA) == expected


def test_reflection_effectiveness_on_grounding_uses_iou_half():
    # first [0, 5] (IoU 0) wrong, final [10, 19] (IoU 0.9) right → W→C
    assert R.reflection_effectiveness(reflect_reply("[0, 5]", "[10, 19]"), REFLECT_TAG) == 0.5
    # first [12, 20] (IoU 0.8) right, final [0, 12] (IoU 2/20) wrong → C→W
    assert R.reflection_effectiveness(reflect_reply("[12, 20]", "[0, 12]"), REFLECT_TAG) == -0.25
    assert R.reflection_effectiveness("<think>x</think><answer>B</answer>", REFLECT_QA) == 0.0  # no reflection


def test_reflection_format_and_brevity():
    assert R.reflection_format(reflect_reply("A", "B"), REFLECT_QA) == 0.25
    assert R.reflection_format(reflect_reply("A", "B", tag="reflect"), REFLECT_QA) == 0.25
    assert R.reflection_format("<think>x</think><answer>B</answer>", REFLECT_QA) == 0.0
    cfg = R.ReflectionConfig(target_words=4, max_words=8)
    assert R.reflection_brevity(reflect_reply("A", "B", reflection="one two three four"), REFLECT_QA, cfg) == pytest.approx(1.0)
    # L = 8: exp(−|8−4|/(8−4)) = e^−1; L = 2: exp(−2/4)
    assert R.reflection_brevity(reflect_reply("A", "B", reflection="w " * 8), REFLECT_QA, cfg) == pytest.approx(math.exp(-1))
    assert R.reflection_brevity(reflect_reply("A", "B", reflection="w w"), REFLECT_QA, cfg) == pytest.approx(math.exp(-0.5))
    with pytest.raises(ValueError):
        R.brevity(3, 10, 10)
    # the whole reply measured instead: "first look A w w second look B" = 8 words → e^−1
    whole = cfg._replace(length_of="completion")
    assert R.reflection_brevity(reflect_reply("A", "B", reflection="w w"), REFLECT_QA, whole) == pytest.approx(math.exp(-1))


def test_srvau_task_reflection_and_total_by_hand():
    cfg = R.ReflectionConfig(alpha=1.0, beta=2.0, gamma=3.0, target_words=4, max_words=8, brevity_weight=0.25)
    reply = reflect_reply("A", "B", reflection="one two three four")  # W→C, well-formed, L = T
    assert R.srvau_task(reply, REFLECT_QA) == 0.5  # format 0.5 + first answer wrong 0
    reflection = 0.5 + 0.25 + 0.25 * 1.0
    assert R.reflection(reply, REFLECT_QA, cfg) == pytest.approx(reflection)
    assert R.srvau_total(reply, REFLECT_QA, cfg) == pytest.approx(1.0 * 0.5 + 2.0 * reflection + 3.0 * 0.0)
    # grounding: first right (IoU 1), final IoU 0.5 → C→C; γ·IoU uses the final answer
    tag_reply = reflect_reply("[10, 20]", "[15, 20]", reflection="one two three four")
    assert R.srvau_task(tag_reply, REFLECT_TAG) == 1.0
    assert R.srvau_total(tag_reply, REFLECT_TAG, cfg) == pytest.approx(1.0 * 1.0 + 2.0 * (0.25 + 0.25 + 0.25) + 3.0 * 0.5)


# --- Vad-R1 length and AVA -----------------------------------------------------------------------


def words(n: int) -> str:
    return "<think>" + " ".join(["w"] * n) + "</think><answer><which>Normal</which></answer>"


@pytest.mark.parametrize(
    "n,row,expected",
    [(139, P2C_NORMAL, 0.0), (140, P2C_NORMAL, 1.0), (261, P2C_NORMAL, 1.0), (262, P2C_NORMAL, 0.0),
     (232, P2C, 0.0), (233, P2C, 1.0), (456, P2C, 1.0), (457, P2C, 0.0), (200, P2C, 0.0)],
)
def test_length_vad_band(n, row, expected):
    assert R.length_vad(words(n), row) == expected


def test_length_counts_reasoning_words_without_tags():
    assert R.reasoning_words("<think><step1>a b</step1><step2>c</step2></think><answer>x y z</answer>") == 3


@pytest.mark.parametrize(
    "first,trimmed,expected",
    [
        ("<which>Fighting</which>", "<which>Normal</which>", 0.5),  # span cut out → normal: confirmed
        ("<which>Fighting</which>", "<which>Fighting</which>", -0.2),  # still abnormal: contradicted
        ("<which>Normal</which>", "<which>Normal</which>", 0.5),
        ("<which>Normal</which>", "<which>Robbery</which>", -0.2),
        ("gibberish", "<which>Normal</which>", 0.0),
        ("<which>Fighting</which>", "", 0.0),
    ],
)
def test_anomaly_verification(first, trimmed, expected):
    assert R.anomaly_verification(first, trimmed) == expected


def test_ava_reads_the_trimmed_reply_from_the_row():
    assert R.ava(P2C_ABNORMAL_REPLY, {**P2C, "trimmed_completion": P2C_NORMAL_REPLY}) == 0.5
    assert R.ava(P2C_ABNORMAL_REPLY, P2C) == 0.0


# --- combine -------------------------------------------------------------------------------------


def test_combine_with_weights():
    totals, parts = R.combine(
        ["<think>t</think><answer>B</answer>", "<answer>B</answer>", "<think>t</think><answer>C</answer>"],
        [QA, QA, QA], {"format_vau_r1": 0.5, "accuracy_choice": 2.0},
    )
    assert totals == [2.5, 2.0, 0.5]
    assert parts == {"format_vau_r1": [1.0, 0.0, 1.0], "accuracy_choice": [1.0, 1.0, 0.0]}


def test_combine_task_defaults_per_row():
    totals, parts = R.combine(["<think>t</think><answer>B</answer>", "<think>t</think><answer>[15, 25]</answer>"], [QA, TAG])
    assert totals == pytest.approx([2.0, 1.0 + 5 / 15])
    assert parts["iou"] == pytest.approx([0.0, 5 / 15])  # not a QA reward: 0 for the QA row
    assert parts["accuracy_choice"] == [1.0, 0.0]


def test_combine_errors():
    with pytest.raises(ValueError, match="2 completions for 1 rows"):
        R.combine(["a", "b"], [QA], {"accuracy": 1.0})
    with pytest.raises(KeyError, match="unknown reward"):
        R.combine(["a"], [QA], {"accuracy": 1.0, "bleu": 1.0})
    with pytest.raises(ValueError, match="no default rewards"):
        R.combine(["a"], [{**QA, "task": "caption"}])


# --- verl / EasyR1 --------------------------------------------------------------------------------


def parquet_like(row: dict) -> dict:
    """A row as verl hands it over after pandas/Arrow: lists become numpy arrays."""
    return {k: (np.asarray(v, dtype=np.float32) if k == "span" and v is not None else np.asarray(v, dtype=object) if isinstance(v, list) else v)
            for k, v in row.items()}


def call_like_verl_naive_manager(compute_score, items):
    """verl's NaiveRewardManager.__call__: one keyword call per item; a dict result gives `score`
    as the reward and every key appended to `reward_extra_info` lists (verl/workers/reward_manager/naive.py)."""
    rewards, extra = [], {}
    for item in items:
        non_tensor = item["non_tensor_batch"]
        result = compute_score(
            data_source=non_tensor["data_source"],
            solution_str=item["response_str"],
            ground_truth=non_tensor["reward_model"]["ground_truth"],
            extra_info=non_tensor.get("extra_info", None),
        )
        rewards.append(result["score"] if isinstance(result, dict) else result)
        for key, value in (result.items() if isinstance(result, dict) else []):
            extra.setdefault(key, []).append(value)
    return rewards, extra


def load_like_verl(path: Path, name: str):
    """verl's get_custom_reward_fn: import the file by path, take the named function."""
    spec = importlib.util.spec_from_file_location("custom_module", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def test_verl_adapter_called_the_way_verl_calls_it():
    fn = load_like_verl(Path(R.__file__), "verl_compute_score")
    items = [
        {"response_str": "<think>t</think><answer>B</answer>",
         "non_tensor_batch": {"data_source": "vau_annotate/grpo_qa", "reward_model": {"style": "rule", "ground_truth": parquet_like(QA)},
                              "extra_info": {"index": 0, "split": "train"}}},
        {"response_str": "<think>t</think><answer>[15, 25]</answer>",
         "non_tensor_batch": {"data_source": "vau_annotate/grpo_tag", "reward_model": {"style": "rule", "ground_truth": json.dumps(TAG)},
                              "extra_info": {"index": 1, "num_turns": 1}}},
    ]
    rewards, extra = call_like_verl_naive_manager(fn, items)
    assert rewards == pytest.approx([2.0, 1.0 + 5 / 15])
    assert len({len(v) for v in extra.values()}) == 1  # every key once per item: verl's lists stay aligned
    assert extra["iou"] == pytest.approx([0.0, 5 / 15])
    assert extra["accuracy_choice"] == [1.0, 0.0]


def test_verl_adapter_weights_from_extra_info_and_bad_ground_truth():
    result = R.verl_compute_score("x", "<answer>B</answer>", QA, {"reward_weights": {"accuracy_choice": 3.0}})
    assert result["score"] == 3.0
    with pytest.raises(ValueError, match="neither a dict nor JSON"):
        R.verl_compute_score("x", "<answer>B</answer>", "B", None)
    with pytest.raises(ValueError, match="no 'task'"):
        R.verl_compute_score("x", "<answer>B</answer>", {"answer": "B"}, None)


def test_easyr1_adapter_all_call_forms():
    gt = json.dumps(QA)
    good, bad = "<think>t</think><answer>B</answer>", "<answer>C</answer>"
    batch = R.easyr1_compute_score([{"response": good, "response_length": 9, "ground_truth": gt},
                                    {"response": bad, "response_length": 3, "ground_truth": gt}])
    assert batch == [{"overall": 2.0, "format": 1.0, "accuracy": 1.0}, {"overall": 0.0, "format": 0.0, "accuracy": 0.0}]
    assert R.easyr1_compute_score({"response": good, "ground_truth": gt}) == batch[0]
    assert R.easyr1_compute_score(good, gt) == batch[0]
    tag = R.easyr1_compute_score("<think>t</think><answer>[15, 25]</answer>", json.dumps(TAG))
    assert tag == pytest.approx({"overall": 1.0 + 5 / 15, "format": 1.0, "accuracy": 5 / 15})


def test_registry_names_resolve():
    assert set(R.resolve(["iou", "srvau_total"])) == {"iou", "srvau_total"}
    for table in R.DEFAULT_WEIGHTS.values():
        R.resolve(list(table))


# --- `vau-annotate rewards` ----------------------------------------------------------------------


def _export_dir(tmp_path: Path) -> Path:
    """A GRPO export as the contract lays it out: OUT/README.md configs + OUT/grpo_qa/test-*.parquet."""
    import pandas as pd

    out = tmp_path / "export"
    (out / "grpo_qa").mkdir(parents=True)
    rows = [{**QA, "id": "v1#qa0", "video_id": "v1", "source": "test"}, {**QA, "id": "v2#qa0", "video_id": "v2", "source": "test", "answer": "C"}]
    pd.DataFrame(rows).to_parquet(out / "grpo_qa" / "test-00000-of-00001.parquet")
    (out / "README.md").write_text(
        "---\nconfigs:\n- config_name: grpo_qa\n  data_files:\n  - split: test\n    path: grpo_qa/test-*.parquet\n---\n", encoding="utf-8"
    )
    return out


def test_rewards_cli_scores_by_id_and_rejects_bad_lines(tmp_path):
    from typer.testing import CliRunner

    from vau_annotate.cli import app

    data = _export_dir(tmp_path)
    lines = tmp_path / "completions.jsonl"
    lines.write_text(
        json.dumps({"id": "v1#qa0", "completion": "<think>t</think><answer>B</answer>"}) + "\n"
        + json.dumps({"id": "v2#qa0", "completion": "<answer>B</answer>"}) + "\n"
        + json.dumps({"id": "v9#qa0", "completion": "<answer>B</answer>"}) + "\n"
        + "not json\n",
        encoding="utf-8",
    )
    scores = tmp_path / "scores.jsonl"
    result = CliRunner().invoke(app, ["rewards", str(lines), "--data", str(data), "--config", "grpo_qa", "--split", "test", "--out", str(scores)])
    assert result.exit_code == 3, result.output  # two lines rejected: partial
    scored = [json.loads(line) for line in scores.read_text().splitlines()]
    # v1: format 1 + accuracy 1; v2: no think (format 0), B against C (accuracy 0)
    assert [(s["id"], s["total"]) for s in scored] == [("v1#qa0", 2.0), ("v2#qa0", 0.0)]
    rejects = [json.loads(line) for line in (tmp_path / "scores.jsonl.rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejects] == [3, 4]
    assert "not in the dataset" in rejects[0]["reason"] and "not JSON" in rejects[1]["reason"]


def test_rewards_cli_rows_inline_weights_and_usage_errors(tmp_path):
    from typer.testing import CliRunner

    from vau_annotate.cli import app

    lines = tmp_path / "c.jsonl"
    lines.write_text(json.dumps({"id": "x", "completion": "<think>t</think><answer>[15, 25]</answer>", "row": TAG}) + "\n", encoding="utf-8")
    scores = tmp_path / "s.jsonl"
    ok = CliRunner().invoke(app, ["rewards", str(lines), "-w", "iou=3", "--out", str(scores)])
    assert ok.exit_code == 0, ok.output
    assert json.loads(scores.read_text())["total"] == pytest.approx(3 * 5 / 15)
    unknown = CliRunner().invoke(app, ["rewards", str(lines), "-w", "bleu=1"])
    assert unknown.exit_code == 2 and "unknown reward" in unknown.output
    missing = CliRunner().invoke(app, ["rewards", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2
