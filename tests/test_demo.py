"""`vau-annotate demo`: the offline end-to-end run, its expected rejects, its resume, and what it
tells the user about the recorded teacher."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vau_annotate.annotate.ledger import Ledger
from vau_annotate.annotate.rundir import RunDir
from vau_annotate.cli import app
from vau_annotate.pipelines.demo import CSV_NAME, SOURCE_DIR, DemoError, reset_run
from vau_annotate.pipelines.runner import StageStore
from vau_annotate.schemas.cot import CotRecord
from vau_annotate.schemas.reflection import ReflectionRecord


def flat(output: str) -> str:
    """The printed text as one line: rich wraps lines and draws panel borders."""
    return " ".join(output.replace("│", " ").split())


def ledger_totals(run: Path) -> dict:
    with Ledger(run / "ledger.sqlite") as ledger:
        return ledger.usage_totals()


@dataclass
class DemoRuns:
    """The demo run twice into one directory, with the ledger's totals after each run."""

    run: Path
    first: object
    second: object
    after_first: dict
    after_second: dict


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> DemoRuns:
    run = tmp_path_factory.mktemp("demo") / "run"
    args = ["demo", "--run", str(run), "--tiny-model", str(tiny_model_dir)]
    first = CliRunner().invoke(app, args)
    after_first = ledger_totals(run)
    second = CliRunner().invoke(app, args)
    return DemoRuns(run, first, second, after_first, ledger_totals(run))


def test_demo_runs_every_stage_and_says_the_teacher_is_recorded(demo: DemoRuns) -> None:
    assert demo.first.exit_code == 0, demo.first.output
    text = flat(demo.first.output)
    assert "RECORDED TEACHER: no model API is reachable here" in text
    assert "were RECORDED" in text and "--captioner dashscope:qwen-vl-max --reasoner openai:gpt-4o" in text
    assert "DIFFERS" not in text
    rd = RunDir(demo.run)
    chains = {r.video_id: r for r in StageStore(rd, "cot").accepted(CotRecord)}
    assert sorted(chains) == ["Assault_2", "Explosion012_x264", "Fighting003_x264", "Normal_Videos_015_x264"]
    assert chains["Assault_2"].provenance.repaired_gates == ["category"]
    assert chains["Fighting003_x264"].answer.startswith("<answer><which>Fighting</which>") and "<when>[0.300, 0.600]</when>" in chains["Fighting003_x264"].answer
    assert chains["Normal_Videos_015_x264"].think.count("<step") == 2
    reflections = {r.id: r for r in StageStore(rd, "reflect").accepted(ReflectionRecord)}
    assert len(reflections) == 9 and [k for k, r in reflections.items() if r.provenance.repaired] == ["Traffic_accident_7#tag"]
    for record in reflections.values():
        assert record.provenance.base_model.startswith("hf:") and record.initial.text.strip(), "the tiny model really answered"
        assert record.revised.correct and record.transition in ("W→C", "C→C")


def test_demo_rejects_say_why(demo: DemoRuns) -> None:
    rejects = {(r.stage, r.item): r for r in RunDir(demo.run).load_rejects()}
    assert set(rejects) == {("ingest", "msad_Robbery_9.mp4"), ("cot", "Traffic_accident_7"), ("reflect", "Explosion012_x264#qa0")}
    assert rejects["ingest", "msad_Robbery_9.mp4"].reason.startswith("truncated or corrupt")
    cot = rejects["cot", "Traffic_accident_7"]
    assert cot.reason == "failed gates: neutrality" and "uses 'his' (gender)" in cot.detail["neutrality"]
    reflect = rejects["reflect", "Explosion012_x264#qa0"]
    assert reflect.reason.startswith("failed gates revised-answer") and "not the ground truth D" in reflect.reason


def test_demo_csv_quirks_are_resolved_at_ingest(demo: DemoRuns) -> None:
    videos = {v.id: v for v in RunDir(demo.run).load_manifest()}
    assert videos["Fighting003_x264"].source_name == "ucf_Fighting003_x264" and len(videos["Fighting003_x264"].mcqs) == 2
    assert videos["Traffic_accident_7"].mcqs[0].answer == "A"  # Correct Option given as the option's text
    assert videos["Assault_2"].mcqs[0].answer == "B"  # 'Option 2'
    assert videos["Explosion012_x264"].label == "abnormal" and not videos["Explosion012_x264"].span_known  # -1,-1
    assert videos["Normal_Videos_015_x264"].label == "normal" and not videos["Normal_Videos_015_x264"].spans  # 0,0
    assert videos["Fighting003_x264"].reasoning["Location"] == "bus shelter on a city sidewalk"  # dict string
    assert videos["Assault_2"].reasoning["Location"] == "subway station corridor"  # ### Key: value


def test_second_run_resumes_from_the_ledger_without_calling_a_model(demo: DemoRuns) -> None:
    assert demo.second.exit_code == 0, demo.second.output
    assert demo.after_second["requests"] == demo.after_first["requests"] > 0
    assert demo.after_second["cache_hits"] > demo.after_first["cache_hits"]  # the retried rejects, answered from the ledger
    text = flat(demo.second.output)
    assert "model calls made by this invocation: 0;" in text and "RECORDED TEACHER" in text


def test_fresh_refuses_a_directory_the_demo_did_not_make(tmp_path: Path) -> None:
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    result = CliRunner().invoke(app, ["demo", "--run", str(precious), "--fresh"])
    assert result.exit_code == 2 and "not a demo run" in flat(result.output)
    assert (precious / "notes.txt").read_text() == "keep me"
    made = tmp_path / "demo"
    (made / SOURCE_DIR).mkdir(parents=True)
    (made / SOURCE_DIR / CSV_NAME).write_text("Video Name\n")
    reset_run(made)
    assert not made.exists()
    with pytest.raises(DemoError):
        reset_run(precious / "notes.txt")


@pytest.mark.realdata
@pytest.mark.skipif(not os.environ.get("VAU_REAL_DATA"), reason="VAU_REAL_DATA is not set (a folder holding vtest.avi)")
def test_demo_with_the_real_clip(tmp_path: Path, tiny_model_dir: Path) -> None:
    """`make demo` with VAU_REAL_DATA: the real pedestrian clip (H.264 in AVI, 1280×720) goes through
    every stage as a normal video, and every expected outcome still holds."""
    real = Path(os.environ["VAU_REAL_DATA"])
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["demo", "--run", str(run), "--tiny-model", str(tiny_model_dir), "--real-data", str(real)])
    assert result.exit_code == 0, result.output[-3000:]
    chain = CotRecord.model_validate_json((run / "cot" / "vtest.json").read_text())
    assert chain.label == "normal" and chain.category == "Normal" and len(chain.captions) == 8
    assert abs(chain.duration - 13.64) < 0.05  # probed from the real file, not from the CSV
    frameset = json.loads(next((run / "frames" / "vtest").glob("uniform-16_*/frameset.json")).read_text())
    assert frameset["width"] > frameset["height"]  # 1280×720 resized within the pixel budget, landscape kept
    items = {p.name for p in (run / "reflect").glob("vtest_*.json")}
    assert items == {"vtest_qa0.json", "vtest_tag.json"}
    missing = CliRunner().invoke(app, ["demo", "--run", str(tmp_path / "other"), "--real-data", str(tmp_path)])
    assert missing.exit_code == 2 and "holds no vtest.avi" in flat(missing.output)
