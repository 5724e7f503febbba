"""`export --format …`: each foreign format re-read by a reader written from its published field list.

verl and EasyR1 parquet are read with pyarrow and checked field by field (and verl's own RLHFDataset
plus its qwen-vl-utils vision step decode the verl rows where verl imports); Video-R1 JSON with json; Vad-Reasoning JSONL and VAU-Bench CSV are read
back by this project's own ingest parsers, which were written from those datasets' releases.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from vau_annotate.annotate.classes import default_taxonomy
from vau_annotate.annotate.rundir import RunDir
from vau_annotate.annotate.sources import vad_reasoning, vau_bench
from vau_annotate.cli import app
from vau_annotate.pipelines.formats import FORMATS
from vau_annotate.pipelines.runner import StageStore
from vau_annotate.schemas.cot import CotRecord

VERL_FIELDS = {"data_source", "prompt", "ability", "reward_model", "extra_info", "videos"}
EASYR1_FIELDS = {"prompt", "answer", "videos"}
VIDEO_R1_FIELDS = {"problem_id", "problem", "problem_type", "options", "data_type", "path", "solution", "process", "data_source"}
VAD_R1_FIELDS = {"source", "video", "anomaly_type", "start", "end", "total_frames", "path", "think", "answer"}


def export_format(run: Path, out: Path, fmt: str, *extra: str) -> Path:
    result = CliRunner().invoke(app, ["export", "--run", str(run), "--out", str(out), "--format", fmt, "--split", "ratio:0.5,0.25,0.25", *extra])
    assert result.exit_code == 0, result.output
    return out


def table_rows(folder: Path, ext: str) -> dict[str, list[dict]]:
    return {p.stem: pq.read_table(p).to_pylist() for p in sorted(folder.glob(f"*.{ext}"))}


def test_registry_is_one_dict_of_writers() -> None:
    assert set(FORMATS) == {"verl", "easyr1", "video-r1", "vad-r1", "vau-bench", "lmms-eval"} and all(callable(w) for w in FORMATS.values())


def test_verl_parquet(demo_run: Path, tmp_path: Path) -> None:  # noqa: F811
    out = export_format(demo_run, tmp_path / "verl", "verl", "--fps", "2")
    splits = table_rows(out, "parquet")
    assert set(splits) <= {"train", "val", "test"} and "train" in splits
    rows = [r for rows in splits.values() for r in rows]
    assert len(rows) == 6 + 4 + 5 + 5 + 10  # every GRPO config's rows
    for row in rows:
        assert set(row) == VERL_FIELDS
        assert [m["role"] for m in row["prompt"]] == ["system", "user"] and row["prompt"][1]["content"].startswith("<video>")
        assert row["reward_model"]["style"] == "rule" and isinstance(row["reward_model"]["ground_truth"], str)
        assert row["videos"][0]["fps"] == 2.0 and row["videos"][0]["max_frames"] == 32
        assert (demo_run / "source" / "videos" / row["videos"][0]["video"]).is_file()
    qa = next(r for r in rows if r["extra_info"]["id"] == "Assault_2#qa0")
    assert qa["reward_model"]["ground_truth"] == "B" and qa["data_source"] == "vau_annotate/qa" and qa["ability"] == "video_anomaly_qa"
    tag = next(r for r in rows if r["extra_info"]["id"] == "Fighting003_x264#tag")
    assert tag["reward_model"]["ground_truth"] == "[3.0, 6.0]" and tag["extra_info"]["span"] == [3.0, 6.0]
    normal = next(r for r in rows if r["extra_info"]["id"] == "Normal_Videos_015_x264#tag")
    assert normal["reward_model"]["ground_truth"] == "normal"
    assert sorted(r["extra_info"]["index"] for r in rows) == list(range(len(rows)))


def test_verl_own_dataset_class_decodes_the_rows(demo_run: Path, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """verl's RLHFDataset reads the parquet and its vision step (qwen-vl-utils) decodes each `videos`
    dict: the sampling rule must be `fps` or `nframes`, never both keys. Runs where verl imports."""
    rl_dataset = pytest.importorskip("verl.utils.dataset.rl_dataset", reason="verl is not installed in this environment")
    import asyncio

    from omegaconf import OmegaConf
    from transformers import AutoProcessor, AutoTokenizer

    processor, tokenizer = AutoProcessor.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)
    monkeypatch.chdir(demo_run / "source" / "videos")  # verl resolves the relative video paths from here
    for rule, expected in ((("--fps", "1"), 10), (("--nframes", "4"), 4)):
        out = export_format(demo_run, tmp_path / f"verl{expected}", "verl", "--split", "ratio:1,0,0", "--max-pixels", "12544", "--configs", "grpo_tag", *rule)
        dataset = rl_dataset.RLHFDataset(data_files=[str(out / "train.parquet")], tokenizer=tokenizer, processor=processor,
                                         config={"filter_overlong_prompts": False, "cache_dir": str(tmp_path / "cache")})
        item = next(dataset[i] for i in range(len(dataset)) if dataset[i]["extra_info"]["id"] == "Fighting003_x264#tag")
        assert item["reward_model"]["ground_truth"] == "[3.0, 6.0]"
        part = item["raw_prompt"][1]["content"][0]
        assert part["type"] == "video" and part["video"] == "Fighting003_x264.mp4"
        _, videos = asyncio.run(rl_dataset.RLHFDataset.process_vision_info(item["raw_prompt"], image_patch_size=14, config=OmegaConf.create({})))
        frames, meta = videos[0]
        assert frames.shape[0] == expected and meta["total_num_frames"] == 100  # a 10 s clip at 10 fps


def test_easyr1_parquet(demo_run: Path, tmp_path: Path) -> None:  # noqa: F811
    out = export_format(demo_run, tmp_path / "easyr1", "easyr1", "--configs", "grpo_qa,grpo_cls")
    rows = [r for rows in table_rows(out, "parquet").values() for r in rows]
    assert len(rows) == 6 + 5
    for row in rows:
        assert EASYR1_FIELDS <= set(row) and row["prompt"].startswith("<video>") and len(row["videos"]) == 1
    cls = next(r for r in rows if r["id"] == "Traffic_accident_7#cls")
    assert cls["answer"] == "Traffic_accident" and cls["answer"] in cls["options"]
    assert cls["options"] == default_taxonomy().names


def test_video_r1_json(demo_run: Path, tmp_path: Path) -> None:  # noqa: F811
    out = export_format(demo_run, tmp_path / "vr1", "video-r1")
    items = [item for p in sorted(out.glob("*.json")) for item in json.loads(p.read_text())]
    assert {i["problem_type"] for i in items} == {"multiple choice", "free-form"}
    for item in items:
        assert set(item) == VIDEO_R1_FIELDS and item["data_type"] == "video"
    mc = next(i for i in items if i["problem"] == "How does the person on the bench react?")
    assert mc["options"][2] == "C. Stands up and keeps a distance" and mc["solution"] == "<answer>C</answer>" and mc["path"] == "Fighting003_x264.mp4"
    chains = {r.video_id: r for r in StageStore(RunDir(demo_run), "cot").accepted(CotRecord)}
    free = [i for i in items if i["problem_type"] == "free-form"]
    assert len(free) == len(chains)
    fight = next(i for i in free if i["path"] == "Fighting003_x264.mp4")
    assert fight["process"] == chains["Fighting003_x264"].think and fight["solution"] == chains["Fighting003_x264"].answer
    assert len({i["problem_id"] for i in items}) == len(items)


def test_vad_r1_jsonl_reads_back_with_the_vad_reasoning_parser(demo_run: Path, tmp_path: Path) -> None:  # noqa: F811
    out = export_format(demo_run, tmp_path / "vad", "vad-r1", "--split", "ratio:1,0,0")
    lines = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert all(set(line) == VAD_R1_FIELDS for line in lines)
    parsed = vad_reasoning.parse(out / "train.jsonl", default_taxonomy())
    assert not parsed.problems
    rows = {row.name: row for row in parsed.rows}
    chains = {r.video_id: r for r in StageStore(RunDir(demo_run), "cot").accepted(CotRecord)}
    assert set(rows) == {f"{vid}.mp4" for vid in chains}
    fight = rows["Fighting003_x264.mp4"]
    assert fight.think == chains["Fighting003_x264"].think and fight.answer == chains["Fighting003_x264"].answer
    video = next(v for v in RunDir(demo_run).load_manifest() if v.id == "Fighting003_x264")
    assert fight.spans == [(round(3.0 * video.fps), round(6.0 * video.fps))] and fight.category == "Fighting"
    assert rows["Normal_Videos_015_x264.mp4"].label == "normal"


def test_vau_bench_csv_reads_back_with_the_vau_bench_parser(demo_run: Path, tmp_path: Path) -> None:  # noqa: F811
    out = export_format(demo_run, tmp_path / "vb", "vau-bench", "--split", "ratio:1,0,0")
    header = (out / "train.csv").read_text().splitlines()[0]
    assert header == "Video Name,Question,Option 1,Option 2,Option 3,Option 4,Correct Option,Key Object,Description,Reasoning,Anomaly Class,Start Time,End Time"
    parsed = vau_bench.parse(out / "train.csv", default_taxonomy())
    assert not parsed.problems
    videos = {v.source_name: v for v in RunDir(demo_run).load_manifest()}
    assert sum(len(r.mcqs) for r in parsed.rows) == sum(len(v.mcqs) for v in videos.values()) == 6
    for row in parsed.rows:
        original = videos[row.name]
        assert [m.model_dump() for m in row.mcqs] == [m.model_dump() for m in original.mcqs]
        assert row.category == original.category and row.reasoning == original.reasoning
    explosion = next(r for r in parsed.rows if "Explosion012_x264" in r.name)
    assert explosion.spans == [] and explosion.label == "abnormal" and not explosion.span_known
    raw = [line for line in (out / "train.csv").read_text().splitlines() if "Explosion012_x264" in line]
    assert raw and all(line.endswith(",Explosion,-1.0,-1.0") for line in raw)  # unknown span, as VAU-Bench writes it
    fight = next(r for r in parsed.rows if "Fighting003_x264" in r.name)
    assert fight.spans == [(3.0, 6.0)]
