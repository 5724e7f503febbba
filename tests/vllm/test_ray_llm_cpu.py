"""Ray Data LLM for real on CPU: `vllm:` roles under `--executor ray`, on a local Ray cluster, with
vLLM's CPU build and the offline tiny Qwen2.5-VL (Ray's vLLM stage, our rows, our ledger).

Runs only with `make test-vllm` (VAU_VLLM_TEST=1; its environment holds vllm-cpu and `ray[data]`).
The model's words are noise, so the checks are about structure and parity: the Ray path must see
the prompt, frames and fps the in-process engine sees (same greedy answer, two fps), a failed row
must become the right error, dependent calls must go in successive rounds, and the ledger must
answer a resumed call without another round.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

if os.environ.get("VAU_VLLM_TEST") != "1":
    pytest.skip("vLLM tests run with `make test-vllm` (VAU_VLLM_TEST=1)", allow_module_level=True)
pytest.importorskip("vllm")
pytest.importorskip("ray.data.llm")

from peers import OpenAIPeer, Script  # noqa: E402
from test_reflect import TEACHER, make_run, teacher_perceives, video  # noqa: E402
from test_vllm_cpu import IMAGES, SLOW_VIDEO, VIDEO, ask, check, engine, expected_prompt_tokens  # noqa: E402,F401 (engine: the in-process fixture)
from typer.testing import CliRunner  # noqa: E402

from vau_annotate.annotate.backends import BackendError, ErrorClass, ModelSpec, Result, TextPart, VideoPart  # noqa: E402
from vau_annotate.annotate.backends.ray_llm_backend import RayLLMBackend, create  # noqa: E402
from vau_annotate.annotate.backends.ray_llm_rows import RayLLMOptions  # noqa: E402
from vau_annotate.annotate.engine import Engine  # noqa: E402
from vau_annotate.annotate.ledger import Ledger, call_key  # noqa: E402
from vau_annotate.annotate.rundir import RunDir  # noqa: E402
from vau_annotate.cli import app  # noqa: E402
from vau_annotate.pipelines.runner import StageStore  # noqa: E402
from vau_annotate.schemas.reflection import ReflectionRecord  # noqa: E402

# fp32 + eager like the in-process fixture, so greedy answers compare token for token; a 256 MB KV cache
RAY_LLM = "device=cpu,dtype=float32,eager=1,max-len=4096,kv-cache-gb=0.25,batch=4,gather=0.5"
pytestmark = pytest.mark.timeout(1800)

BAD_FRAMES = ask(VideoPart(frames=(b"not a jpeg", b"nor this"), timestamps=(0.0, 0.5), fps=2.0), TextPart("What happens?"))


def test_reflect_base_role_runs_through_ray_data_llm_from_the_cli(tiny_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """`reflect --executor ray`: the base (vllm:) answers through Ray Data LLM, the teacher through
    the loopback OpenAI peer; records pass the gates and the ledger holds the base's calls under the
    in-process backend's key (provider vllm, the spec's model)."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    rounds: list[int] = []  # rows of every Ray Data job the command ran
    run_round = RayLLMBackend.run_round
    monkeypatch.setattr(RayLLMBackend, "run_round", lambda self, requests: rounds.append(len(requests)) or run_round(self, requests))
    v1 = video("v1", spans=[(1.0, 3.0)], duration=4.0, questions=[f"[q{i}] What happens in the video?" for i in range(2)])
    run = make_run(tmp_path, [v1])
    with OpenAIPeer(Script(default=teacher_perceives)) as teacher:
        args = ["reflect", "--run", str(run), "--base", f"vllm:{tiny_model_dir}", "--teacher", f"openai:{TEACHER}@{teacher.base_url}",
                "--max-pixels", str(28 * 28 * 4), "--max-frames", "8", "--base-max-tokens", "16", "--executor", "ray", "--ray-llm", RAY_LLM]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output[-3000:]
        teacher_calls = teacher.script.calls
    records = StageStore(RunDir(run), "reflect").accepted(ReflectionRecord)
    assert len(records) == 3
    assert all(r.provenance.usage["base"].input_tokens > 0 and r.initial.text for r in records)
    assert teacher_calls >= 3
    assert sum(rounds) == 3  # the three base calls went through Ray Data LLM, not an in-process engine
    with closing(sqlite3.connect(run / "ledger.sqlite")) as db:
        rows = db.execute("SELECT provider, model, COUNT(*) FROM calls WHERE text IS NOT NULL GROUP BY provider, model").fetchall()
    assert ("vllm", str(tiny_model_dir), 3) in [tuple(row) for row in rows]
    stage = RunDir(run).load_meta().stages[-1]
    assert stage.options["ray_llm"].startswith("tp=1,pp=1,replicas=1,batch=4")


def test_rounds_errors_ledger_and_parity_with_the_in_process_engine(tiny_model_dir: Path, tmp_path: Path, engine) -> None:  # noqa: F811
    backend = create(ModelSpec.parse(f"vllm:{tiny_model_dir}"), RayLLMOptions.parse(RAY_LLM))
    assert isinstance(backend, RayLLMBackend)

    async def scenario() -> tuple[list, Result, list]:
        ledger = Ledger(tmp_path / "ledger.sqlite")
        try:
            async with Engine(backend, ledger, stage="test:base", concurrency=64) as calls:
                outcomes = await asyncio.gather(*(calls.outcome(f"i{i}", r) for i, r in enumerate((VIDEO, SLOW_VIDEO, IMAGES, BAD_FRAMES))))
                first = [o.result or o.error for o in outcomes]
                # a call that depends on an answer can only go in the next round
                follow_up = await calls.call("i0", ask(TextPart(f"You said: {first[0].text}. Why?")))
                rounds_before = list(backend.rounds)
            # resume: a new engine over the same ledger answers from it, with no round
            async with Engine(backend, ledger, stage="test:base", concurrency=4) as again:
                resumed = [await again.call("i0", VIDEO), again.key(VIDEO)]
            return first, follow_up, [rounds_before, list(backend.rounds), *resumed]
        finally:
            ledger.close()
            await backend.aclose()

    first, follow_up, (rounds_before, rounds_after, resumed, key) = asyncio.run(scenario())
    video_answer, slow_answer, images_answer, bad = first
    for answer in (video_answer, slow_answer, images_answer, follow_up):
        check(answer)
    assert rounds_before == [4, 1]  # four concurrent requests in one round, the dependent one in the next
    assert rounds_after == rounds_before and resumed.text == video_answer.text
    assert key == call_key("vllm", str(tiny_model_dir), VIDEO)  # the in-process vllm: backend's ledger key
    assert isinstance(bad, BackendError) and bad.error_class is ErrorClass.PERMANENT and bad.code == "bad_media"
    # every frame and image reached the engine: the HF processor's token count
    assert video_answer.input_tokens == expected_prompt_tokens(tiny_model_dir, VIDEO)
    assert images_answer.input_tokens == expected_prompt_tokens(tiny_model_dir, IMAGES)
    # same prompt, frames and fps as the in-process engine: the same greedy answers, for two fps
    local_video, local_slow = (asyncio.run(engine.generate_batch([r]))[0] for r in (VIDEO, SLOW_VIDEO))
    assert video_answer.text == local_video.text and slow_answer.text == local_slow.text
    assert video_answer.text != slow_answer.text  # the fps moved the video's temporal positions
