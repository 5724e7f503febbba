"""Ingest of every source format: quirks resolved once, bad rows and files rejected, the rest kept.

Fixtures are written here: annotation files mirroring the real formats (and their quirks) and
small H.264 clips (tests/media.py) copied under the names the annotations use.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from media import make_clip, make_empty, make_not_a_video, make_truncated
from vau_annotate.annotate.classes import ClassFileError, UnknownClassError, canonical_class, default_taxonomy, load_taxonomy
from vau_annotate.annotate.rundir import RunDir
from vau_annotate.annotate.sources.vau_bench import COLUMNS, RowError, answer_letter, parse_reasoning
from vau_annotate.cli import app
from vau_annotate.pipelines.ingest import IngestInputError, run_ingest

CLIP_SECONDS = 3.0
CLIP_FPS = 25
VAU_BENCH_CLASSES = (
    "Abuse", "Agriculture", "Arrest", "Arson", "Assault", "Explosion", "Fighting", "Fire", "Food Safety",
    "Medical Abnormality", "Natural Hazard", "Normal", "Object_falling", "People_falling", "Robbery", "Shooting",
    "Stealing", "Traffic_accident", "Vandalism", "Water_incident",
)
needs_real_data = pytest.mark.skipif(not os.environ.get("VAU_REAL_DATA"), reason="VAU_REAL_DATA is not set")


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """One 3 s, 25 fps, 160×120 clip; tests copy it under the names their annotations use."""
    return make_clip(tmp_path_factory.mktemp("clips") / "clip.mp4", seconds=CLIP_SECONDS, fps=CLIP_FPS, width=160, height=120)


def put(clip: Path, videos: Path, *names: str) -> None:
    for name in names:
        target = videos / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(clip, target)


def rejects(run: Path) -> list[dict]:
    path = run / "rejects.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def reasons(run: Path) -> dict[str, str]:
    """item → reason of the ingest rejects."""
    return {r["item"]: r["reason"] for r in rejects(run) if r["stage"] == "ingest"}


def manifest(run: Path) -> dict:
    return {r.source_name: r for r in RunDir(run).load_manifest()}


def vb_row(name: str, cls: str, start: float | str, end: float | str, question: str = "What happens?",
           options: tuple[str, ...] = ("a fight", "a dance", "a race", "a meal"), correct: str = "A",
           key_object: str = "man", description: str = "A man does something.", reasoning: str = "") -> dict:
    values = [name, question, *options, correct, key_object, description, reasoning, cls, start, end]
    return dict(zip(COLUMNS, values))


def write_csv(path: Path, rows: list[dict], extra_lines: tuple[str, ...] = ()) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buffer.getvalue() + "".join(line + "\n" for line in extra_lines), encoding="utf-8")
    return path


DICT_REASONING = str({
    "Specific Anomaly Type": "Abuse",
    "Location": "Outdoor (near a door)",
    "Key Evidence": ["man hits dog", "dog cowers"],
    "Detailed Explanation": "Cruelty to an animal.",
    "Cause and Effect": "The dog approached; the man struck it.",
    "Conclusion": "Clear abuse.",
})
MARKDOWN_REASONING = (
    "### Specific Anomaly Type: Fighting  ### Location The event is occurring on a sidewalk.  "
    "### Key Evidence - **Punches**: two men trade blows.  ### Detailed Explanation: A brawl. "
    "### Cause and Effect: - **Cause**: an argument. ### Conclusion The video depicts a fight."
)


# -- classes ---------------------------------------------------------------------------------


def test_canonical_class_tolerates_spelling():
    assert canonical_class("road_accidents") == "Traffic_accident"
    assert canonical_class("RoadAccidents") == "Traffic_accident"
    assert canonical_class("Traffic accident") == "Traffic_accident"
    assert canonical_class("OBJECT FALLING") == "Object_falling"
    assert canonical_class("people-falling") == "People_falling"
    assert canonical_class("Normal_Videos_event") == "Normal"
    assert canonical_class("shoplifting") == "Shoplifting"
    assert canonical_class("food_safety") == "Food Safety"
    assert canonical_class("Fights") == "Fighting" or canonical_class("fight") == "Fighting"


def test_taxonomy_covers_vau_bench_and_ucf_crime():
    names = set(default_taxonomy().names)
    assert set(VAU_BENCH_CLASSES) <= names
    ucf = ("Abuse", "Arrest", "Arson", "Assault", "Burglary", "Explosion", "Fighting", "RoadAccidents", "Robbery",
           "Shooting", "Shoplifting", "Stealing", "Vandalism")
    assert all(default_taxonomy().lookup(name) for name in ucf)
    data = json.loads((Path(__file__).parents[1] / "vau_annotate/data/classes.json").read_text())
    assert [c["name"] for c in data["classes"][:20]] == list(VAU_BENCH_CLASSES)


def test_unknown_class_lists_near_matches():
    with pytest.raises(UnknownClassError) as info:
        canonical_class("Robery")
    assert "Robbery" in info.value.suggestions
    assert "Robbery" in str(info.value)


def test_classes_file_format_and_errors(tmp_path):
    good = tmp_path / "classes.json"
    good.write_text(json.dumps({"classes": [{"name": "Trespassing", "aliases": ["intrusion"]}]}))
    taxonomy = load_taxonomy(good)
    assert taxonomy.lookup("Intrusion") == "Trespassing"
    assert taxonomy.lookup("normal") == "Normal"  # added when the file lacks it
    clash = tmp_path / "clash.json"
    clash.write_text(json.dumps({"classes": [{"name": "A", "aliases": ["x"]}, {"name": "B", "aliases": ["X"]}]}))
    with pytest.raises(ClassFileError, match="belongs to both"):
        load_taxonomy(clash)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ClassFileError, match="not valid JSON"):
        load_taxonomy(broken)


# -- VAU-Bench pieces ------------------------------------------------------------------------


def test_answer_letter_forms():
    options = ["a fight", "a dance", "a race", "a meal"]
    assert answer_letter("B", options) == "B"
    assert answer_letter("b", options) == "B"
    assert answer_letter("(C)", options) == "C"
    assert answer_letter("D.", options) == "D"
    assert answer_letter("Option 2", options) == "B"
    assert answer_letter("a race", options) == "C"
    assert answer_letter("A Race.", options) == "C"
    assert answer_letter("B. a dance", options) == "B"
    assert answer_letter("(D) a meal", options) == "D"
    with pytest.raises(RowError, match="correct option matches no option"):
        answer_letter("a picnic", options)
    with pytest.raises(RowError, match="correct option matches no option"):
        answer_letter("B. a meal", options)


def test_parse_reasoning_both_forms():
    as_dict = parse_reasoning(DICT_REASONING)
    assert as_dict["Specific Anomaly Type"] == "Abuse"
    assert as_dict["Key Evidence"] == "man hits dog; dog cowers"
    markdown = parse_reasoning(MARKDOWN_REASONING)
    assert list(markdown) == ["Specific Anomaly Type", "Location", "Key Evidence", "Detailed Explanation", "Cause and Effect", "Conclusion"]
    assert markdown["Location"] == "The event is occurring on a sidewalk."
    assert markdown["Key Evidence"].startswith("- **Punches**")
    assert markdown["Conclusion"] == "The video depicts a fight."
    listed = parse_reasoning("### Key Evidence: ['speeding motorcycle', \"driver's mirror\"] ### Conclusion: done")
    assert listed["Key Evidence"] == "speeding motorcycle; driver's mirror"
    cut = parse_reasoning(DICT_REASONING[:-40])
    assert cut["Specific Anomaly Type"] == "Abuse" and "Cause and Effect" in cut
    assert parse_reasoning("just a sentence") == {"Text": "just a sentence"}
    assert parse_reasoning("-1") == {}


# -- VAU-Bench end to end --------------------------------------------------------------------


def test_vau_bench_quirks_and_rejects(tmp_path, clip):
    videos, run = tmp_path / "videos", tmp_path / "run"
    put(clip, videos, "ecva/7.mp4", "ucf/Abuse/Abuse001_x264.mp4", "ucf/Abuse/Abuse030_x264.mp4",
        "ucf/Normal/NORMAL_VIDEOS_005_X264.mp4", "msad/Fighting_3.mp4", "msad/Robbery_1.mp4", "msad/Shooting_1.mp4",
        "msad/Shooting_2.mp4", "msad/Explosion_1.mp4", "msad/Explosion_2.mp4", "msad/Fire_1.mp4", "ecva/8.mp4",
        "ecva/9.mp4", "ecva/10.mp4", "ecva/11.mp4")
    make_empty(videos / "ecva/zero.mp4")
    make_truncated(clip, videos / "ecva/cut.mp4")
    make_not_a_video(videos / "ecva/text.mp4")
    rows = [
        vb_row("ecva_7.mp4", "Assault", 0.5, 2.0, question="Who starts it?"),
        vb_row("ecva_7.mp4", "Assault", 0.5, 2.0, question="Where is it?", correct="Option 3"),
        vb_row("ucf_Abuse001_x264.mp4", "Abuse", -1.0, -1.0, correct="B. a dance", reasoning=DICT_REASONING),
        vb_row("ucf_Normal_Videos_005_x264.mp4", "Normal", 0.0, 0.0, correct="(C)"),
        vb_row("msad_Fighting_3.mp4", "fighting", 1.0, 2.5, correct="a meal", reasoning=MARKDOWN_REASONING),
        vb_row("ucf_Abuse030_x264.mp4", "-1", 1.0, 2.0, question="-1", options=("-1",) * 4, correct="-1",
               key_object="-1", description="-1", reasoning="-1"),
        vb_row("msad_Robbery_1.mp4", "Robbery", 1.0, 3.6),  # ≤ 1 s past the 3 s clip: clamped
        vb_row("ecva_404.mp4", "Assault", 0.0, 1.0),  # no such file
        vb_row("ecva_zero.mp4", "Assault", 0.0, 1.0),
        vb_row("ecva_cut.mp4", "Assault", 0.0, 1.0),
        vb_row("ecva_text.mp4", "Assault", 0.0, 1.0),
        vb_row("msad_Shooting_1.mp4", "Shooting", 2.0, 1.0),  # end < start
        vb_row("msad_Shooting_2.mp4", "Shooting", 10.0, 12.0),  # starts after the end
        vb_row("msad_Explosion_1.mp4", "Explosion", 1.0, 8.0),  # ends far after the end
        vb_row("msad_Fire_1.mp4", "Robery", 1.0, 2.0),  # unknown class
        vb_row("msad_Explosion_2.mp4", "Explosion", "abc", 2.0),  # unparsable time
        vb_row("ecva_8.mp4", "Assault", 0.5, 1.0, correct="a picnic"),  # correct option matches nothing
        vb_row("ecva_9.mp4", "Assault", 0.5, 1.0),
        vb_row("ecva_9.mp4", "Fighting", 0.5, 1.0, question="Again?"),  # contradicts the row above
        vb_row("ecva_10.mp4", "Normal", 1.0, 2.0),  # normal with a span: kept, span left out, warning
        vb_row("ecva_10.mp4", "Normal", 0.0, 0.0, question="Second?"),
    ]
    annotations = write_csv(tmp_path / "val.csv", rows, extra_lines=("ecva_11.mp4,What?,a,b,c",))

    summary = run_ingest(source="vau-bench", annotations=annotations, videos=videos, run=run)

    records = manifest(run)
    assert sorted(records) == sorted(["ecva_7.mp4", "ucf_Abuse001_x264.mp4", "ucf_Normal_Videos_005_x264.mp4",
                                      "msad_Fighting_3.mp4", "ucf_Abuse030_x264.mp4", "msad_Robbery_1.mp4", "ecva_9.mp4", "ecva_10.mp4"])
    conflicted = records["ecva_10.mp4"]
    assert (conflicted.label, conflicted.category, conflicted.spans, conflicted.span_known) == ("normal", "Normal", [], False)
    assert [m.question for m in conflicted.mcqs] == ["What happens?", "Second?"]
    assert conflicted.warnings == ["normal video with a span: class Normal but span 1-2 (seconds) given; the span is left out of grounding data"]
    assert all(r.warnings == [] for name, r in records.items() if name != "ecva_10.mp4")
    two = records["ecva_7.mp4"]
    assert two.path == "ecva/7.mp4" and two.id == "7"
    assert [m.answer for m in two.mcqs] == ["A", "C"]
    assert two.spans[0].start == 0.5 and two.span_known and two.duration == pytest.approx(CLIP_SECONDS, abs=0.05)
    unknown = records["ucf_Abuse001_x264.mp4"]
    assert unknown.label == "abnormal" and unknown.spans == [] and not unknown.span_known
    assert unknown.mcqs[0].answer == "B" and unknown.reasoning["Key Evidence"] == "man hits dog; dog cowers"
    normal = records["ucf_Normal_Videos_005_x264.mp4"]
    assert (normal.label, normal.category, normal.spans, normal.path) == ("normal", "Normal", [], "ucf/Normal/NORMAL_VIDEOS_005_X264.mp4")
    assert normal.mcqs[0].answer == "C"
    fight = records["msad_Fighting_3.mp4"]
    assert fight.category == "Fighting" and fight.mcqs[0].answer == "D"
    assert fight.reasoning["Location"] == "The event is occurring on a sidewalk."
    no_qa = records["ucf_Abuse030_x264.mp4"]
    assert no_qa.mcqs == [] and no_qa.category == "Abuse" and no_qa.key_object is None and no_qa.reasoning == {}
    assert records["msad_Robbery_1.mp4"].spans[0].end == pytest.approx(records["msad_Robbery_1.mp4"].duration)
    assert any("clamped" in note for note in summary.notes)

    why = reasons(run)
    assert why["ecva_404.mp4"].startswith("video not found:")
    assert why["ecva_zero.mp4"].startswith("file is empty")
    assert why["ecva_cut.mp4"].startswith("truncated or corrupt")
    assert why["ecva_text.mp4"].startswith("not a video")
    assert why["msad_Shooting_1.mp4"].startswith("span end before start:")
    assert why["msad_Shooting_2.mp4"].startswith("span starts after the video ends:")
    assert why["msad_Explosion_1.mp4"].startswith("span ends after the video:")
    assert why["msad_Fire_1.mp4"].startswith("unknown class:") and "Robbery" in why["msad_Fire_1.mp4"]
    assert why["msad_Explosion_2.mp4"].startswith("unparsable time:")
    assert why["ecva_8.mp4"].startswith("correct option matches no option:")
    assert why["ecva_9.mp4"].startswith("conflicting annotations:")
    assert "ecva_10.mp4" not in why
    assert why["ecva_11.mp4"].startswith("malformed row:")
    assert all(r["stage"] == "ingest" and ("row" in r["detail"] or "rows" in r["detail"]) for r in rejects(run))
    assert summary.counts == {"rows": 22, "videos": 8, "mcqs": 9, "normal": 2, "abnormal": 6, "unlabeled": 0, "rejected": 12, "warned": 1}
    assert any(note.startswith("warning: 1 video(s) kept with a warning") for note in summary.notes)
    assert summary.exit_code == 3


def test_vau_bench_wrong_columns_says_what_it_looks_like(tmp_path):
    manifest_like = tmp_path / "labels.csv"
    manifest_like.write_text("video,label\na.mp4,normal\n")
    with pytest.raises(IngestInputError) as info:
        run_ingest(source="vau-bench", annotations=manifest_like, videos=tmp_path, run=tmp_path / "run")
    assert "Video Name" in str(info.value) and "Question" in str(info.value) and "--source folder" in str(info.value)
    ucf = tmp_path / "ucf.txt"
    ucf.write_text("Abuse001_x264.mp4  Abuse  10  20  -1  -1\n")
    with pytest.raises(IngestInputError, match="--source ucf-crime"):
        run_ingest(source="vau-bench", annotations=ucf, videos=tmp_path, run=tmp_path / "run")


# -- UCF-Crime -------------------------------------------------------------------------------


UCF_TXT = (
    "Arrest001_x264.mp4  Arrest  25  50  -1  -1\r\n"
    "Fighting002_x264.mp4  Fighting  10  20  40  60\r\n"
    "\r\n"
    "Normal_Videos_003_x264.mp4  Normal  -1  -1  -1  -1\r\n"
    "Shooting004_x264.mp4  Shooting  -1  -1  -1  -1\r\n"
    "RoadAccidents005_x264.mp4  RoadAccidents  10  90  -1  -1\r\n"
    "Burglary006_x264.mp4  Burglary  50  20  -1  -1\r\n"
    "Robbery007_x264.mp4  Robbery  10  x  -1  -1\r\n"
    "Stealing008_x264.mp4  Stealing  500  600  -1  -1\r\n"
    "Vandalism009_x264.mp4  Vandalism  10  -1  -1  -1\r\n"
    "Arrest001_x264.mp4  Arrest  25  50  -1  -1\r\n"
)


def test_ucf_crime_frames_to_seconds(tmp_path, clip):
    videos, run = tmp_path / "videos", tmp_path / "run"
    put(clip, videos, "Arrest/Arrest001_x264.mp4", "Fighting/Fighting002_x264.mp4",
        "Testing_Normal_Videos_Anomaly/Normal_Videos_003_x264.mp4", "Shooting/Shooting004_x264.mp4",
        "RoadAccidents/RoadAccidents005_x264.mp4", "Burglary/Burglary006_x264.mp4", "Robbery/Robbery007_x264.mp4",
        "Stealing/Stealing008_x264.mp4", "Vandalism/Vandalism009_x264.mp4")
    annotations = tmp_path / "Temporal_Anomaly_Annotation_for_Testing_Videos.txt"
    annotations.write_bytes(UCF_TXT.encode())

    summary = run_ingest(source="ucf-crime", annotations=annotations, videos=videos, run=run)

    records = manifest(run)
    arrest = records["Arrest001_x264.mp4"]
    assert [(s.start, s.end) for s in arrest.spans] == [(1.0, 2.0)] and arrest.span_known and arrest.fps == CLIP_FPS
    assert [(s.start, s.end) for s in records["Fighting002_x264.mp4"].spans] == [(0.4, 0.8), (1.6, 2.4)]
    assert records["Normal_Videos_003_x264.mp4"].label == "normal"
    shooting = records["Shooting004_x264.mp4"]
    assert shooting.label == "abnormal" and not shooting.span_known
    road = records["RoadAccidents005_x264.mp4"]
    assert road.category == "Traffic_accident" and road.spans[0].end == pytest.approx(road.duration)
    why = reasons(run)
    assert why["Burglary006_x264.mp4"].startswith("span end before start:")
    assert why["Robbery007_x264.mp4"].startswith("unparsable frame number:")
    assert why["Stealing008_x264.mp4"].startswith("span starts after the video ends:")
    assert why["Vandalism009_x264.mp4"].startswith("incomplete span:")
    assert why["Arrest001_x264.mp4"].startswith("duplicate video:")
    assert summary.counts["videos"] == 5 and summary.counts["rows"] == 10 and summary.rejected == 5


def test_frame_sources_need_probing(tmp_path):
    annotations = tmp_path / "a.txt"
    annotations.write_text("Arrest001_x264.mp4  Arrest  25  50  -1  -1\n")
    with pytest.raises(IngestInputError, match="--no-probe"):
        run_ingest(source="ucf-crime", annotations=annotations, videos=tmp_path, run=tmp_path / "run", probe=False)


# -- Vad-Reasoning ---------------------------------------------------------------------------


def test_vad_reasoning_reroots_paths_and_keeps_think(tmp_path, clip):
    videos, run = tmp_path / "videos", tmp_path / "run"
    put(clip, videos, "UCF/Abuse001_x264.mp4", "XD/Abuse001_x264.mp4", "UCF/Normal_1.mp4", "UCF/quiet.mp4", "UCF/Fire_2.mp4")
    lines = [
        {"source": "UCF-Crime", "video": "Abuse001_x264.mp4", "anomaly_type": "Abuse", "start": 10, "end": 50, "total_frames": 75,
         "path": "/mnt/data/Vad-Reasoning/videos/UCF/Abuse001_x264.mp4", "think": "<think>a man hits</think>", "answer": "<answer><which>Abuse</which></answer>"},
        {"source": "XD-Violence", "video": "Abuse001_x264.mp4", "anomaly_type": "abuse", "start": 0, "end": 25, "total_frames": 300,
         "path": "/mnt/data/Vad-Reasoning/videos/XD/Abuse001_x264.mp4", "think": "t", "answer": "a"},
        {"source": "UCF-Crime", "video": "Normal_1.mp4", "anomaly_type": "Normal", "start": None, "end": None, "total_frames": 75,
         "path": "C:\\datasets\\UCF\\Normal_1.mp4", "think": "nothing happens", "answer": "<answer>normal</answer>"},
        {"source": "UCF-Crime", "video": "quiet", "path": "/elsewhere/quiet.mp4"},
        {"source": "UCF-Crime", "video": "Fire_2.mp4", "anomaly_type": "Fire", "start": 60, "end": 20, "total_frames": 75, "path": "/x/UCF/Fire_2.mp4"},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\n{broken json\n"
    annotations = tmp_path / "vad_reasoning.jsonl"
    annotations.write_text(text)

    summary = run_ingest(source="vad-reasoning", annotations=annotations, videos=videos, run=run)

    by_path = {r.path: r for r in RunDir(run).load_manifest()}
    ucf, xd = by_path["UCF/Abuse001_x264.mp4"], by_path["XD/Abuse001_x264.mp4"]
    assert (ucf.id, xd.id) == ("UCF__Abuse001_x264", "XD__Abuse001_x264")
    assert [(s.start, s.end) for s in ucf.spans] == [(0.4, 2.0)] and ucf.think == "<think>a man hits</think>"
    assert ucf.answer.startswith("<answer>")
    assert by_path["UCF/Normal_1.mp4"].label == "normal" and by_path["UCF/Normal_1.mp4"].think == "nothing happens"
    assert by_path["UCF/quiet.mp4"].label == "normal"  # no anomaly_type, no span
    assert any(note.startswith("warning:") and "300 vs 75" in note for note in summary.notes)
    why = reasons(run)
    assert why["Fire_2.mp4"].startswith("span end before start:")
    assert why["line 6"].startswith("invalid JSON:")
    assert summary.counts["videos"] == 4 and summary.rejected == 2


def test_vad_reasoning_rejects_other_formats(tmp_path):
    csv_file = write_csv(tmp_path / "val.csv", [vb_row("ecva_1.mp4", "Assault", 0, 1)])
    with pytest.raises(IngestInputError, match="--source vau-bench"):
        run_ingest(source="vad-reasoning", annotations=csv_file, videos=tmp_path, run=tmp_path / "run")
    other = tmp_path / "other.jsonl"
    other.write_text('{"clip": "a.mp4", "score": 1}\n')
    with pytest.raises(IngestInputError, match="'video' or 'path'"):
        run_ingest(source="vad-reasoning", annotations=other, videos=tmp_path, run=tmp_path / "run")


# -- folder ----------------------------------------------------------------------------------


def test_folder_with_detected_manifest(tmp_path, clip):
    videos, run = tmp_path / "videos", tmp_path / "run"
    put(clip, videos, "a.mp4", "sub/b.mp4", "c.mkv", "x/d.mp4", "y/d.mp4")
    (videos / "notes.txt").write_text("not a video, not listed")
    (videos / "manifest.csv").write_text(
        "video,label,category,start,end\n"
        "a.mp4,abnormal,fight,0.5,1.0\n"
        "a.mp4,abnormal,fight,2.0,2.5\n"
        "sub/b.mp4,normal,,,\n"
        "x/d.mp4,,Explosion,,\n"
        "ghost.mp4,normal,,,\n"
    )

    summary = run_ingest(source="folder", annotations=None, videos=videos, run=run)

    records = {r.path: r for r in RunDir(run).load_manifest()}
    assert sorted(records) == ["a.mp4", "c.mkv", "sub/b.mp4", "x/d.mp4", "y/d.mp4"]
    a = records["a.mp4"]
    assert a.category == "Fighting" and [(s.start, s.end) for s in a.spans] == [(0.5, 1.0), (2.0, 2.5)]
    assert records["sub/b.mp4"].label == "normal" and records["sub/b.mp4"].category == "Normal"
    assert records["x/d.mp4"].label == "abnormal" and not records["x/d.mp4"].span_known
    assert records["c.mkv"].label == "unlabeled" and records["y/d.mp4"].label == "unlabeled"
    assert {records["x/d.mp4"].id, records["y/d.mp4"].id} == {"x__d", "y__d"}
    assert reasons(run)["ghost.mp4"].startswith("video not found:")
    assert summary.counts == {"rows": 7, "videos": 5, "mcqs": 0, "normal": 1, "abnormal": 2, "unlabeled": 2, "rejected": 1, "warned": 0}
    meta = json.loads((run / "run.json").read_text())
    assert meta["source"] == "folder" and meta["annotations"] == str((videos / "manifest.csv").resolve())


def test_folder_jsonl_manifest_and_user_classes(tmp_path, clip):
    videos, run = tmp_path / "videos", tmp_path / "run"
    put(clip, videos, "gate.mp4", "yard.mp4", "door.mp4")
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({"classes": [{"name": "Trespassing", "aliases": ["intrusion"]}]}))
    labels = tmp_path / "labels.jsonl"
    labels.write_text(
        json.dumps({"video": "gate.mp4", "category": "Intrusion", "start": 0.5, "end": 1.5}) + "\n"
        + json.dumps({"video": "yard.mp4", "category": "Fighting"}) + "\n"
        + json.dumps({"video": "door.mp4", "label": "normal", "category": "Trespassing"}) + "\n"
    )

    summary = run_ingest(source="folder", annotations=labels, videos=videos, run=run, classes_file=classes)

    records = {r.path: r for r in RunDir(run).load_manifest()}
    assert records["gate.mp4"].category == "Trespassing" and records["gate.mp4"].span_known
    why = reasons(run)
    assert why["yard.mp4"].startswith("unknown class:")  # not in the user's taxonomy
    assert why["door.mp4"].startswith("conflicting annotations:")
    assert summary.counts["videos"] == 1 and summary.counts["unlabeled"] == 0  # a rejected row does not make its video "unlisted"


# -- re-runs, run.json, CLI ------------------------------------------------------------------


def test_rerun_replaces_manifest_and_ingest_rejects(tmp_path, clip):
    videos, run = tmp_path / "videos", tmp_path / "run"
    put(clip, videos, "ecva/1.mp4")
    annotations = write_csv(tmp_path / "val.csv", [vb_row("ecva_1.mp4", "Assault", 0.5, 1.0), vb_row("ecva_2.mp4", "Assault", 0.5, 1.0)])
    RunDir(run).add_reject("v9", "sample", "decode failed: frame 3")
    run_ingest(source="vau-bench", annotations=annotations, videos=videos, run=run)
    run_ingest(source="vau-bench", annotations=annotations, videos=videos, run=run)
    stages = [r["stage"] for r in rejects(run)]
    assert stages.count("ingest") == 1 and stages.count("sample") == 1
    assert len(RunDir(run).load_manifest()) == 1
    meta = json.loads((run / "run.json").read_text())
    assert meta["source"] == "vau-bench"
    assert meta["annotations"] == str(annotations.resolve()) and meta["videos"] == str(videos.resolve())
    assert [s["stage"] for s in meta["stages"]] == ["ingest", "ingest"]
    assert meta["stages"][-1]["counts"]["rejected"] == 1


def test_cli_exit_codes_and_schema(tmp_path, clip):
    runner = CliRunner()
    videos = tmp_path / "videos"
    put(clip, videos, "ecva/1.mp4")
    clean = write_csv(tmp_path / "clean.csv", [vb_row("ecva_1.mp4", "Assault", 0.5, 1.0)])
    partial = write_csv(tmp_path / "partial.csv", [vb_row("ecva_1.mp4", "Assault", 0.5, 1.0), vb_row("ecva_2.mp4", "Assault", 0.5, 1.0)])
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("video,label\n1.mp4,normal\n")
    base = ["ingest", "--source", "vau-bench", "--videos", str(videos), "--run", str(tmp_path / "run")]

    assert runner.invoke(app, [*base, str(clean)]).exit_code == 0
    assert runner.invoke(app, [*base, str(partial)]).exit_code == 3
    missing = runner.invoke(app, [*base, str(tmp_path / "nope.csv")])
    assert missing.exit_code == 2 and "does not exist" in " ".join(missing.output.split())
    wrong_columns = runner.invoke(app, [*base, str(wrong)])
    assert wrong_columns.exit_code == 2 and "Video Name" in " ".join(wrong_columns.output.split())
    bad_classes = tmp_path / "classes.json"
    bad_classes.write_text("[1, 2]")
    assert runner.invoke(app, [*base, str(clean), "--classes", str(bad_classes)]).exit_code == 2

    schema = runner.invoke(app, ["schema", "video"])
    assert schema.exit_code == 0
    document = json.loads(schema.stdout)
    assert {"spans", "span_known", "mcqs", "reasoning"} <= set(document["properties"])


def test_manifest_is_parquet_with_json_columns(tmp_path, clip):
    videos, run = tmp_path / "videos", tmp_path / "run"
    put(clip, videos, "ecva/1.mp4")
    annotations = write_csv(tmp_path / "val.csv", [vb_row("ecva_1.mp4", "Assault", 0.5, 1.0, reasoning=DICT_REASONING)])
    run_ingest(source="vau-bench", annotations=annotations, videos=videos, run=run)
    frame = pd.read_parquet(run / "manifest.parquet")
    assert list(frame["id"]) == ["1"]
    assert json.loads(frame["reasoning"][0])["Specific Anomaly Type"] == "Abuse"


# -- real VAU-Bench rows ---------------------------------------------------------------------


@pytest.mark.realdata
@needs_real_data
def test_real_vau_bench_excerpt(tmp_path):
    source = Path(os.environ["VAU_REAL_DATA"]) / "vau_bench_val_excerpt.csv"
    with source.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    longest = max(float(r["End Time"]) for r in rows)
    long_clip = make_clip(tmp_path / "long.mp4", seconds=longest + 2, fps=2, width=160, height=120)
    videos = tmp_path / "videos"
    for row in rows:
        prefix, _, on_disk = row["Video Name"].partition("_")  # the file on disk lacks the prefix
        put(long_clip, videos, f"{prefix}/{on_disk}")

    summary = run_ingest(source="vau-bench", annotations=source, videos=videos, run=tmp_path / "run")

    names = {r["Video Name"] for r in rows}
    records = manifest(tmp_path / "run")
    assert summary.rejected == 0, reasons(tmp_path / "run")
    assert summary.counts["rows"] == len(rows) == 20
    assert set(records) == names and summary.counts["videos"] == len(names)
    assert summary.counts["mcqs"] == len(rows)
    for row in rows:
        record = records[row["Video Name"]]
        if row["Anomaly Class"] == "Normal":
            assert record.label == "normal" and record.spans == []
        elif float(row["Start Time"]) == -1:
            assert record.label == "abnormal" and not record.span_known and record.spans == []
        else:
            assert record.span_known and record.spans[0].start == float(row["Start Time"])
        assert record.reasoning["Specific Anomaly Type"]
        assert {"Location", "Key Evidence", "Conclusion"} <= set(record.reasoning)
        assert record.mcqs[0].answer == row["Correct Option"]
    assert summary.counts["normal"] == sum(r["Anomaly Class"] == "Normal" for r in rows)
    assert records["ucf_Abuse016_x264.mp4"].path == "ucf/Abuse016_x264.mp4"
    assert records["msad_Assault_1.mp4"].reasoning["Location"].startswith("The event is occurring inside a store")


def test_name_resolution_ties_symlinks_and_ambiguity(tmp_path, clip):
    videos, run = tmp_path / "videos", tmp_path / "run"
    put(clip, videos, "ecva/5.mp4", "msad/5.mp4", "a/6.mp4", "b/6.mp4")
    put(clip, tmp_path / "elsewhere", "Arson/Arson001_x264.mp4")
    (videos / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    annotations = write_csv(tmp_path / "val.csv", [
        vb_row("ecva_5.mp4", "Assault", 0.5, 1.0),  # two 5.mp4: the ecva folder breaks the tie
        vb_row("ecva_6.mp4", "Assault", 0.5, 1.0),  # two 6.mp4, neither under ecva
        vb_row("ucf_Arson001_x264.mp4", "Arson", 0.5, 1.0),  # behind a symlinked folder
    ])
    run_ingest(source="vau-bench", annotations=annotations, videos=videos, run=run)
    records = manifest(run)
    assert records["ecva_5.mp4"].path == "ecva/5.mp4"
    assert records["ucf_Arson001_x264.mp4"].path == "linked/Arson/Arson001_x264.mp4"
    assert reasons(run)["ecva_6.mp4"].startswith("ambiguous video name:")
    assert rejects(run)[0]["detail"]["candidates"] == ["a/6.mp4", "b/6.mp4"]


def test_validation_errors_become_readable_rejects():
    from vau_annotate.annotate.sources.base import Problem, SourceRow
    from vau_annotate.pipelines.ingest import _build, _Pending, _Tally

    row = SourceRow(name="odd.mp4", rows=[4], label="normal", spans=[(1.0, 2.0)])
    problems: list[Problem] = []
    assert _build(_Pending(row, "odd.mp4"), None, "folder", default_taxonomy(), _Tally(), problems) is None
    assert problems[0].reason == "invalid record: a normal video cannot have abnormal spans"
    assert problems[0].detail["row"] == 4


# -- hardening (issue 9, items 8-12) -----------------------------------------------------------


def test_missing_optional_columns_become_null_with_a_warning(tmp_path, clip):
    videos = tmp_path / "videos"
    put(clip, videos, "ecva/1.mp4", "ecva/2.mp4")
    rows = [vb_row("ecva_1.mp4", "Assault", 0.5, 1.0), vb_row("ecva_2.mp4", "Fighting", -1, -1, question="Why?")]
    without_key_object = pd.DataFrame(rows).drop(columns=["Key Object", "Description"])
    path = tmp_path / "no_key_object.csv"
    without_key_object.to_csv(path, index=False)

    summary = run_ingest(source="vau-bench", annotations=path, videos=videos, run=tmp_path / "run")

    records = manifest(tmp_path / "run")
    assert sorted(records) == ["ecva_1.mp4", "ecva_2.mp4"] and summary.rejected == 0
    assert records["ecva_1.mp4"].key_object is None and records["ecva_1.mp4"].description is None
    assert [m.answer for m in records["ecva_2.mp4"].mcqs] == ["A"] and records["ecva_2.mp4"].category == "Fighting"
    assert "warning: missing optional column(s): Key Object, Description read as empty in every row" in summary.notes

    no_questions = pd.DataFrame(rows).drop(columns=["Question", "Correct Option"])
    path = tmp_path / "no_questions.csv"
    no_questions.to_csv(path, index=False)
    summary = run_ingest(source="vau-bench", annotations=path, videos=videos, run=tmp_path / "run2")
    records = manifest(tmp_path / "run2")
    assert summary.rejected == 0 and [r.mcqs for r in records.values()] == [[], []]
    assert any("Question, Correct Option" in note and "questions are not read" in note for note in summary.notes)


def test_class_from_a_file_name_is_a_fallback_through_the_alias_table(tmp_path, clip):
    videos, run = tmp_path / "videos", tmp_path / "run"
    put(clip, videos, "ucf/Shoplifting012_x264.mp4", "ucf/Stealing003_x264.mp4", "ucf/Arrest001_x264.mp4")
    rows = [
        vb_row("ucf_Shoplifting012_x264.mp4", "-1", -1, -1),  # no class: read off the name, as VAU-Bench labels it
        vb_row("ucf_Stealing003_x264.mp4", "Stealing", -1, -1),
        vb_row("ucf_Arrest001_x264.mp4", "Fighting", 0.5, 1.0),  # the annotation wins over the name
    ]
    run_ingest(source="vau-bench", annotations=write_csv(tmp_path / "val.csv", rows), videos=videos, run=run)
    records = manifest(run)
    shop = records["ucf_Shoplifting012_x264.mp4"]
    assert (shop.category, shop.class_source, shop.source_class, shop.vau_bench_class) == ("Stealing", "file-name", None, "Stealing")
    assert (records["ucf_Stealing003_x264.mp4"].class_source, records["ucf_Stealing003_x264.mp4"].source_class) == ("annotation", "Stealing")
    assert (records["ucf_Arrest001_x264.mp4"].category, records["ucf_Arrest001_x264.mp4"].class_source) == ("Fighting", "annotation")

    # UCF-Crime keeps its own class (its taxonomy has it) and says which VAU-Bench label it corresponds to
    ucf = tmp_path / "train.txt"
    ucf.write_text("Shoplifting/Shoplifting012_x264.mp4\nNormal_Videos_003_x264.mp4  Normal  -1  -1\n")
    put(clip, videos, "Normal_Videos_003_x264.mp4")
    run_ingest(source="ucf-crime", annotations=ucf, videos=videos, run=tmp_path / "run_ucf")
    records = manifest(tmp_path / "run_ucf")
    shop = records["Shoplifting/Shoplifting012_x264.mp4"]
    assert (shop.category, shop.class_source, shop.vau_bench_class, shop.taxonomy) == ("Shoplifting", "file-name", "Stealing", "vau-bench")
    assert records["Normal_Videos_003_x264.mp4"].class_source == "annotation"


def test_vad_reasoning_has_its_own_taxonomy_and_keeps_unknown_classes(tmp_path, clip):
    videos, run = tmp_path / "videos", tmp_path / "run"
    put(clip, videos, "a.mp4", "b.mp4", "c.mp4", "d.mp4")
    lines = [
        {"video": "a.mp4", "anomaly_type": "Animals Hurt Human", "start": 10, "end": 40, "think": "<think>a dog bites</think>", "answer": "<answer>x</answer>"},
        {"video": "b.mp4", "anomaly_type": "Traffic Accidents", "start": 5, "end": 30, "think": "t", "answer": "a"},
        {"video": "c.mp4", "anomaly_type": "Alien Landing", "start": 5, "end": 30, "think": "<think>lights</think>", "answer": "<answer>y</answer>"},
        {"video": "d.mp4", "anomaly_type": "RoadAccidents", "start": 5, "end": 30, "think": "t", "answer": "a"},
    ]
    annotations = tmp_path / "vr.jsonl"
    annotations.write_text("\n".join(json.dumps(line) for line in lines) + "\n")

    summary = run_ingest(source="vad-reasoning", annotations=annotations, videos=videos, run=run)

    records = manifest(run)
    assert summary.rejected == 0 and sorted(records) == ["a.mp4", "b.mp4", "c.mp4", "d.mp4"]
    animals = records["a.mp4"]
    assert (animals.category, animals.taxonomy, animals.vau_bench_class, animals.source_class) == (
        "Animals Hurting Human", "vad-reasoning", None, "Animals Hurt Human")
    assert animals.warnings == [] and animals.think == "<think>a dog bites</think>"
    assert (records["b.mp4"].category, records["b.mp4"].vau_bench_class) == ("Traffic Accidents", "Traffic_accident")
    assert (records["d.mp4"].category, records["d.mp4"].vau_bench_class) == ("Traffic Accidents", "Traffic_accident")
    alien = records["c.mp4"]
    assert (alien.category, alien.label, alien.think, alien.answer) == ("Alien Landing", "abnormal", "<think>lights</think>", "<answer>y</answer>")
    assert alien.warnings and alien.warnings[0].startswith("unknown class: 'Alien Landing' is not in the vad-reasoning taxonomy")
    assert alien.span_known and alien.vau_bench_class is None


def test_vad_reasoning_taxonomy_follows_the_paper_figure():
    from vau_annotate.annotate.classes import builtin_taxonomy

    vr = builtin_taxonomy("vad-reasoning")
    groups = {c.group.split(" / ")[0] for c in vr.classes if c.group}
    assert groups == {"Human Activity", "Objects", "Environment"}
    assert len([c for c in vr.classes if c.name != "Normal"]) == 37
    assert vr.map_to("Falling", "vau-bench") == "People_falling" and vr.map_to("Drown", "vau-bench") == "Water_incident"
    assert vr.map_to("Tornado", "vau-bench") == "Natural Hazard" and vr.map_to("Parade", "vau-bench") is None
    assert all(vr.map_to(c.name, "vau-bench") in (None, *VAU_BENCH_CLASSES) for c in vr.classes)


def test_header_only_semicolons_directories_and_repeated_markdown(tmp_path, clip):
    runner = CliRunner()
    videos = tmp_path / "videos"
    put(clip, videos, "ecva/1.mp4")
    base = ["ingest", "--source", "vau-bench", "--videos", str(videos), "--run", str(tmp_path / "run")]

    header_only = tmp_path / "header.csv"
    header_only.write_text(",".join(COLUMNS) + "\n")
    result = runner.invoke(app, [*base, str(header_only)])
    assert result.exit_code == 2 and "has a header but no rows" in " ".join(result.output.split())

    folder = tmp_path / "annotations_dir"
    folder.mkdir()
    result = runner.invoke(app, [*base, str(folder)])
    assert result.exit_code == 2 and "is a directory" in " ".join(result.output.split())
    assert "does not exist" not in result.output

    semicolons = tmp_path / "semi.csv"
    pd.DataFrame([vb_row("ecva_1.mp4", "Assault", 0.5, 1.0)]).to_csv(semicolons, index=False, sep=";")
    summary = run_ingest(source="vau-bench", annotations=semicolons, videos=videos, run=tmp_path / "run_semi")
    assert summary.counts["videos"] == 1 and summary.rejected == 0
    assert "warning: semicolon-separated file: read with ';' as the delimiter" in summary.notes
    assert manifest(tmp_path / "run_semi")["ecva_1.mp4"].mcqs[0].answer == "A"

    comments_only = tmp_path / "ucf.txt"
    comments_only.write_text("# UCF-Crime temporal annotations\n\n")
    with pytest.raises(IngestInputError, match="no annotation line"):
        run_ingest(source="ucf-crime", annotations=comments_only, videos=videos, run=tmp_path / "run_ucf")

    block = "### Location: a sidewalk ### Conclusion: a fight"
    assert parse_reasoning(" ".join([block] * 6)) == {"Location": "a sidewalk", "Conclusion": "a fight"}
    assert parse_reasoning("### Location: a sidewalk ### Location: near a door")["Location"] == "a sidewalk\nnear a door"


def test_run_json_stage_started_before_finished(tmp_path, clip):
    videos = tmp_path / "videos"
    put(clip, videos, "ecva/1.mp4")
    run_ingest(source="vau-bench", annotations=write_csv(tmp_path / "v.csv", [vb_row("ecva_1.mp4", "Assault", 0.5, 1.0)]),
               videos=videos, run=tmp_path / "run")
    stage = RunDir(tmp_path / "run").load_meta().stages[-1]
    assert stage.stage == "ingest" and stage.started < stage.finished
