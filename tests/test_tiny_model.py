"""The offline tiny Qwen2.5-VL: it reloads, its template renders media and masks, it generates."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

from vau_annotate.train.tiny import SPECIAL_TOKENS, build_tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def processor(tiny_model_dir: Path):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path):
    from transformers import Qwen2_5_VLForConditionalGeneration

    return Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model_dir).eval()


def test_builds_fast_small_and_deterministic(tmp_path: Path, tiny_model_dir: Path) -> None:
    started = time.perf_counter()
    out = build_tiny_model(tmp_path / "again")
    elapsed = time.perf_counter() - started
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"tiny model built in {elapsed:.1f} s")  # ~1.5 s idle; not asserted: a loaded machine is slower (no timed assertions)
    assert size < 4_000_000
    for name in ("config.json", "tokenizer.json", "chat_template.jinja", "model.safetensors"):
        assert (out / name).read_bytes() == (tiny_model_dir / name).read_bytes(), name


def test_reloads_with_the_architecture_we_asked_for(model, processor) -> None:
    text, vision = model.config.text_config, model.config.vision_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads) == (64, 2, 2, 1)
    assert text.hidden_size // text.num_attention_heads == 32  # vLLM's CPU attention needs head_dim >= 32
    assert text.rope_parameters["mrope_section"] == [4, 6, 6]
    assert (vision.depth, vision.hidden_size, vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size) == (2, 32, 14, 2, 2)
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    assert type(processor.video_processor).__name__ == "Qwen2VLVideoProcessor"
    assert model.config.video_token_id == processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")


def test_tokenizer_has_qwen_specials_and_a_real_vocabulary(processor) -> None:
    tokenizer = processor.tokenizer
    assert 2500 <= len(tokenizer) <= 4096
    for token in SPECIAL_TOKENS:
        assert tokenizer.convert_tokens_to_ids(token) < 16, token
        assert tokenizer.tokenize(token) == [token]
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    text = "<think>A man runs across the street at 12.5s.</think><answer>B</answer>"
    ids = tokenizer(text).input_ids
    assert len(ids) < len(text) / 2  # merges learned, not one byte per token
    assert tokenizer.decode(ids) == text


def test_template_renders_video_images_and_system_prompt(processor) -> None:
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "image"}, {"type": "text", "text": "What happens?"}]}]
    rendered = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|><|vision_start|><|image_pad|><|vision_end|>"
        "What happens?<|im_end|>\n<|im_start|>assistant\n"
    )
    system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert processor.apply_chat_template(system, tokenize=False).startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi")


def test_template_ignores_none_keys_from_arrow_rows(processor) -> None:
    """Rows read back from Arrow carry every key of every part; None must not turn text into a video."""
    part = {"type": "text", "text": "hello", "image": None, "video": None}
    rendered = processor.apply_chat_template([{"role": "user", "content": [part]}], tokenize=False)
    assert "<|video_pad|>" not in rendered and "<|image_pad|>" not in rendered and "hello" in rendered


def test_generation_markers_mask_exactly_the_assistant_turn(processor) -> None:
    conversation = [
        {"role": "user", "content": [{"type": "text", "text": "Which class?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "<answer>Robbery</answer>"}]},
    ]
    out = processor.apply_chat_template(conversation, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"][0], out["assistant_masks"][0]
    trained = [token for token, keep in zip(ids, mask) if keep]
    assert processor.tokenizer.decode(trained) == "<answer>Robbery</answer><|im_end|>"


def test_video_with_fps_metadata_generates(model, processor) -> None:
    import torch

    frames = np.random.default_rng(0).integers(0, 255, (4, 84, 112, 3), dtype=np.uint8)
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "?"}]}], add_generation_prompt=True, tokenize=False)
    metadata = {"total_num_frames": 4, "fps": 2.0, "frames_indices": [0, 1, 2, 3], "duration": 2.0}
    inputs = processor(text=[text], videos=[list(frames)], video_metadata=[metadata], do_sample_frames=False, return_tensors="pt")
    assert inputs["video_grid_thw"].tolist() == [[2, 6, 8]]
    assert inputs["second_per_grid_ts"].tolist() == [1.0]  # temporal_patch_size / fps
    assert int(inputs["mm_token_type_ids"].sum()) > 0
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
