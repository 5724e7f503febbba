"""hf: backend on the offline tiny Qwen2.5-VL: text, images, video with its fps, batching, failures.

The tiny model's weights are random, so its words are noise: these tests check structure (token
counts, finish reasons, ordering, batching, error classes) and that batching or the sampling rate
change exactly what they should.
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

from media import random_jpeg as jpeg  # noqa: E402
from media import random_video  # noqa: E402
from vau_annotate.annotate.backends import (  # noqa: E402
    BackendError,
    ErrorClass,
    ImagePart,
    Message,
    Request,
    Result,
    SamplingParams,
    TextPart,
    VideoPart,
    load_backend,
)
from vau_annotate.annotate.backends._local import prepare, video_metadata  # noqa: E402


def video(fps: float = 2.0, frames: int = 4) -> VideoPart:
    return random_video(fps, frames)


def ask(*parts: TextPart | ImagePart | VideoPart, max_tokens: int = 8, stop: tuple[str, ...] = ()) -> Request:
    return Request(
        messages=(Message.text("system", "Answer briefly."), Message("user", tuple(parts))),
        params=SamplingParams(max_tokens=max_tokens, stop=stop),
    )


TEXT = ask(TextPart("Is this normal?"))
IMAGE = ask(ImagePart(jpeg(7)), TextPart("Describe the image."))
VIDEO = ask(video(), TextPart("What happens in the video?"))


@pytest.fixture(scope="module")
def backend(tiny_model_dir: Path):
    return load_backend(f"hf:{tiny_model_dir}", batch_size=4)


def run(coro):
    return asyncio.run(coro)


def check(result: Result, max_tokens: int = 8) -> None:
    assert isinstance(result, Result)
    assert result.input_tokens > 0
    assert 0 < result.output_tokens <= max_tokens
    assert result.finish_reason in ("stop", "length")
    assert result.latency_s > 0
    assert "<|" not in result.text  # special tokens are stripped


def test_text_image_and_video_requests_generate(backend) -> None:
    text, image, clip = (run(backend.generate(r)) for r in (TEXT, IMAGE, VIDEO))
    for result in (text, image, clip):
        check(result)
    # 84×112 frames → 6×8 patches of 14 → 12 merged tokens per image / per 2-frame temporal patch
    assert image.input_tokens - text.input_tokens >= 12
    assert clip.input_tokens - text.input_tokens >= 2 * 12


def test_length_and_stop_finish_reasons(backend) -> None:
    long = run(backend.generate(ask(TextPart("Tell a story."), max_tokens=5)))
    if long.finish_reason == "length":
        assert long.output_tokens == 5
    free = run(backend.generate(ask(TextPart("Tell a story."), max_tokens=40)))
    stop = free.text.strip()[:1]
    if stop:
        stopped = run(backend.generate(ask(TextPart("Tell a story."), max_tokens=40, stop=(stop,))))
        assert stopped.finish_reason == "stop"
        assert stop not in stopped.text


def test_video_fps_reaches_the_model_as_temporal_positions(backend) -> None:
    """fps → `second_per_grid_ts` = 2 / fps → the spacing of the video's temporal M-RoPE positions."""
    prepared = prepare(ask(video(fps=4.0), TextPart("?")))
    assert prepared.video_metadata == [video_metadata(video(fps=4.0))]
    inputs = backend._inputs([prepared])
    assert inputs["second_per_grid_ts"].tolist() == [0.5]
    assert inputs["video_grid_thw"].tolist() == [[2, 6, 8]]
    positions = {}
    for fps in (4.0, 1.0):
        inputs = backend._inputs([prepare(ask(video(fps=fps), TextPart("?")))])
        ids, kinds = inputs["input_ids"], inputs["mm_token_type_ids"]
        rope, _ = backend.net.model.get_rope_index(ids, kinds, video_grid_thw=inputs["video_grid_thw"], second_per_grid_ts=inputs["second_per_grid_ts"], attention_mask=inputs["attention_mask"])
        temporal = rope[0, 0][kinds[0] == 2]
        positions[fps] = sorted(set(temporal.tolist()))
    # tokens_per_second (2) × seconds per temporal patch: 2 × 0.5 s = 1 step at 4 fps, 2 × 2 s = 4 at 1 fps
    assert np.diff(positions[4.0]).tolist() == [1]
    assert np.diff(positions[1.0]).tolist() == [4]
    fast, slow = (run(backend.generate(ask(video(fps=fps), TextPart("What happens?"), max_tokens=16))) for fps in (8.0, 0.25))
    assert fast.input_tokens == slow.input_tokens
    assert fast.text != slow.text


def test_fps_missing_is_derived_from_timestamps() -> None:
    part = VideoPart(frames=(b"a", b"b", b"c"), timestamps=(10.0, 10.5, 11.0), fps=0.0)
    assert video_metadata(part)["fps"] == pytest.approx(2.0)


def test_batch_matches_single_calls_and_keeps_order(backend) -> None:
    """Left padding + per-row mm_token_type_ids: batching must not change any greedy answer."""
    requests = [VIDEO, TEXT, IMAGE, ask(TextPart("A longer question about the scene and the people in it?"))]
    batched = run(backend.generate_batch(requests))
    single = [run(backend.generate_batch([r])) for r in requests]
    assert [r.text for r in batched] == [s[0].text for s in single]
    assert [r.input_tokens for r in batched] == [s[0].input_tokens for s in single]
    for result in batched:
        check(result)


def test_concurrent_generate_calls_become_batches(backend, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = backend.net.generate

    def counting(**kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return original(**kwargs)

    monkeypatch.setattr(backend.net, "generate", counting)

    async def many() -> list[Result]:
        return await asyncio.gather(*(backend.generate(r) for r in [TEXT, IMAGE, VIDEO, TEXT, IMAGE, VIDEO]))

    results = run(many())
    assert len(results) == 6 and all(isinstance(r, Result) for r in results)
    assert sum(calls) == 6 and len(calls) < 6 and max(calls) <= backend._batcher.batch_size
    assert results[0].text == results[3].text and results[2].text == results[5].text


def test_a_bad_frame_fails_only_its_own_request(backend) -> None:
    broken = ask(ImagePart(b"not a jpeg"), TextPart("?"))

    async def mixed() -> list[object]:
        return await asyncio.gather(backend.generate(TEXT), backend.generate(broken), return_exceptions=True)

    good, bad = run(mixed())
    check(good)
    assert isinstance(bad, BackendError) and bad.error_class is ErrorClass.PERMANENT and bad.code == "bad_media"
    with pytest.raises(BackendError):
        run(backend.generate_batch([TEXT, broken]))


def test_hub_names_are_not_downloaded_without_permission(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(BackendError) as info:
        load_backend("hf:Qwen/Qwen2.5-VL-7B-Instruct")
    assert info.value.error_class is ErrorClass.FATAL and "allow_download" in str(info.value)
    with pytest.raises(BackendError) as info:
        load_backend(f"hf:{tmp_path}")  # a directory, but no model in it
    assert info.value.error_class is ErrorClass.FATAL


def vllm_installed() -> bool:
    """tests/vllm/ is on sys.path during tests and looks like a namespace package "vllm": ignore it."""
    spec = importlib.util.find_spec("vllm")
    return spec is not None and spec.origin is not None


@pytest.mark.skipif(vllm_installed(), reason="vllm is installed here")
def test_vllm_backend_without_vllm_says_how_to_install(tiny_model_dir: Path) -> None:
    with pytest.raises(BackendError) as info:
        load_backend(f"vllm:{tiny_model_dir}")
    assert info.value.error_class is ErrorClass.FATAL
    assert "vau-annotate[vllm]" in str(info.value) and "make test-vllm" in str(info.value)
