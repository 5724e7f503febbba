"""`vau-annotate eval` end to end against the loopback OpenAI peer, with exactly known metrics.

The peer answers from fixed tables written below, keyed by *which video* a request shows (its
first frame) and *which prompt* it is (a phrase of the prompt file) — never by the ground truth.
Every expected metric is computed by hand in the comments next to the replies.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from eval_fixtures import frame_key, grpo_row, sft_row, video_frames, write_exported
from peers import OpenAIPeer, Received, Reply, Script
from peers.openai_server import content_parts
from typer.testing import CliRunner

from vau_annotate.cli import app
from vau_annotate.pipelines.evaluate import EvalOptions, iter_predictions, run_eval

SHADES = {"v1": 10, "v2": 60, "v3": 110, "v4": 160, "v5": 210, "v6": 240}
OPTIONS = ["a man runs", "a man fights", "a car stops", "a dog barks"]
VIDEO_OF = {frame_key(video_frames(shade)[0]): vid for vid, shade in SHADES.items()}

# -- the test set (exported layout, CONTRACT.md) -----------------------------------------------------

def dataset_rows() -> dict[str, list[dict]]:
    qa = [grpo_row(f"{v}#qa0", v, SHADES[v], "qa", answer=a, options=OPTIONS, question=f"What happens in {v}?")
          for v, a in (("v1", "A"), ("v2", "B"), ("v3", "C"), ("v4", "D"))]
    tag = [grpo_row("v1#tag", "v1", SHADES["v1"], "tag", span=[2.0, 6.0]), grpo_row("v2#tag", "v2", SHADES["v2"], "tag", span=[0.0, 4.0]),
           grpo_row("v5#tag", "v5", SHADES["v5"], "tag", label="normal", category="Normal")]  # normal: not grounded (VAU-R1)
    cls = [grpo_row("v1#cls", "v1", SHADES["v1"], "cls", answer="Fighting"), grpo_row("v5#cls", "v5", SHADES["v5"], "cls", answer="Normal", label="normal", category="Normal"),
           grpo_row("v6#cls", "v6", SHADES["v6"], "cls", answer="Robbery", category="Robbery")]
    p2c = [grpo_row("v1#p2c", "v1", SHADES["v1"], "p2c", span=[2.0, 6.0]), grpo_row("v2#p2c", "v2", SHADES["v2"], "p2c", span=[0.0, 4.0]),
           grpo_row("v5#p2c", "v5", SHADES["v5"], "p2c", label="normal", category="Normal"),
           grpo_row("v6#p2c", "v6", SHADES["v6"], "p2c", category="Robbery")]  # abnormal, span unknown
    reflect = [grpo_row("v1#rqa", "v1", SHADES["v1"], "reflect", answer="B", options=OPTIONS, question="Which event?", reflect_task="qa"),
               grpo_row("v2#p2c", "v2", SHADES["v2"], "reflect", span=[0.0, 4.0], reflect_task="tag"),
               grpo_row("v4#rqa", "v4", SHADES["v4"], "reflect", answer="C", options=OPTIONS, question="Which event?", reflect_task="qa")]
    sft = [sft_row("v1#sft", "v1", SHADES["v1"], P2C_REPLIES["v1"]), sft_row("v2#sft", "v2", SHADES["v2"], P2C_REPLIES["v2"]),
           sft_row("v3#sft", "v3", SHADES["v3"], "<think>The man walks.</think><answer>Nothing happens.</answer>")]
    return {"grpo_qa": qa, "grpo_tag": tag, "grpo_cls": cls, "grpo_p2c": p2c, "grpo_reflect": reflect, "p2c_sft": sft}


# -- fixed replies -------------------------------------------------------------------------------------

QA = {  # no think: A right, C wrong, unparsable, "D." right → 2/4 = 50.0, 1 unparsable
    "no_think": {"v1": "A", "v2": "C", "v3": "I cannot tell from these frames.", "v4": "D."},
    # think: A, B right, C right, A wrong → 3/4 = 75.0
    "think": {"v1": "<think>He runs.</think><answer>A</answer>", "v2": "<think>They fight.</think><answer>B</answer>",
              "v3": "<answer>C</answer>", "v4": "<think>x</think><answer>A</answer>"},
}
TAG = {  # v1 gt [2,6], v2 gt [0,4], duration 10
    # IoU 1.0 and [2,6]∩[0,4]=2 / 6 = 0.3333 → mIoU 0.6667, R@0.3 1.0, R@0.5 0.5, R@0.7 0.5
    "no_think": {"v1": "<glue>[2.0, 6.0]</glue>", "v2": "<glue>[2, 6]</glue>"},
    # reversed span → no span → IoU 0 (the think text's "1 to 3 s" must not count); v2 exact → mIoU 0.5, R@k 0.5
    "think": {"v1": "<think>from 1 to 3 s a man falls</think><answer>Anomaly</answer><glue>[6.0, 2.0]</glue>",
              "v2": "<think>fight</think><answer>Anomaly</answer><glue>[0.0, 4.0]</glue>"},
}
CLS = {  # gt v1 Fighting, v5 Normal, v6 Robbery
    "no_think": {"v1": "<answer>Fighting</answer>", "v5": "<answer>Normal</answer>", "v6": "<answer>Stealing</answer>"},  # 2/3, binary 3/3
    "think": {"v1": "<think>calm</think><answer>Normal</answer>", "v5": "<answer>Normal</answer>", "v6": "<answer>Robbery</answer>"},  # 2/3, binary 2/3
}
P2C_REPLIES = {
    # TP, when [0.2,0.6]×10 = [2,6] → IoU 1
    "v1": "<think>A man hits another at [3, 5] in my count.</think><answer><which>Fighting</which><what>Two men fight.</what><when>[0.200, 0.600]</when></answer>",
    # FN (says normal), no span → IoU 0
    "v2": "<think>People stand still.</think><answer><which>Normal</which><what>Nothing unusual happens.</what></answer>",
    # FP
    "v5": "<think>x</think><answer><which>Abnormal</which><when>[0.1, 0.2]</when></answer>",
    # TP, span unknown → not grounded
    "v6": "<think>x</think><answer><which>Robbery</which><when>[0.5, 0.9]</when></answer>",
}
REFLECT = {
    "v1": "<think>a</think><answer>A</answer><reflection>The punch shows a fight.</reflection><think>b</think><answer>B</answer>",  # W→C
    "v2": "<think>a</think><answer>[0, 4]</answer><reflection>Maybe later.</reflection><think>b</think><answer>[5, 9]</answer>",  # C→W
    "v4": "<think>a</think><answer>C</answer><reflection>Still C.</reflection><think>b</think><answer>C</answer>",  # C→C
}
VAU_EVAL = {
    "v1": ['```json\n{"classification_score": 8, "key_matching_score": 6, "fluency_score": 9, "informativeness_score": 7, '
           '"factual_score": 5, "total_score": 35, "comments": {"fluency": "ok"}}\n```'],
    # unreadable first, then bare JSON whose stated total is wrong: the sum (20) counts
    "v2": ["Scores: classification 7/10, fluency 9/10.",
           'Sure. {"classification_score": 4, "key_matching_score": 4, "fluency_score": 10, "informativeness_score": 2, '
           '"factual_score": 0, "total_score": 99}'],
    "v3": ["I refuse to grade this.", "Still no JSON, sorry."],  # failed after one re-ask
}


def video_of(received: Received) -> str | None:
    for part in content_parts(received):
        if part.get("type") == "video_url":
            first = part["video_url"]["url"].split(",", 1)[1].split(",")[0]
            return VIDEO_OF.get(first)
    return None


def last_user_text(received: Received) -> str:
    messages = received.body["messages"]
    user = [m for m in messages if m["role"] == "user"][-1]
    content = user["content"]
    return content if isinstance(content, str) else " ".join(p.get("text", "") for p in content if p.get("type") == "text")


def all_text(received: Received) -> str:
    return " ".join(p.get("text", "") for p in content_parts(received) if p.get("type") == "text")


def model_reply(received: Received, prefix: str = "") -> str:
    """The model under test (or, with a prefix, its rival): a fixed reply per (prompt, video)."""
    text, video = last_user_text(received), video_of(received)
    think = "think" if "<think>" in text else "no_think"
    if "### Question:" in text:
        return QA[think][video]
    if "Is there any anomaly in the video?" in text:
        return TAG[think][video]
    if "What type of anomaly appears" in text:
        return CLS[think][video]
    if "Reason step by step from what you perceive" in text:
        return P2C_REPLIES[video]
    if "reflect on your answer and answer again" in text:
        return REFLECT[video]
    if "Provide a description in five sentences" in text:
        return f"{prefix}DESC-{video}: a man walks in a street and then something happens."
    if "Explain in detail whether" in text:
        first = video_of(received)
        return f"{prefix}ANALYSIS-{first}: the man is attacked, which is abnormal."
    raise AssertionError(f"unexpected prompt: {text[:200]}")


def judge_reply(received: Received) -> str:
    text = all_text(received)
    if "[[A]]" in text and "Assistant A" in text:
        return pairwise_reply(text)
    video = re.search(r"DESC-(v\d)", text).group(1)
    replies = VAU_EVAL[video]
    reasked = len([m for m in received.body["messages"] if m["role"] == "assistant"])
    return replies[min(reasked, len(replies) - 1)]


PAIRWISE = {  # (model first, model second) verdicts → outcome for the model under test
    "v1": ("[[A]]", "[[B]]"),  # preferred in both orders → win
    "v2": ("[[A]]", "[[A]]"),  # follows the position → tie, prefers_first
    "v3": ("[[C]]", "[[C]]"),  # tie, consistent
}


def pairwise_reply(text: str) -> str:
    first_answer = text.split("[The Start of Assistant A's Answer]", 1)[1]
    video = re.search(r"DESC-(v\d)", first_answer).group(1)
    model_first = not first_answer.lstrip().startswith("Description: RIVAL")
    verdict = PAIRWISE[video][0 if model_first else 1]
    return f"Assistant A's answer says [[A]] or [[B]] format aside, my verdict: {verdict}"


def respond(received: Received) -> Reply:
    model = received.body["model"]
    if model == "judge":
        return Reply(judge_reply(received), input_tokens=100)
    return Reply(model_reply(received, "RIVAL-" if model == "rival" else ""), input_tokens=50)


@pytest.fixture()
def peer():
    with OpenAIPeer(Script(default=respond)) as server:
        yield server


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_exported(tmp_path_factory.mktemp("exported"), dataset_rows())


def options(dataset: Path, out: Path, peer: OpenAIPeer, **kw) -> EvalOptions:
    return EvalOptions(data=str(dataset), model=f"openai:m@{peer.base_url}", out=out, judge=f"openai:judge@{peer.base_url}",
                       show_progress=False, concurrency=8, **kw)


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-eval-secret")


# -- end to end ------------------------------------------------------------------------------------------

def test_all_tasks_give_the_hand_computed_metrics(dataset, tmp_path, peer):
    out = tmp_path / "eval"
    result = run_eval(options(dataset, out, peer))
    m = json.loads((out / "metrics.json").read_text())

    assert m["qa"]["no_think"] == {"accuracy": 0.5, "n": 4, "unparsable": 1}
    assert m["qa"]["think"]["accuracy"] == 0.75 and m["qa"]["think"]["unparsable"] == 0
    tag = m["tag"]["no_think"]
    assert tag["n"] == 2 and tag["miou"] == pytest.approx(2 / 3) and tag["r@0.3"] == 1.0 and tag["r@0.5"] == 0.5 and tag["r@0.7"] == 0.5
    assert m["tag"]["think"]["miou"] == pytest.approx(0.5) and m["tag"]["think"]["r@0.3"] == 0.5
    assert m["cls"]["no_think"]["accuracy"] == pytest.approx(2 / 3) and m["cls"]["no_think"]["binary_accuracy"] == 1.0
    assert m["cls"]["think"]["accuracy"] == pytest.approx(2 / 3) and m["cls"]["think"]["binary_accuracy"] == pytest.approx(2 / 3)

    detection = m["p2c"]["detection"]  # TP 2, FN 1, FP 1, TN 0
    assert detection["accuracy"] == 0.5 and detection["precision"] == pytest.approx(2 / 3)
    assert detection["recall"] == pytest.approx(2 / 3) and detection["f1"] == pytest.approx(2 / 3) and detection["n"] == 4
    assert m["p2c"]["grounding"]["n"] == 2 and m["p2c"]["grounding"]["miou"] == pytest.approx(0.5)
    text = m["p2c"]["text"]  # v1, v2 replies equal their p2c_sft references word for word
    assert text["n"] == 2 and text["bleu1"] == pytest.approx(1.0) and text["bleu4"] == pytest.approx(1.0) and text["rougeL"] == pytest.approx(1.0)

    reflect = m["reflect"]["all"]
    assert reflect["initial_accuracy"] == pytest.approx(2 / 3) and reflect["final_accuracy"] == pytest.approx(2 / 3)
    assert (reflect["C→C"], reflect["W→C"], reflect["W→W"], reflect["C→W"]) == (1, 1, 0, 1)

    vau = m["reasoning"]["vau_eval"]  # v1 (8,6,9,7,5)=35, v2 (4,4,10,2,0)=20, v3 failed
    assert vau["n"] == 2 and vau["failed"] == 1
    assert (vau["classification_score"], vau["key_matching_score"], vau["fluency_score"], vau["informativeness_score"], vau["factual_score"]) == (6, 5, 9.5, 4.5, 2.5)
    assert vau["total_score"] == 27.5

    # a failed judge item makes the run partial, with its reason in rejects.jsonl
    assert result.summary.exit_code == 3
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [r["item"] for r in rejects] == ["reasoning/v3#sft"] and "unreadable twice" in rejects[0]["reason"]

    preds = {(p["id"], p["mode"]): p for p in iter_predictions(out)}
    assert preds[("v3#qa0", "no_think")]["prediction"] is None and preds[("v3#qa0", "no_think")]["scores"] == {"correct": False}
    assert preds[("v2#qa0", "no_think")]["prediction"] == "C" and preds[("v2#qa0", "no_think")]["scores"] == {"correct": False}
    assert preds[("v1#qa0", "no_think")]["scores"] == {"correct": True}
    assert preds[("v1#p2c", None)]["prediction"] == {"abnormal": True, "spans": [[2.0, 6.0]]} and preds[("v1#p2c", None)]["scores"]["iou"] == 1.0
    assert preds[("v2#tag", "no_think")]["prediction"] == [[2.0, 6.0]] and preds[("v2#tag", "no_think")]["scores"]["iou"] == pytest.approx(1 / 3, abs=1e-5)
    assert preds[("v2#tag", "no_think")]["prompt"] == "eval_tag" and preds[("v2#tag", "think")]["prompt"] == "eval_tag_think"
    assert preds[("v1#rqa", None)]["scores"]["transition"] == "W→C"
    judged = preds[("v2#sft", None)]["judge"]
    assert judged["status"] == "ok" and judged["reasked"] and judged["scores"]["total_score"] == 20 and judged["scores"]["stated_total"] == 99
    assert preds[("v1#sft", None)]["raw"]["analysis"].startswith("ANALYSIS-v1")

    md = (out / "metrics.md").read_text()
    assert "| openai:m@" in md and "| 50.0 | 66.7 | 100.0 | 50.0 | 50.0 | 100.0 | 66.7 |" in md  # VAU-R1 row w/o think
    assert "| C→C | W→C | W→W | C→W |" in md and "| 66.7 | 66.7 | 1 | 1 | 0 | 1 |" in md
    assert "sk-test-eval-secret" not in md + (out / "metrics.json").read_text() + (out / "predictions.jsonl").read_text()


def test_prompts_carry_the_question_options_and_video(dataset, tmp_path, peer):
    run_eval(options(dataset, tmp_path / "eval", peer, tasks=("qa",), think="on"))
    bodies = [r.body for r in peer.script.received]
    assert len(bodies) == 4  # one request per question, think mode only
    text = " ".join(p.get("text", "") for p in content_parts(peer.script.received[0]) if p.get("type") == "text")
    assert "### Options:\nA. a man runs\nB. a man fights\nC. a car stops\nD. a dog barks" in text
    assert "<think> your detailed reasoning process here </think>" in text and "it lasts 10.0 seconds" in text
    parts = content_parts(peer.script.received[0])
    assert parts[0]["type"] == "video_url" and parts[0]["video_url"]["url"].count(",") == 4  # 4 frames


def test_rerun_is_answered_from_the_ledger(dataset, tmp_path, peer):
    out = tmp_path / "eval"
    opts = options(dataset, out, peer, tasks=("qa", "reasoning"))
    run_eval(opts)
    calls = peer.script.calls
    first = json.loads((out / "metrics.json").read_text())
    assert calls == 8 + 3 * 2 + 3 + 2  # qa ×2 modes, reasoning 2 turns, VAU-Eval 3 + 2 re-asks
    again = run_eval(opts)
    assert peer.script.calls == calls  # nothing paid twice
    assert again.metrics["qa"] == first["qa"] and again.metrics["reasoning"] == first["reasoning"]
    assert again.metrics["usage"]["model"]["cache_hits"] == 14 and again.metrics["usage"]["model"]["calls"] == 0


def test_pairwise_in_both_orders_with_position_bias(dataset, tmp_path, peer):
    out = tmp_path / "eval"
    result = run_eval(options(dataset, out, peer, tasks=("reasoning",), pairwise=f"openai:rival@{peer.base_url}"))
    pair = result.metrics["pairwise"]
    assert (pair["wins"], pair["ties"], pair["losses"]) == (1, 2, 0)
    assert pair["consistent"] == 2 and pair["prefers_first"] == 1 and pair["prefers_second"] == 0 and pair["n"] == 3
    rival_calls = [r for r in peer.script.received if r.body["model"] == "rival"]
    assert len(rival_calls) == 6  # the rival answers both reasoning turns of the 3 items
    judge_pairs = [r for r in peer.script.received if r.body["model"] == "judge" and "Assistant A" in all_text(r)]
    assert len(judge_pairs) == 6  # every item in both orders
    preds = {p["id"]: p for p in iter_predictions(out)}
    assert preds["v1#sft"]["pairwise"] == {"first": "A", "second": "B", "outcome": "win"}
    assert "| 1 | 2 | 0 | 33.3 | 2/3 | 1 | 0 | 0 |" in (out / "metrics.md").read_text()


def test_dry_run_calls_nothing(dataset, tmp_path, peer):
    result = run_eval(options(dataset, tmp_path / "eval", peer, tasks=("qa", "reasoning"), dry_run=True))
    assert peer.script.calls == 0
    assert result.summary.counts["model calls"] == 8 + 3 + 3 and result.summary.counts["judge calls"] == 3
    assert not (tmp_path / "eval" / "predictions.jsonl").exists()


def test_failed_calls_count_as_wrong_and_make_the_run_partial(dataset, tmp_path):
    from peers import Fault

    def flaky(received: Received):
        if video_of(received) == "v1":
            return Fault.of("bad_request")
        return Reply(model_reply(received))

    with OpenAIPeer(Script(default=flaky)) as server:
        result = run_eval(EvalOptions(data=str(dataset), model=f"openai:m@{server.base_url}", out=tmp_path / "eval", tasks=("qa",),
                                      think="off", show_progress=False))
    assert result.metrics["qa"]["no_think"] == {"accuracy": 0.25, "n": 4, "unparsable": 2}  # v1 failed, v3 unparsable, v4 right
    assert result.summary.exit_code == 3
    rejects = [json.loads(line) for line in (tmp_path / "eval" / "rejects.jsonl").read_text().splitlines()]
    assert [r["item"] for r in rejects] == ["qa/v1#qa0|no_think"] and "model call failed" in rejects[0]["reason"]


def test_cli_eval_prints_the_tables_and_exit_status(dataset, tmp_path, peer):
    out = tmp_path / "eval"
    res = CliRunner().invoke(app, ["eval", "--data", str(dataset), "--model", f"openai:m@{peer.base_url}", "--tasks", "qa,cls",
                                   "--think", "off", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "VAU-R1 (VAU-Bench)" in res.output and (out / "metrics.md").exists()
    bad = CliRunner().invoke(app, ["eval", "--data", str(dataset), "--model", "openai:m", "--tasks", "qa,nope", "--out", str(out)])
    assert bad.exit_code == 2 and "nope" in bad.output
    nojudge = CliRunner().invoke(app, ["eval", "--data", str(dataset), "--model", "openai:m", "--pairwise", "openai:r", "--out", str(out)])
    assert nojudge.exit_code == 2 and "--judge" in nojudge.output
    missing = CliRunner().invoke(app, ["eval", "--data", str(tmp_path / "nothing.csv"), "--model", "openai:m", "--out", str(out)])
    assert missing.exit_code == 2 and "nothing.csv" in missing.output and "exist" in missing.output


def test_a_dataset_re_exported_at_the_same_path_is_read_afresh(tmp_path):
    from vau_annotate.pipelines.eval_items import DEFAULT_CONFIGS, load_dataset_items

    for answer in ("A", "C"):
        write_exported(tmp_path / "ds", {"grpo_qa": [grpo_row("v1#qa0", "v1", 10, "qa", answer=answer, options=OPTIONS, question="Q?")]})
        items, _ = load_dataset_items(str(tmp_path / "ds"), ["qa"], DEFAULT_CONFIGS, None, None, 64)
        assert [i.answer for i in items] == [answer]


def test_path_rows_are_sampled_here_and_a_missing_video_fails_its_item(tmp_path, monkeypatch):
    from eval_fixtures import path_row
    from media import make_clip

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    make_clip(tmp_path / "videos" / "clips" / "fight.mp4", seconds=4.0, fps=10, width=64, height=48)
    data = write_exported(tmp_path / "ds", {"grpo_qa": [
        path_row("fight#qa0", "fight", "clips/fight.mp4", "qa", answer="B", options=OPTIONS, question="What happens?", duration=4.0),
        path_row("gone#qa0", "gone", "clips/gone.mp4", "qa", answer="A", options=OPTIONS, question="What happens?", duration=4.0),
    ]})
    with OpenAIPeer(Script(default=Reply("B"))) as server:
        result = run_eval(EvalOptions(data=str(data), model=f"openai:m@{server.base_url}", out=tmp_path / "eval", tasks=("qa",),
                                      think="off", videos=tmp_path / "videos", show_progress=False))
        parts = content_parts(server.script.received[0])
    assert server.script.calls == 1 and parts[0]["video_url"]["url"].count(",") == 4  # nframes 4 → uniform:4
    assert result.metrics["qa"]["no_think"] == {"accuracy": 1.0, "n": 1, "unparsable": 0}
    assert result.metrics["items"] == 2 and result.metrics["unreadable_videos"] == 1 and result.summary.exit_code == 3
    rejects = [json.loads(line) for line in (tmp_path / "eval" / "rejects.jsonl").read_text().splitlines()]
    assert [r["item"] for r in rejects] == ["qa/gone#qa0|no_think"] and "video could not be read" in rejects[0]["reason"]
    preds = {p["id"]: p for p in iter_predictions(tmp_path / "eval")}
    assert preds["gone#qa0"]["error"].startswith("video:") and preds["fight#qa0"]["prediction"] == "B"


def test_a_task_whose_config_is_missing_is_skipped_with_a_note(dataset, tmp_path):
    res = CliRunner().invoke(app, ["eval", "--data", str(dataset), "--model", "openai:m", "--tasks", "qa", "--config", "qa=grpo_nope",
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "no test items" in res.output and "grpo_nope" in res.output


def test_an_invalid_key_stops_the_run_with_status_1_and_no_secret(dataset, tmp_path, monkeypatch):
    from peers import Fault

    monkeypatch.setenv("OPENAI_API_KEY", "sk-live-do-not-print-me")
    with OpenAIPeer(Script(default=Fault.of("invalid_key"))) as server:
        res = CliRunner().invoke(app, ["eval", "--data", str(dataset), "--model", f"openai:m@{server.base_url}", "--tasks", "qa",
                                       "--think", "off", "--out", str(tmp_path / "eval")])
    assert res.exit_code == 1 and "stopped" in res.output
    assert "sk-live-do-not-print-me" not in res.output
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_an_all_normal_split_has_no_grounding_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    rows = [grpo_row(f"n{i}#p2c", f"n{i}", 20 * i, "p2c", label="normal", category="Normal") for i in range(3)]
    data = write_exported(tmp_path / "ds", {"grpo_p2c": rows})
    # one says normal (TN), one abnormal (FP), one nothing readable (counted, wrong)
    replies = iter(["<answer><which>Normal</which></answer>", "<answer><which>Abnormal</which><when>[0.1, 0.5]</when></answer>", "hmm"])
    with OpenAIPeer(Script(*[Reply(next(replies)) for _ in range(3)])) as server:
        result = run_eval(EvalOptions(data=str(data), model=f"openai:m@{server.base_url}", out=tmp_path / "eval", tasks=("p2c",),
                                      show_progress=False, concurrency=1))
    detection = result.metrics["p2c"]["detection"]
    assert detection["n"] == 3 and detection["accuracy"] == pytest.approx(1 / 3) and detection["precision"] == 0.0
    assert result.metrics["p2c"]["grounding"] == {"miou": None, "r@0.3": None, "r@0.5": None, "r@0.7": None, "n": 0}
    assert "| 33.3 | 0.0 |" in (tmp_path / "eval" / "metrics.md").read_text() and "| - | - | - | - |" in (tmp_path / "eval" / "metrics.md").read_text()


def test_batch_api_gives_the_same_metrics(dataset, tmp_path, peer):
    """`eval --batch`: model and judge calls go through the Batch API peer; the metrics equal those of
    the synchronous run, and the re-asks (judge repair) go out in later rounds."""
    from peers.batch_server import BatchPeer, completion

    from vau_annotate.pipelines.models import ModelAccess

    def answer(body: dict) -> tuple[int, dict]:
        return 200, completion(respond(Received("POST", "/v1/chat/completions", {}, body)).text)

    sync_out, batch_out = tmp_path / "sync", tmp_path / "batch"
    run_eval(options(dataset, sync_out, peer))
    with BatchPeer(answer) as batch_peer:
        run_eval(options(dataset, batch_out, batch_peer, access=ModelAccess(batch=True, batch_poll_s=0.05)))
        assert len(batch_peer.created) >= 2 and sum(len(u) for u in batch_peer.uploads) >= 20
    sync_m, batch_m = (json.loads((out / "metrics.json").read_text()) for out in (sync_out, batch_out))
    for section in ("qa", "tag", "cls", "p2c", "reflect", "reasoning"):
        assert batch_m[section] == sync_m[section], section
