"""train grpo: the loop on the tiny model for every task, the video in the loss, the arithmetic,
AVA's frame surgery, and resume. Datasets are written in the exported-row contract's shape."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from media import random_jpeg as jpeg  # noqa: E402
from train_fixtures import write_export  # noqa: E402
from vau_annotate.train import ava  # noqa: E402
from vau_annotate.train.grpo import GRPOConfig, GRPORecipe, step_rows  # noqa: E402
from vau_annotate.train.grpo_loss import ADVANTAGE_EPS, group_advantages, grpo_loss, k3_kl  # noqa: E402
from vau_annotate.train.rollout import Prompt, loss_inputs, sequence_logprobs  # noqa: E402

SYSTEM = "You are an expert in video anomaly analysis."
QUESTIONS = {
    "qa": ("What does the man do? A. walks B. runs C. falls D. fights", "B", ["walks", "runs", "falls", "fights"]),
    "tag": ("When does the anomaly happen? Answer with [start, end] in seconds.", "", []),
    "cls": ("Which anomaly class is shown?", "Robbery", []),
    "p2c": ("Is there an anomaly in the video? Reason from perception to cognition.", "", []),
    "reflect": ("Answer, reflect on your answer, then answer again. When does the anomaly happen?", "", []),
}


def grpo_row(task: str, index: int, frames: int = 4, fps: float = 2.0) -> dict:
    """One `grpo_<task>` row as export writes it (CONTRACT.md), with embedded JPEG frames."""
    question, answer, options = QUESTIONS[task]
    abnormal = index % 2 == 0
    return {
        "id": f"v{index}#{task}",
        "video_id": f"v{index}",
        "source": "synthetic",
        "frames": [{"bytes": jpeg(index * 100 + k), "path": None} for k in range(frames)],
        "frame_times": [k / fps for k in range(frames)],
        "sample_fps": fps,
        "max_pixels": 28 * 28 * 16,
        "prompt": [
            {"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
            {"role": "user", "content": [{"type": "video", "text": ""}, {"type": "text", "text": question}]},
        ],
        "task": task,
        "answer": answer,
        "options": options,
        "span": [0.5, 1.0] if abnormal else None,
        "duration": frames / fps,
        "label": "abnormal" if abnormal else "normal",
        "category": "Robbery" if abnormal else "Normal",
        "when_source": "annotation" if abnormal else "none",
        "span_known": abnormal,
        "question": question,
        "reflect_task": "tag" if task == "reflect" else "",
    }


def grpo_features():
    from datasets import Features, Image, List, Value

    part = {"type": Value("string"), "text": Value("string")}
    return Features({
        "id": Value("string"), "video_id": Value("string"), "source": Value("string"),
        "frames": List(Image()), "frame_times": List(Value("float32")), "sample_fps": Value("float32"),
        "max_pixels": Value("int32"), "prompt": List({"role": Value("string"), "content": List(part)}),
        "task": Value("string"), "answer": Value("string"), "options": List(Value("string")),
        "span": List(Value("float32")), "duration": Value("float32"), "label": Value("string"),
        "category": Value("string"), "when_source": Value("string"), "span_known": Value("bool"),
        "question": Value("string"), "reflect_task": Value("string"),
    })


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("grpo-export")
    out = {}
    for task in QUESTIONS:
        out[task] = write_export(root / task, f"grpo_{task}", {"train": [grpo_row(task, i) for i in range(4)]}, grpo_features())
    return out


def spread(completion: str, row: dict) -> float:
    """A test-only reward that varies with the completion. The tiny model's weights are random, so
    every paper reward is 0 for all its gibberish and the advantages (hence updates) would vanish."""
    return (sum(map(ord, completion)) % 97) / 97.0


@pytest.fixture(autouse=True)
def spread_reward(monkeypatch):
    from vau_annotate.train import rewards

    monkeypatch.setitem(rewards.REWARDS, "spread", spread)


def tiny_config(model: Path, dataset: Path, task: str, out: Path, **overrides) -> GRPOConfig:
    from vau_annotate.train.rewards import default_weights

    names = list(default_weights(task)) + ["spread"]
    values = {"model": str(model), "dataset": str(dataset), "dataset_config": f"grpo_{task}", "output_dir": str(out), "rewards": names}
    values.update(overrides)
    return GRPOConfig.load("grpo_tiny", values)


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


# -- the loop, every task ---------------------------------------------------------------------------
@pytest.mark.parametrize("task", list(QUESTIONS))
def test_three_steps_train_and_log(task: str, tiny_model_dir: Path, exports, tmp_path: Path) -> None:
    # reflect trains LoRA like the SRVAU-R1 recipe (reference = adapter disabled); p2c checkpoints activations
    extra = {"reflect": {"lora": True, "lora_r": 8, "lora_alpha": 16}, "p2c": {"gradient_checkpointing": True}}.get(task, {})
    config = tiny_config(tiny_model_dir, exports[task], task, tmp_path / "run", **extra)
    recipe = GRPORecipe(config)
    before = {name: p.detach().clone() for name, p in recipe.unwrapped.named_parameters() if p.requires_grad}
    final = recipe.train()

    log = read_log(tmp_path / "run")
    assert [r["step"] for r in log] == [1, 2, 3]
    for record in log:
        assert math.isfinite(record["loss"]) and math.isfinite(record["kl"]) and record["kl"] >= 0
        assert 0.0 <= record["clip_fraction"] <= 1.0
        assert 0 < record["completion_length_min"] <= record["completion_length"] <= record["completion_length_max"] <= 16
        assert len(record["rows"]) == 2  # gradient_accumulation_steps prompts per step
    components = set(log[0]["rewards"])
    expected = {
        "qa": {"format_vau_r1", "accuracy_choice"},
        "tag": {"format_vau_r1", "iou"},
        "cls": {"format_vau_r1", "accuracy_class"},
        "p2c": {"format_p2c", "accuracy_which", "iou", "length_vad", "ava"},
        "reflect": {"srvau_total"},
    }[task]
    assert components == expected | {"spread"}
    assert log[0]["reward_std"] > 0
    if task == "p2c":  # AVA ran: every completion got an edit decision
        assert sum(log[0]["ava_edits"].values()) == 2 * 4
    if task == "reflect":  # final/ is the merged model; the trained adapter is in OUTPUT/adapter
        from safetensors.torch import load_file

        after = {name.replace(".weight", ".default.weight"): value for name, value in load_file(tmp_path / "run" / "adapter" / "adapter_model.safetensors").items()}
    else:
        after = {name: value.detach() for name, value in recipe.unwrapped.named_parameters()}
    assert set(before) <= set(after)
    changed = [name for name, value in before.items() if not torch.equal(value, after[name])]
    assert len(changed) > len(before) // 2, "most trainable tensors should move in 3 steps"
    if task == "reflect":
        assert all("lora_" in name for name in before) and (tmp_path / "run" / "adapter" / "adapter_model.safetensors").exists()
    assert (final / "model.safetensors").exists() and (final / "config.json").exists()  # LoRA merged into a full model
    if task == "reflect":
        from safetensors.torch import load_file

        q = "model.layers.0.self_attn.q_proj.weight"  # the checkpoint naming save_pretrained writes
        assert not torch.equal(load_file(final / "model.safetensors")[q], load_file(tiny_model_dir / "model.safetensors")[q])
    assert log[1]["kl"] > 0  # after one update the policy has left the reference


def test_several_iterations_per_rollout_use_the_old_policy(tiny_model_dir: Path, exports, tmp_path: Path) -> None:
    """num_iterations = 2: the second update's ratio is policy / old policy (frozen at rollout), so it
    leaves 1 and clipping can act; with one iteration the ratio is exactly 1."""
    one = tmp_path / "one"
    GRPORecipe(tiny_config(tiny_model_dir, exports["qa"], "qa", one, max_steps=1)).train()
    two = tmp_path / "two"
    GRPORecipe(tiny_config(tiny_model_dir, exports["qa"], "qa", two, max_steps=1, num_iterations=2, learning_rate=0.05)).train()
    assert read_log(one)[0]["ratio_mean"] == pytest.approx(1.0, abs=1e-6) and read_log(one)[0]["clip_fraction"] == 0.0
    assert abs(read_log(two)[0]["ratio_mean"] - 1.0) > 1e-4


# -- the video reaches the loss ---------------------------------------------------------------------
def test_completion_logprobs_in_the_loss_pass_depend_on_the_frames(tiny_model_dir: Path, exports, tmp_path: Path) -> None:
    """Same prompt text, same completion tokens, different frames: the loss-pass log-probs differ.

    TRL's GRPOTrainer would give identical numbers here (its loss forward gets no video tensors)."""
    recipe = GRPORecipe(tiny_config(tiny_model_dir, exports["qa"], "qa", tmp_path / "run"))
    row = recipe.rows[0]
    frames, times = recipe.row_video(row)
    other = [__import__("PIL.Image").Image.open(__import__("io").BytesIO(jpeg(9000 + k))).convert("RGB") for k in range(len(frames))]
    prompt_a, prompt_b = recipe.encode(row, frames, times), recipe.encode(row, other, times)
    assert torch.equal(prompt_a.inputs["input_ids"], prompt_b.inputs["input_ids"])
    completion = torch.tensor([recipe.tokenizer("<think>a man runs</think><answer>B</answer>").input_ids] * 2)
    mask = torch.ones_like(completion, dtype=torch.float32)
    inputs = loss_inputs(prompt_a, completion, mask)
    for key in ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts", "mm_token_type_ids"):
        assert key in inputs, key
    assert inputs["video_grid_thw"].shape[0] == 2  # one video per completion
    assert inputs["mm_token_type_ids"].shape == inputs["input_ids"].shape
    recipe.model.train()
    logp_a = sequence_logprobs(recipe.model, prompt_a, completion, mask)
    logp_b = sequence_logprobs(recipe.model, prompt_b, completion, mask)
    assert logp_a.requires_grad  # the pass the loss backpropagates through
    assert (logp_a - logp_b).abs().max().item() > 1e-3
    # and the tiled copies see the same video: both completions score alike
    assert torch.allclose(logp_a[0], logp_a[1], atol=1e-5)


# -- arithmetic against hand-computed numbers -------------------------------------------------------
def test_group_advantages_by_hand() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    std = math.sqrt((4 * 0.25) / 3)  # unbiased std of [1, 0, 0, 1] = 0.57735
    expected = [x / (std + ADVANTAGE_EPS) for x in (0.5, -0.5, -0.5, 0.5)] + [0.0] * 4
    assert group_advantages(rewards, 4).tolist() == pytest.approx(expected, abs=1e-6)
    assert group_advantages(rewards, 4, scale_std=False).tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0])
    with pytest.raises(ValueError):
        group_advantages(torch.ones(6), 4)


def test_kl_and_clipped_loss_by_hand() -> None:
    # k3 with policy p = 0.5, reference q = 0.25: q/p - log(q/p) - 1 = 0.5 + ln 2 - 1
    assert k3_kl(torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])).item() == pytest.approx(0.5 + math.log(2) - 1, abs=1e-6)
    assert k3_kl(torch.tensor([-1.3]), torch.tensor([-1.3])).item() == pytest.approx(0.0)

    # two completions, three token slots; the second has one padded slot
    logp = torch.tensor([[math.log(0.6), math.log(0.3), math.log(0.5)], [math.log(0.9), math.log(0.2), 0.0]], requires_grad=True)
    old = torch.tensor([[math.log(0.4), math.log(0.3), math.log(0.5)], [math.log(0.5), math.log(0.4), 0.0]])
    ref = torch.tensor([[math.log(0.3), math.log(0.3), math.log(0.25)], [math.log(0.9), math.log(0.1), 0.0]])
    adv = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    eps, beta = 0.2, 0.04
    by_hand, clipped = 0.0, 0
    for i in range(2):
        for t in range(3):
            if not mask[i, t]:
                continue
            ratio = math.exp(logp[i, t].item() - old[i, t].item())
            a = adv[i].item()
            term = min(ratio * a, min(max(ratio, 1 - eps), 1 + eps) * a)
            q_over_p = math.exp(ref[i, t].item() - logp[i, t].item())
            by_hand += -term + beta * (q_over_p - math.log(q_over_p) - 1)
            clipped += (ratio > 1 + eps and a > 0) or (ratio < 1 - eps and a < 0)
    by_hand /= 5  # token mean over the 5 real tokens
    parts = grpo_loss(logp, old, ref, adv, mask, epsilon=eps, beta=beta)
    assert parts.loss.item() == pytest.approx(by_hand, abs=1e-6)
    assert parts.tokens == 5 and parts.clipped_tokens == clipped == 2  # ratio 1.5 (A>0) and 0.5555 (A<0)
    # accumulation: two halves normalised by the step's 5 tokens add up to the whole
    half_a = grpo_loss(logp[:1], old[:1], ref[:1], adv[:1], mask[:1], epsilon=eps, beta=beta, normaliser=5)
    half_b = grpo_loss(logp[1:], old[1:], ref[1:], adv[1:], mask[1:], epsilon=eps, beta=beta, normaliser=5)
    assert (half_a.loss + half_b.loss).item() == pytest.approx(by_hand, abs=1e-6)
    # a clipped token passes no policy gradient, only the KL's
    parts.loss.backward()
    kl_grad_only = beta * (1 - math.exp(ref[0, 0].item() - logp[0, 0].item())) / 5
    assert logp.grad[0, 0].item() == pytest.approx(kl_grad_only, abs=1e-6)
    assert logp.grad[1, 2].item() == 0.0  # padding


# -- AVA frame surgery -------------------------------------------------------------------------------
def test_ava_drops_exactly_the_predicted_span() -> None:
    frames = [f"f{i}" for i in range(10)]
    times = [i * 0.5 for i in range(10)]  # 0.0 .. 4.5 s
    row = {"duration": 5.0, "task": "p2c"}
    completion = "<think>A man grabs a bag.</think><answer><which>Robbery</which><when>[1.0, 2.0]</when></answer>"
    asked: list[tuple[list, list]] = []

    def ask(row, kept_frames, kept_times):
        asked.append((kept_frames, kept_times))
        return "<answer><which>Normal</which></answer>"

    result = ava.verify(completion, row, frames, times, ask=ask, rng=random.Random(0))
    assert result.edit == "drop_span" and result.removed == 3
    assert asked == [(["f0", "f1", "f5", "f6", "f7", "f8", "f9"], [0.0, 0.5, 2.5, 3.0, 3.5, 4.0, 4.5])]
    # a normalised Vad-R1 span is scaled by the duration: [0.2, 0.4] of 5 s = [1.0, 2.0]
    asked.clear()
    ava.verify(completion.replace("[1.0, 2.0]", "[0.2, 0.4]"), row, frames, times, ask=ask, rng=random.Random(0))
    assert asked[0][1] == [0.0, 0.5, 2.5, 3.0, 3.5, 4.0, 4.5]
    # a span covering every frame leaves nothing to show: no re-ask
    asked.clear()
    assert ava.verify(completion.replace("[1.0, 2.0]", "[0.0, 5.0]"), row, frames, times, ask=ask, rng=random.Random(0)).edit is None
    assert asked == []


def test_ava_in_the_loop_reasks_the_policy_on_the_edited_frames(tiny_model_dir: Path, exports, tmp_path: Path) -> None:
    from vau_annotate.train.rollout import Group

    recipe = GRPORecipe(tiny_config(tiny_model_dir, exports["p2c"], "p2c", tmp_path / "run"))
    row = next(r for r in recipe.rows if r["label"] == "abnormal")  # 4 frames at 0, 0.5, 1.0, 1.5 s
    frames, times = recipe.row_video(row)
    texts = [
        "<think>x</think><answer><which>Robbery</which><when>[0.5s, 1.0s]</when></answer>",  # abnormal + span in seconds
        "<think>x</think><answer><which>Normal</which></answer>",  # normal
        "zzz",  # no verdict: nothing to verify
        "<think>x</think><answer><which>Fighting</which></answer>",  # abnormal without a span
    ]
    group = Group(prompt=recipe.encode(row, frames, times), completion_ids=torch.zeros((4, 1), dtype=torch.long), mask=torch.ones((4, 1)), texts=texts)
    asked: list[list[float]] = []
    real_ask = recipe.ask_many

    def ask_many(items):
        asked.extend(item_times for _, _, item_times in items)
        assert len(real_ask(items)) == len(items)  # the policy really answers the edited clips
        return ["<answer><which>Normal</which></answer>", "<answer><which>Fighting</which></answer>"]

    recipe.ask_many = ask_many
    totals, components, edits = recipe.score([group], [row], [(frames, times)])
    assert asked[0] == [0.0, 1.5] and len(asked[1]) == 3 and len(asked) == 2
    assert edits[0] == "drop_span" and edits[1] in ("trim_start", "trim_end") and edits[2:] == ["none", "none"]
    assert components["ava"] == pytest.approx([0.5, -0.2, 0.0, 0.0])


def test_ava_trims_start_or_end_for_a_normal_answer() -> None:
    frames, times = list(range(8)), [float(i) for i in range(8)]
    sides = set()
    for seed in range(20):
        edited = ava.trim_end(frames, times, random.Random(seed), 0.25)
        assert len(edited.removed) == 2
        assert edited.frames == ([2, 3, 4, 5, 6, 7] if edited.edit == "trim_start" else [0, 1, 2, 3, 4, 5])
        sides.add(edited.edit)
    assert sides == {"trim_start", "trim_end"}
    normal = "<think>People walk.</think><answer><which>Normal</which></answer>"
    result = ava.verify(normal, {"duration": 8.0}, frames, times, ask=lambda r, f, t: "<answer><which>Fighting</which></answer>", rng=random.Random(1))
    assert result.edit in ("trim_start", "trim_end") and result.removed == 2
    from vau_annotate.train.rewards import ava as ava_reward

    assert ava_reward(normal, {"trimmed_completion": result.reasked}) == pytest.approx(-0.2)


# -- resume -------------------------------------------------------------------------------------------
def test_step_rows_is_a_pure_function_of_the_step() -> None:
    first = [step_rows(s, 5, 2, 1, 0, seed=3) for s in range(5)]
    flat = [i for rows in first for i in rows]
    assert sorted(flat[:5]) == list(range(5)) and sorted(flat[5:10]) == list(range(5))  # epochs are permutations
    assert flat[:5] != flat[5:10]  # reshuffled per epoch
    # two processes split each global batch without overlap
    assert sorted(step_rows(1, 8, 2, 2, 0, 0) + step_rows(1, 8, 2, 2, 1, 0)) == sorted(step_rows(1, 8, 4, 1, 0, 0))


def test_resume_continues_step_count_and_data_order(tiny_model_dir: Path, exports, tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    GRPORecipe(tiny_config(tiny_model_dir, exports["qa"], "qa", straight, max_steps=3)).train()
    resumed = tmp_path / "resumed"
    GRPORecipe(tiny_config(tiny_model_dir, exports["qa"], "qa", resumed, max_steps=2, save_steps=2)).train()
    assert (resumed / "checkpoint-2" / "trainer_state.json").exists()
    GRPORecipe(tiny_config(tiny_model_dir, exports["qa"], "qa", resumed, max_steps=3, save_steps=2, resume=True)).train()

    a, b = read_log(straight), read_log(resumed)
    assert [r["step"] for r in b] == [1, 2, 3]
    assert [r["rows"] for r in b] == [r["rows"] for r in a]
    # the same weights, optimizer state and sampling RNG: step 3 samples and scores the same
    assert b[2]["sample"] == a[2]["sample"]
    assert b[2]["loss"] == pytest.approx(a[2]["loss"], abs=1e-5)


# -- the command ---------------------------------------------------------------------------------------
def test_cli_trains_rejects_unreadable_rows_and_says_partial(tiny_model_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from vau_annotate.cli import app

    rows = [grpo_row("qa", i) for i in range(4)]
    rows[1]["frames"], rows[1]["frame_times"] = [], []  # a row whose video cannot be shown
    dataset = write_export(tmp_path / "export", "grpo_qa", {"train": rows}, grpo_features())
    out = tmp_path / "run"
    args = ["train", "grpo", "--config", "grpo_tiny", f"model={tiny_model_dir}", f"dataset={dataset}", f"output_dir={out}", "max_steps=2", "rewards=format_vau_r1,accuracy_choice"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 3, result.output
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rejects] == ["v1#qa"] and "no frames" in rejects[0]["reason"]
    log = read_log(out)
    assert [r["step"] for r in log] == [1, 2] and sum(r["rejected"] for r in log) == 1
    assert "trained 2 GRPO steps" in result.output

    bad = CliRunner().invoke(app, ["train", "grpo", "--config", "grpo_tiny", f"model={tiny_model_dir}", f"dataset={dataset}", "rewards=no_such_reward"])
    assert bad.exit_code == 2 and "no_such_reward" in bad.output
    typo = CliRunner().invoke(app, ["train", "grpo", "--config", "grpo_tiny", f"model={tiny_model_dir}", f"dataset={dataset}", "num_generation=8"])
    assert typo.exit_code == 2 and "num_generations" in typo.output


def test_shipped_recipes_load_with_the_papers_settings() -> None:
    load = lambda name: GRPOConfig.load(name, {"dataset": "out/x"})  # noqa: E731
    vau, vad, srvau = load("grpo_vau_qwen2_5_vl_3b"), load("grpo_vad_r1_qwen2_5_vl_3b"), load("grpo_srvau_qwen2_5_vl_3b")
    assert (vau.num_generations, vau.beta, vau.dataset_config, vau.weights) == (4, 0.04, ["grpo_qa", "grpo_tag", "grpo_cls"], None)
    assert vad.learning_rate == 1e-6 and vad.max_pixels == 128 * 28 * 28 and vad.weights["ava"] == 1.0 and vad.weights["length_vad"] == 1.0
    assert srvau.learning_rate == 2e-5 and srvau.dataset_config == ["grpo_reflect"] and srvau.weights["srvau_total"] == 1.0
    assert sum(srvau.weights.values()) == 1.0  # the logged parts do not count twice
    with pytest.raises(ValueError, match="reward_weights"):
        GRPOConfig.load("grpo_tiny", {"model": "m", "dataset": "d", "rewards": "iou,format_vau_r1", "reward_weights": "1.0"})


def test_vllm_sync_pushes_merged_lora_weights_under_the_checkpoint_names(tiny_model_dir: Path) -> None:
    """The colocated engine's weight sync, with a stand-in for vLLM's model (vLLM needs a GPU)."""
    from types import SimpleNamespace

    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2_5_VLForConditionalGeneration

    from vau_annotate.train.rollout import VLLMSampler

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model_dir)
    names = {name for name, _ in model.named_parameters()}
    q_name = "model.language_model.layers.0.self_attn.q_proj.weight"
    original = dict(model.named_parameters())[q_name].detach().clone()
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=GRPOConfig.__dataclass_fields__["lora_target"].default, init_lora_weights=False))
    q_proj = peft_model.base_model.model.model.language_model.layers[0].self_attn.q_proj
    delta = q_proj.get_delta_weight("default").detach().clone()
    assert delta.abs().max() > 0

    received: dict[str, torch.Tensor] = {}
    engine_model = SimpleNamespace(load_weights=lambda weights: received.update({n: t.detach().clone() for n, t in weights}))
    sampler = VLLMSampler.__new__(VLLMSampler)
    sampler.llm = SimpleNamespace(llm_engine=SimpleNamespace(model_executor=SimpleNamespace(driver_worker=SimpleNamespace(model_runner=SimpleNamespace(model=engine_model)))), reset_prefix_cache=lambda: None)
    sampler.sync(peft_model)

    assert set(received) == names  # every weight, under the checkpoint's names, no LoRA tensors
    assert torch.allclose(received[q_name], original + delta, atol=1e-6)  # the adapter merged in
    assert torch.allclose(q_proj.base_layer.weight.detach(), original, atol=1e-6)  # and un-merged afterwards


@pytest.mark.slow
def test_trains_on_every_grpo_config_that_export_wrote(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The real producer: the offline demo run → `vau-annotate export` → GRPO steps over all five configs."""
    from typer.testing import CliRunner

    from vau_annotate.cli import app

    runner = CliRunner()
    run, exported, out = tmp_path / "demo", tmp_path / "exported", tmp_path / "grpo"
    configs = "grpo_qa,grpo_tag,grpo_cls,grpo_p2c,grpo_reflect"
    made = runner.invoke(app, ["demo", "--run", str(run), "--tiny-model", str(tiny_model_dir)])
    assert made.exit_code == 0, made.output[-2000:]
    done = runner.invoke(app, ["export", "--run", str(run), "--out", str(exported), "--configs", configs, "--split", "ratio:1,0,0"])
    assert done.exit_code == 0, done.output[-2000:]
    trained = runner.invoke(app, ["train", "grpo", "--config", "grpo_tiny", f"model={tiny_model_dir}", f"dataset={exported}", f"dataset_config={configs}", f"output_dir={out}", "max_steps=2", "gradient_accumulation_steps=5"])
    assert trained.exit_code == 0, trained.output[-2000:]
    log = read_log(out)
    assert [r["step"] for r in log] == [1, 2] and all(math.isfinite(r["loss"]) for r in log)
    tasks = {row_id.split("#")[1].rstrip("0123456789") for record in log for row_id in record["rows"]}
    assert len(tasks) >= 3  # the shuffled stream mixes the configs' tasks
