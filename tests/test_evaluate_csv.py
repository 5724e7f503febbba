"""`vau-annotate eval` on a VAU-Bench-format CSV of the test's own making, with real videos.

The CSV goes through the ingest stage (prefixes, `0,0` normal, `-1,-1` unknown span) and the
sample stage (fps:1, as VAU-R1's scripts), then the same evaluation as an exported split. The
peer tells the videos apart by how many frames a request carries (the clips have different
lengths) and the questions by their text; its replies are fixed below.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from media import make_clip
from peers import OpenAIPeer, Received, Reply, Script
from peers.openai_server import content_parts
from typer.testing import CliRunner

from vau_annotate.annotate.sources.vau_bench import COLUMNS
from vau_annotate.cli import app

CLIPS = {"fight1": 4.0, "calm1": 3.0, "fire1": 5.0}  # seconds; at fps:1 → 4, 3, 5 frames
ROWS = [
    # name, question, options, correct, description, reasoning, class, start, end
    ("ecva_fight1.mp4", "What do the two men do?", ("run", "fight", "sit", "sing"), "B", "Two men fight on a street.",
     "### Specific Anomaly Type: Fighting ### Conclusion: A fight.", "Fighting", 1.0, 3.0),
    ("ucf_calm1.mp4", "What does the woman do?", ("walks her dog", "falls", "shouts", "runs"), "A", "A woman walks her dog.",
     "### Conclusion: Nothing abnormal.", "Normal", 0.0, 0.0),
    ("msad_fire1.mp4", "What burns?", ("a tree", "a car", "a house", "a bin"), "C", "A house burns at night.",
     "### Conclusion: A fire.", "Fire", -1.0, -1.0),
]
BY_FRAMES = {4: "fight1", 3: "calm1", 5: "fire1"}
QA = {"What do the two men do?": "B", "What does the woman do?": "<answer>B</answer>", "What burns?": "C"}  # 2/3
TAG = {"fight1": "<glue>[1.0, 2.0]</glue>"}  # gt [1, 3] → IoU 0.5: mIoU 50.0, R@0.3 100, R@0.5 100, R@0.7 0
CLS = {"fight1": "<answer>Fighting</answer>", "calm1": "<answer>Normal</answer>", "fire1": "<answer>Explosion</answer>"}  # 2/3, bin 3/3
JUDGE = '{"classification_score": 10, "key_matching_score": 8, "fluency_score": 8, "informativeness_score": 6, "factual_score": 8, "total_score": 40}'


def write_csv(path: Path) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for name, question, options, correct, description, reasoning, cls, start, end in ROWS:
        writer.writerow([name, question, *options, correct, "person", description, reasoning, cls, start, end])
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def frames_in(received: Received) -> int:
    for part in content_parts(received):
        if part.get("type") == "video_url":
            return part["video_url"]["url"].split(",", 1)[1].count(",") + 1
    raise AssertionError("no video in the request")


def respond(received: Received) -> Reply:
    if received.body["model"] == "judge":
        return Reply(JUDGE)
    text = " ".join(p.get("text", "") for p in content_parts(received) if p.get("type") == "text")
    video = BY_FRAMES[frames_in(received)]
    for question, reply in QA.items():
        if question in text:
            return Reply(reply)
    if "Is there any anomaly in the video?" in text:
        return Reply(TAG[video])
    if "What type of anomaly appears" in text:
        return Reply(CLS[video])
    if "Explain in detail whether" in text:
        return Reply(f"The analysis of {video}.")
    if "Provide a description in five sentences" in text:
        return Reply(f"The description of {video}.")
    raise AssertionError(text[:200])


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("vau-bench")
    for name, seconds in CLIPS.items():
        make_clip(root / "videos" / f"{name}.mp4", seconds=seconds, fps=10, width=64, height=48)
    return write_csv(root / "test.csv"), root / "videos"


def test_vau_bench_csv_end_to_end(bench, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    csv_path, videos = bench
    out = tmp_path / "eval"
    with OpenAIPeer(Script(default=respond)) as peer:
        res = CliRunner().invoke(app, [
            "eval", "--data", str(csv_path), "--videos", str(videos), "--model", f"openai:m@{peer.base_url}", "--judge",
            f"openai:judge@{peer.base_url}", "--tasks", "qa,tag,cls,reasoning", "--think", "off", "--max-pixels", "3136", "--out", str(out),
        ])
        judge_prompts = [" ".join(p.get("text", "") for p in content_parts(r)) for r in peer.script.received if r.body["model"] == "judge"]
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["qa"]["no_think"] == {"accuracy": pytest.approx(2 / 3), "n": 3, "unparsable": 0}
    assert m["tag"]["no_think"] == {"miou": 0.5, "r@0.3": 1.0, "r@0.5": 1.0, "r@0.7": 0.0, "n": 1}  # only the fight has a known span
    assert m["cls"]["no_think"]["accuracy"] == pytest.approx(2 / 3) and m["cls"]["no_think"]["binary_accuracy"] == 1.0
    assert m["reasoning"]["vau_eval"]["n"] == 3 and m["reasoning"]["vau_eval"]["total_score"] == 40
    # the judge reads the CSV's description and reasoning as the ground truth
    fight = next(p for p in judge_prompts if "The description of fight1." in p)
    assert "- Description: Two men fight on a street." in fight and "Conclusion: A fight." in fight
    assert (out / "manifest.parquet").exists() and (out / "ledger.sqlite").exists()
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(p["id"] for p in preds if p["task"] == "tag") == ["fight1#tag"]
    assert "| 66.7 | 50.0 | 100.0 | 100.0 | 0.0 | 100.0 | 66.7 |" in res.output


def test_csv_without_videos_is_a_usage_error(bench, tmp_path):
    csv_path, _ = bench
    res = CliRunner().invoke(app, ["eval", "--data", str(csv_path), "--model", "openai:m", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--videos" in res.output
