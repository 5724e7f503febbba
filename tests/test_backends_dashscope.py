"""dashscope: backend through the real dashscope SDK against a loopback DashScope-protocol peer."""

from __future__ import annotations

import base64
import logging
import threading
import time
from pathlib import Path
from typing import Any

import dashscope
import pytest
from hosted_calls import ask, run, run_serially
from peers import DashScopePeer, Fault, Reply, tiny_jpeg
from peers.dashscope_server import MULTIMODAL_PATH, TEXT_PATH, content_items

from vau_annotate.annotate.backends import (
    BackendError,
    ErrorClass,
    ImagePart,
    Result,
    SamplingParams,
    VideoPart,
    load_backend,
)
from vau_annotate.annotate.backends.dashscope_backend import api_base, is_vision_model

KEY = "sk-ds-SECRET0123456789abcdef"
FRAMES = tuple(tiny_jpeg(50 * i) for i in range(4))
VIDEO = VideoPart(frames=FRAMES, timestamps=(1.0, 1.5, 2.0, 2.5), fps=2.0)


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)


@pytest.fixture
def peer() -> Any:
    with DashScopePeer() as server:
        yield server


def backend_for(peer: DashScopePeer, model: str = "qwen-plus", **options: Any) -> Any:
    return load_backend(f"dashscope:{model}@{peer.base_url}", **options)


def decode(uri: str) -> bytes:
    prefix, payload = uri.split(",", 1)
    assert prefix == "data:image/jpeg;base64"
    return base64.b64decode(payload)


def test_text_only_uses_text_generation(peer: DashScopePeer) -> None:
    peer.script.push(Reply("a short answer", finish_reason="length", input_tokens=42, output_tokens=7))
    params = SamplingParams(max_tokens=33, temperature=0.2, seed=5, stop=("</answer>",))
    [result] = run(backend_for(peer), ask("describe", params=params))
    assert isinstance(result, Result)
    assert (result.text, result.finish_reason, result.input_tokens, result.output_tokens) == ("a short answer", "length", 42, 7)
    assert 0 < result.latency_s < 5
    sent = peer.script.last
    assert sent.path == TEXT_PATH
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.body["model"] == "qwen-plus"
    assert sent.body["input"]["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "describe"}]
    sent_params = sent.body["parameters"]
    assert (sent_params["max_tokens"], sent_params["temperature"], sent_params["seed"], sent_params["stop"]) == (33, 0.2, 5, ["</answer>"])
    assert sent_params["result_format"] == "message"


def test_image_and_video_use_multimodal_with_inline_frames_and_fps(peer: DashScopePeer) -> None:
    image = tiny_jpeg(9)
    peer.script.push(Reply("a person falls"))
    [result] = run(backend_for(peer, model="qwen-vl-max"), ask("what happens?", ImagePart(image), VIDEO))
    assert isinstance(result, Result) and result.text == "a person falls"
    sent = peer.script.last
    assert sent.path == MULTIMODAL_PATH
    items = content_items(sent)
    assert items[0] == {"text": "be brief"}
    assert decode(items[1]["image"]) == image
    assert [decode(uri) for uri in items[2]["video"]] == list(FRAMES)
    assert items[2]["fps"] == 2.0
    assert items[3] == {"text": "what happens?"}
    assert "x-dashscope-ossresourceresolve" not in sent.headers  # nothing was uploaded


def test_vision_model_gets_multimodal_even_for_text(peer: DashScopePeer) -> None:
    [result] = run(backend_for(peer, model="qwen2.5-vl-72b-instruct"), ask("hi"))
    assert isinstance(result, Result)
    assert peer.script.last.path == MULTIMODAL_PATH
    assert is_vision_model("qvq-max") and is_vision_model("qwen-omni-turbo") and not is_vision_model("qwen-plus")


def test_text_naming_a_local_file_is_not_uploaded(peer: DashScopePeer, tmp_path: Path) -> None:
    secret_file = tmp_path / "notes.txt"
    secret_file.write_text("private")
    [result] = run(backend_for(peer, model="qwen-vl-plus"), ask(str(secret_file), ImagePart(tiny_jpeg())))
    assert isinstance(result, Result), result  # an upload attempt would have failed against the peer
    assert content_items(peer.script.last)[-1]["text"].strip() == str(secret_file)


FAULTS: dict[str, tuple[Fault, ErrorClass, str, float | None]] = {
    "429 Throttling.RateQuota + Retry-After": (Fault.rate_limit(3), ErrorClass.RETRYABLE, "rate_limit", 3.0),
    "429 Throttling.AllocationQuota": (Fault.rate_limit(code="Throttling.AllocationQuota"), ErrorClass.RETRYABLE, "rate_limit", None),
    "400 Arrearage": (Fault.of("quota"), ErrorClass.FATAL, "quota", None),
    "403 AllocationQuota.FreeTierOnly": (Fault.of("forbidden", code="AllocationQuota.FreeTierOnly"), ErrorClass.FATAL, "quota", None),
    "401 InvalidApiKey": (Fault.of("invalid_key"), ErrorClass.FATAL, "auth", None),
    "403 AccessDenied.Unpurchased": (Fault.of("forbidden"), ErrorClass.FATAL, "forbidden", None),
    "400 DataInspectionFailed": (Fault.of("moderation"), ErrorClass.PERMANENT, "moderation", None),
    "400 data_inspection_failed": (Fault.of("moderation", code="data_inspection_failed"), ErrorClass.PERMANENT, "moderation", None),
    "400 InvalidParameter": (Fault.of("bad_request"), ErrorClass.PERMANENT, "bad_request", None),
    "500 InternalError": (Fault.of("server_error"), ErrorClass.RETRYABLE, "server_error", None),
    "200 not JSON": (Fault.of("malformed"), ErrorClass.RETRYABLE, "malformed", None),
    "200 truncated body": (Fault.of("truncated"), ErrorClass.RETRYABLE, "malformed", None),
    "200 no choices": (Fault.of("empty"), ErrorClass.PERMANENT, "malformed", None),
    "200 finish content_filter": (Fault.of("moderation_finish"), ErrorClass.PERMANENT, "moderation", None),
}


def test_faults_are_classified(peer: DashScopePeer, capsys: pytest.CaptureFixture[str]) -> None:
    peer.script.push(*(fault for fault, *_ in FAULTS.values()))
    errors = run_serially(backend_for(peer), ask(), len(FAULTS))
    got = {name: _outcome(error) for name, error in zip(FAULTS, errors)}
    assert got == {name: tuple(expected) for name, (_, *expected) in FAULTS.items()}
    assert all(KEY not in str(e) for e in errors)
    assert "Request failed" not in capsys.readouterr().err  # the SDK's traceback logging is silenced


def _outcome(error: Result | BackendError) -> tuple[Any, ...]:
    if isinstance(error, Result):
        return ("no error", error.text)
    return (error.error_class, error.code, error.retry_after)


def test_key_echoed_by_server_is_scrubbed_and_never_logged(peer: DashScopePeer, caplog: pytest.LogCaptureFixture) -> None:
    peer.script.push(Fault.of("invalid_key"))
    with caplog.at_level(logging.DEBUG):
        backend = backend_for(peer)
        [error] = run(backend, ask())
    assert isinstance(error, BackendError)
    assert "DASHSCOPE_API_KEY" in str(error)
    assert KEY not in str(error) and KEY not in repr(backend)
    assert all(KEY not in record.getMessage() for record in caplog.records)


def test_timeout_is_retryable_and_bounded(peer: DashScopePeer) -> None:
    peer.script.push(Fault.hang(120.0))  # answered only after 120 s (or never: the peer stops first)
    started = time.monotonic()
    [error] = run(backend_for(peer, timeout=0.5), ask())
    elapsed = time.monotonic() - started
    assert isinstance(error, BackendError)
    assert (error.error_class, error.code) == (ErrorClass.RETRYABLE, "timeout")
    assert elapsed < 60  # the timeout ended it, not the hang (no tighter bound: a loaded machine stalls)


def test_refused_connection_is_retryable() -> None:
    with DashScopePeer() as closed:
        url = closed.base_url
    [error] = run(load_backend(f"dashscope:qwen-plus@{url}", timeout=2.0), ask())
    assert isinstance(error, BackendError)
    assert (error.error_class, error.code) == (ErrorClass.RETRYABLE, "connection")


def test_sdk_globals_stay_untouched(peer: DashScopePeer) -> None:
    before = (dashscope.base_http_api_url, dashscope.api_key)
    [result] = run(backend_for(peer), ask())
    assert isinstance(result, Result)
    assert (dashscope.base_http_api_url, dashscope.api_key) == before


def test_base_url_may_be_a_bare_host(peer: DashScopePeer) -> None:
    assert api_base(peer.root_url) == peer.base_url
    assert api_base(peer.base_url) == peer.base_url
    [result] = run(load_backend(f"dashscope:qwen-plus@{peer.root_url}"), ask())
    assert isinstance(result, Result)


def test_missing_key_is_fatal_for_dashscope_and_a_placeholder_for_custom_servers(peer: DashScopePeer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MY_DS_KEY", raising=False)
    with pytest.raises(BackendError) as info:
        load_backend("dashscope:qwen-vl-max", api_key_env="MY_DS_KEY")
    assert info.value.error_class is ErrorClass.FATAL and "MY_DS_KEY" in str(info.value)
    [result] = run(backend_for(peer, api_key_env="MY_DS_KEY"), ask())
    assert isinstance(result, Result)
    assert peer.script.last.headers["authorization"] == "Bearer EMPTY"


def test_64_concurrent_calls_overlap(peer: DashScopePeer) -> None:
    """Every answer waits until 8 requests are at the peer at once: serial calls could never pass.

    (A rendezvous instead of a wall-clock bound, which a loaded machine breaks.)
    """
    together = threading.Barrier(8, timeout=60)

    def rendezvous(received):
        together.wait()
        return Reply()

    peer.script.default = rendezvous
    results = run(backend_for(peer), *(ask(f"q{i}") for i in range(64)))
    assert all(isinstance(r, Result) for r in results)
    assert peer.script.calls == 64 and not together.broken