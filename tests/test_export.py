"""`vau-annotate export`: runs made by the real pipeline (the offline demo) → Hugging Face configs.

What is checked against the run's own records: every config reloads with `datasets.load_dataset`,
rows say what the records say (assistant text = think + answer, the SRVAU-R1 renderings, letters,
spans in seconds), embedded frames are the run's JPEG bytes, no video is in two splits, the same
inputs give byte-identical files, the card says what was exported and never a secret, and bad
input ends in a clear error or a warned empty config, never in a directory that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vau_annotate.annotate.rundir import RunDir
from vau_annotate.cli import app
from vau_annotate.pipelines.export_source import split_of_file
from vau_annotate.pipelines.export_write import SplitPlan
from vau_annotate.pipelines.runner import StageStore
from vau_annotate.schemas.cot import CotRecord
from vau_annotate.schemas.reflection import ReflectionRecord
from vau_annotate.schemas.rows import CONFIGS, SPLITS


def flat(output: str) -> str:
    return " ".join(output.replace("│", " ").split())


def export(*args: str) -> object:
    return CliRunner().invoke(app, ["export", *args])


def load(out: Path, config: str) -> dict:
    from vau_annotate.schemas.rows import load_export

    return load_export(str(out), config)


def rows_of(out: Path, config: str) -> list[dict]:
    data = load(out, config)
    return [row for split in data for row in data[split]]


@pytest.fixture(scope="module")
def exported(demo_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("exp") / "hf"
    result = export("--run", str(demo_run), "--out", str(out), "--split", "ratio:0.6,0.2,0.2", "--seed", "3", "--license", "cc-by-nc-4.0")
    assert result.exit_code == 0, result.output
    return out


def test_every_config_reloads_with_the_records_rows(demo_run: Path, exported: Path) -> None:
    rd = RunDir(demo_run)
    chains = {r.video_id: r for r in StageStore(rd, "cot").accepted(CotRecord)}
    reflections = {r.id: r for r in StageStore(rd, "reflect").accepted(ReflectionRecord)}
    videos = {v.id: v for v in rd.load_manifest()}
    counts = {c: len(rows_of(exported, c)) for c in CONFIGS}
    assert counts == {
        "p2c_sft": len(chains), "reflect_sft": len(reflections), "reflect_sft_conditioned": len(reflections),
        "grpo_qa": sum(len(v.mcqs) for v in videos.values()),
        "grpo_tag": 4,  # 5 videos, Explosion012 has an unknown span (-1,-1): no grounding truth
        "grpo_cls": 5, "grpo_p2c": 5,
        "grpo_reflect": 10,  # 6 MCQs + 4 grounding items
        "captions": sum(len(c.captions) for c in chains.values()),
    }

    p2c = {r["video_id"]: r for r in rows_of(exported, "p2c_sft")}
    fight = p2c["Fighting003_x264"]
    assert [m["role"] for m in fight["messages"]] == ["system", "user", "assistant"]
    assert fight["messages"][1]["content"][0] == {"type": "video", "text": ""}
    assert "<step4>" in fight["messages"][1]["content"][1]["text"] and "lasts 10.0 seconds" in fight["messages"][1]["content"][1]["text"]
    assert fight["messages"][2]["content"] == [{"type": "text", "text": chains["Fighting003_x264"].think + chains["Fighting003_x264"].answer}]
    assert (fight["label"], fight["category"], fight["duration"]) == ("abnormal", "Fighting", 10.0)

    two = {r["id"]: r for r in rows_of(exported, "reflect_sft")}
    cond = {r["id"]: r for r in rows_of(exported, "reflect_sft_conditioned")}
    record = reflections["Fighting003_x264#tag"]
    assert two[record.id]["messages"][2]["content"][0]["text"] == record.two_round()["completion"]
    assert two[record.id]["messages"][1]["content"][1]["text"] == record.two_round()["prompt"]
    assert cond[record.id]["messages"][1]["content"][1]["text"] == record.conditioned()["prompt"]
    assert cond[record.id]["messages"][2]["content"][0]["text"] == record.conditioned()["completion"]
    assert two[record.id]["task"] == "tag"


def test_grpo_solution_columns(exported: Path) -> None:
    qa = {r["id"]: r for r in rows_of(exported, "grpo_qa")}
    assert qa["Fighting003_x264#qa1"]["answer"] == "C" and qa["Assault_2#qa0"]["answer"] == "B"
    assert qa["Fighting003_x264#qa1"]["options"][2] == "Stands up and keeps a distance"
    assert "C. Stands up and keeps a distance" in qa["Fighting003_x264#qa1"]["prompt"][1]["content"][1]["text"]
    tag = {r["video_id"]: r for r in rows_of(exported, "grpo_tag")}
    assert tag["Fighting003_x264"]["span"] == [3.0, 6.0] and tag["Fighting003_x264"]["span_known"] is True
    assert tag["Fighting003_x264"]["when_source"] == "annotation"
    assert tag["Normal_Videos_015_x264"]["span"] is None and tag["Normal_Videos_015_x264"]["when_source"] == "none"
    assert "Explosion012_x264" not in tag
    cls = {r["video_id"]: r for r in rows_of(exported, "grpo_cls")}
    assert cls["Traffic_accident_7"]["answer"] == "Traffic_accident" and "Normal" in cls["Traffic_accident_7"]["options"]
    assert cls["Normal_Videos_015_x264"]["answer"] == "Normal" and cls["Normal_Videos_015_x264"]["label"] == "normal"
    p2c = {r["video_id"]: r for r in rows_of(exported, "grpo_p2c")}
    assert p2c["Explosion012_x264"]["label"] == "abnormal" and p2c["Explosion012_x264"]["category"] == "Explosion"
    assert p2c["Explosion012_x264"]["span_known"] is False and p2c["Explosion012_x264"]["task"] == "p2c"
    rft = {r["id"]: r for r in rows_of(exported, "grpo_reflect")}
    text = rft["Assault_2#qa0"]["prompt"][1]["content"][1]["text"]
    assert "<reflection>" in text and "B. " in text and rft["Assault_2#qa0"]["reflect_task"] == "qa" and rft["Assault_2#qa0"]["answer"] == "B"
    assert rft["Fighting003_x264#tag"]["reflect_task"] == "tag" and rft["Fighting003_x264#tag"]["span"] == [3.0, 6.0]
    for config in ("grpo_qa", "grpo_tag", "grpo_cls", "grpo_p2c", "grpo_reflect"):
        for row in rows_of(exported, config):
            assert [m["role"] for m in row["prompt"]] == ["system", "user"]
            for message in row["prompt"]:
                for part in message["content"]:
                    assert set(part) == {"type", "text"} and None not in part.values()


def test_embedded_frames_are_the_runs_jpegs(demo_run: Path, exported: Path) -> None:
    rd = RunDir(demo_run)
    record = next(r for r in StageStore(rd, "reflect").accepted(ReflectionRecord) if r.id == "Assault_2#qa0")
    frameset = rd.load_frameset("Assault_2", record.provenance.sampling, record.provenance.max_pixels)
    assert frameset is not None
    import pyarrow.parquet as pq

    rows = [r for path in sorted((exported / "reflect_sft").glob("*.parquet")) for r in pq.read_table(path).to_pylist()]
    raw = next(r for r in rows if r["id"] == "Assault_2#qa0")
    assert [f["bytes"] for f in raw["frames"]] == [(demo_run / p).read_bytes() for p in frameset.paths]
    assert raw["frame_times"] == pytest.approx(frameset.timestamps) and raw["sample_fps"] == pytest.approx(1.0)
    assert raw["max_pixels"] == record.provenance.max_pixels
    caption = next(r for r in rows_of(exported, "captions") if r["id"] == "Fighting003_x264#f31")
    assert caption["timestamp"] == pytest.approx(3.1) and "pushes the other in the chest" in caption["text"]
    assert caption["image"].size[0] > 0


def test_no_video_in_two_splits_and_splits_follow_the_seed(demo_run: Path, tmp_path: Path) -> None:
    seen: dict[str, set[str]] = {}
    for seed in (0, 1):
        out = tmp_path / f"s{seed}"
        assert export("--run", str(demo_run), "--out", str(out), "--split", "ratio:0.4,0.3,0.3", "--seed", str(seed), "--frames", "path").exit_code == 0
        where: dict[str, str] = {}
        for config in CONFIGS:
            data = load(out, config)
            for split in data:
                for vid in data[split]["video_id"]:
                    assert where.setdefault(vid, split) == split, f"{vid} in {where[vid]} and {split} ({config}, seed {seed})"
        seen[str(seed)] = {f"{v}:{s}" for v, s in where.items()}
    assert seen["0"] != seen["1"]  # another seed, another split of the same videos


def test_hashed_split_fractions_and_determinism() -> None:
    plan = SplitPlan.parse("ratio:8,1,1", seed=7)
    assert plan.ratios == pytest.approx((0.8, 0.1, 0.1))
    ids = [f"video_{i}" for i in range(3000)]
    counts = Counter(plan.of(v, None) for v in ids)
    assert 0.77 < counts["train"] / 3000 < 0.83 and 0.08 < counts["validation"] / 3000 < 0.12
    assert [plan.of(v, None) for v in ids] == [SplitPlan.parse("ratio:8,1,1", seed=7).of(v, None) for v in ids]
    assert [plan.of(v, None) for v in ids] != [SplitPlan.parse("ratio:8,1,1", seed=8).of(v, None) for v in ids]
    assert {SplitPlan.parse("ratio:1,0,0", seed=0).of(v, None) for v in ids} == {"train"}
    with pytest.raises(ValueError, match="three non-negative ratios"):
        SplitPlan.parse("ratio:1,1", seed=0)


def test_split_names_of_source_files() -> None:
    assert split_of_file("/data/VAU-Bench/train.csv") == "train"
    assert split_of_file("val.csv") == "validation"
    assert split_of_file("test_ucf.csv") == "test" and split_of_file("vau_bench_test_msad.csv") == "test"
    assert split_of_file("vau_bench_demo.csv") is None and split_of_file("trainee_notes.csv") is None


def _copy_run(src: Path, dst: Path, annotations: str, drop_stages: bool = False) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("tiny-model", "source", "ledger.sqlite"))
    meta = json.loads((dst / "run.json").read_text())
    meta["annotations"] = annotations
    (dst / "run.json").write_text(json.dumps(meta))
    return dst


def test_split_column_keeps_the_source_split_and_test_wins(demo_run: Path, tmp_path: Path) -> None:
    train_run = _copy_run(demo_run, tmp_path / "train_run", "/data/VAU-Bench/train.csv")
    test_run = tmp_path / "test_run"
    _copy_run(demo_run, test_run, "/data/VAU-Bench/test_ucf.csv")
    # the test file lists only two of the videos: the others stay train, these two must be test
    manifest = RunDir(test_run).load_manifest()
    RunDir(test_run).save_manifest([v for v in manifest if v.id in ("Fighting003_x264", "Normal_Videos_015_x264")])
    out = tmp_path / "col"
    result = export("--run", str(train_run), "--run", str(test_run), "--out", str(out), "--split", "column")
    assert result.exit_code == 0, result.output
    assert "appear in more than one run" in flat(result.output)
    for config in ("grpo_qa", "p2c_sft", "grpo_tag"):
        data = load(out, config)
        assert set(data["test"]["video_id"]) == {"Fighting003_x264", "Normal_Videos_015_x264"}
        assert not {"Fighting003_x264", "Normal_Videos_015_x264"} & set(data["train"]["video_id"])
    assert len(rows_of(out, "grpo_qa")) == 6  # deduplicated: each video's questions once

    bad = export("--run", str(demo_run), "--out", str(tmp_path / "nosplit"), "--split", "column")
    assert bad.exit_code == 2 and "names no split" in flat(bad.output) and not (tmp_path / "nosplit").exists()


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_runs_and_seed_give_byte_identical_files(demo_run: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert export("--run", str(demo_run), "--out", str(a), "--seed", "5", "--workers", "4").exit_code == 0
    assert export("--run", str(demo_run), "--out", str(b), "--seed", "5", "--workers", "1").exit_code == 0
    assert _digests(a) == _digests(b) and len(_digests(a)) > 10


def test_small_shards_are_numbered_and_load_whole(demo_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "sharded"
    assert export("--run", str(demo_run), "--out", str(out), "--configs", "captions", "--split", "ratio:1,0,0",
                  "--max-shard-size", "30KB").exit_code == 0
    shards = sorted(p.name for p in (out / "captions").iterdir())
    assert len(shards) > 1 and shards[-1] == f"train-{len(shards) - 1:05d}-of-{len(shards):05d}.parquet"
    assert len(rows_of(out, "captions")) == 32
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "captions"]


def test_path_mode_rows_carry_the_video_path_and_sampling(demo_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "paths"
    assert export("--run", str(demo_run), "--out", str(out), "--frames", "path", "--fps", "1", "--max-pixels", "100352").exit_code == 0
    row = next(r for r in rows_of(out, "grpo_qa") if r["video_id"] == "Assault_2")
    assert row["video"] == "Assault_2.mp4" and (demo_run / "source" / "videos" / row["video"]).is_file()
    assert (row["fps"], row["nframes"], row["max_pixels"], row["min_pixels"]) == (1.0, None, 100352, 128 * 28 * 28)
    assert "frames" not in row
    out2 = tmp_path / "paths_n"
    assert export("--run", str(demo_run), "--out", str(out2), "--frames", "path", "--nframes", "8", "--configs", "grpo_tag").exit_code == 0
    assert {(r["fps"], r["nframes"]) for r in rows_of(out2, "grpo_tag")} == {(None, 8)}


def test_card_says_what_was_exported(demo_run: Path, exported: Path) -> None:
    card = (exported / "README.md").read_text()
    import yaml

    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["license"] == "cc-by-nc-4.0"
    names = [c["config_name"] for c in meta["configs"]]
    assert names == list(CONFIGS)
    p2c = next(c for c in meta["configs"] if c["config_name"] == "p2c_sft")
    assert all(f["path"].startswith("p2c_sft/") for f in p2c["data_files"])
    counts = {c: {s: 0 for s in SPLITS} for c in CONFIGS}
    from datasets import load_dataset

    for config in CONFIGS:
        for split, ds in load_dataset(str(exported), config).items():
            counts[config][split] = len(ds)
    line = next(l for l in card.splitlines() if l.startswith("| `grpo_qa` |"))
    assert line.endswith(f"| {counts['grpo_qa']['train']} | {counts['grpo_qa']['validation']} | {counts['grpo_qa']['test']} |")
    assert sum(counts["grpo_qa"].values()) == 6
    assert "`mock:" in card and "`hf:" in card  # teacher / captioner and the base model
    from vau_annotate.prompts import load_prompt

    assert f"| `p2c_question` | `{load_prompt('p2c_question').hash}` |" in card
    assert f"| `reflect_teacher_qa` | `{load_prompt('reflect_teacher_qa').hash}` |" in card
    assert "| cot | failed gates | 1 |" in card and "| ingest | truncated or corrupt | 1 |" in card
    assert "Vad-R1" in card and "VAU-R1" in card and "SRVAU-R1" in card and "arXiv:2602.01004" in card
    assert 'load_dataset("PATH_OR_REPO_ID", "grpo_reflect")' in card
    assert "| Fighting |" in card and "< 30 s" in card


def test_card_never_shows_a_secret(demo_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-live-0123456789abcdef"
    run = _copy_run(demo_run, tmp_path / "leaky", "x.csv")
    path = run / "cot" / "Assault_2.json"
    record = json.loads(path.read_text())
    record["provenance"]["reasoner"] = f"openai:gpt-4o@https://user:{secret}@llm.example/v1?api_key={secret}"
    path.write_text(json.dumps(record))
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    out = tmp_path / "card"
    result = export("--run", str(run), "--out", str(out), "--frames", "path")
    assert result.exit_code == 0, result.output
    card = (out / "README.md").read_text()
    assert "`openai:gpt-4o@https://llm.example/v1`" in card
    assert secret not in card and secret not in result.output


# -- bad input ---------------------------------------------------------------------------------------

def test_run_with_only_rejects_gives_warned_empty_configs(demo_run: Path, tmp_path: Path) -> None:
    run = _copy_run(demo_run, tmp_path / "rejects_only", "x.csv")
    for stage in ("cot", "reflect"):
        for path in (run / stage).glob("*.json"):
            if not path.name.endswith(".rejected.json"):
                path.unlink()
    out = tmp_path / "out"
    result = export("--run", str(run), "--out", str(out))
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    assert "warning: config p2c_sft is empty" in text and "warning: config reflect_sft is empty" in text
    card = (out / "README.md").read_text()
    assert "Empty (no rows, so not listed in `configs:`): `p2c_sft`, `reflect_sft`, `reflect_sft_conditioned`, `captions`" in card
    assert "config_name: p2c_sft" not in card and not (out / "p2c_sft").exists()
    assert len(rows_of(out, "grpo_qa")) == 6  # the manifest's questions still make GRPO rows


def test_empty_run_is_a_clear_error_and_writes_nothing(demo_run: Path, tmp_path: Path) -> None:
    run = _copy_run(demo_run, tmp_path / "empty", "x.csv")
    RunDir(run).save_manifest([])
    out = tmp_path / "out"
    result = export("--run", str(run), "--out", str(out))
    assert result.exit_code == 2 and "nothing to export" in flat(result.output)
    assert not out.exists() and not list(tmp_path.glob(".out.partial*"))
    missing = export("--run", str(tmp_path / "nope"), "--out", str(out))
    assert missing.exit_code == 2 and "does not exist" in flat(missing.output)


def test_missing_frames(demo_run: Path, tmp_path: Path) -> None:
    run = _copy_run(demo_run, tmp_path / "noframes", "x.csv")
    shutil.rmtree(run / "frames")
    out = tmp_path / "out"
    result = export("--run", str(run), "--out", str(out))
    assert result.exit_code == 2 and "no run has a frames/ folder" in flat(result.output) and not out.exists()
    assert export("--run", str(run), "--out", str(out), "--frames", "path").exit_code == 0  # paths need no frames

    partial = _copy_run(demo_run, tmp_path / "someframes", "x.csv")
    shutil.rmtree(partial / "frames" / "Assault_2")
    out2 = tmp_path / "out2"
    result = export("--run", str(partial), "--out", str(out2))
    assert result.exit_code == 3, result.output  # partial: rows were lost
    assert "no sampled frames for the row's video" in flat(result.output)
    assert "Assault_2" not in {r["video_id"] for r in rows_of(out2, "grpo_qa")} and len(rows_of(out2, "grpo_qa")) == 5


def test_a_failing_export_leaves_no_directory(demo_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vau_annotate.pipelines import export_rows

    def broken(inputs, skips):
        yield from export_rows.grpo_qa(inputs, skips)
        raise RuntimeError("disk on fire")

    monkeypatch.setitem(export_rows.BUILDERS, "grpo_tag", broken)
    out = tmp_path / "out"
    (out).mkdir()
    (out / "old.txt").write_text("previous export")
    result = export("--run", str(demo_run), "--out", str(out), "--overwrite")
    assert result.exit_code != 0 and isinstance(result.exception, RuntimeError)
    assert (out / "old.txt").read_text() == "previous export"  # the old export is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left behind
    refused = export("--run", str(demo_run), "--out", str(out))
    assert refused.exit_code == 2 and "is not empty" in flat(refused.output)


def test_a_record_that_does_not_validate_is_counted_not_fatal(demo_run: Path, tmp_path: Path) -> None:
    run = _copy_run(demo_run, tmp_path / "edited", "x.csv")
    (run / "cot" / "Assault_2.json").write_text('{"video_id": "Assault_2", "label": "abnormal"}')
    out = tmp_path / "out"
    result = export("--run", str(run), "--out", str(out), "--frames", "path", "--configs", "p2c_sft")
    assert result.exit_code == 0, result.output
    assert "1 × cot record that does not validate" in flat(result.output)
    assert sorted(r["video_id"] for r in rows_of(out, "p2c_sft")) == ["Explosion012_x264", "Fighting003_x264", "Normal_Videos_015_x264"]


def test_sampling_option_picks_which_frames_to_embed(demo_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "fps1"
    assert export("--run", str(demo_run), "--out", str(out), "--configs", "grpo_tag", "--sampling", "fps:1").exit_code == 0
    rows = {r["video_id"]: r for r in rows_of(out, "grpo_tag")}
    frameset = next(RunDir(demo_run).frames_dir.glob("Fighting003_x264/fps-1_*/frameset.json"))
    expected = json.loads(frameset.read_text())
    assert len(rows["Fighting003_x264"]["frames"]) == len(expected["paths"]) and rows["Fighting003_x264"]["sample_fps"] == 1.0
    assert rows["Fighting003_x264"]["frame_times"] == pytest.approx(expected["timestamps"])
    default = tmp_path / "default"
    assert export("--run", str(demo_run), "--out", str(default), "--configs", "grpo_tag").exit_code == 0
    assert len(rows_of(default, "grpo_tag")[0]["frames"]) == 16  # otherwise the sampling with the most frames (uniform:16)


def test_a_new_export_into_the_same_folder_is_read_anew(demo_run: Path, tmp_path: Path) -> None:
    """`datasets` caches a card-configured local folder by folder and config name only; the tool's
    loader (used by train and rewards) reads the shards by path, so a re-export is never served stale."""
    from datasets import load_dataset

    from vau_annotate.schemas.rows import load_export

    run = _copy_run(demo_run, tmp_path / "edited", "x.csv")
    out = tmp_path / "stale-check"
    assert export("--run", str(run), "--out", str(out), "--configs", "p2c_sft", "--split", "ratio:1,0,0").exit_code == 0
    before = {r["video_id"] for r in load_export(str(out), "p2c_sft", split="train")}
    assert {r["video_id"] for r in load_dataset(str(out), "p2c_sft", split="train")} == before  # the card loads too
    (run / "cot" / "Assault_2.json").unlink()
    assert export("--run", str(run), "--out", str(out), "--configs", "p2c_sft", "--split", "ratio:1,0,0", "--overwrite").exit_code == 0
    after = {r["video_id"] for r in load_export(str(out), "p2c_sft", split="train")}
    assert after == before - {"Assault_2"} and "Assault_2" in before
