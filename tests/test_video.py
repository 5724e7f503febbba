"""Probing, sampling policies, pixel budgets, decoders and JPEG encoding (vau_annotate.annotate.video)."""

from __future__ import annotations

import io
import math
import os
import random
import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from tests.media import frame_image, make_clip, make_empty, make_not_a_video, make_truncated, read_index
from vau_annotate.annotate.video import (
    DECODERS,
    Policy,
    PolicyError,
    VideoError,
    decode_frames,
    effective_decoder,
    encode_jpeg,
    parse_policy,
    plan_seeks,
    probe,
    resize_frame,
    sample_video,
    sampling_fps,
    select_indices,
    target_size,
)
from vau_annotate.schemas import Span

W, H, FPS = 160, 120, 25


def encode(path: Path, frames: int = 75, gop: int = 20, bframes: int = 2, container: str | None = None, first_pts: int = 0) -> Path:
    """An H.264 clip with B-frames (reordered pts) and optionally a first pts other than 0."""
    with av.open(str(path), mode="w", format=container) as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.time_base = Fraction(1, FPS)
        stream.options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "bf": str(bframes), "preset": "veryfast", "crf": "18"}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(frame_image(i, W, H), format="rgb24")
            frame.pts = first_pts + i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    return {
        "gop250": make_clip(root / "gop250.mp4", seconds=3, fps=FPS, width=W, height=H, gop=250),
        "gop30": make_clip(root / "gop30.mp4", seconds=3, fps=FPS, width=W, height=H, gop=30),
        "bframes": encode(root / "bframes.mp4"),
        "ts": encode(root / "late.ts", container="mpegts"),
        "mkv": encode(root / "late.mkv", first_pts=50),
    }


# --- probe ------------------------------------------------------------------------------------


def test_probe_reads_metadata_and_keyframes_without_decoding(clips: dict[str, Path]) -> None:
    info = probe(clips["gop30"])
    assert (info.width, info.height, info.num_frames, info.codec) == (W, H, 75, "h264")
    assert info.fps == pytest.approx(25.0)
    assert info.duration == pytest.approx(3.0)
    assert info.keyframes == (0, 30, 60)
    assert info.pts_reliable
    assert probe(clips["gop250"]).keyframes == (0,)
    assert probe(clips["bframes"]).keyframes == (0, 20, 40, 60)


@pytest.mark.parametrize("name", ["ts", "mkv"])
def test_timestamps_start_at_zero_when_first_pts_is_not(clips: dict[str, Path], name: str) -> None:
    info = probe(clips[name])
    assert info.pts[0] != 0
    assert info.timestamps([0, 1, 25, 74]) == pytest.approx([0.0, 0.04, 1.0, 2.96])
    assert info.duration == pytest.approx(3.0)
    assert info.index_at(1.0) == 25 and info.index_at(1.039) == 25 and info.index_at(99) == 74


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda d, clip: d / "missing.mp4", "file does not exist"),
        (lambda d, clip: make_empty(d / "empty.mp4"), "file is empty (0 bytes)"),
        (lambda d, clip: make_not_a_video(d / "notes.mp4"), "not a video"),
        (lambda d, clip: make_truncated(clip, d / "cut.mp4"), "truncated or corrupt"),
        (lambda d, clip: d, "not a regular file"),
    ],
    ids=["missing", "empty", "not-a-video", "truncated", "directory"],
)
def test_probe_explains_unusable_files(tmp_path: Path, clips: dict[str, Path], make, reason: str) -> None:
    with pytest.raises(VideoError, match=f"^{re.escape(reason)}"):
        probe(make(tmp_path, clips["gop30"]))


def test_probe_detects_a_cut_file_whose_index_survived(tmp_path: Path) -> None:
    """Index (moov) first, media data cut: the header promises more frames than are there."""
    src = make_clip(tmp_path / "fast.mp4", seconds=75 / FPS, fps=FPS, width=W, height=H, container_options={"movflags": "faststart"})
    with pytest.raises(VideoError, match="^truncated or corrupt"):
        probe(make_truncated(src, tmp_path / "cut.mp4", keep=0.5))


def test_a_file_without_video_stream_is_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            out.mux(packet)
    with pytest.raises(VideoError, match="^not a video: no video stream"):
        probe(path)


# --- policies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "canonical"),
    [("uniform:16", "uniform", "uniform:16"), (" FPS:0.5 ", "fps", "fps:0.5"), ("fps:2", "fps", "fps:2"), ("stride:4", "stride", "stride:4"), ("span:8", "span", "span:8")],
)
def test_parse_policy(text: str, kind: str, canonical: str) -> None:
    policy = parse_policy(text)
    assert policy.kind == kind and str(policy) == canonical
    assert parse_policy(str(policy)) == policy


@pytest.mark.parametrize("text", ["", "uniform", "uniform:", "uniform:0", "uniform:-3", "uniform:2.5", "fps:0", "fps:abc", "fps:nan", "stride:x", "every:4", "16"])
def test_bad_policies_say_what_is_accepted(text: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    assert isinstance(caught.value, ValueError)
    assert "uniform" in str(caught.value) or ":" in str(caught.value)


def test_uniform_takes_the_centre_of_equal_segments(clips: dict[str, Path]) -> None:
    info = probe(clips["gop30"])  # 75 frames
    assert select_indices(Policy("uniform", 3), info) == [12, 37, 62]
    assert select_indices(Policy("uniform", 100), info) == list(range(75))
    assert sampling_fps(Policy("uniform", 3), info, [12, 37, 62]) == pytest.approx(1.0)


def test_fps_stride_and_their_true_rate(clips: dict[str, Path]) -> None:
    info = probe(clips["gop30"])
    fps1 = select_indices(Policy("fps", 1), info)
    assert fps1 == [12, 37, 62]  # frames at 0.5 s, 1.5 s, 2.5 s
    assert sampling_fps(Policy("fps", 1), info, fps1) == pytest.approx(1.0)
    assert select_indices(Policy("fps", 1000), info) == list(range(75))
    stride = select_indices(Policy("stride", 10), info)
    assert stride == list(range(0, 75, 10))
    assert sampling_fps(Policy("stride", 10), info, stride) == pytest.approx(2.5)


def test_span_samples_inside_the_abnormal_spans(clips: dict[str, Path]) -> None:
    info = probe(clips["gop30"])
    inside = select_indices(Policy("span", 4), info, [Span(start=1.0, end=2.0)])
    assert inside == [28, 34, 40, 46]  # 1.125 s, 1.375 s, 1.625 s, 1.875 s
    assert all(1.0 <= t <= 2.0 for t in info.timestamps(inside))
    assert sampling_fps(Policy("span", 4), info, inside, [(1.0, 2.0)]) == pytest.approx(25 / 6)
    two = select_indices(Policy("span", 4), info, [(0.0, 0.4), (2.0, 2.4)])
    assert two == [2, 7, 52, 57]
    assert select_indices(Policy("span", 3), info, None) == select_indices(Policy("uniform", 3), info)
    assert select_indices(Policy("span", 3), info, []) == [12, 37, 62]


def test_indices_are_sorted_unique_and_in_range(clips: dict[str, Path]) -> None:
    info = probe(clips["bframes"])
    rng = random.Random(7)
    for _ in range(300):
        policy = rng.choice([Policy("uniform", rng.randint(1, 200)), Policy("fps", rng.uniform(0.05, 60)), Policy("stride", rng.randint(1, 90)), Policy("span", rng.randint(1, 90))])
        start = rng.uniform(0, 3.5)
        spans = [(start, start + rng.uniform(0.01, 2))]
        indices = select_indices(policy, info, spans)
        assert indices and indices == sorted(set(indices))
        assert 0 <= indices[0] and indices[-1] < info.num_frames
        assert indices == select_indices(policy, info, spans)  # deterministic


# --- pixel budget -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "budget", "expected"),
    [((640, 360), 448 * 448, (588, 336)), ((1280, 720), 448 * 448, (588, 336)), ((160, 120), 448 * 448, (168, 112)), ((768, 576), 200_000, (504, 364)), ((28, 28), 448 * 448, (56, 56)), ((4000, 30), 5000, (168, 28)), ((30, 4000), 5000, (28, 168))],
)
def test_target_size_like_qwen_smart_resize(size: tuple[int, int], budget: int, expected: tuple[int, int]) -> None:
    assert target_size(*size, max_pixels=budget) == expected


def test_target_size_invariants() -> None:
    rng = random.Random(3)
    for _ in range(500):
        width, height = rng.randint(30, 4000), rng.randint(30, 4000)
        budget = rng.randint(784, 2_000_000)
        w, h = target_size(width, height, budget)
        assert w % 28 == 0 and h % 28 == 0 and w >= 28 and h >= 28
        assert w * h <= max(budget, 784)
        if min(w, h) >= 280:  # rounding to 28 moves each side by less than 28, i.e. < 10 % here
            assert abs(math.log((w / h) / (width / height))) < 0.2


def test_target_size_matches_qwen_vl_utils_when_installed() -> None:
    vision = pytest.importorskip("qwen_vl_utils.vision_process")
    for width, height, budget in [(640, 360, 448 * 448), (1920, 1080, 360 * 420), (333, 777, 100_000)]:
        h, w = vision.smart_resize(height, width, factor=28, min_pixels=4 * 28 * 28, max_pixels=budget)
        assert target_size(width, height, budget) == (w, h)


# --- decoders ---------------------------------------------------------------------------------


@pytest.mark.parametrize("clip", ["gop250", "gop30", "bframes", "ts", "mkv"])
def test_all_decoders_return_the_same_frames(clips: dict[str, Path], clip: str) -> None:
    info = probe(clips[clip])
    indices = sorted({0, 1, 7, 19, 20, 21, 33, 40, 59, 61, 74})
    decoded = {name: decode_frames(clips[clip], indices, name, info) for name in DECODERS}
    for name, frames in decoded.items():
        assert [read_index(f) for f in frames] == indices, name
        assert all(f.shape == (H, W, 3) and f.dtype == np.uint8 for f in frames)
    reference = decoded["pyav-sequential"]
    for name in ("auto", "pyav-seek"):  # same library, same conversion: bit-identical
        assert all(np.array_equal(a, b) for a, b in zip(decoded[name], reference)), name
    for name in ("decord", "opencv"):  # same frames; colour conversion may round differently
        assert all(np.abs(a.astype(int) - b).mean() < 2 for a, b in zip(decoded[name], reference)), name


def test_skipping_unwanted_b_frames_changes_no_pixel(clips: dict[str, Path]) -> None:
    """`auto` drops non-reference frames it does not keep; kept frames equal a full decode."""
    path = clips["bframes"]
    every = decode_frames(path, list(range(75)), "pyav-sequential")
    some = [3, 4, 5, 22, 50, 73]
    for name in ("auto", "pyav-seek", "pyav-sequential"):
        for index, frame in zip(some, decode_frames(path, some, name)):
            assert np.array_equal(frame, every[index]), (name, index)


def test_single_threaded_decoding_gives_the_same_frames(clips: dict[str, Path]) -> None:
    """Worker processes decode with one thread each; that must not change a pixel."""
    path, indices = clips["bframes"], [2, 21, 47, 70]
    for name in DECODERS:
        threaded = decode_frames(path, indices, name)
        single = decode_frames(path, indices, name, threads=False)
        assert all(np.array_equal(a, b) for a, b in zip(threaded, single)), name


def test_auto_seeks_only_across_keyframes(clips: dict[str, Path]) -> None:
    long_gop, short_gop = probe(clips["gop250"]), probe(clips["gop30"])
    assert plan_seeks(long_gop, [10, 40, 70]) == [False, False, False]
    assert plan_seeks(short_gop, [10, 40, 70]) == [False, True, True]
    assert plan_seeks(short_gop, [10, 29, 33]) == [False, False, False]  # keyframe 30 saves too little
    assert plan_seeks(short_gop, [10, 40], "pyav-seek") == [True, True]
    assert plan_seeks(short_gop, [10, 40], "pyav-sequential") == [False, False]


def test_decode_frames_checks_indices(clips: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="sorted and unique"):
        decode_frames(clips["gop30"], [5, 3])
    with pytest.raises(ValueError, match="0..74"):
        decode_frames(clips["gop30"], [75])
    with pytest.raises(ValueError, match="unknown decoder"):
        decode_frames(clips["gop30"], [1], "ffmpeg")
    assert decode_frames(clips["gop30"], []) == []


def test_effective_decoder_falls_back_where_frames_would_be_wrong(clips: dict[str, Path]) -> None:
    mp4, ts = probe(clips["gop30"]), probe(clips["ts"])
    assert effective_decoder("decord", mp4) == "decord"
    assert effective_decoder("decord", ts) == "auto"
    assert effective_decoder("pyav", mp4) == "auto"


# --- resize, JPEG, end to end -----------------------------------------------------------------


def test_resize_and_jpeg_keep_the_frame_recognisable(clips: dict[str, Path]) -> None:
    frame = decode_frames(clips["gop30"], [42])[0]
    small = resize_frame(frame, (112, 84))
    assert small.shape == (84, 112, 3)
    data = encode_jpeg(small, quality=80)
    assert data[:2] == b"\xff\xd8"
    image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert image.shape == (84, 112, 3) and read_index(image) == 42
    assert len(encode_jpeg(small, quality=30)) < len(data)
    with pytest.raises(ValueError):
        encode_jpeg(small, quality=0)


def test_sample_video_end_to_end(clips: dict[str, Path]) -> None:
    sampled = sample_video(clips["bframes"], "uniform:5", max_pixels=112 * 84)
    assert sampled.indices == [7, 22, 37, 52, 67]
    assert sampled.timestamps == pytest.approx([0.28, 0.88, 1.48, 2.08, 2.68])
    assert sampled.size == (112, 84) and sampled.sampling_fps == pytest.approx(25 / 15)
    for index, data in zip(sampled.indices, sampled.jpegs):
        assert read_index(np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))) == index


@pytest.mark.realdata
@pytest.mark.skipif(not os.environ.get("VAU_REAL_DATA"), reason="set VAU_REAL_DATA to the folder holding vtest.avi")
def test_real_avi_probes_and_samples() -> None:
    """OpenCV's vtest.avi: H.264 with B-frames in AVI, whose packets carry no real pts."""
    path = Path(os.environ["VAU_REAL_DATA"]) / "vtest.avi"
    info = probe(path)
    assert info.container == "avi" and not info.pts_reliable
    assert info.num_frames > 100 and info.fps == pytest.approx(25.0, rel=0.01)
    assert info.duration == pytest.approx(info.num_frames / info.fps, rel=0.01)
    indices = [0, 20, 130]  # across the keyframe at 128, where decord's own seeking goes wrong
    frames = {name: decode_frames(path, indices, name, info) for name in DECODERS}
    for name, got in frames.items():
        assert all(np.array_equal(a, b) for a, b in zip(got, frames["opencv"])), name
    sampled = sample_video(path, "span:3", max_pixels=448 * 448, spans=[(0.5, 5.5)])
    assert len(sampled.jpegs) == 3 and sampled.decoder == "pyav-sequential"
    assert sampled.timestamps == pytest.approx([i / info.fps for i in sampled.indices])
    assert sampled.size[0] * sampled.size[1] <= 448 * 448


# --- rotation metadata (issue 9 item 7) -------------------------------------------------------


@pytest.fixture(scope="module")
def rotated(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """The same frames encoded with display rotations of 0, 90, -90 (= 270) and 180 degrees."""
    root = tmp_path_factory.mktemp("rotated")
    return {deg: make_clip(root / f"rot{deg}.mp4", seconds=1.2, fps=FPS, width=W, height=H, gop=10, rotation=deg) for deg in (0, 90, -90, 180)}


@pytest.mark.parametrize("degrees", [90, -90, 180])
def test_every_decoder_returns_the_display_orientation(rotated: dict[int, Path], degrees: int) -> None:
    info = probe(rotated[degrees])
    turns = degrees // 90
    assert info.rotation == degrees % 360
    assert (info.width, info.height) == ((H, W) if degrees % 180 else (W, H))  # displayed size: portrait for ±90
    indices = [0, 5, 12, 29]
    coded = decode_frames(rotated[0], indices, "pyav-sequential")
    expected = [np.rot90(f, turns) for f in coded]  # np.rot90 turns counter-clockwise, as the display matrix does
    for name in DECODERS:
        frames = decode_frames(rotated[degrees], indices, name, info)
        assert [f.shape for f in frames] == [(info.height, info.width, 3)] * len(indices), name
        assert all(np.abs(a.astype(int) - b).mean() < 2 for a, b in zip(frames, expected)), name
        assert [read_index(np.rot90(f, -turns)) for f in frames] == indices, name
        single = decode_frames(rotated[degrees], indices, name, info, threads=False)
        assert all(np.array_equal(a, b) for a, b in zip(frames, single)), name
    sampled = sample_video(rotated[degrees], "uniform:3", max_pixels=448 * 448)
    assert sampled.size == target_size(info.width, info.height, 448 * 448)
    image = np.asarray(Image.open(io.BytesIO(sampled.jpegs[0])))
    assert image.shape[:2] == (sampled.size[1], sampled.size[0])


def test_unrotated_files_have_rotation_zero(rotated: dict[int, Path], clips: dict[str, Path]) -> None:
    assert probe(rotated[0]).rotation == 0 and probe(clips["ts"]).rotation == 0
    assert effective_decoder("decord", probe(rotated[0])) == "decord"
    assert effective_decoder("decord", probe(rotated[180])) == "auto"  # decord turns ±90° upright but not 180°


def test_span_on_variable_frame_rate_video_returns_every_requested_frame(tmp_path: Path) -> None:
    """Frames about every 0.5 s, except 20 frames at 25 fps from 1.0 s: span 0.5-2.5 s holds 23 frames."""
    times_ms = [0, 480] + [1000 + 40 * k for k in range(20)] + [2000 + 480 * k for k in range(4)]
    path = tmp_path / "vfr.mkv"
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.time_base = Fraction(1, 1000)
        stream.options = {"bf": "0", "preset": "ultrafast"}
        for i, ms in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(frame_image(i, W, H), format="rgb24")
            frame.pts, frame.time_base = ms, Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    info = probe(path)
    assert info.timestamps([0, 1, 2, 21, 22]) == [0.0, 0.48, 1.0, 1.76, 2.0]
    picked = select_indices(Policy("span", 8), info, [(0.5, 2.5)])
    assert len(picked) == 8 and picked == sorted(set(picked))
    assert all(0.48 <= t <= 2.5 for t in info.timestamps(picked))  # frame 1 (0.48 s) is on screen at 0.5 s
    assert picked[0] == 1  # 0.625 s: the frame shown then (0.48 s)
    assert [read_index(f) for f in decode_frames(path, picked)] == picked


def test_overlapped_jpeg_encoding_gives_the_same_bytes(clips: dict[str, Path]) -> None:
    """With threads the resize + JPEG tail runs beside decoding; the output must not change a byte."""
    for name in ("auto", "opencv", "decord"):
        threaded = sample_video(clips["bframes"], "stride:9", 112 * 84, decoder=name)
        inline = sample_video(clips["bframes"], "stride:9", 112 * 84, decoder=name, threads=False)
        assert threaded.jpegs == inline.jpegs and threaded.indices == inline.indices, name
        assert [read_index(np.asarray(Image.open(io.BytesIO(j)))) for j in threaded.jpegs] == threaded.indices, name


def test_decoder_threads_follow_the_seek_plan(clips: dict[str, Path]) -> None:
    """Short runs between seeks decode without a frame pipeline to refill; long runs with one; same pixels."""
    from vau_annotate.annotate.decoders import decoder_threads

    short_gop, long_gop = probe(clips["gop30"]), probe(clips["gop250"])
    sparse = [44, 74]  # a seek to each, 15 frames decoded after its keyframe
    assert plan_seeks(short_gop, sparse) == [True, True] and decoder_threads(short_gop, sparse, plan_seeks(short_gop, sparse)) == "SLICE"
    dense = list(range(0, 75, 3))
    assert decoder_threads(long_gop, dense, plan_seeks(long_gop, dense)) == "FRAME"
    reference = decode_frames(clips["gop30"], sparse, "pyav-sequential")
    assert all(np.array_equal(a, b) for a, b in zip(decode_frames(clips["gop30"], sparse, "auto"), reference))
