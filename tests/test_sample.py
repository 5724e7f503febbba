"""The sample stage: FrameSets on disk, rejects for bad videos, resume, and the CLI exit codes."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.media import make_clip, make_empty, make_not_a_video, make_truncated, read_index
from vau_annotate.annotate.rundir import RunDir
from vau_annotate.cli import app
from vau_annotate.pipelines.sample import resolve_workers, run_sample
from vau_annotate.schemas import RunMeta, Span, VideoRecord

GOOD = ("long_gop", "short_gop", "fight")
BAD = {"gone": "file does not exist", "empty": "file is empty", "text": "not a video", "cut": "truncated or corrupt"}


def record(video_id: str, path: str, **fields) -> VideoRecord:
    return VideoRecord(id=video_id, path=path, source="folder", label=fields.pop("label", "normal"), **fields)


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three good clips and three unusable files, shared (read-only) by every run of this module."""
    folder = tmp_path_factory.mktemp("videos")
    make_clip(folder / "long_gop.mp4", seconds=2, width=160, height=120, gop=250)
    make_clip(folder / "clips" / "short_gop.mp4", seconds=2, width=160, height=120, gop=30)
    make_clip(folder / "fight.mp4", seconds=3, width=160, height=120, gop=30)
    make_empty(folder / "empty.mp4")
    make_not_a_video(folder / "text.mp4")
    make_truncated(folder / "long_gop.mp4", folder / "cut.mp4")
    return folder


def build_run(root: Path, videos: Path, bad: bool = True) -> Path:
    """A run whose manifest names three good clips (and, with `bad`, four unusable files)."""
    records = [
        record("long_gop", "long_gop.mp4"),
        record("short_gop", "clips/short_gop.mp4"),
        record("fight", "fight.mp4", label="abnormal", category="Fighting", spans=[Span(start=1.0, end=2.0)], span_known=True),
    ]
    if bad:
        records += [record("gone", "gone.mp4"), record("empty", "empty.mp4"), record("text", "text.mp4"), record("cut", "cut.mp4")]
    run = root / "run"
    rundir = RunDir(run)
    rundir.save_manifest(records)
    rundir.save_meta(RunMeta(tool_version="test", videos=str(videos.resolve())))
    return run


def frames_of(run: Path, video_id: str, policy: str, max_pixels: int):
    return RunDir(run).load_frameset(video_id, policy, max_pixels)


def test_sample_writes_framesets_and_rejects_bad_videos(tmp_path: Path, videos: Path) -> None:
    run = build_run(tmp_path, videos)
    summary = run_sample(run, policy="uniform:4", max_pixels=112 * 84, decoder="auto", workers=1, jpeg_quality=85, show_progress=False)
    assert summary.counts == {"videos": 7, "sampled": 3, "skipped": 0, "rejected": 4, "frames": 12}
    assert summary.rejected == 4 and summary.exit_code == 3

    frames = frames_of(run, "short_gop", "uniform:4", 112 * 84)
    assert frames is not None and frames.indices == [6, 18, 31, 43]
    assert frames.timestamps == pytest.approx([0.24, 0.72, 1.24, 1.72])
    assert (frames.width, frames.height, frames.decoder, frames.policy) == (112, 84, "auto", "uniform:4")
    assert frames.sampling_fps == pytest.approx(25 / (37 / 3))
    for index, rel in zip(frames.indices, frames.paths):
        assert not Path(rel).is_absolute()
        image = np.asarray(Image.open(io.BytesIO((run / rel).read_bytes())).convert("RGB"))
        assert image.shape == (84, 112, 3) and read_index(image) == index

    rejects = {r.item: r for r in RunDir(run).load_rejects()}
    assert set(rejects) == set(BAD)
    for item, reason in BAD.items():
        assert rejects[item].stage == "sample" and rejects[item].reason.startswith(reason), rejects[item].reason
    stage = RunDir(run).load_meta().stages[-1]
    assert stage.stage == "sample" and stage.options["policy"] == "uniform:4" and stage.counts["frames"] == 12


def test_span_policy_samples_inside_the_abnormal_span(tmp_path: Path, videos: Path) -> None:
    run = build_run(tmp_path, videos, bad=False)
    summary = run_sample(run, policy="span:5", max_pixels=448 * 448, decoder="auto", workers=1, jpeg_quality=90, show_progress=False)
    assert summary.rejected == 0 and summary.exit_code == 0
    fight = frames_of(run, "fight", "span:5", 448 * 448)
    assert fight is not None and all(1.0 <= t <= 2.0 for t in fight.timestamps) and len(fight.indices) == 5
    normal = frames_of(run, "long_gop", "span:5", 448 * 448)
    assert normal is not None and normal.indices == [5, 15, 25, 35, 45]  # no span: uniform over the video


def test_rerun_skips_done_videos_and_redoes_incomplete_ones(tmp_path: Path, videos: Path) -> None:
    run = build_run(tmp_path, videos)
    run_sample(run, policy="fps:2", max_pixels=112 * 84, decoder="auto", workers=1, jpeg_quality=90, show_progress=False)
    first = frames_of(run, "fight", "fps:2", 112 * 84)
    again = run_sample(run, policy="fps:2", max_pixels=112 * 84, decoder="auto", workers=1, jpeg_quality=90, show_progress=False)
    assert again.counts == {"videos": 7, "sampled": 0, "skipped": 3, "rejected": 4, "frames": 0}
    assert len(RunDir(run).load_rejects()) == 4  # the bad videos were retried, their old lines replaced

    (run / first.paths[0]).unlink()  # a crash mid-way or a deleted frame: that video is redone
    third = run_sample(run, policy="fps:2", max_pixels=112 * 84, decoder="auto", workers=1, jpeg_quality=90, show_progress=False)
    assert (third.counts["sampled"], third.counts["skipped"]) == (1, 2)
    assert (run / first.paths[0]).is_file() and frames_of(run, "fight", "fps:2", 112 * 84) == first

    other = run_sample(run, policy="fps:2", max_pixels=56 * 56, decoder="auto", workers=1, jpeg_quality=90, show_progress=False)
    assert other.counts["sampled"] == 3  # another pixel budget is another sampling
    assert frames_of(run, "fight", "fps:2", 56 * 56).width == 56


def test_process_pool_gives_the_same_frames(tmp_path: Path, videos: Path) -> None:
    run = build_run(tmp_path, videos)
    summary = run_sample(run, policy="stride:10", max_pixels=112 * 84, decoder="pyav-seek", workers=2, jpeg_quality=90, show_progress=False)
    assert summary.counts["sampled"] == 3 and summary.rejected == 4
    frames = frames_of(run, "fight", "stride:10", 112 * 84)
    assert frames.indices == list(range(0, 75, 10)) and frames.decoder == "pyav-seek"
    for index, rel in zip(frames.indices, frames.paths):
        assert read_index(np.asarray(Image.open(run / rel).convert("RGB"))) == index


def test_video_ids_restrict_the_stage(tmp_path: Path, videos: Path) -> None:
    run = build_run(tmp_path, videos)
    summary = run_sample(run, policy="uniform:2", max_pixels=112 * 84, workers=1, video_ids={"fight", "gone"}, show_progress=False)
    assert summary.counts == {"videos": 2, "sampled": 1, "skipped": 0, "rejected": 1, "frames": 2}


def test_resolve_workers() -> None:
    assert resolve_workers(0, 100) == (os.cpu_count() or 1)
    assert resolve_workers(8, 3) == 3 and resolve_workers(4, 0) == 1


def test_cli_exit_codes(tmp_path: Path, videos: Path) -> None:
    runner = CliRunner()
    partial = build_run(tmp_path / "partial", videos)
    result = runner.invoke(app, ["sample", "--run", str(partial), "--policy", "uniform:3", "--max-pixels", "12544", "-j", "1"])
    assert result.exit_code == 3, result.output
    clean = build_run(tmp_path / "clean", videos, bad=False)
    result = runner.invoke(app, ["sample", "--run", str(clean), "--policy", "fps:1", "--decoder", "opencv", "-j", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads((clean / "run.json").read_text())["stages"][-1]["counts"]["sampled"] == 3
    for bad in (["--policy", "uniform:zero"], ["--policy", "sometimes:3"], ["--decoder", "ffmpeg"], ["--max-pixels", "100"]):
        result = runner.invoke(app, ["sample", "--run", str(clean), *bad])
        assert result.exit_code == 2, (bad, result.output)
    assert runner.invoke(app, ["sample", "--run", str(tmp_path / "nowhere")]).exit_code == 2


def _crash_on_fight(job):
    """Stands in for a decoder that kills its process on one hostile file."""
    from vau_annotate.pipelines import sample

    if job.video_id == "fight":
        os._exit(1)
    return sample.Outcome(job.video_id, frames=1)


def test_a_dying_worker_rejects_only_its_video(tmp_path: Path, videos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vau_annotate.pipelines import sample

    run = build_run(tmp_path, videos, bad=False)
    monkeypatch.setattr(sample, "sample_one", _crash_on_fight)
    summary = run_sample(run, policy="uniform:2", max_pixels=112 * 84, workers=2, show_progress=False)
    assert (summary.counts["sampled"], summary.rejected) == (2, 1)
    (reject,) = RunDir(run).load_rejects()
    assert reject.item == "fight" and reject.reason.startswith("decoder crashed")


def test_sampling_one_policy_keeps_another_policys_rejects(tmp_path: Path, videos: Path) -> None:
    run = build_run(tmp_path, videos)
    options = dict(max_pixels=112 * 84, decoder="auto", workers=1, jpeg_quality=90, show_progress=False)
    run_sample(run, policy="uniform:4", **options)
    run_sample(run, policy="fps:2", **options)
    by_policy = {(r.item, r.detail["policy"]) for r in RunDir(run).load_rejects()}
    assert by_policy == {(item, policy) for item in BAD for policy in ("uniform:4", "fps:2")}
    run_sample(run, policy="uniform:4", **options)  # a re-run replaces only its own sampling's lines
    assert sorted((r.item, r.detail["policy"]) for r in RunDir(run).load_rejects()) == sorted(by_policy)
    stage = RunDir(run).load_meta().stages[-1]
    assert stage.started < stage.finished
