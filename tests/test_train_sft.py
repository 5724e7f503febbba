"""`train sft` on the tiny Qwen2.5-VL: rows → inputs (frames, true fps, masks), recipes, training,
checkpoints and resume, LoRA, and the CLI. All CPU, a few seconds in total."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

import train_fixtures as tf  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from vau_annotate.cli import app  # noqa: E402
from vau_annotate.train.config import RecipeError, coerce, load_recipe, resolve_config, shipped_configs  # noqa: E402
from vau_annotate.train.data import (  # noqa: E402
    IGNORE_INDEX,
    RowError,
    SFTCollator,
    build_inputs,
    row_frames,
    to_qwen_messages,
)
from vau_annotate.train.sft import SFTRecipe, load_sft_recipe, train_sft  # noqa: E402


@pytest.fixture(scope="module")
def processor(tiny_model_dir: Path):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path):
    from transformers import Qwen2_5_VLForConditionalGeneration

    return Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model_dir).eval()


@pytest.fixture(scope="module")
def embed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tf.embed_export(tmp_path_factory.mktemp("export-embed"), rows=2, frames=4)


@pytest.fixture(scope="module")
def embed_rows(embed_dir: Path):
    from datasets import load_dataset

    return load_dataset(str(embed_dir), "p2c_sft", split="train")


def _loss(model, batch) -> float:
    import torch

    with torch.no_grad():
        return float(model(**batch).loss)


# ---------------------------------------------------------------------------------------------
# rows → inputs
# ---------------------------------------------------------------------------------------------


def test_messages_lose_arrow_none_keys_and_video_parts_become_placeholders(embed_rows) -> None:
    arrow_part = {"type": "text", "text": "hello", "image": None, "video": None}
    converted = to_qwen_messages([{"role": "user", "content": [{"type": "video", "text": ""}, arrow_part]}, {"role": "assistant", "content": "ok"}])
    assert converted == [
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "hello"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
    ]
    assert to_qwen_messages(embed_rows[0]["messages"])[1]["content"][0] == {"type": "video"}


def test_embed_row_frames_keep_their_order_and_times(embed_rows) -> None:
    frames, times = row_frames(embed_rows[0])
    assert times == [0.0, 0.5, 1.0, 1.5]
    assert [frame.size for frame in frames] == [(112, 84)] * 4
    decoded = [np.asarray(frame, dtype=np.float32) for frame in frames]
    assert all(np.abs(decoded[0] - other).mean() > 20 for other in decoded[1:])  # distinct frames, first stays first


def test_path_rows_are_decoded_with_their_sampling_parameters(tmp_path: Path) -> None:
    from vau_annotate.annotate.synth import make_clip, read_index

    make_clip(tmp_path / "videos" / "a.mp4", seconds=2.0, fps=10, width=224, height=168)
    by_fps = tf.path_row(0, "a.mp4", fps=2.0)
    frames, times = row_frames(by_fps, tmp_path / "videos")
    assert times == pytest.approx([0.2, 0.7, 1.2, 1.7])  # centre of each half second
    assert [read_index(np.asarray(frame)) for frame in frames] == [2, 7, 12, 17]
    assert frames[0].size[0] * frames[0].size[1] <= 28 * 28 * 16  # the row's max_pixels
    frames, times = row_frames(tf.path_row(0, "a.mp4", fps=None, nframes=5), tmp_path / "videos")
    assert len(frames) == 5 and [read_index(np.asarray(frame)) for frame in frames] == [2, 6, 10, 14, 18]
    with pytest.raises(RowError, match="videos_root"):
        row_frames(by_fps, None)
    with pytest.raises(RowError, match="not found"):
        row_frames(tf.path_row(0, "missing.mp4"), tmp_path / "videos")


def test_video_goes_through_the_video_processor_with_its_true_rate(processor, embed_rows) -> None:
    batch = SFTCollator(processor)([embed_rows[0]])
    assert batch["video_grid_thw"].tolist() == [[2, 6, 8]]  # 4 frames → 2 temporal patches
    assert batch["second_per_grid_ts"].tolist() == [1.0]  # temporal_patch_size 2 / 2 fps
    video_id = processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    video_tokens = int((batch["input_ids"] == video_id).sum())
    assert video_tokens == 2 * 6 * 8 // 4
    assert int((batch["mm_token_type_ids"] != 0).sum()) == video_tokens  # 3-D RoPE needs these
    faster = dict(embed_rows[0], frame_times=[0.0, 0.25, 0.5, 0.75])
    assert SFTCollator(processor)([faster])["second_per_grid_ts"].tolist() == [0.5]
    # the pixel budget: the row's own (what export sampled at), unless the recipe sets one
    _, height, width = SFTCollator(processor)([dict(embed_rows[0], max_pixels=28 * 28 * 4)])["video_grid_thw"][0].tolist()
    assert height * width * 14 * 14 <= 28 * 28 * 4
    _, height, width = SFTCollator(processor, max_pixels=28 * 28 * 12)([dict(embed_rows[0], max_pixels=28 * 28 * 4)])["video_grid_thw"][0].tolist()
    assert height * width * 14 * 14 == 84 * 112  # the recipe budget wins: frames kept at their size


def test_only_assistant_tokens_carry_labels(processor, embed_rows) -> None:
    batch = SFTCollator(processor)([embed_rows[0], embed_rows[1]])
    tokenizer = processor.tokenizer
    video_id = tokenizer.convert_tokens_to_ids("<|video_pad|>")
    for i in range(2):
        ids, labels = batch["input_ids"][i], batch["labels"][i]
        assert (labels[ids == video_id] == IGNORE_INDEX).all()
        assert (labels[batch["attention_mask"][i] == 0] == IGNORE_INDEX).all()
        trained = tokenizer.decode(ids[labels != IGNORE_INDEX])
        assert trained == tf.ANSWERS[i] + "<|im_end|>"
        assert (labels[labels != IGNORE_INDEX] == ids[labels != IGNORE_INDEX]).all()
    # the same span the template's own {% generation %} markers give, on a text-only conversation
    text_only = [{"role": "user", "content": [{"type": "text", "text": "Which class?"}]}, {"role": "assistant", "content": [{"type": "text", "text": "<answer>Robbery</answer>"}]}]
    reference = processor.apply_chat_template(text_only, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ours = SFTCollator(processor)([{"id": "t", "messages": text_only}])
    assert ours["labels"][0].ne(IGNORE_INDEX).int().tolist() == list(reference["assistant_masks"][0])


def test_changing_only_the_frames_changes_the_loss(processor, model, embed_rows) -> None:
    collate = SFTCollator(processor)
    row = embed_rows[0]
    base = _loss(model, collate([row]))
    other_frames = [{"bytes": tf.jpeg(900 + k), "path": None} for k in range(4)]
    assert abs(_loss(model, collate([dict(row, frames=other_frames)])) - base) > 1e-4
    # the timestamps reach the model too: same pixels, twice the rate → other temporal positions
    assert abs(_loss(model, collate([dict(row, frame_times=[0.0, 0.25, 0.5, 0.75])])) - base) > 1e-6
    assert math.isfinite(base)


def test_build_inputs_for_generation_prompts(processor, embed_rows) -> None:
    """GRPO's use: a batch of prompts, left padded, ending with the assistant header."""
    frames, times = row_frames(embed_rows[0])
    prompt = embed_rows[0]["messages"][:2]
    batch = build_inputs(processor, [prompt, prompt[1:]], [frames, frames], [times, times], add_generation_prompt=True, padding_side="left")
    assert batch["video_grid_thw"].shape[0] == 2 and "labels" not in batch
    assert processor.tokenizer.decode(batch["input_ids"][0]).endswith("<|im_start|>assistant\n")
    assert batch["attention_mask"][1][0] == 0  # the shorter prompt is padded on the left


def test_rows_without_what_sft_needs_fail_clearly(processor, embed_rows) -> None:
    collate = SFTCollator(processor)
    with pytest.raises(RowError, match="no assistant turn"):
        collate([dict(embed_rows[0], messages=embed_rows[0]["messages"][:2])])
    with pytest.raises(RowError, match="neither frames"):
        collate([{"id": "x", "messages": embed_rows[0]["messages"]}])


# ---------------------------------------------------------------------------------------------
# recipes
# ---------------------------------------------------------------------------------------------


def test_recipes_are_found_by_name_typed_and_strict(tmp_path: Path) -> None:
    assert {"sft_p2c_qwen2_5_vl_3b", "sft_reflect_qwen2_5_vl_3b", "sft_tiny"} <= set(shipped_configs())
    p2c = load_sft_recipe("sft_p2c_qwen2_5_vl_3b")
    assert p2c.max_pixels == 128 * 28 * 28 and p2c.learning_rate == 1e-5 and p2c.bf16 and p2c.report_to == ["tensorboard"]
    changed = load_sft_recipe("sft_p2c_qwen2_5_vl_3b", ["learning_rate=2e-5", "lora=true", "max_pixels=null", "report_to=tensorboard,wandb", "epochs=3"])
    assert (changed.learning_rate, changed.lora, changed.max_pixels, changed.report_to, changed.epochs) == (2e-5, True, None, ["tensorboard", "wandb"], 3.0)
    with pytest.raises(RecipeError, match="learning_rat.*did you mean learning_rate"):
        load_sft_recipe("sft_tiny", ["learning_rat=1"])
    with pytest.raises(RecipeError, match="batch_size: '1.5' is not a valid int"):
        load_sft_recipe("sft_tiny", ["batch_size=1.5"])
    nested = tmp_path / "nested.yaml"
    nested.write_text("model: x\ndataset: y\noptim:\n  lr: 1\n")
    with pytest.raises(RecipeError, match="flat"):
        load_recipe(SFTRecipe, nested)
    with pytest.raises(RecipeError, match="did you mean sft_tiny"):
        resolve_config("sft_tiyn")
    assert coerce("x", "1e-5", float) == 1e-5 and coerce("x", "off", bool) is False


def test_every_shipped_recipe_and_accelerate_config_loads() -> None:
    from accelerate.commands.config.config_args import ClusterConfig

    from vau_annotate.train.config import CONFIGS_DIR

    for name in shipped_configs("sft_"):
        assert load_sft_recipe(name).model, name
    kinds = {path.stem: ClusterConfig.from_yaml_file(str(path)) for path in sorted((CONFIGS_DIR / "accelerate").glob("*.yaml"))}
    assert {name: (c.distributed_type.value, (c.deepspeed_config or {}).get("zero_stage")) for name, c in kinds.items()} == {
        "fsdp": ("FSDP", None), "zero2": ("DEEPSPEED", 2), "zero3": ("DEEPSPEED", 3),
    }
    assert kinds["fsdp"].fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------


def _recipe(tiny_model_dir: Path, dataset: Path, out: Path, **overrides) -> SFTRecipe:
    keys = {
        "model": str(tiny_model_dir), "dataset": str(dataset), "output_dir": str(out),
        "batch_size": 2, "max_steps": 3, "learning_rate": 1e-3, "lr_scheduler": "constant",
        "save_steps": 3, "logging_steps": 1, "max_pixels": 28 * 28 * 16, **overrides,
    }
    return load_sft_recipe(None, {key: value for key, value in keys.items()})


def _logged_losses(out: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [(record["step"], record["loss"]) for record in records if "loss" in record]


def test_three_steps_learn_checkpoint_and_resume(tiny_model_dir: Path, embed_dir: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    out = tmp_path / "run"
    result = train_sft(_recipe(tiny_model_dir, embed_dir, out))  # 2 rows, batch 2: the same batch every step
    losses = _logged_losses(out)
    assert [step for step, _ in losses] == [1, 2, 3]
    values = [loss for _, loss in losses]
    assert all(math.isfinite(v) for v in values) and values[0] > values[1] > values[2]
    assert result.global_step == 3 and result.resumed_from is None
    assert (out / "checkpoint-3" / "trainer_state.json").is_file() and (out / "recipe.yaml").is_file()
    before, after = load_file(tiny_model_dir / "model.safetensors"), load_file(result.final_dir / "model.safetensors")
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert any(name.startswith("visual.") for name in changed) and any(name.startswith("model.layers.") for name in changed)

    resumed = train_sft(_recipe(tiny_model_dir, embed_dir, out, max_steps=5))
    assert resumed.resumed_from is not None and resumed.resumed_from.endswith("checkpoint-3")
    assert resumed.global_step == 5
    assert [step for step, _ in _logged_losses(out)] == [1, 2, 3, 4, 5]  # continued, not restarted
    from transformers import Qwen2_5_VLForConditionalGeneration

    Qwen2_5_VLForConditionalGeneration.from_pretrained(resumed.final_dir)  # the final model loads


def test_path_rows_train_and_lora_touches_only_the_language_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    videos = tmp_path / "videos"
    dataset = tf.path_export(tmp_path / "export-path", videos)
    out = tmp_path / "lora"
    result = train_sft(_recipe(tiny_model_dir, dataset, out, videos_root=str(videos), lora=True, lora_r=4, max_steps=2, save_steps=10, gradient_checkpointing=True))
    assert result.global_step == 2 and math.isfinite(result.train_loss)
    adapter = load_file(out / "adapter" / "adapter_model.safetensors")
    assert adapter and not any("visual" in name for name in adapter)
    before, merged = load_file(tiny_model_dir / "model.safetensors"), load_file(result.final_dir / "model.safetensors")
    changed = {name for name in before if not torch.equal(before[name], merged[name])}
    assert changed and all(name.startswith("model.layers.") and "proj" in name for name in changed)


def test_cli_lists_recipes_and_trains(tiny_model_dir: Path, embed_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["train", "configs"])
    assert listed.exit_code == 0 and "sft_p2c_qwen2_5_vl_3b" in listed.output and "sft_tiny" in listed.output
    out = tmp_path / "cli"
    ran = runner.invoke(app, ["train", "sft", "--config", "sft_tiny", f"model={tiny_model_dir}", f"dataset={embed_dir}", f"output_dir={out}", "max_steps=1", "bf16=true"])
    assert ran.exit_code == 0, ran.output
    assert "trained 1 steps" in ran.output and (out / "final" / "config.json").is_file()
    from safetensors.torch import load_file

    assert {str(tensor.dtype) for tensor in load_file(out / "final" / "model.safetensors").values()} == {"torch.bfloat16"}
    bad = runner.invoke(app, ["train", "sft", "--config", "sft_tiny", "lerning_rate=1"])
    assert bad.exit_code == 2 and "did you mean learning_rate" in " ".join(bad.output.split())
    # a GRPO config (prompt, no assistant target) is refused by name, with exit 1
    from datasets import Features

    features = tf.embed_features()
    grpo = Features({("prompt" if key == "messages" else key): value for key, value in features.items()})
    rows = [{("prompt" if key == "messages" else key): value for key, value in tf.embed_row(0).items()}]
    grpo_dir = tf.write_export(tmp_path / "grpo", "grpo_qa", {"train": rows}, grpo)
    wrong_config = runner.invoke(app, ["train", "sft", "--config", "sft_tiny", f"model={tiny_model_dir}", f"dataset={grpo_dir}", "dataset_config=grpo_qa", f"output_dir={out}"])
    assert wrong_config.exit_code == 1 and "[grpo_qa] has no messages column" in " ".join(wrong_config.output.split())
    missing = runner.invoke(app, ["train", "sft", "--config", "sft_tiny", f"model={tiny_model_dir}", f"dataset={tmp_path / 'nowhere'}", f"output_dir={out}"])
    assert missing.exit_code == 2 and "no export folder" in " ".join(missing.output.split())


@pytest.mark.slow
def test_trains_on_every_chat_config_that_export_wrote(tiny_model_dir: Path, processor, tmp_path: Path) -> None:
    """The real producer: the offline demo run → `vau-annotate export` → one SFT step per chat config."""
    from datasets import load_dataset

    runner = CliRunner()
    run, exported = tmp_path / "demo", tmp_path / "exported"
    made = runner.invoke(app, ["demo", "--run", str(run), "--tiny-model", str(tiny_model_dir)])
    assert made.exit_code == 0, made.output[-2000:]
    done = runner.invoke(app, ["export", "--run", str(run), "--out", str(exported), "--configs", "p2c_sft,reflect_sft,reflect_sft_conditioned", "--split", "ratio:1,0,0"])
    assert done.exit_code == 0, done.output[-2000:]
    for config in ("p2c_sft", "reflect_sft", "reflect_sft_conditioned"):
        rows = load_dataset(str(exported), config, split="train")
        batch = SFTCollator(processor)([rows[0]])
        trained = batch["labels"][0] != IGNORE_INDEX
        assert trained.any() and int(batch["video_grid_thw"].shape[0]) == 1
        out = tmp_path / f"run-{config}"
        result = train_sft(_recipe(tiny_model_dir, exported, out, dataset_config=config, batch_size=1, max_steps=1, save_steps=10))
        assert result.global_step == 1 and math.isfinite(result.train_loss), config

