"""build-cot: gates, parsing and assembly, then end-to-end runs against loopback peers and the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vau_annotate.annotate.checks import GateSelectionError, parse_gate_list, run_gates
from vau_annotate.annotate.checks.common import (
    Lexicon,
    count_words,
    default_lexicon,
    overlap,
    repetition_gate,
    sentence_count_gate,
    split_sentences,
    tag_problems,
    word_band_gate,
)
from vau_annotate.annotate.checks.cot import CotCandidate, cot_gates
from vau_annotate.annotate.classes import default_taxonomy
from vau_annotate.pipelines.cot import (
    VideoFacts,
    answer_values,
    assemble_answer,
    assemble_think,
    clean_caption,
    clean_step,
    local_captions,
    parse_caption_list,
    refusal_reason,
    repair_targets,
)
from vau_annotate.annotate.backends import BackendError, ErrorClass
from vau_annotate.prompts import load_prompt
from vau_annotate.schemas import SCHEMAS
from vau_annotate.schemas.cot import Caption, CotRecord

# -- scripted texts: neutral, 4–5 sentences per step, inside Vad-R1's word bands ------------------

ABNORMAL_STEPS = (
    "The video shows a quiet parking lot beside a low building during daytime. Several cars are parked in two rows, and a paved walkway runs along the front of the building. A few people walk between the cars carrying bags, and one person loads boxes into a van. The lighting is even and the camera stays still throughout the clip. Movement in the scene is slow and orderly, as expected for a parking area.",
    "From about 1.0 s to 3.0 s, two people near the van face each other at close range. One person pushes the other against the side of the van. The second person swings an arm and strikes the first person on the shoulder. Both people grab each other's clothing and stumble toward the walkway. Nearby pedestrians stop walking and step back from the pair.",
    "The pushing and striking between the two people departs from the calm movement seen in the rest of the lot. This behaviour belongs to the category Fighting, because the two people exchange blows and wrestle instead of passing by. The annotated span matches the moment when the contact begins and escalates. The reactions of the bystanders, who stop and retreat, confirm that the event is unusual for this place.",
    "The conflict may have started from a dispute near the van, although the frames do not show its cause. Physical violence breaks basic social norms and the rules of public spaces, where disagreements are expected to be settled without force. The struggle also creates a safety risk for the bystanders and for the parked vehicles. If it continues, the people involved could suffer injuries, and the property around them could be damaged. Security staff or police would likely need to intervene to stop the escalation.",
)
NORMAL_STEPS = (
    ABNORMAL_STEPS[0],
    "Everything in the clip matches the ordinary use of a parking lot. People walk at a steady pace, keep a safe distance from the moving van, and nobody runs, falls or argues. Loading boxes into a vehicle is a routine task that fits the setting and does not block anyone. No smoke, fire, water, damage or sudden crowd movement appears in any frame. The changes over time come only from people arriving, loading goods and leaving, so the video is normal.",
)
WHAT = "Two people push, strike and wrestle each other beside a parked van."
WHERE = "In the parking lot, next to the van near the building entrance."
WHY = "Physical violence between people breaks the calm, orderly use of the parking lot."
HOW = "A face-to-face confrontation turns into pushing and blows, and bystanders retreat."
NORMAL_WHAT = "People walk through a parking lot and one person loads boxes into a van."
NORMAL_WHY = "All actions are routine for a parking lot and nothing dangerous or unlawful happens."


def abnormal_reply(which: str = "Fighting", when: str = "[0.250, 0.750]") -> str:
    return f"<which>{which}</which><what>{WHAT}</what><when>{when}</when><where>{WHERE}</where><why>{WHY}</why><how>{HOW}</how>"


def normal_reply(which: str = "Normal") -> str:
    return f"<which>{which}</which><what>{NORMAL_WHAT}</what><why>{NORMAL_WHY}</why>"


def facts(label: str = "abnormal", span: tuple[float, float] | None = (0.25, 0.75)) -> VideoFacts:
    if label == "normal":
        return VideoFacts("v", "normal", "Normal", 4.0, None, None, "none")
    span_s = (span[0] * 4.0, span[1] * 4.0) if span else None
    return VideoFacts("v", "abnormal", "Fighting", 4.0, span_s, span, "Two people fight.")


def candidate(steps: tuple[str, ...] = ABNORMAL_STEPS, reply: str | None = None, label: str = "abnormal", span: tuple[float, float] | None = (0.25, 0.75)) -> CotCandidate:
    f = facts(label, span)
    reply = reply if reply is not None else (abnormal_reply() if label == "abnormal" else normal_reply())
    values = answer_values(reply, f, default_taxonomy())
    return CotCandidate(label=label, category=f.category, steps=steps, reply=reply,
                        think=assemble_think(steps, label), answer=assemble_answer(values, label), span=f.span)


def failures(c: CotCandidate, **select) -> dict[str, str]:
    registry = cot_gates()
    return run_gates(c, registry.select(**select), warn={"length"}).detail()


# -- measuring ---------------------------------------------------------------------------------------

def test_sentences_and_words():
    text = "A car stops at 3.5 s near the gate. The driver, e.g. a courier, gets out! Is anyone hurt? No."
    assert split_sentences(text) == ["A car stops at 3.5 s near the gate.", "The driver, e.g. a courier, gets out!", "Is anyone hurt?", "No."]
    assert count_words("<step1>The car's left-hand door opens.</step1>") == 5
    assert split_sentences("") == []


def test_lexicon_matches_whole_words_and_phrases():
    lexicon = default_lexicon()
    assert lexicon.find("A man in a black jacket runs; she follows.") == [("gender", "man"), ("gender", "she")]
    assert lexicon.find("A person in a black jacket walks to the other side, then the women leave.") == [("gender", "women")]
    assert lexicon.find("a left wing group") == [("politics", "left-wing")]
    assert lexicon.find("The wheelchair user and the shepherd") == []
    custom = Lexicon.parse("# comment\n[x]\nfoo bar\n")
    assert custom.find("FOO  bar!") == [("x", "foo bar")]


def test_overlap_and_tag_problems():
    assert overlap(ABNORMAL_STEPS[0], ABNORMAL_STEPS[0]) == 1.0
    assert overlap(ABNORMAL_STEPS[0], ABNORMAL_STEPS[3]) == 0.0
    assert tag_problems("<think><step1>a</step1></think>", ("think",)) == []
    assert tag_problems("x <think>a</think>", ("think",)) == ["has text outside the tags"]
    assert tag_problems("<think>a", ("think",)) == ["<think> is not closed (or not opened)"]
    assert tag_problems("<answer>a</answer><think>b</think>", ("think",)) == ["tags are <answer><think>, expected <think>"]
    assert tag_problems("<a></a><b>x</b>", ("a", "b")) == ["<a> is empty"]
    assert tag_problems("plain <b>bold</b>", ()) == ["contains tags it must not: <b>"]


def test_generic_gates_are_parameterised():
    texts = lambda c: c  # noqa: E731 - the candidate is the mapping itself
    assert sentence_count_gate("s", texts, 2, 3).find({"a": "One. Two.", "b": "One."})[0].part == "b"
    band = word_band_gate("w", texts, lambda c: (5, 6))
    findings = band.find({"a": "one two", "b": "three"})
    assert [f.part for f in findings] == ["a", "b"] and "too short (3 words; 5–6 wanted)" in findings[0].message
    rep = repetition_gate("r", texts).find({"a": ABNORMAL_STEPS[1], "b": ABNORMAL_STEPS[3] + " " + ABNORMAL_STEPS[1].split(". ")[1] + "."})
    assert rep and rep[0].part == "b" and "copies a sentence of a" in rep[0].message


# -- CoT gates ---------------------------------------------------------------------------------------

def test_good_chains_pass_every_gate():
    assert failures(candidate()) == {}
    assert failures(candidate(NORMAL_STEPS, label="normal")) == {}
    assert failures(candidate(span=None)) == {}  # unknown span: <when> only has to be well formed


def test_each_cot_gate_reports_by_name():
    assert failures(candidate(reply=abnormal_reply(which="Road Accidents")))["category"].startswith("answer: <which> says 'Road Accidents'")
    assert "category" not in failures(candidate(reply=abnormal_reply(which="fighting")))
    assert "IoU 0.00 < 0.5" in failures(candidate(reply=abnormal_reply(when="[0.800, 0.900]")))["when"]
    assert "not normalised" in failures(candidate(reply=abnormal_reply(when="[1.0, 3.0]")))["when"]
    assert "does not start before" in failures(candidate(reply=abnormal_reply(when="[0.6, 0.3]")))["when"]
    assert "does not parse" in failures(candidate(reply=abnormal_reply(when="early on")))["when"]
    steps = (ABNORMAL_STEPS[0], "Too short.", *ABNORMAL_STEPS[2:])
    assert failures(candidate(steps))["sentences"] == "step2: has 1 sentence; write 2–8"
    gendered = (ABNORMAL_STEPS[0].replace("one person loads", "a man loads"), *ABNORMAL_STEPS[1:])
    assert "step1: uses 'man' (gender)" in failures(candidate(gendered))["neutrality"]
    repeated = (*ABNORMAL_STEPS[:3], ABNORMAL_STEPS[2])
    assert failures(candidate(repeated))["repetition"].startswith("step4: repeats step3")
    structure = failures(candidate(reply=normal_reply().replace("<why>", "<when>[0.1, 0.2]</when><why>"), label="normal", steps=NORMAL_STEPS))
    assert structure == {"structure": "answer: a normal answer has no <when>"}
    tagged = (f"<step1>{ABNORMAL_STEPS[0]}</step1> <b>x</b>", *ABNORMAL_STEPS[1:])
    assert "step1: contains tags it must not" in failures(candidate(tagged))["structure"]
    missing = failures(candidate(reply=abnormal_reply().split("<how>")[0]))
    assert missing["structure"] == "answer: <how> is missing"


def test_length_gate_warns_or_rejects():
    short = tuple(". ".join(s.split(". ")[:2]) + "." for s in ABNORMAL_STEPS)
    registry = cot_gates()
    report = run_gates(candidate(short), registry.select(), warn={"length"})
    assert report.passed and report.warnings[0].gate == "length"
    assert "too short" in report.warning_detail()["length"]
    strict = run_gates(candidate(short), registry.select(), warn=set())
    assert strict.failed_names == ["length"]
    assert set(repair_targets(strict, ["step1", "step2", "step3", "step4", "answer"])) == {"step1", "step2", "step3", "step4"}


def test_gate_selection():
    registry = cot_gates()
    assert registry.names == ["structure", "category", "when", "sentences", "length", "neutrality", "repetition"]
    assert [g.name for g in registry.select(["when", "category"], ["when"])] == ["category"]
    with pytest.raises(GateSelectionError, match="unknown cot gate"):
        registry.select(skip=["nope"])
    assert parse_gate_list("a, b c") == ["a", "b", "c"] and parse_gate_list("") is None


# -- parsing and assembly ----------------------------------------------------------------------------

def test_parse_caption_list():
    assert parse_caption_list('Sure: [{"frame": 2, "caption": "b"}, {"frame": 1, "caption": "a"}]', 2) == ["a", "b"]
    assert parse_caption_list('["a", "b"]', 2) == ["a", "b"]
    numbered = "Frame 1 (t = 0.0 s): a car\n  turns left\n**Frame 2:** a person waits\n3. empty road"
    assert parse_caption_list(numbered, 3) == ["a car turns left", "a person waits", "empty road"]
    assert parse_caption_list("1. a\n2. b", 3) is None
    assert parse_caption_list('[{"frame": 1, "caption": ""}, {"frame": 2, "caption": "b"}]', 2) is None
    assert parse_caption_list("nothing useful", 2) is None
    assert clean_caption('Frame 3 (t = 1.0 s): "A car waits."') == "A car waits."


def test_clean_step_and_local_captions():
    assert clean_step("<step2>Text here.</step2>") == "Text here."
    assert clean_step("**Step 3 (shallow cognition):** Text.") == "Text."
    caps = [Caption(frame_index=i * 16, timestamp=i * 0.64, text=str(i)) for i in range(7)]
    assert [c.text for c in local_captions(caps, (1.0, 2.0))] == ["2", "3"]
    assert [c.text for c in local_captions(caps, (0.7, 0.8))] == ["1"]  # nearest when none inside
    assert len(local_captions(caps, None)) == 7


def test_assembled_strings_are_vad_reasoning_format():
    c = candidate(reply="Here you go: " + abnormal_reply(which="fighting", when="[0.2, 0.8]"))
    assert c.think == "<think>" + "".join(f"<step{i}>{s}</step{i}>" for i, s in enumerate(ABNORMAL_STEPS, 1)) + "</think>"
    # <which> canonical, <when> from the ground truth with 3 decimals
    assert c.answer == f"<answer><which>Fighting</which><what>{WHAT}</what><when>[0.250, 0.750]</when><where>{WHERE}</where><why>{WHY}</why><how>{HOW}</how></answer>"
    unknown = candidate(reply=abnormal_reply(when="[0.2, 0.8]"), span=None)
    assert "<when>[0.200, 0.800]</when>" in unknown.answer
    n = candidate(NORMAL_STEPS, label="normal")
    assert n.answer == f"<answer><which>Normal</which><what>{NORMAL_WHAT}</what><why>{NORMAL_WHY}</why></answer>"


def test_refusal_reasons_and_schema():
    assert refusal_reason(BackendError("no", ErrorClass.PERMANENT, code="data_inspection_failed")) == "model refused: moderation"
    assert refusal_reason(BackendError("no", ErrorClass.PERMANENT, code="invalid_value")) == "model refused: invalid_value"
    assert SCHEMAS["cot"] is CotRecord
    for name in ("cot_global", "cot_local", "cot_shallow", "cot_deep", "cot_normal_cognition", "cot_answer", "cot_answer_normal", "cot_caption", "cot_caption_batch", "cot_repair"):
        assert "guidelines" in load_prompt(name).fragments


# -- end to end: loopback peers with scripted replies ------------------------------------------------
#
# The responder answers from the request text alone, so it serves any number of videos concurrently:
# captions for caption prompts, the scripted step for each step prompt, the answer for the answer
# prompt; behaviour per video comes from the ground-truth class the prompts carry:
#   Fighting  accepted as is            Assault   <which> wrong first, repaired
#   Robbery   step 4 stays gendered → rejected (neutrality)
#   Vandalism step 3 refused by moderation → rejected ("model refused: moderation")
#   Normal    two steps, three fields.
# Batches of three frames get an unparsable reply, so they are re-asked frame by frame.

import csv
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from peers import DashScopePeer, Fault, OpenAIPeer, Reply, Script
from media import make_clip
from typer.testing import CliRunner

from vau_annotate.annotate.ledger import Ledger
from vau_annotate.annotate.rundir import RunDir
from vau_annotate.cli import app
from vau_annotate.pipelines.cot import CotOptions, run_cot

CAPTION = "A paved parking lot with parked cars; a person in a grey jacket stands beside a white van."
STEP_MARKERS = (
    ("step 1 (global perception)", 0), ("step 2 (local perception)", 1), ("step 3 (shallow cognition)", 2),
    ("step 4 (deep cognition)", 3), ("step 2 (cognition)", 1),
)
GENDERED_STEP4 = ABNORMAL_STEPS[3].replace("the people involved", "the man involved")
REPAIR_MARK = "did not pass these quality checks"


def conversation(received) -> list[tuple[str, str]]:
    """(role, text) of every message a client sent, for the OpenAI and the DashScope protocol."""
    body = received.body or {}
    messages = body.get("messages") or (body.get("input") or {}).get("messages", [])
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            out.append((message["role"], content))
        else:
            out.append((message["role"], " ".join(p["text"] for p in content or [] if isinstance(p, dict) and isinstance(p.get("text"), str))))
    return out


def respond(received) -> Reply | Fault:
    turns = conversation(received)
    first = next((text for role, text in turns if role == "user"), "")
    repair = any(REPAIR_MARK in text for _, text in turns)
    category = (re.search(r"category: (\w+)", first) or re.search(r"annotated as (normal)", first) or [None, ""])[1]
    batch = re.search(r"Below are (\d+) frames", first)
    if batch:
        count = int(batch.group(1))
        return Reply("I cannot tell the frames apart.") if count == 3 else Reply(json.dumps([{"frame": i + 1, "caption": CAPTION} for i in range(count)]))
    if "Below is one frame" in first:
        return Reply(CAPTION)
    for marker, index in STEP_MARKERS:
        if marker in first:
            steps = NORMAL_STEPS if category == "normal" else ABNORMAL_STEPS
            if category == "Vandalism" and index == 2:
                return Fault.of("moderation")
            if category == "Robbery" and index == 3:
                return Reply(GENDERED_STEP4)
            return Reply(steps[index])
    if "final answer" in first:
        if category == "normal":
            return Reply(normal_reply())
        when = re.search(r"that is (\[[\d.]+, [\d.]+\])", first)
        which = "Robbery" if category == "Assault" and not repair else category
        return Reply(abnormal_reply(which=which, when=when.group(1) if when else "[0.200, 0.800]"))
    return Fault.of("bad_request")


VB_COLUMNS = ("Video Name", "Question", "Option 1", "Option 2", "Option 3", "Option 4", "Correct Option", "Key Object",
              "Description", "Reasoning", "Anomaly Class", "Start Time", "End Time")


def vau_bench_csv(path: Path, rows: list[tuple[str, str, float, float]]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(VB_COLUMNS)
    for name, cls, start, end in rows:
        writer.writerow([name, "What happens?", "a fight", "a walk", "a race", "a meal", "A", "van", "Two people fight.", "", cls, start, end])
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[float, Path]:
    """4 s clips (25 fps → every 16th frame: 7 frames, batches of 4 + 3), plus other lengths for distinct content."""
    root = tmp_path_factory.mktemp("cot_clips")
    return {s: make_clip(root / f"clip_{s:g}.mp4", seconds=s, fps=25, width=128, height=96) for s in (4.0, 3.2, 3.6, 4.4)}


def dataset(tmp_path: Path, clips: dict[float, Path], rows: list[tuple[str, str, float, float, float]]) -> tuple[Path, Path]:
    """Videos (copies of the clips, by length) and a VAU-Bench CSV naming them."""
    videos = tmp_path / "videos"
    for name, _, _, _, seconds in rows:
        target = videos / name.replace("msad_", "msad/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(clips[seconds], target)
    return videos, vau_bench_csv(tmp_path / "val.csv", [r[:4] for r in rows])


def records(run: Path) -> dict[str, CotRecord]:
    return {r.category: r for r in (CotRecord.model_validate_json(p.read_text()) for p in sorted((run / "cot").glob("*.json")) if not p.name.endswith(".rejected.json"))}


def rejects(run: Path) -> dict[str, dict]:
    lines = [json.loads(l) for l in (run / "rejects.jsonl").read_text().splitlines() if l.strip()] if (run / "rejects.jsonl").exists() else []
    return {r["item"]: r for r in lines if r["stage"] == "cot"}


MAIN_ROWS = [
    ("msad_Fighting_1.mp4", "Fighting", 1.0, 3.0, 4.0),
    ("msad_Assault_1.mp4", "Assault", 1.0, 3.0, 4.0),
    ("msad_Robbery_1.mp4", "Robbery", 1.0, 3.0, 4.0),
    ("msad_Vandalism_1.mp4", "Vandalism", 1.0, 3.0, 4.0),
    ("msad_Normal_1.mp4", "Normal", 0.0, 0.0, 4.0),
]


def test_build_cot_end_to_end_openai_peer(tmp_path, clips):
    videos, csv_path = dataset(tmp_path, clips, MAIN_ROWS)
    run = tmp_path / "run"
    with OpenAIPeer(Script(default=respond)) as peer:
        spec = f"openai:qwen2.5-vl-72b@{peer.base_url}"
        args = ["build-cot", "--run", str(run), "--captioner", spec, "--reasoner", spec, "--source", "vau-bench",
                "--annotations", str(csv_path), "--videos", str(videos), "--concurrency", "3"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 3, result.output
        made = peer.script.calls
        got = records(run)
        assert sorted(got) == ["Assault", "Fighting", "Normal"]
        fight = got["Fighting"]
        assert fight.think == "<think>" + "".join(f"<step{i}>{s}</step{i}>" for i, s in enumerate(ABNORMAL_STEPS, 1)) + "</think>"
        assert fight.answer == f"<answer><which>Fighting</which><what>{WHAT}</what><when>[0.250, 0.750]</when><where>{WHERE}</where><why>{WHY}</why><how>{HOW}</how></answer>"
        assert [c.frame_index for c in fight.captions] == [0, 16, 32, 48, 64, 80, 96]
        assert [round(c.timestamp, 2) for c in fight.captions] == [0.0, 0.64, 1.28, 1.92, 2.56, 3.2, 3.84]
        assert all(c.text == CAPTION for c in fight.captions)
        assert fight.fields.when == (0.25, 0.75) and fight.span == (0.25, 0.75)
        prov = fight.provenance
        assert prov.repaired_gates == [] and prov.calls == 2 + 3 + 5  # two batches, the second re-asked as 3 singles, 4 steps + answer
        assert {"cot_caption", "cot_caption_batch", "cot_global", "cot_answer"} <= set(prov.prompt_hashes) and prov.input_tokens > 0
        assert got["Assault"].provenance.repaired_gates == ["category"] and got["Assault"].provenance.repaired_parts == ["answer"]
        normal = got["Normal"]
        assert normal.think == f"<think><step1>{NORMAL_STEPS[0]}</step1><step2>{NORMAL_STEPS[1]}</step2></think>"
        assert normal.answer == f"<answer><which>Normal</which><what>{NORMAL_WHAT}</what><why>{NORMAL_WHY}</why></answer>"
        bad = rejects(run)
        robbery = next(r for r in bad.values() if "Robbery" in r["item"])
        assert robbery["reason"] == "failed gates: neutrality" and "step4: uses 'man' (gender)" in robbery["detail"]["neutrality"]
        vandalism = next(r for r in bad.values() if "Vandalism" in r["item"])
        assert vandalism["reason"] == "model refused: moderation"

        # re-running resumes: nothing new is called, nothing is written twice
        again = CliRunner().invoke(app, args)  # the same command again
        assert again.exit_code == 0, again.output
        assert peer.script.calls == made and len(rejects(run)) == 2 and len(records(run)) == 3
        # rejected videos run again on request, answered from the ledger (a refusal is remembered too)
        retry = CliRunner().invoke(app, args + ["--retry-rejected"])
        assert retry.exit_code == 3, retry.output
        assert peer.script.calls == made and len(rejects(run)) == 2 and len(records(run)) == 3
    status = RunDir(run).load_meta().stages[-1]
    assert status.stage == "cot" and status.options["captioner"] == spec and "cot_repair" in RunDir(run).load_meta().prompt_hashes


def test_build_cot_dashscope_peer_and_dry_run(tmp_path, clips, monkeypatch):
    videos, csv_path = dataset(tmp_path, clips, MAIN_ROWS[:1] + MAIN_ROWS[-1:])
    run = tmp_path / "run"
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-test-key")
    with DashScopePeer(Script(default=respond)) as peer:
        spec = f"dashscope:qwen-vl-max@{peer.base_url}"
        args = ["build-cot", "--run", str(run), "--captioner", spec, "--reasoner", spec, "--caption-batch", "7"]
        dry = CliRunner().invoke(app, args + ["--source", "vau-bench", "--annotations", str(csv_path), "--videos", str(videos), "--dry-run"])
        assert dry.exit_code == 0, dry.output
        assert peer.script.calls == 0 and not (run / "cot").exists()
        assert "captioner calls" in dry.output and "reasoner calls" in dry.output and "Assumptions" in dry.output
        assert re.search(r"reasoner calls\s*│\s*8\b", dry.output)  # 4 steps + answer, 2 steps + answer
        assert re.search(r"captioner calls\s*│\s*2\b", dry.output)  # one batch of 7 frames per video
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        got = records(run)
        assert got["Fighting"].answer.startswith("<answer><which>Fighting</which>") and got["Normal"].steps == list(NORMAL_STEPS)
        assert any(item.get("image") for r in peer.script.received for m in r.body["input"]["messages"] for item in (m["content"] if isinstance(m["content"], list) else []))


def canonical(body) -> str:
    return json.dumps(body, sort_keys=True)


CLI = [sys.executable, "-m", "vau_annotate.cli"]
KILL_ROWS = [(f"msad_Fighting_{i}.mp4", "Fighting", 0.8, 2.4, seconds) for i, seconds in enumerate((4.0, 3.2, 3.6, 4.4), 1)]


def test_kill_9_then_rerun_repeats_no_call_and_writes_each_record_once(tmp_path, clips):
    videos, csv_path = dataset(tmp_path, clips, KILL_ROWS)  # four clips of different lengths: no call is shared
    run = tmp_path / "run"
    with OpenAIPeer(Script(default=respond, latency_s=0.1)) as peer:
        spec = f"openai:qwen2.5-vl-72b@{peer.base_url}"
        args = ["build-cot", "--run", str(run), "--captioner", spec, "--reasoner", spec, "--concurrency", "2",
                "--source", "vau-bench", "--annotations", str(csv_path), "--videos", str(videos)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.Popen(CLI + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        deadline = time.monotonic() + 300  # a wait, not a bound: a cold, loaded machine starts the CLI slowly
        while not list((run / "cot").glob("*.json")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        done_before = len(records(run))
        assert 1 <= done_before < len(KILL_ROWS)
        received = len(peer.script.received)
        first_run = [canonical(r.body) for r in peer.script.received if isinstance(r.body, dict)]  # a request cut by the kill is no call
        with Ledger(run / "ledger.sqlite") as ledger:
            answered = sum(1 for call in ledger.iter_calls() if call.ok)

        peer.script.latency_s = 0.0
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        second_run = [canonical(r.body) for r in peer.script.received[received:]]
    files = sorted(p.name for p in (run / "cot").iterdir())
    assert files == sorted(f"Fighting_{i}.json" for i in range(1, 5)), files
    assert len(records(run)) == 1 and not rejects(run)  # one class: records() keys by category
    assert len(second_run) == len(set(second_run))  # no call twice within the re-run
    assert len(second_run) == len(set(first_run) | set(second_run)) - answered  # nothing answered before was asked again


def test_invalid_key_stops_the_run_with_exit_1(tmp_path, clips, monkeypatch):
    videos, csv_path = dataset(tmp_path, clips, MAIN_ROWS[:2])
    run = tmp_path / "run"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-0123456789")
    with OpenAIPeer(Script(default=Fault.of("invalid_key"))) as peer:
        spec = f"openai:qwen2.5-vl-72b@{peer.base_url}"
        result = CliRunner().invoke(app, ["build-cot", "--run", str(run), "--captioner", spec, "--reasoner", spec, "--source", "vau-bench",
                                          "--annotations", str(csv_path), "--videos", str(videos)])
    assert result.exit_code == 1, result.output
    assert "stopped" in result.output and "API key" in result.output and "0123456789" not in result.output
    assert not list((run / "cot").glob("*.json")) if (run / "cot").exists() else True
    assert not rejects(run)


def test_hf_tiny_model_plumbing_rejects_random_text_with_reasons(tmp_path, clips, tiny_model_dir):
    """Random weights write nonsense: every video must end as a reject that says why, and nothing crashes."""
    from vau_annotate.pipelines.ingest import run_ingest

    videos, csv_path = dataset(tmp_path, clips, MAIN_ROWS[-1:])  # a normal video: the shortest chain (9 calls at most)
    run = tmp_path / "run"
    run_ingest("vau-bench", csv_path, videos, run)
    spec = f"hf:{tiny_model_dir}"
    options = CotOptions(captioner=spec, reasoner=spec, caption_policy="uniform:2", caption_batch=2, caption_tokens=6,
                         step_tokens=8, answer_tokens=8, show_progress=False)
    summary = run_cot(run, options)
    assert summary.rejected == 1 and summary.exit_code == 3 and summary.counts["accepted"] == 0
    for reject in rejects(run).values():
        assert reject["reason"].startswith(("failed gates: ", "empty caption: ")), reject
        if reject["reason"].startswith("failed gates: "):
            named = reject["reason"].removeprefix("failed gates: ").split(", ")
            assert "structure" in named and set(named) == set(reject["detail"]) and all(reject["detail"].values())


def test_usage_errors_exit_2_before_any_work(tmp_path):
    base = ["build-cot", "--run", str(tmp_path / "run"), "--captioner", "openai:m", "--reasoner", "openai:m"]
    for extra, message in ((["--skip-gate", "nope"], "unknown cot gate"), (["--length-gate", "x"], "--length-gate"),
                           (["--caption-policy", "every:3"], "unknown sampling policy"), ([], "manifest.parquet does not exist")):
        result = CliRunner().invoke(app, base + extra)
        assert result.exit_code == 2 and message.replace(" ", "") in "".join(result.output.split()), result.output  # rich wraps lines
    assert not (tmp_path / "run").exists()
