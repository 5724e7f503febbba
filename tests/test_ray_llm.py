"""`vllm:` roles under `--executor ray` (Ray Data LLM): the settings, the request → row and row →
Result mappings, and the CLI's wiring. The real vLLM stage runs in tests/vllm/test_ray_llm_cpu.py
(`make test-vllm`); these need neither Ray nor vLLM."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from media import random_jpeg
from PIL import Image
from typer.testing import CliRunner

from vau_annotate.annotate.backends import BackendError, ErrorClass, ImagePart, Message, Request, Result, SamplingParams, TextPart, VideoPart
from vau_annotate.annotate.backends.ray_llm_rows import (
    BAD_MEDIA,
    ERROR_COLUMN,
    ROW_ID,
    RayLLMOptions,
    engine_inputs,
    missing_row,
    reply_columns,
    request_row,
    row_outcome,
)
from vau_annotate.cli import app
from vau_annotate.pipelines.models import ModelAccess, items_in_flight

VIDEO = VideoPart(frames=(random_jpeg(1), random_jpeg(2), random_jpeg(3, 56, 70)), timestamps=(4.0, 4.5, 5.0), fps=2.0)
REQUEST = Request(
    messages=(Message.text("system", "You watch surveillance video."),
              Message("user", (VIDEO, ImagePart(random_jpeg(9)), TextPart("What happens between 4 s and 5 s?")))),
    params=SamplingParams(max_tokens=64, temperature=0.7, top_p=0.9, seed=3, stop=("</answer>",)),
)


def as_json(conversation: list[dict]) -> str:
    return json.dumps(conversation)


# -- settings ----------------------------------------------------------------------------------------
def test_options_parse_into_engine_kwargs_and_ray_data_concurrency() -> None:
    options = RayLLMOptions.parse("tp=2, pp=2, replicas=2-4, batch=32, round=500, max-len=16384, dtype=bfloat16, gpu-mem=0.85")
    assert options.devices_per_replica == 4
    assert options.concurrency == (2, 4)  # an autoscaling pool between 2 and 4 replicas
    kwargs = options.engine_kwargs({"enable_prefix_caching": True})
    assert kwargs["tensor_parallel_size"] == 2 and kwargs["pipeline_parallel_size"] == 2
    assert kwargs["max_model_len"] == 16384 and kwargs["dtype"] == "bfloat16" and kwargs["gpu_memory_utilization"] == 0.85
    assert kwargs["limit_mm_per_prompt"] == {"image": 16, "video": 1} and kwargs["enable_prefix_caching"] is True
    assert options.placement_group_config() is None  # GPUs: Ray Data LLM reserves tp×pp per replica itself
    assert RayLLMOptions.parse(options.recorded()) == options  # run.json's text gives the same settings back


def test_defaults_and_the_cpu_placement() -> None:
    options = RayLLMOptions.parse("")
    assert (options.tensor_parallel, options.pipeline_parallel, options.concurrency, options.batch_size) == (1, 1, 1, 16)
    cpu = RayLLMOptions.parse("device=cpu,tp=2,kv-cache-gb=0.5,eager=yes")
    assert cpu.placement_group_config() == {"bundles": [{"CPU": 1}, {"CPU": 1}]}
    assert cpu.engine_kwargs()["kv_cache_memory_bytes"] == 512 * 1024**2 and cpu.enforce_eager


@pytest.mark.parametrize("text, complaint", [
    ("tp=0", "at least 1"), ("gpus=2", "unknown key 'gpus'"), ("tp", "KEY=VALUE"), ("replicas=4-2", "MIN ≤ MAX"),
    ("replicas=two", "N or MIN-MAX"), ("batch=x", "not a valid int"), ("device=tpu", "gpu, cpu"), ("gpu-mem=1.5", "(0, 1]"),
    ("eager=maybe", "yes/no"), ("max-len=100", "at least 256"),
])
def test_bad_options_say_what_is_wrong(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=None) as caught:
        RayLLMOptions.parse(text)
    assert complaint in str(caught.value)


# -- request → row → engine inputs ---------------------------------------------------------------------
def test_a_request_becomes_a_row_with_its_prompt_frames_fps_and_sampling() -> None:
    row = request_row("key-1", REQUEST, as_json)
    assert row[ROW_ID] == "key-1"
    conversation = json.loads(row["prompt"])
    assert conversation[0] == {"role": "system", "content": "You watch surveillance video."}
    assert [part["type"] for part in conversation[1]["content"]] == ["video", "image", "text"]  # placeholders in order
    assert row["videos"] == [list(VIDEO.frames)] and row["images"] == [REQUEST.messages[1].parts[1].data]
    meta = row["video_metadata"][0]
    assert meta["fps"] == 2.0 and meta["frames_indices"] == [0, 1, 2] and meta["do_sample_frames"] is False
    assert row["sampling_params"] == {"max_tokens": 64, "temperature": 0.7, "top_p": 0.9, "seed": 3, "stop": ["</answer>"]}
    assert row["max_tokens"] == 64


def test_the_chat_template_renders_video_and_image_placeholders(tiny_model_dir: Path) -> None:
    from vau_annotate.annotate.backends.ray_llm_backend import chat_renderer

    prompt = request_row("k", REQUEST, chat_renderer(str(tiny_model_dir)))["prompt"]
    video, image, question = (prompt.index(s) for s in ("<|video_pad|>", "<|image_pad|>", "What happens between"))
    assert video < image < question
    assert prompt.rstrip().endswith("<|im_start|>assistant")


def test_engine_inputs_decode_frames_on_the_worker_with_their_fps() -> None:
    inputs = engine_inputs(request_row("k", REQUEST, as_json))
    assert ERROR_COLUMN not in inputs and inputs["images"] is None and inputs["videos"] is None  # bytes dropped
    (array, meta), = inputs["multimodal_data"]["video"]
    assert array.shape == (3, 84, 112, 3) and array.dtype == np.uint8  # the odd-sized frame resized to the first
    first = np.asarray(Image.open(io.BytesIO(VIDEO.frames[0])).convert("RGB"))
    assert np.array_equal(array[0], first)
    assert meta["fps"] == 2.0 and meta["total_num_frames"] == 3
    (image,) = inputs["multimodal_data"]["image"]
    assert image.size == (112, 84)


def test_text_only_rows_carry_no_multimodal_data() -> None:
    inputs = engine_inputs(request_row("k", Request(messages=(Message.text("user", "hi"),)), as_json))
    assert "multimodal_data" not in inputs and ERROR_COLUMN not in inputs


def test_frames_that_do_not_decode_fail_their_row_only() -> None:
    broken = Request(messages=(Message("user", (VideoPart((b"junk",), (0.0,), 1.0), TextPart("?"))),))
    inputs = engine_inputs(request_row("k", broken, as_json))
    assert inputs[ERROR_COLUMN].startswith(BAD_MEDIA) and "multimodal_data" not in inputs
    error = row_outcome({ROW_ID: "k", **inputs})
    assert isinstance(error, BackendError) and error.error_class is ErrorClass.PERMANENT and error.code == "bad_media"


# -- reply row → Result | BackendError -----------------------------------------------------------------
def test_a_reply_row_becomes_a_result() -> None:
    reply = {ROW_ID: "k", "generated_text": "<think>a man runs</think>", "num_input_tokens": 321, "num_generated_tokens": 12,
             "time_taken_llm": 0.8, "max_tokens": 64, "prompt": "dropped", ERROR_COLUMN: ""}
    assert reply_columns(reply) == {ROW_ID: "k", "generated_text": "<think>a man runs</think>", "num_input_tokens": 321,
                                    "num_generated_tokens": 12, "time_taken_llm": 0.8, "max_tokens": 64}
    assert row_outcome(reply) == Result("<think>a man runs</think>", "stop", 321, 12, 0.8)
    assert row_outcome({**reply, "num_generated_tokens": 64}).finish_reason == "length"  # used the whole budget


@pytest.mark.parametrize("message, error_class, code", [
    ("ValueError: The decoder prompt (length 9000) is longer than the maximum model length of 8192", ErrorClass.PERMANENT, "bad_request"),
    ("OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", ErrorClass.RETRYABLE, "out_of_memory"),
    ("EngineDeadError: EngineCore encountered an issue", ErrorClass.RETRYABLE, "engine_dead"),
    (f"{BAD_MEDIA}: cannot decode", ErrorClass.PERMANENT, "bad_media"),
])
def test_failed_rows_become_classified_errors(message: str, error_class: ErrorClass, code: str) -> None:
    error = row_outcome({ROW_ID: "k", ERROR_COLUMN: message, "generated_text": "", "num_generated_tokens": 0})
    assert isinstance(error, BackendError)
    assert (error.error_class, error.code) == (error_class, code)
    assert message[:40] in str(error)


def test_a_row_missing_from_the_job_is_asked_again() -> None:
    assert missing_row("abc").error_class is ErrorClass.RETRYABLE


def test_a_round_gathers_as_many_items_as_it_may_carry() -> None:
    access = ModelAccess(ray_llm=RayLLMOptions.parse("round=300"))
    assert items_in_flight(4, access) == 300 and items_in_flight(4, ModelAccess()) == 4
    assert access.recorded()["ray_llm"].startswith("tp=1,pp=1,replicas=1,batch=16,round=300")
    assert "ray_llm" not in ModelAccess().recorded()  # runs without it record what they always did


# -- the CLI -------------------------------------------------------------------------------------------
@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    from test_reflect import make_run, video

    return make_run(tmp_path, [video("v1", spans=[(1.0, 3.0)], duration=4.0)])


@pytest.mark.parametrize("extra, complaint", [
    (["--ray-llm", "tp=2"], "add --executor ray"),
    (["--executor", "ray", "--shards", "2"], "drop --shards"),
    (["--executor", "ray", "--ray-llm", "tp=0"], "at least 1"),
])
def test_cli_usage_errors(run_dir: Path, extra: list[str], complaint: str) -> None:
    args = ["reflect", "--run", str(run_dir), "--base", "vllm:/nowhere", "--teacher", "openai:t@http://127.0.0.1:9/v1", *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert complaint in " ".join(result.output.split())


def test_cli_ray_llm_without_a_vllm_role_is_a_usage_error(run_dir: Path) -> None:
    args = ["reflect", "--run", str(run_dir), "--base", "openai:b@http://127.0.0.1:9/v1", "--teacher", "openai:t@http://127.0.0.1:9/v1",
            "--executor", "ray", "--ray-llm", "tp=2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "no role here uses a vllm: spec" in " ".join(result.output.split())


def test_cli_opens_the_ray_llm_backend_for_vllm_roles(run_dir: Path, monkeypatch) -> None:
    """`--executor ray` with a vllm: base: the base opens the Ray Data LLM backend (which names the
    missing model directory), not the in-process engine; the run stops with exit 1 and nothing lost."""
    opened = []
    from vau_annotate.annotate.backends import ray_llm_backend

    real_create = ray_llm_backend.create

    def spy(spec, options, **kwargs):
        opened.append((spec.model, options.tensor_parallel, kwargs.get("address")))
        return real_create(spec, options, **kwargs)

    monkeypatch.setattr(ray_llm_backend, "create", spy)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    args = ["reflect", "--run", str(run_dir), "--base", "vllm:/nowhere/model", "--teacher", "openai:t@http://127.0.0.1:9/v1",
            "--executor", "ray", "--ray-address", "auto", "--ray-llm", "tp=2"]
    result = CliRunner().invoke(app, args)
    assert opened == [("/nowhere/model", 2, "auto")]
    assert result.exit_code == 1 and "/nowhere/model" in result.output
