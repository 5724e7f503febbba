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
    CotOptions,
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
    assert failures(candidate(steps))["sentences"] == "step2: has 1 sentence; write 4–6"
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


SHORT_STEPS = (  # well formed, neutral, on topic — but 2 sentences per step and 58 words in all
    "The video shows a parking lot beside a low building. Cars are parked in two rows.",
    "Two people near a van face each other. One pushes the other against the van.",
    "The pushing departs from the calm scene. It belongs to the category Fighting.",
    "A dispute may have caused it. Violence in public breaks norms and risks injury.",
)


def test_a_short_well_formed_chain_is_rejected_by_the_default_gates():
    assert sum(count_words(s) for s in SHORT_STEPS) == 58
    short = candidate(SHORT_STEPS)
    registry = cot_gates()
    defaults = CotOptions(captioner="mock:echo", reasoner="mock:echo")
    assert defaults.length_gate == "reject" and defaults.warn_gates == set()
    report = run_gates(short, registry.select(), warn=defaults.warn_gates)
    assert report.failed_names == ["sentences", "length"]
    assert report.detail()["sentences"].startswith("step1: has 2 sentences; write 4–6")
    assert "too short (58 words; 233–456 wanted)" in report.detail()["length"]
    assert set(repair_targets(report, ["step1", "step2", "step3", "step4", "answer"])) == {"step1", "step2", "step3", "step4"}
    relaxed = run_gates(short, registry.select(), warn=CotOptions(captioner="m", reasoner="m", length_gate="warn").warn_gates)
    assert relaxed.failed_names == ["sentences"] and "too short" in relaxed.warning_detail()["length"]
    assert failures(candidate()) == {}  # the well-sized chain passes the same defaults


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


def test_facts_by_source_and_what_shallow_cognition_is_told():
    """VAU-Bench Description, else the Reasoning fields, else (UCF-Crime) nothing — and the prompt says so."""
    from vau_annotate.pipelines.cot_facts import video_facts
    from vau_annotate.pipelines.cot_steps import CHAINS, step_request
    from vau_annotate.schemas import Span, VideoRecord

    def vid(**kw) -> VideoRecord:
        return VideoRecord(id="v", path="v.mp4", source=kw.pop("source", "vau-bench"), label="abnormal", category="Fighting",
                           spans=[Span(start=1.0, end=3.0)], span_known=True, duration=4.0, **kw)

    taxonomy = default_taxonomy()
    given = video_facts(vid(description="Two people fight.", key_object="van", reasoning={"Location": "a parking lot"}), taxonomy)
    assert (given.description, given.description_source, given.location, given.key_object) == ("Two people fight.", "description", "a parking lot", "van")
    reasoned = video_facts(vid(reasoning={"Detailed Explanation": "Blows are exchanged.", "Conclusion": "A fight.", "Location": "a lot"}), taxonomy)
    assert reasoned.description == "Detailed Explanation: Blows are exchanged. Conclusion: A fight." and reasoned.description_source == "reasoning"
    ucf = video_facts(vid(source="ucf-crime"), taxonomy)
    assert ucf.description_source == "none" and ucf.location is None and ucf.when_source == "annotation"
    caps = [Caption(frame_index=i, timestamp=t, text=f"caption {t}") for i, t in enumerate((0.5, 2.0, 3.5))]
    shallow = step_request(ucf, caps, CHAINS["abnormal"], ["one", "two"], "cot_shallow", 512, 0.0).messages[0].parts[0].text
    assert "the annotations give no description of the event" in shallow and "category: Fighting" in shallow
    assert "caption 2.0" in shallow and "caption 0.5" not in shallow and "caption 3.5" not in shallow
    answer = step_request(ucf, caps, CHAINS["abnormal"], ["a", "b", "c", "d"], "cot_answer", 512, 0.0).messages[0].parts[0].text
    assert "as the steps describe it" in answer and "location:" not in answer


def test_refusal_reasons_name_the_flags_that_retry_them_and_schema():
    assert refusal_reason(BackendError("no", ErrorClass.PERMANENT, code="data_inspection_failed")) == \
        "model refused: moderation (re-run with --retry-rejected --retry-failed to ask again)"
    assert refusal_reason(BackendError("no", ErrorClass.PERMANENT, code="invalid_value")) == \
        "model refused: invalid_value (re-run with --retry-rejected --retry-failed to ask again)"
    assert refusal_reason(BackendError("no", ErrorClass.RETRYABLE, code="internal_error")) == \
        "model unavailable: internal_error (re-run with --retry-rejected to try again)"
    assert SCHEMAS["cot"] is CotRecord
    for name in ("cot_global", "cot_local", "cot_shallow", "cot_deep", "cot_normal_cognition", "cot_answer", "cot_answer_normal", "cot_caption", "cot_caption_batch", "cot_repair"):
        assert "guidelines" in load_prompt(name).fragments


# -- end to end: loopback peers that answer from what they are given ---------------------------------
#
# The responder answers from the request alone, so it serves any number of videos concurrently, and
# it never sees the ground truth it is tested against:
#   captions  one per frame, naming the frame's time as the request labels it ("moment T");
#   step 2    describes the times of the frame descriptions it was given ("From about T0 s to T1 s");
#   answer    <when> = those times ÷ the duration stated in the prompt (never the annotated span);
#             <where> from the annotated location when the prompt gives one;
#   other steps: the scripted texts. Behaviour per video comes from the class the prompts carry:
#   Fighting  accepted as is            Assault   <which> wrong first, repaired
#   Robbery   step 4 stays gendered → rejected (neutrality)
#   Vandalism step 3 refused by moderation → rejected (model refused)
#   Explosion span unknown → <when> is the model's estimate
#   Burglary  the answer is cut at its token limit every time → rejected as truncated
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
from vau_annotate.pipelines.cot import run_cot
from vau_annotate.pipelines.status import collect_status

STEP_MARKERS = (
    ("step 1 (global perception)", 0), ("step 2 (local perception)", 1), ("step 3 (shallow cognition)", 2),
    ("step 4 (deep cognition)", 3), ("step 2 (cognition)", 1),
)
GENDERED_STEP4 = ABNORMAL_STEPS[3].replace("the people involved", "the man involved")
REPAIR_MARK = "did not pass these quality checks"
LOCATION = "the parking lot of a supermarket"
CUT = "The video shows a quiet parking lot beside a low buil"


def caption_at(stamp: str) -> str:
    return f"Two people stand beside a white van in a paved parking lot (moment {stamp})."


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


def max_tokens(received) -> int:
    body = received.body or {}
    return int(body.get("max_tokens") or (body.get("parameters") or {}).get("max_tokens") or 0)


def local_step(first: str) -> str:
    """Step 2 written from the frame descriptions the prompt gives: their first and last time."""
    block = first.split("in temporal order", 1)[1]
    stamps = re.findall(r"^\[([\d.]+) s\]", block, re.M)
    return ABNORMAL_STEPS[1].replace("From about 1.0 s to 3.0 s", f"From about {stamps[0]} s to {stamps[-1]} s")


def respond(received) -> Reply | Fault:
    turns = conversation(received)
    first = next((text for role, text in turns if role == "user"), "")
    repair = any(REPAIR_MARK in text for _, text in turns)
    category = (re.search(r"category: (\w+)", first) or re.search(r"annotated as (normal)", first) or [None, ""])[1]
    batch = re.search(r"Below are (\d+) frames", first)
    if batch:
        count = int(batch.group(1))
        stamps = re.findall(r"Frame \d+ \(t = ([\d.]+) s\)", first)
        return Reply("I cannot tell the frames apart.") if count == 3 else Reply(json.dumps([{"frame": i + 1, "caption": caption_at(t)} for i, t in enumerate(stamps)]))
    single = re.search(r"Below is one frame, taken at ([\d.]+) s", first)
    if single:
        return Reply(caption_at(single.group(1)))
    for marker, index in STEP_MARKERS:
        if marker in first:
            steps = NORMAL_STEPS if category == "normal" else ABNORMAL_STEPS
            if category == "Vandalism" and index == 2:
                return Fault.of("moderation")
            if category == "Robbery" and index == 3:
                return Reply(GENDERED_STEP4)
            if category != "normal" and index == 1:
                return Reply(local_step(first))
            return Reply(steps[index])
    if "final answer" in first:
        if category == "normal":
            return Reply(normal_reply())
        if category == "Burglary":
            return Reply(abnormal_reply()[:60], finish_reason="length")
        duration = float(re.search(r"about a ([\d.]+) s video", first).group(1))
        times = re.search(r"From about ([\d.]+) s to ([\d.]+) s", first)
        when = f"[{float(times.group(1)) / duration:.3f}, {float(times.group(2)) / duration:.3f}]"
        which = "Robbery" if category == "Assault" and not repair else category
        reply = abnormal_reply(which=which, when=when)
        if LOCATION in first:
            reply = reply.replace(f"<where>{WHERE}</where>", f"<where>In {LOCATION}, next to the van.</where>")
        return Reply(reply)
    return Fault.of("bad_request")


VB_COLUMNS = ("Video Name", "Question", "Option 1", "Option 2", "Option 3", "Option 4", "Correct Option", "Key Object",
              "Description", "Reasoning", "Anomaly Class", "Start Time", "End Time")


def vau_bench_csv(path: Path, rows: list[tuple[str, str, float, float]]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(VB_COLUMNS)
    for name, cls, start, end in rows:
        reasoning = f"{{'Location': '{LOCATION}', 'Conclusion': 'A fight between two people.'}}"
        writer.writerow([name, "What happens?", "a fight", "a walk", "a race", "a meal", "A", "van", "Two people fight.", reasoning, cls, start, end])
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


def prompts_of(received: list, category: str, span: str = "1.0 s to 3.0 s") -> dict[str, str]:
    """The first user text of each chain request about one class, keyed by its step marker or 'answer'.

    Steps 1 and 2 are not told the class: every 4 s clip with the same span makes the same request
    (one call, shared through the ledger), so those are picked by the span they state.
    """
    out: dict[str, str] = {}
    for r in received:
        first = next((text for role, text in conversation(r) if role == "user"), "")
        key = next((marker for marker, _ in STEP_MARKERS if marker in first), "answer" if "final answer" in first else None)
        about = f"category: {category}" in first or (category == "normal" and "annotated as normal" in first)
        unnamed = key == STEP_MARKERS[0][0] or (key == STEP_MARKERS[1][0] and span in first)
        if key is not None and REPAIR_MARK not in " ".join(t for _, t in conversation(r)) and (about or unnamed):
            out.setdefault(key, first)
    return out


MAIN_ROWS = [
    ("msad_Fighting_1.mp4", "Fighting", 1.0, 3.0, 4.0),
    ("msad_Assault_1.mp4", "Assault", 1.0, 3.0, 4.0),
    ("msad_Robbery_1.mp4", "Robbery", 1.0, 3.0, 4.0),
    ("msad_Vandalism_1.mp4", "Vandalism", 1.0, 3.0, 4.0),
    ("msad_Explosion_1.mp4", "Explosion", -1.0, -1.0, 4.0),
    ("msad_Normal_1.mp4", "Normal", 0.0, 0.0, 4.0),
]
INSIDE, OUTSIDE = ("1.3", "1.9", "2.6"), ("0.0", "0.6", "3.2", "3.8")  # caption times inside / outside [1.0, 3.0]


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
        assert sorted(got) == ["Assault", "Explosion", "Fighting", "Normal"]
        fight = got["Fighting"]
        step2 = ABNORMAL_STEPS[1].replace("1.0 s to 3.0 s", "1.3 s to 2.6 s")  # written from the in-span captions
        assert fight.steps == [ABNORMAL_STEPS[0], step2, *ABNORMAL_STEPS[2:]]
        assert fight.think == "<think>" + "".join(f"<step{i}>{s}</step{i}>" for i, s in enumerate(fight.steps, 1)) + "</think>"
        # the peer said [0.325, 0.650] (its own times); the annotated span overwrites it
        where = f"In {LOCATION}, next to the van."
        assert fight.answer == f"<answer><which>Fighting</which><what>{WHAT}</what><when>[0.250, 0.750]</when><where>{where}</where><why>{WHY}</why><how>{HOW}</how></answer>"
        assert fight.when_source == "annotation" and fight.fields.when == (0.25, 0.75) and fight.span == (0.25, 0.75)
        assert [c.frame_index for c in fight.captions] == [0, 16, 32, 48, 64, 80, 96]
        assert [round(c.timestamp, 2) for c in fight.captions] == [0.0, 0.64, 1.28, 1.92, 2.56, 3.2, 3.84]
        assert [c.text for c in fight.captions] == [caption_at(t) for t in ("0.0", "0.6", "1.3", "1.9", "2.6", "3.2", "3.8")]
        prov = fight.provenance
        assert prov.repaired_gates == [] and prov.calls == 2 + 3 + 5  # two batches, the second re-asked as 3 singles, 4 steps + answer
        assert prov.description_source == "description" and prov.budget_repairs == [] and prov.refused_frames == []
        assert {"cot_caption", "cot_caption_batch", "cot_global", "cot_answer"} <= set(prov.prompt_hashes) and prov.input_tokens > 0
        assert got["Assault"].provenance.repaired_gates == ["category"] and got["Assault"].provenance.repaired_parts == ["answer"]
        unknown = got["Explosion"]  # no span: step 2 saw every frame, <when> is the model's estimate
        assert unknown.when_source == "model" and unknown.span is None and unknown.fields.when == (0.0, 0.95)
        normal = got["Normal"]
        assert normal.think == f"<think><step1>{NORMAL_STEPS[0]}</step1><step2>{NORMAL_STEPS[1]}</step2></think>"
        assert normal.answer == f"<answer><which>Normal</which><what>{NORMAL_WHAT}</what><why>{NORMAL_WHY}</why></answer>"
        assert normal.when_source is None
        bad = rejects(run)
        robbery = next(r for r in bad.values() if "Robbery" in r["item"])
        assert robbery["reason"] == "failed gates: neutrality" and "step4: uses 'man' (gender)" in robbery["detail"]["neutrality"]
        vandalism = next(r for r in bad.values() if "Vandalism" in r["item"])
        assert vandalism["reason"].startswith("model refused: moderation (re-run with --retry-rejected --retry-failed")

        # what each step of the figure was given, as the peer received it
        seen = prompts_of(peer.script.received, "Fighting")
        assert all(caption_at(t) in seen["step 1 (global perception)"] for t in INSIDE + OUTSIDE)
        for step in ("step 2 (local perception)", "step 3 (shallow cognition)"):
            assert all(caption_at(t) in seen[step] for t in INSIDE), step
            assert not any(caption_at(t) in seen[step] for t in OUTSIDE), step
        assert "Two people fight." not in seen["step 2 (local perception)"]
        assert "Two people fight." in seen["step 3 (shallow cognition)"] and "category: Fighting" in seen["step 3 (shallow cognition)"]
        assert ABNORMAL_STEPS[0] in seen["step 3 (shallow cognition)"] and step2 in seen["step 3 (shallow cognition)"]
        assert not any(caption_at(t) in seen["step 4 (deep cognition)"] for t in INSIDE + OUTSIDE)
        assert "Two people fight." in seen["step 4 (deep cognition)"] and ABNORMAL_STEPS[2] in seen["step 4 (deep cognition)"]
        assert f"location: {LOCATION}; key object: van" in seen["answer"] and "[0.250, 0.750]" in seen["answer"]
        assert "not annotated: estimate it" in prompts_of(peer.script.received, "Explosion")["answer"]
        normal_seen = prompts_of(peer.script.received, "normal")
        assert all(caption_at(t) in normal_seen["step 1 (global perception)"] for t in INSIDE + OUTSIDE)
        assert all(caption_at(t) in normal_seen["step 2 (cognition)"] for t in INSIDE + OUTSIDE)
        assert NORMAL_STEPS[0] in normal_seen["step 2 (cognition)"]

        # status shows the accepted chains' shape next to the paper's
        shape = collect_status(run)["cot shape"]
        assert shape["abnormal"]["chains"] == 3 and shape["abnormal"]["paper words"] == "233–456 (mean ≈ 260)"
        assert shape["abnormal"]["sentences per step"].startswith("mean 4.8, median 5, range 4–5")
        status = CliRunner().invoke(app, ["status", "--run", str(run)])
        assert "accepted abnormal chains (build-cot) vs Vad-Reasoning" in status.output and "233–456" in status.output

        # re-running resumes: nothing new is called, nothing is written twice
        again = CliRunner().invoke(app, args)  # the same command again
        assert again.exit_code == 3, again.output  # the 2 earlier rejects still stand: the state is partial (issue 9 item 1)
        assert peer.script.calls == made and len(rejects(run)) == 2 and len(records(run)) == 4
        # rejected videos run again on request, answered from the ledger (a refusal is remembered too)
        retry = CliRunner().invoke(app, args + ["--retry-rejected"])
        assert retry.exit_code == 3, retry.output
        assert peer.script.calls == made and len(rejects(run)) == 2 and len(records(run)) == 4
    status = RunDir(run).load_meta().stages[-1]
    assert status.stage == "cot" and status.options["captioner"] == spec and status.options["length_gate"] == "reject"
    assert "cot_repair" in RunDir(run).load_meta().prompt_hashes


def test_truncated_replies_never_reach_a_record(tmp_path, clips):
    rows = [("msad_Stealing_1.mp4", "Stealing", 1.0, 3.0, 3.6), ("msad_Burglary_1.mp4", "Burglary", 1.0, 3.0, 3.2)]
    videos, csv_path = dataset(tmp_path, clips, rows)
    run = tmp_path / "run"

    def cut_once(received) -> Reply | Fault:
        """Step 1 of the 3.6 s video stops mid-word at its first budget; the answer of Burglary always does."""
        first = next((text for role, text in conversation(received) if role == "user"), "")
        if "step 1 (global perception) of a chain of thought about a 3.6 s video" in first and max_tokens(received) < 1024:
            return Reply(CUT, finish_reason="length")
        return respond(received)

    with OpenAIPeer(Script(default=cut_once)) as peer:
        spec = f"openai:qwen2.5-vl-72b@{peer.base_url}"
        result = CliRunner().invoke(app, ["build-cot", "--run", str(run), "--captioner", spec, "--reasoner", spec, "--source", "vau-bench",
                                          "--annotations", str(csv_path), "--videos", str(videos)])
        assert result.exit_code == 3, result.output
        step1_budgets = [max_tokens(r) for r in peer.script.received
                         if "step 1 (global perception) of a chain of thought about a 3.6 s video" in " ".join(t for _, t in conversation(r))]
    stealing = records(run)["Stealing"]
    assert step1_budgets == [512, 1024]  # cut once, asked again with twice the budget
    assert stealing.steps[0] == ABNORMAL_STEPS[0] and stealing.provenance.budget_repairs == ["step1"]
    assert CUT not in stealing.think.replace(ABNORMAL_STEPS[0], "")
    burglary = next(r for r in rejects(run).values() if "Burglary" in r["item"])
    assert burglary["reason"].startswith("truncated: the answer reply stopped at its token limit twice (512, then 1024 tokens)")
    assert not (run / "cot" / "Burglary_1.json").exists()


def test_refused_caption_batch_is_retried_frame_by_frame(tmp_path, clips):
    """A refused batch of 4 frames: each frame asked alone; only the frame still refused is left out."""
    rows = [("msad_Fighting_2.mp4", "Fighting", 1.0, 3.0, 4.4), ("msad_Fighting_3.mp4", "Fighting", 1.0, 3.0, 3.2)]
    videos, csv_path = dataset(tmp_path, clips, rows)
    run = tmp_path / "run"

    def refusing(received) -> Reply | Fault:
        first = next((text for role, text in conversation(received) if role == "user"), "")
        if "of a 3.2 s video" in first or "Below are 4 frames" in first or "Below is one frame, taken at 0.6 s" in first:
            return Fault.of("moderation")
        return respond(received)

    with OpenAIPeer(Script(default=refusing)) as peer:
        spec = f"openai:qwen2.5-vl-72b@{peer.base_url}"
        result = CliRunner().invoke(app, ["build-cot", "--run", str(run), "--captioner", spec, "--reasoner", spec, "--source", "vau-bench",
                                          "--annotations", str(csv_path), "--videos", str(videos)])
    assert result.exit_code == 3, result.output
    record = records(run)["Fighting"]
    assert record.video_id == "Fighting_2" and record.provenance.refused_frames == [16]
    assert [c.frame_index for c in record.captions] == [0, 32, 48, 64, 80, 96]
    (all_refused,) = rejects(run).values()  # every frame of the 3.2 s video refused: only then is the video rejected
    assert all_refused["item"] == "Fighting_3" and all_refused["reason"].startswith("model refused: moderation, every frame of the video")
    assert all_refused["detail"]["refused_frames"] == [0, 16, 32, 48, 64]


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
KILL_ROWS = [(f"msad_Fighting_{i}.mp4", "Fighting", 0.5, 3.0, seconds) for i, seconds in enumerate((4.0, 3.2, 3.6, 4.4), 1)]


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
        assert 0 < done_before < len(KILL_ROWS)
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
    assert not [p for p in run.glob("cot/*.json")]
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
    (reject,) = rejects(run).values()
    # 6-8 tokens of random text: every reply stops at its token limit, twice → the first caption rejects the video
    assert reject["reason"].startswith("truncated: the caption batch reply stopped at its token limit twice (12, then 24 tokens)"), reject


def test_usage_errors_exit_2_before_any_work(tmp_path):
    base = ["build-cot", "--run", str(tmp_path / "run"), "--captioner", "openai:m", "--reasoner", "openai:m"]
    for extra, message in ((["--skip-gate", "nope"], "unknown cot gate"), (["--length-gate", "x"], "--length-gate"),
                           (["--caption-policy", "every:3"], "unknown sampling policy"), ([], "manifest.parquet does not exist")):
        result = CliRunner().invoke(app, base + extra)
        assert result.exit_code == 2 and message.replace(" ", "") in "".join(result.output.split()), result.output  # rich wraps lines
    assert not (tmp_path / "run").exists()


def batch_answer(body: dict) -> tuple[int, dict]:
    """The same scripted model as `respond`, answering batch lines (a function of the request only)."""
    from peers.batch_server import completion
    from peers.script import Received

    reply = respond(Received("POST", "/v1/chat/completions", {}, body))
    if isinstance(reply, Fault):
        return 400, {"error": {"message": "Input data may contain inappropriate content.", "type": "data_inspection_failed", "code": "data_inspection_failed"}}
    return 200, completion(reply.text)


def test_build_cot_batch_gives_the_same_records_at_half_the_cost(tmp_path, clips):
    """--batch: the chain's dependent steps go out in successive batch rounds, the records equal the
    synchronous run's, and every call is billed at half price."""
    from peers.batch_server import BatchPeer

    rows = [r for r in MAIN_ROWS if r[1] in ("Fighting", "Normal")]
    videos, csv_path = dataset(tmp_path, clips, rows)
    sync_run, batch_run = tmp_path / "sync", tmp_path / "batch"
    prices = tmp_path / "prices.json"  # loopback servers are free by default: price this model explicitly
    prices.write_text(json.dumps({"openai:qwen2.5-vl-72b": {"input": 2.0, "output": 6.0}}))
    base = ["--source", "vau-bench", "--annotations", str(csv_path), "--videos", str(videos), "--prices", str(prices)]
    with OpenAIPeer(Script(default=respond)) as peer:
        spec = f"openai:qwen2.5-vl-72b@{peer.base_url}"
        sync = CliRunner().invoke(app, ["build-cot", "--run", str(sync_run), "--captioner", spec, "--reasoner", spec, *base])
        assert sync.exit_code == 0, sync.output
    with BatchPeer(batch_answer) as peer:
        spec = f"openai:qwen2.5-vl-72b@{peer.base_url}"
        estimate = CliRunner().invoke(app, ["build-cot", "--run", str(batch_run), "--captioner", spec, "--reasoner", spec, *base, "--batch", "--dry-run"])
        assert estimate.exit_code == 0, estimate.output
        assert peer.uploads == []
        sync_estimate = CliRunner().invoke(app, ["build-cot", "--run", str(batch_run), "--captioner", spec, "--reasoner", spec, *base, "--dry-run"])
        halved, full = (float(re.findall(r"\$([\d.]+)", " ".join(r.output.split()))[-1]) for r in (estimate, sync_estimate))
        assert full > 0 and halved == pytest.approx(full / 2, rel=0.02)
        result = CliRunner().invoke(app, ["build-cot", "--run", str(batch_run), "--captioner", spec, "--reasoner", spec, *base, "--batch", "--batch-poll", "0.05"])
        assert result.exit_code == 0, result.output
        # rounds: caption batches, single-frame re-asks, steps 1-4 (normal: 1-2), answer — each after the last
        assert len(peer.created) >= 6
        rounds = [{line["custom_id"] for line in upload} for upload in peer.uploads]
        assert all(not (a & b) for i, a in enumerate(rounds) for b in rounds[i + 1:])  # nothing submitted twice
    got, want = records(batch_run), records(sync_run)
    assert sorted(got) == ["Fighting", "Normal"]
    for name in got:
        assert (got[name].think, got[name].answer) == (want[name].think, want[name].answer)
        assert got[name].provenance.calls == want[name].provenance.calls
    with Ledger(sync_run / "ledger.sqlite") as a, Ledger(batch_run / "ledger.sqlite") as b:
        sync_cost, batch_cost = a.usage_totals()["cost"], b.usage_totals()["cost"]
    assert sync_cost > 0 and batch_cost == pytest.approx(sync_cost / 2)


def test_chains_of_vad_reasoning_videos_are_checked_against_vad_r1_classes():
    """A run ingested from Vad-Reasoning keeps Vad-R1's own classes (e.g. "Animals Hurting Human", Vad-R1
    Fig. 1b), so `<which>` is read and the category gate judged in that taxonomy, not VAU-Bench's."""
    from vau_annotate.pipelines.cot import run_taxonomy
    from vau_annotate.schemas.video import VideoRecord

    def video(taxonomy):
        return VideoRecord(id="v", path="v.mp4", source="vad-reasoning", label="abnormal", category="Animals Hurting Human", taxonomy=taxonomy)

    vad = run_taxonomy([video("vad-reasoning")])
    assert vad.lookup("Animals Hurt Human") == "Animals Hurting Human"
    assert default_taxonomy().lookup("Animals Hurt Human") is None
    assert run_taxonomy([video(None)]).lookup("Stealing") == "Stealing"
