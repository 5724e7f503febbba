"""The reflect stage (SRVAU-R1 triples): judging, gates, records, end-to-end runs on loopback peers,
resume after kill -9, the tiny model as base through hf:, and serve-base's process handling."""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from media import make_clip, make_not_a_video
from peers import Fault, OpenAIPeer, Received, Reply, Script
from peers.openai_server import content_parts

from vau_annotate.annotate.checks import run_gates
from vau_annotate.annotate.checks.reflect import (
    ReflectCandidate,
    ReflectGateConfig,
    chronology_failure,
    copy_failure,
    mentioned_times,
    reflect_gates,
)
from vau_annotate.annotate.engine import RunStopped
from vau_annotate.annotate.rundir import RunDir
from vau_annotate.pipelines.reflect import ReflectItem, ReflectOptions, Truth, build_items, judge_reply, predict_tag, run_reflect, spread, tag_truth
from vau_annotate.pipelines.runner import StageStore
from vau_annotate.pipelines.serve import ServeOptions, answers, model_len, serve_command
from vau_annotate.pipelines.status import collect_status
from vau_annotate.prompts import load_prompt
from vau_annotate.schemas import MCQ, SCHEMAS, Span, VideoRecord
from vau_annotate.schemas.reflection import Attempt, ReflectionProvenance, ReflectionRecord, render_reflect_prompt, transition_of

OPTIONS = ["A person walks a dog", "A car hits a pole", "People dance", "It rains"]


def video(vid: str = "v1", label: str = "abnormal", spans: list[tuple[float, float]] | None = None, mcqs: int = 1,
          span_known: bool | None = None, duration: float = 12.0, questions: list[str] | None = None) -> VideoRecord:
    """A manifest record; `questions` (each answered B) replace the `mcqs` identical default questions."""
    spans = spans if spans is not None else ([(3.0, 8.0)] if label == "abnormal" else [])
    questions = questions if questions is not None else ["What happens?"] * mcqs
    return VideoRecord(
        id=vid, path=f"{vid}.mp4", source="vau-bench", label=label, duration=duration,
        spans=[Span(start=s, end=e) for s, e in spans], span_known=bool(spans) if span_known is None else span_known,
        mcqs=[MCQ(question=q, options=OPTIONS, answer="B") for q in questions],
    )


def qa_item(answer: str = "B") -> ReflectItem:
    return ReflectItem("v1#qa0", video(), "qa", Truth(letter=answer), MCQ(question="What happens?", options=OPTIONS, answer=answer))


def tag_item(label: str = "abnormal") -> ReflectItem:
    v = video(label=label)
    truth = tag_truth(v)
    assert isinstance(truth, Truth)
    return ReflectItem(f"{v.id}#tag", v, "tag", truth)


# -- items ------------------------------------------------------------------------------------------

def test_build_items_skips_with_reasons():
    videos = [
        video("a", mcqs=2),
        video("b", label="normal", mcqs=0),
        video("c", spans=[], span_known=False),
        video("d", label="unlabeled", spans=[], mcqs=0),
    ]
    items, skipped = build_items(videos, ("qa", "tag"))
    assert [i.id for i in items] == ["a#qa0", "a#qa1", "a#tag", "b#tag", "c#qa0"]
    assert skipped == {
        "qa: video has no multiple-choice question": 2,
        "tag: abnormal video with unknown span": 1,
        "tag: unlabeled video": 1,
    }
    assert items[3].truth.text == "normal" and items[2].truth.text == "[3.0, 8.0]"
    only_tag, _ = build_items(videos, ("tag",))
    assert [i.task for i in only_tag] == ["tag", "tag"]


def test_tag_truth_uses_hull_of_spans():
    truth = tag_truth(video(spans=[(2.0, 4.0), (6.0, 9.5)]))
    assert isinstance(truth, Truth) and truth.span == (2.0, 9.5)


# -- judging ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "text,prediction,correct",
    [
        ("<think>x</think><answer>B</answer>", "B", True),
        ("<think>x</think><answer>(C) people dance</answer>", "C", False),
        ("I believe the answer is B.", "B", True),  # VAU-Bench fallback without tags
        ("<answer>a car hits a pole</answer>", "B", True),  # option text quoted verbatim
        ("gibberish tokens без формата", None, False),  # does not parse: wrong, text kept
        ("", None, False),
    ],
)
def test_judge_qa(text, prediction, correct):
    attempt = judge_reply(qa_item(), text, 0.5)
    assert (attempt.prediction, attempt.correct) == (prediction, correct)
    assert attempt.text == text


@pytest.mark.parametrize(
    "text,expected",
    [
        ("<answer>[3.0, 8.0]</answer>", (3.0, 8.0)),
        ("<answer>normal</answer>", "normal"),
        ("<answer>No anomaly.</answer>", "normal"),
        ("<think>from [1, 2]</think><answer>[4s, 9s]</answer>", (4.0, 9.0)),
        ("the event is at [5, 7]", (5.0, 7.0)),
        ("<answer>abnormal</answer>", None),
        ("nothing", None),
    ],
)
def test_predict_tag(text, expected):
    assert predict_tag(text) == expected


def test_judge_tag_iou_and_normal_videos():
    abnormal, normal = tag_item(), tag_item("normal")
    hit = judge_reply(abnormal, "<answer>[3.5, 8.0]</answer>", 0.5)
    assert hit.correct and hit.iou == pytest.approx(0.9) and hit.prediction == "[3.5, 8.0]"
    miss = judge_reply(abnormal, "<answer>[0, 4]</answer>", 0.5)
    assert not miss.correct and miss.iou == pytest.approx(1 / 8)
    assert not judge_reply(abnormal, "<answer>normal</answer>", 0.5).correct
    assert judge_reply(normal, "<answer>normal</answer>", 0.5).correct
    span_on_normal = judge_reply(normal, "<answer>[1, 2]</answer>", 0.5)
    assert not span_on_normal.correct and span_on_normal.iou is None
    assert judge_reply(abnormal, "<answer>[3.5, 8.0]</answer>", 0.95).correct is False  # threshold is configurable


# -- gates ------------------------------------------------------------------------------------------

def test_mentioned_times_ranges_clock_and_durations():
    text = "At 2.5 s a person enters; between 3 and 8 seconds a car moves, for 5 seconds. At 00:12 it stops, see [13.0, 20.5]."
    assert mentioned_times(text) == [2.5, 3.0, 12.0, 13.0]
    assert mentioned_times("2 people and 3 cars") == []
    assert chronology_failure(text) is None
    failure = chronology_failure("At 10 s the car crashes. At 4 s it speeds up.")
    assert failure and "10 s to 4 s" in failure


def test_copy_failure_ignores_case_and_spacing():
    assert copy_failure("A Car  hits the pole.", "a car hits the pole") is not None
    assert copy_failure("At 3 s a car swerves and hits the pole at 6 s.", "A car hits the pole.") is None


REFLECTION = ("My reasoning named a dancing crowd that no frame shows; I relied on one impression and missed the car "
              "leaving its lane at 3 s and what it strikes afterwards.")
PLAIN_THINK = "At 3 s a car drifts out of its lane. At 5 s it strikes the pole and stops at 8 s."
GOOD_THINK = "Oh, I see, the car leaving its lane at 3 s is the cue I missed. " + PLAIN_THINK


def reply(reflection: str = REFLECTION, think: str = GOOD_THINK, answer: str = "B") -> str:
    return f"<reflection>{reflection}</reflection><think>{think}</think><answer>{answer}</answer>"


def candidate(text: str, item: ReflectItem | None = None, initial_think: str = "People dance in the street.") -> ReflectCandidate:
    item = item or qa_item()
    return ReflectCandidate(reply=text, initial_think=initial_think, revised=judge_reply(item, text, 0.7), truth=item.truth.text,
                            min_iou=0.7 if item.task == "tag" else None)


@pytest.mark.parametrize(
    "text,failed",
    [
        (reply(), []),
        (reply(answer="C"), ["revised-answer"]),
        (reply(reflection="Wrong."), ["reflection", "refers-back"]),  # a bare verdict raises nothing to take up
        (reply(reflection=" "), ["format", "reflection", "refers-back"]),
        ("<think>" + GOOD_THINK + "</think><answer>B</answer>", ["format", "reflection", "refers-back"]),
        (reply() + " trailing text", ["format"]),
        (reply(think="People dance in the street."), ["revision", "refers-back"]),
        (reply(think=PLAIN_THINK), ["refers-back"]),  # right answer, but the reflection changed nothing visible
        (reply(think="Wait, let me confirm what happens in the street. People keep dancing there."), ["refers-back"]),  # takes up nothing it raised
        (reply(reflection="The ground truth says B; my reasoning missed the car at 3 s and what it strikes."), ["no-leak"]),
        (reply(reflection=REFLECTION + " So the answer is B."), ["no-leak"]),
        (reply(reflection=REFLECTION + " Option (C) ignores that."), []),  # naming a wrong option is pointing at a problem
        (reply(think=GOOD_THINK + " The correct answer is therefore B."), ["no-leak"]),
        (reply(think="Wait, let me confirm the car at 3 s. At 8 s the car stops. At 3 s it drifts."), ["chronology"]),
        (reply(think="Oh, I see, at 3 s he drives off the road and hits the pole."), ["neutrality"]),
        (reply().replace("reflection>", "reflect>"), []),  # the reward section's spelling parses too
    ],
)
def test_reflect_gates(text, failed):
    report = run_gates(candidate(text), reflect_gates().select())
    assert report.failed_names == failed


def test_revised_grounding_needs_the_higher_iou():
    item = tag_item()
    assert run_gates(candidate(reply(answer="[3.0, 8.5]"), item), reflect_gates().select()).passed
    report = run_gates(candidate(reply(answer="[3.5, 10.0]"), item), reflect_gates().select())
    assert report.failed_names == ["revised-answer"] and "IoU 0.64 < 0.70" in report.detail()["revised-answer"]
    stated = run_gates(candidate(reply(reflection=REFLECTION + " Re-check [3.0, 8.0].", answer="[3.0, 8.5]"), item), reflect_gates().select())
    assert stated.failed_names == ["no-leak"] and "states the answer span [3.0, 8.0]" in stated.detail()["no-leak"]


def test_gates_can_be_skipped_and_configured():
    registry = reflect_gates(ReflectGateConfig(reflection_words=(1, 3)))
    assert registry.names == ["format", "reflection", "revised-answer", "revision", "refers-back", "no-leak", "chronology", "neutrality"]
    assert run_gates(candidate(reply(reflection="Car at 3s.")), registry.select()).passed  # 3 words, a time the revision takes up
    report = run_gates(candidate(reply(reflection="Too vague.", think="At 3 s he falls.")), registry.select(skip=["neutrality", "refers-back"]))
    assert report.passed


# -- the record -------------------------------------------------------------------------------------

def record() -> ReflectionRecord:
    initial = Attempt(text="<think>People dance.</think><answer>C</answer>", think="People dance.", answer="C", prediction="C", correct=False)
    revised = Attempt(text=reply(), think=GOOD_THINK, answer="B", prediction="B", correct=True)
    return ReflectionRecord(
        id="v1#qa0", video_id="v1", task="qa", label="abnormal", question="What happens?", options=OPTIONS, ground_truth="B",
        prompt="PROMPT", initial=initial, reflection=REFLECTION, revised=revised, transition=transition_of(False, True),
        provenance=ReflectionProvenance(base_model="hf:tiny", teacher_model="openai:t", sampling="fps:1", max_pixels=784, num_frames=4),
    )


def test_record_renderings_use_the_self_reflection_sft_prompt():
    rec = record()
    assert SCHEMAS["reflection"] is ReflectionRecord
    assert rec.transition == "W→C"
    two = rec.two_round()
    assert set(two) == {"system", "prompt", "completion"}
    assert two["system"] == load_prompt("reflect_sft_system").render() and "reflecting on your own reasoning" in two["system"]
    assert two["prompt"] != "PROMPT" and "Question: What happens?" in two["prompt"] and "B. A car hits a pole" in two["prompt"]
    assert "<reflection>" in two["prompt"] and "Answer in two rounds" in two["prompt"] and "frames sampled at 1 frame(s)" in two["prompt"]
    assert "only the letter of the correct option" in two["prompt"]
    assert two["completion"] == (
        f"<think>People dance.</think><answer>C</answer><reflection>{REFLECTION}</reflection>"
        f"<think>{GOOD_THINK}</think><answer>B</answer>"
    )
    cond = rec.conditioned()
    assert cond["system"] == two["system"]
    assert cond["prompt"] == f"PROMPT\n\n<think>People dance.</think><answer>C</answer><reflection>{REFLECTION}</reflection>"
    assert cond["completion"] == f"<think>{GOOD_THINK}</think><answer>B</answer>"
    rft = render_reflect_prompt("reflect_rft", "tag", "Does something abnormal happen?", duration=12.0, fps=2.0)
    assert "It lasts 12.0 seconds" in rft and "<reflection></reflection>" in rft and "[start, end]" in rft and "Options" not in rft


def test_untagged_initial_becomes_the_think_of_round_one():
    assert Attempt(text="  noise tokens ", correct=False).round() == "<think>noise tokens</think><answer></answer>"
    assert Attempt(text="I pick B.", prediction="B", correct=True).round() == "<think>I pick B.</think><answer>B</answer>"


def test_transitions():
    assert [transition_of(a, b) for a, b in ((True, True), (False, True), (False, False), (True, False))] == ["C→C", "W→C", "W→W", "C→W"]


# -- prompts ----------------------------------------------------------------------------------------

def test_prompts_render_and_keep_reflection_out_of_the_base_prompt():
    values = {"fps": "1", "duration": "12.0", "question": "What happens?", "options": "A. x\nB. y\nC. z\nD. w"}
    for task in ("qa", "tag"):
        base = load_prompt(f"reflect_initial_{task}").render(**values)
        assert "reflect" not in base.lower() and "<think>" in base and "<answer>" in base
        teacher = load_prompt(f"reflect_teacher_{task}").render(**values, initial="<think>t</think><answer>A</answer>", ground_truth="B", verdict="wrong", letter="B")
        assert "<reflection>" in teacher and "Annotation guidelines" in teacher
        for aspect in ("missing key evidence", "temporal misalignment", "causal breaks", "consistency with the whole video"):
            assert aspect in teacher, aspect  # SRVAU-R1's four reflection aspects
        assert "Oh, I see" in teacher and "Wait, let me confirm" in teacher and "Do not state the final answer" in teacher
    assert "- chronology: x" in load_prompt("reflect_repair").render(failures="- chronology: x", ground_truth="B")


def test_spread_keeps_ends():
    assert spread(10, 4) == [0, 3, 6, 9]
    assert spread(3, 5) == [0, 1, 2]


# -- end to end on loopback peers -----------------------------------------------------------------------


BASE, TEACHER = "base-model", "teacher-model"
KEYS = ("cc", "wc", "ww", "cw", "repair", "garbage")
THINK = {"B": "At 1 s a car leaves its lane, it reaches the pole at 2 s and stops by 3 s.", "C": "People gather and dance."}
BASE_REPLIES = {
    "cc": f"<think>{THINK['B']}</think><answer>B</answer>",
    "wc": f"<think>{THINK['C']}</think><answer>C</answer>",
    "ww": f"<think>{THINK['C']}</think><answer>C</answer>",
    "cw": f"<think>{THINK['B']}</think><answer>B</answer>",
    "repair": "<think>A dog is walked.</think><answer>A</answer>",
    "garbage": "lorem ipsum dolor sit amet",
    "plain": "B",
    "lasts 4.0": "<think>The car hits the pole.</think><answer>[1.0, 3.0]</answer>",  # abnormal v1: right
    "lasts 3.0": "<think>A quiet street.</think><answer>[0.5, 2.0]</answer>",  # normal v2: a span is wrong
}
CRITIQUE = ("My reasoning leans on an impression instead of the frames; I missed the car drifting out of its lane "
            "at 1 s and reaching the pole at 2 s, and did not check that against the whole video.")
REVISED_THINK = ("Oh, I see, the car drifting out of its lane at 1 s is what I missed. At 1 s the car drifts out of its lane. "
                 "At 2 s it strikes the pole, and by 3 s it has stopped.")
# What the teacher peer "sees" in the clips (its perception, not the ground truth in its prompt):
SCENE = "a car drifts out of its lane and hits a pole"
SCENE_SPANS = {"4.0": "[1.0, 3.0]", "3.0": "normal"}  # grounding answer per video length, as the peer perceives it


def request_text(received: Received) -> str:
    return "\n".join(p.get("text", "") for p in content_parts(received) if p.get("type") == "text")


def teacher_reply(answer: str, think: str = REVISED_THINK) -> str:
    return f"<reflection>{CRITIQUE}</reflection><think>{think}</think><answer>{answer}</answer>"


def states_truth(text: str) -> bool:
    """The teacher prompt states the ground truth (SRVAU-R1's teacher knows it; the peer does not use it)."""
    return re.search(r"The correct answer is .+?\. The model's answer", text, re.S) is not None


def perceive(text: str) -> str:
    """The teacher peer's answer from what it is given: the option that best matches what it sees, or
    the span it sees in a video of the stated length."""
    lasts = re.search(r"It lasts ([\d.]+) seconds", text)
    if lasts:
        return SCENE_SPANS[lasts.group(1)]
    options = dict(re.findall(r"^([A-D])\. (.+)$", text, re.M))
    seen = set(SCENE.split())
    return max(options, key=lambda letter: len(seen & set(options[letter].lower().split())))


def scripted(received: Received) -> Reply:
    """Base replies by question key; the teacher answers from its perception, misreads where a key says so."""
    body = received.body
    text = request_text(received)
    key = next((k for k in (*KEYS, "plain", "lasts 4.0", "lasts 3.0") if f"[{k}]" in text or (k.startswith("lasts") and k in text)), None)
    if body["model"] == BASE:
        return Reply(BASE_REPLIES[key])
    assert states_truth(text)
    repair = len(body["messages"]) > 1
    if key == "ww":
        return Reply(teacher_reply("C"))  # the teacher misreads the video: the revised-answer gate must catch it
    if key == "cw":
        return Reply(teacher_reply("A"))
    if key == "repair" and not repair:
        return Reply(teacher_reply("B", think="Oh, I see, the car is the cue at 1 s. At 3 s the car stops. At 1 s it drifts out of its lane."))
    return Reply(teacher_reply(perceive(text)))


def make_run(root: Path, videos: list[VideoRecord]) -> Path:
    """A run directory with a manifest of generated clips (as ingest would leave it)."""
    clips = root / "videos"
    for v in videos:
        make_clip(clips / v.path, seconds=v.duration or 4.0, fps=10, width=160, height=120)
    run = root / "run"
    rd = RunDir(run)
    rd.save_manifest(videos)
    rd.record_stage("ingest", {}, {}, source="vau-bench", videos=str(clips))
    return run


def scenario_videos() -> list[VideoRecord]:
    v1 = video("v1", spans=[(1.0, 3.0)], duration=4.0, questions=[f"[{k}] What happens in the video?" for k in KEYS])
    v2 = video("v2", label="normal", mcqs=0, duration=3.0)
    v3 = video("v3", spans=[], span_known=False, duration=2.0, questions=["[plain] What happens?"])
    return [v1, v2, v3]


def options_for(peer: OpenAIPeer, **kw) -> ReflectOptions:
    defaults = dict(base=f"openai:{BASE}@{peer.base_url}", teacher=f"openai:{TEACHER}@{peer.base_url}", max_pixels=28 * 28 * 4,
                    concurrency=3, workers=1, show_progress=False)
    return ReflectOptions(**{**defaults, **kw})


@pytest.fixture
def scenario(tmp_path):
    run = make_run(tmp_path, scenario_videos())
    with OpenAIPeer(Script(default=scripted)) as peer:
        yield run, peer


def test_dry_run_calls_nothing(scenario):
    run, peer = scenario
    summary = run_reflect(run, options_for(peer, dry_run=True))
    assert peer.script.calls == 0
    assert summary.counts["items"] == 9 and summary.counts["base calls"] == 9 and summary.counts["teacher calls"] == 9
    assert summary.counts["base calls cached"] == 0 and summary.counts["base input tokens (est.)"] > 0
    assert not (run / "reflect").exists()


def test_all_transitions_repair_and_rejection(scenario):
    run, peer = scenario
    summary = run_reflect(run, options_for(peer))
    assert summary.counts["accepted"] == 7 and summary.counts["rejected"] == 2 and summary.counts["repaired"] == 1
    assert summary.counts["skipped (qa: video has no multiple-choice question)"] == 1
    assert summary.counts["skipped (tag: abnormal video with unknown span)"] == 1
    assert summary.exit_code == 3
    models = [r.body["model"] for r in peer.script.received]
    assert models.count(BASE) == 9 and models.count(TEACHER) == 12  # 6 accepted once, 1 repaired, 2 rejected after a repair

    records = {r.id: r for r in StageStore(RunDir(run), "reflect").accepted(ReflectionRecord)}
    assert {k: r.transition for k, r in records.items()} == {
        "v1#qa0": "C→C", "v1#qa1": "W→C", "v1#qa4": "W→C", "v1#qa5": "W→C", "v1#tag": "C→C", "v2#tag": "W→C", "v3#qa0": "C→C",
    }
    garbage = records["v1#qa5"]
    assert garbage.initial.text == "lorem ipsum dolor sit amet" and garbage.initial.prediction is None
    repaired = records["v1#qa4"]
    assert repaired.provenance.repaired and "reflect_repair" in repaired.provenance.prompt_hashes
    assert repaired.provenance.usage["teacher"].calls == 2 and repaired.provenance.usage["base"].calls == 1
    assert records["v2#tag"].revised.prediction == "normal" and records["v2#tag"].initial.prediction == "[0.5, 2.0]"
    assert records["v1#tag"].ground_truth == "[1.0, 3.0]" and records["v1#tag"].revised.iou == 1.0
    assert records["v1#qa1"].two_round()["completion"].count("<answer>") == 2

    repair_request = next(r for r in peer.script.received if r.body["model"] == TEACHER and len(r.body["messages"]) == 3 and "[repair]" in request_text(r))
    assert repair_request.body["messages"][1]["role"] == "assistant"
    assert "chronology" in repair_request.body["messages"][2]["content"]
    base_text = request_text(next(r for r in peer.script.received if r.body["model"] == BASE))
    assert "reflect" not in base_text.lower()

    rejects = [r for r in RunDir(run).load_rejects() if r.stage == "reflect"]
    assert sorted(r.item for r in rejects) == ["v1#qa2", "v1#qa3"]
    assert all(r.reason.startswith("failed gates revised-answer") for r in rejects)
    assert {r.item: r.detail["transition"] for r in rejects} == {"v1#qa2": "W→W", "v1#qa3": "C→W"}

    stats = collect_status(run)["reflection"]
    assert stats["transitions"] == {"C→C": 3, "W→C": 4, "W→W": 1, "C→W": 1}
    assert stats["initial accuracy"] == "4/9 (44%)" and stats["initial accuracy (tag)"] == "1/2 (50%)"
    assert stats["rejected by gate"] == {"revised-answer": 2} and stats["repaired"] == 1
    assert stats["teacher tokens"]["input"] == 12 * 10

    again = run_reflect(run, options_for(peer))
    assert again.counts["already done"] == 9 and peer.script.calls == 21



def test_unsampleable_video_and_refused_call_are_item_rejects(tmp_path):
    broken = video("broken", spans=[(0.5, 1.5)], duration=2.0)
    refused = video("refused", spans=[(0.5, 1.5)], duration=2.0, questions=["[refuse] What happens?"])
    run = make_run(tmp_path, [broken, refused])
    make_not_a_video(tmp_path / "videos" / broken.path)

    def refuse(received: Received) -> Reply | Fault:
        return Fault.of("moderation") if "[refuse]" in request_text(received) else Reply("unused")

    with OpenAIPeer(Script(default=refuse)) as peer:
        summary = run_reflect(run, options_for(peer, task="qa"))
    assert summary.counts["rejected"] == 2 and summary.exit_code == 3
    reasons = {r.item: r.reason for r in RunDir(run).load_rejects() if r.stage == "reflect"}
    assert reasons["broken#qa0"].startswith("no frames: video broken")
    assert reasons["refused#qa0"].startswith("base call failed: model refused: moderation (re-run with --retry-rejected --retry-failed")
    stats = collect_status(run)["reflection"]
    assert stats["rejected otherwise"] == {"no frames": 1, "base call failed": 1} and stats["initial accuracy"] == "-"


def test_fatal_teacher_error_stops_the_run_and_a_rerun_reuses_the_base_answer(tmp_path):
    run = make_run(tmp_path, [video("v1", spans=[(0.5, 1.5)], duration=2.0, questions=["[plain] What happens?"])])
    fatal = {"on": True}

    def answer(received: Received) -> Reply | Fault:
        if received.body["model"] == BASE:
            return Reply(BASE_REPLIES["plain"])
        return Fault.of("invalid_key") if fatal["on"] else Reply(teacher_reply(perceive(request_text(received))))

    with OpenAIPeer(Script(default=answer)) as peer:
        with pytest.raises(RunStopped, match="auth"):
            run_reflect(run, options_for(peer, task="qa"))
        assert not StageStore(RunDir(run), "reflect").is_done("v1#qa0")
        fatal["on"] = False
        summary = run_reflect(run, options_for(peer, task="qa"))
        models = [r.body["model"] for r in peer.script.received]
    assert summary.counts["accepted"] == 1
    assert models == [BASE, TEACHER, TEACHER], "the base answer came from the ledger the second time"

def test_cut_replies_teacher_asked_again_base_flagged(tmp_path):
    """A teacher reply cut at its token limit is asked again with twice the budget (a second cut rejects the
    item as truncated); a cut base reply is the base's real attempt: kept, judged, and flagged."""
    questions = ["[cut-once] What happens?", "[cut-always] What happens?"]
    run = make_run(tmp_path, [video("v1", spans=[(0.5, 1.5)], duration=2.0, questions=questions)])
    cut = teacher_reply("B")[:70]

    def answer(received: Received) -> Reply:
        text, budget = request_text(received), received.body["max_tokens"]
        if received.body["model"] == BASE:
            return Reply("<think>People gather and", finish_reason="length")
        if "[cut-always]" in text or ("[cut-once]" in text and budget < 2048):
            return Reply(cut, finish_reason="length")
        return Reply(teacher_reply(perceive(text)))

    with OpenAIPeer(Script(default=answer)) as peer:
        summary = run_reflect(run, options_for(peer, task="qa"))
        budgets = [r.body["max_tokens"] for r in peer.script.received if r.body["model"] == TEACHER and "[cut-once]" in request_text(r)]
    assert summary.counts["accepted"] == 1 and summary.counts["rejected"] == 1
    assert budgets == [1024, 2048]
    (record,) = StageStore(RunDir(run), "reflect").accepted(ReflectionRecord)
    assert record.id == "v1#qa0" and record.reflection == CRITIQUE and record.provenance.usage["teacher"].calls == 2
    assert record.initial.truncated and record.initial.text == "<think>People gather and" and not record.initial.correct
    (reject,) = [r for r in RunDir(run).load_rejects() if r.stage == "reflect"]
    assert reject.item == "v1#qa1" and reject.reason.startswith("truncated: the teacher reply stopped at its token limit twice (1024, then 2048")


# -- resume after kill -9 ------------------------------------------------------------------------------


class HangOnce:
    """Answers like `scripted` for any item, but holds the `nth` teacher request until released."""

    def __init__(self, nth: int) -> None:
        self.nth = nth
        self.teacher_calls = 0
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, received: Received) -> Reply:
        if received.body["model"] == BASE:
            return Reply("<think>People dance.</think><answer>C</answer>")
        with self.lock:
            self.teacher_calls += 1
            hang = self.teacher_calls == self.nth
        if hang:
            self.arrived.set()
            self.release.wait(300)  # released by the test once the kill is done
        return Reply(teacher_reply(perceive(request_text(received))))


def reflect_cli(run: Path, peer: OpenAIPeer) -> subprocess.Popen[bytes]:
    args = ["reflect", "--run", str(run), "--task", "qa", "--base", f"openai:{BASE}@{peer.base_url}",
            "--teacher", f"openai:{TEACHER}@{peer.base_url}", "--concurrency", "1", "--max-pixels", str(28 * 28 * 4)]
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "vau_annotate.cli", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def body_key(received: Received) -> str:
    return hashlib.sha256(json.dumps(received.body, sort_keys=True).encode()).hexdigest()


def test_resume_after_kill_repeats_no_call_and_writes_each_record_once(tmp_path):
    v1 = video("v1", spans=[(1.0, 3.0)], duration=4.0, questions=[f"[q{i}] What happens in the video?" for i in range(4)])
    run = make_run(tmp_path, [v1])
    hang = HangOnce(nth=3)
    with OpenAIPeer(Script(default=hang), latency_s=0.02) as peer:
        first = reflect_cli(run, peer)
        try:
            assert hang.arrived.wait(300), first.communicate()[0].decode()  # a wait, not a bound (slow start under load)
            store = StageStore(RunDir(run), "reflect")
            assert [store.is_done(f"v1#qa{i}") for i in range(4)] == [True, True, False, False]
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        finally:
            hang.release.set()
        second = reflect_cli(run, peer)
        output = second.communicate(timeout=60)[0].decode()
        assert second.returncode == 0, output
        keys = [body_key(r) for r in peer.script.received]
        hung = keys[5]  # base, teacher, base, teacher, base (item 3), teacher (item 3: held, then killed)
    repeated = {k for k in keys if keys.count(k) > 1}
    assert repeated == {hung}, "only the call that never came back is made again"
    assert len(keys) == 4 * 2 + 1
    markers = sorted(p.name for p in (run / "reflect").iterdir())
    assert markers == [f"v1_qa{i}.json" for i in range(4)]
    assert not [r for r in RunDir(run).load_rejects() if r.stage == "reflect"]


# -- the tiny model as the base, through hf: ------------------------------------------------------------

def teacher_perceives(received: Received) -> Reply:
    assert received.body["model"] == TEACHER, "the base runs in process, only the teacher is remote"
    return Reply(teacher_reply(perceive(request_text(received))))


def test_tiny_hf_base_replies_are_kept_and_judged(tmp_path, tiny_model_dir):
    v1 = video("v1", spans=[(1.0, 3.0)], duration=4.0, questions=[f"[q{i}] What happens in the video?" for i in range(2)])
    run = make_run(tmp_path, [v1])
    with OpenAIPeer(Script(default=teacher_perceives)) as peer:
        summary = run_reflect(run, ReflectOptions(
            base=f"hf:{tiny_model_dir}", teacher=f"openai:{TEACHER}@{peer.base_url}", max_pixels=28 * 28 * 4,
            base_max_tokens=24, concurrency=3, workers=1, show_progress=False,
        ))
        assert peer.script.calls == 3
    assert summary.counts["accepted"] == 3, summary
    records = StageStore(RunDir(run), "reflect").accepted(ReflectionRecord)
    assert sorted(r.id for r in records) == ["v1#qa0", "v1#qa1", "v1#tag"]
    assert all(rec.initial.text.strip() for rec in records), "the base's raw text is kept"
    assert all(rec.provenance.usage["base"].output_tokens > 0 and rec.provenance.base_model.startswith("hf:") for rec in records)
    unparsed = [rec for rec in records if rec.initial.prediction is None]
    assert unparsed, "gibberish does not parse"
    assert all(not rec.initial.correct and rec.transition == "W→C" for rec in unparsed)


# -- serve-base, with a stand-in `vllm` executable (the real one: tests/vllm, `make test-vllm`) ------------


FAKE_VLLM = '''#!{python}
"""Stands in for `vllm serve`: answers /v1/models, and has a worker child that ignores SIGTERM."""
import json, os, signal, subprocess, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
args = sys.argv[1:]
worker = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
with open(os.environ["FAKE_VLLM_LOG"], "w") as fh:
    json.dump({{"argv": args, "pid": os.getpid(), "worker": worker.pid}}, fh)
name = args[args.index("--served-model-name") + 1]

class Models(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({{"object": "list", "data": [{{"id": name}}]}}).encode()
        self.send_response(200 if self.path == "/v1/models" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass

signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
HTTPServer(("127.0.0.1", int(args[args.index("--port") + 1])), Models).serve_forever()
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def read_line(stream, timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, "serve-base printed no spec in time"
    return stream.readline().decode().strip()


def test_serve_command_fits_one_video():
    options = ServeOptions(model="Qwen/Qwen2.5-VL-3B-Instruct", max_frames=64, max_pixels=360 * 420)
    command = serve_command(options, "vllm")
    limits = json.loads(command[command.index("--limit-mm-per-prompt") + 1])
    assert limits == {"image": 0, "video": {"count": 1, "num_frames": 64, "width": 392, "height": 392}}
    assert json.loads(command[command.index("--media-io-kwargs") + 1]) == {"video": {"num_frames": -1}}
    assert command[command.index("--host") + 1] == "127.0.0.1" and "--trust-request-mm-kwargs" in command
    assert int(command[command.index("--max-model-len") + 1]) == model_len(options) >= 32 * 196 + 4096
    assert options.spec == "openai:Qwen/Qwen2.5-VL-3B-Instruct@http://127.0.0.1:8000/v1"


def test_serve_base_prints_spec_and_stops_the_whole_group_on_ctrl_c(tmp_path):
    fake = tmp_path / "vllm"
    fake.write_text(FAKE_VLLM.format(python=sys.executable))
    fake.chmod(0o755)
    model = tmp_path / "tiny-qwen"
    model.mkdir()
    log, port = tmp_path / "fake.json", free_port()
    args = ["serve-base", "--model", str(model), "--port", str(port), "--vllm-bin", str(fake), "--max-frames", "8", "--grace", "1", "--", "--enforce-eager"]
    proc = subprocess.Popen([sys.executable, "-m", "vau_annotate.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "FAKE_VLLM_LOG": str(log)})
    try:
        spec = read_line(proc.stdout, 300)  # a wait, not a bound (slow start under load)
        assert spec == f"openai:tiny-qwen@http://127.0.0.1:{port}/v1"
        started = json.loads(log.read_text())
        argv = started["argv"]
        assert argv[:2] == ["serve", str(model)] and argv[-1] == "--enforce-eager"
        assert json.loads(argv[argv.index("--limit-mm-per-prompt") + 1])["video"]["num_frames"] == 8
        assert answers(f"http://127.0.0.1:{port}/v1")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 0, proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not running(started["pid"]) and not running(started["worker"]), "SIGKILL reached the worker that ignored SIGTERM"
    assert not answers(f"http://127.0.0.1:{port}/v1")
