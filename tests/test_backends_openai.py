"""openai: backend through the real openai SDK against a loopback OpenAI-protocol peer."""

from __future__ import annotations

import base64
import logging
import threading
import time
from typing import Any

import pytest
from hosted_calls import ask, run, run_serially
from peers import Fault, OpenAIPeer, Reply, tiny_jpeg
from peers.openai_server import content_parts

from vau_annotate.annotate.backends import (
    BackendError,
    ErrorClass,
    ImagePart,
    Result,
    SamplingParams,
    VideoPart,
    load_backend,
)

KEY = "sk-test-SECRET0123456789abcdef"
FRAMES = tuple(tiny_jpeg(40 * i) for i in range(5))
VIDEO = VideoPart(frames=FRAMES, timestamps=(0.0, 0.5, 1.0, 1.5, 2.0), fps=2.0)


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


@pytest.fixture
def peer() -> Any:
    with OpenAIPeer() as server:
        yield server


def backend_for(peer: OpenAIPeer, **options: Any) -> Any:
    return load_backend(f"openai:tiny-vl@{peer.base_url}", **options)


def test_text_call_maps_answer_usage_and_latency(peer: OpenAIPeer) -> None:
    peer.script.push(Reply("a short answer", finish_reason="length", input_tokens=42, output_tokens=7))
    [result] = run(backend_for(peer), ask("describe", params=SamplingParams(max_tokens=33, temperature=0.2, seed=5, stop=("</answer>",))))
    assert isinstance(result, Result)
    assert (result.text, result.finish_reason, result.input_tokens, result.output_tokens) == ("a short answer", "length", 42, 7)
    assert 0 < result.latency_s < 5
    sent = peer.script.last
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    body = sent.body
    assert body["model"] == "tiny-vl"
    assert body["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "describe"}]
    assert (body["max_tokens"], body["temperature"], body["seed"], body["stop"]) == (33, 0.2, 5, ["</answer>"])
    assert "media_io_kwargs" not in body


def test_image_is_sent_as_data_url(peer: OpenAIPeer) -> None:
    image = tiny_jpeg(7)
    [result] = run(backend_for(peer), ask("what is this?", ImagePart(image)))
    assert isinstance(result, Result)
    parts = content_parts(peer.script.last)
    image_parts = [p for p in parts if p["type"] == "image_url"]
    assert len(image_parts) == 1
    prefix, payload = image_parts[0]["image_url"]["url"].split(",", 1)
    assert prefix == "data:image/jpeg;base64"
    assert base64.b64decode(payload) == image
    assert parts[-1] == {"type": "text", "text": "what is this?"}


def test_video_as_one_video_url_with_every_frame_and_the_fps(peer: OpenAIPeer) -> None:
    [result] = run(backend_for(peer), ask("what happens?", VIDEO))
    assert isinstance(result, Result)
    body = peer.script.last.body
    [video] = [p for p in content_parts(peer.script.last) if p["type"] == "video_url"]
    prefix, payload = video["video_url"]["url"].split(",", 1)
    assert prefix == "data:video/jpeg;base64"
    assert [base64.b64decode(f) for f in payload.split(",")] == list(FRAMES)
    assert body["media_io_kwargs"] == {"video": {"fps": 2.0, "num_frames": -1}}


def test_video_as_timestamped_images(peer: OpenAIPeer) -> None:
    [result] = run(backend_for(peer, video_mode="images"), ask("what happens?", VIDEO))
    assert isinstance(result, Result)
    parts = content_parts(peer.script.last)[1:]  # after the system prompt
    images = [p for p in parts if p["type"] == "image_url"]
    stamps = [p["text"] for p in parts if p["type"] == "text"][:-1]
    assert [base64.b64decode(p["image_url"]["url"].split(",", 1)[1]) for p in images] == list(FRAMES)
    assert stamps == ["<0.0 seconds>", "<0.5 seconds>", "<1.0 seconds>", "<1.5 seconds>", "<2.0 seconds>"]
    assert parts[0]["type"] == "text" and parts[1]["type"] == "image_url"  # each stamp precedes its frame
    assert "media_io_kwargs" not in peer.script.last.body


FAULTS: dict[str, tuple[Fault, ErrorClass, str, float | None]] = {
    "429 Retry-After": (Fault.rate_limit(2.5), ErrorClass.RETRYABLE, "rate_limit", 2.5),
    "429 retry-after-ms": (Fault.rate_limit(retry_after_ms=1500), ErrorClass.RETRYABLE, "rate_limit", 1.5),
    "429 no header": (Fault.rate_limit(), ErrorClass.RETRYABLE, "rate_limit", None),
    "429 insufficient_quota": (Fault.of("quota"), ErrorClass.FATAL, "quota", None),
    "401 invalid key": (Fault.of("invalid_key"), ErrorClass.FATAL, "auth", None),
    "403 forbidden": (Fault.of("forbidden"), ErrorClass.FATAL, "auth", None),
    "400 data_inspection_failed": (Fault.of("moderation"), ErrorClass.PERMANENT, "moderation", None),
    "400 content_filter": (Fault.of("moderation", code="content_filter"), ErrorClass.PERMANENT, "moderation", None),
    "200 finish content_filter": (Fault.of("moderation_finish"), ErrorClass.PERMANENT, "moderation", None),
    "400 bad request": (Fault.of("bad_request"), ErrorClass.PERMANENT, "bad_request", None),
    "500": (Fault.of("server_error"), ErrorClass.RETRYABLE, "server_error", None),
    "200 not JSON": (Fault.of("malformed"), ErrorClass.RETRYABLE, "malformed", None),
    "200 truncated body": (Fault.of("truncated"), ErrorClass.RETRYABLE, "malformed", None),
    "200 no choices": (Fault.of("empty"), ErrorClass.PERMANENT, "malformed", None),
}


def test_faults_are_classified(peer: OpenAIPeer) -> None:
    """Every fault in turn on one backend (one client: building an SDK client costs ~0.2 s here)."""
    peer.script.push(*(fault for fault, *_ in FAULTS.values()))
    errors = run_serially(backend_for(peer), ask(), len(FAULTS))
    got = {name: _outcome(error) for name, error in zip(FAULTS, errors)}
    assert got == {name: tuple(expected) for name, (_, *expected) in FAULTS.items()}
    assert all(KEY not in str(e) and KEY not in repr(getattr(e, "args", "")) for e in errors)


def _outcome(error: Result | BackendError) -> tuple[Any, ...]:
    if isinstance(error, Result):
        return ("no error", error.text)
    return (error.error_class, error.code, error.retry_after)


def test_key_echoed_by_server_is_scrubbed_and_never_logged(peer: OpenAIPeer, caplog: pytest.LogCaptureFixture) -> None:
    peer.script.push(Fault.of("invalid_key"))
    with caplog.at_level(logging.DEBUG):
        backend = backend_for(peer)
        [error] = run(backend, ask())
    assert isinstance(error, BackendError)
    assert "OPENAI_API_KEY" in str(error)  # tells the user which variable to fix
    assert KEY not in str(error) and KEY not in repr(backend)
    assert all(KEY not in record.getMessage() for record in caplog.records)


def test_timeout_is_retryable_and_bounded(peer: OpenAIPeer) -> None:
    peer.script.push(Fault.hang(120.0))  # answered only after 120 s (or never: the peer stops first)
    backend = backend_for(peer, timeout=0.5)  # building the client is not part of the call
    started = time.monotonic()
    [error] = run(backend, ask())
    elapsed = time.monotonic() - started
    assert isinstance(error, BackendError)
    assert (error.error_class, error.code) == (ErrorClass.RETRYABLE, "timeout")
    assert elapsed < 60  # the timeout ended it, not the hang (no tighter bound: a loaded machine stalls)


def test_refused_connection_is_retryable() -> None:
    with OpenAIPeer() as closed:
        url = closed.base_url
    [error] = run(load_backend(f"openai:m@{url}", timeout=2.0), ask())
    assert isinstance(error, BackendError)
    assert (error.error_class, error.code) == (ErrorClass.RETRYABLE, "connection")


def test_missing_key_is_fatal_for_openai_and_a_placeholder_for_custom_servers(peer: OpenAIPeer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MY_KEY", raising=False)
    with pytest.raises(BackendError) as info:
        load_backend("openai:gpt-4o", api_key_env="MY_KEY")
    assert info.value.error_class is ErrorClass.FATAL and "MY_KEY" in str(info.value)
    [result] = run(backend_for(peer, api_key_env="MY_KEY"), ask())
    assert isinstance(result, Result)
    assert peer.script.last.headers["authorization"] == "Bearer EMPTY"


def test_rejects_unknown_video_mode(peer: OpenAIPeer) -> None:
    with pytest.raises(ValueError, match="video_mode"):
        backend_for(peer, video_mode="mp4")


def test_64_concurrent_calls_overlap(peer: OpenAIPeer) -> None:
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

def test_chat_calls_carry_the_sdks_headers_and_organization(peer: OpenAIPeer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The chat POST skips the SDK's request pipeline but not what the SDK would have sent."""
    import openai

    monkeypatch.setenv("OPENAI_ORG_ID", "org-peer-test")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj_peer_test")
    peer.script.push(Reply("ok"))
    [result] = run(backend_for(peer), ask())
    assert isinstance(result, Result) and result.text == "ok"
    headers = peer.script.last.headers
    assert headers["authorization"] == f"Bearer {KEY}"
    assert headers["openai-organization"] == "org-peer-test" and headers["openai-project"] == "proj_peer_test"
    assert headers["user-agent"] == f"AsyncOpenAI/Python {openai.__version__}"
    assert headers["content-type"] == "application/json" and headers["x-stainless-lang"] == "python"
    assert peer.script.last.path == "/v1/chat/completions"


def test_one_backend_serves_successive_event_loops(peer: OpenAIPeer) -> None:
    """Pipelines call asyncio.run more than once on one backend: each loop gets its own session."""
    import asyncio

    backend = backend_for(peer)
    peer.script.push(Reply("first"), Reply("second"))
    first = asyncio.run(backend.generate(ask("one")))
    second = asyncio.run(backend.generate(ask("two")))
    asyncio.run(backend.aclose())
    assert (first.text, second.text) == ("first", "second")


def test_environment_proxy_is_used_and_no_proxy_bypasses_it(peer: OpenAIPeer, monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY is honoured as the SDK's httpx honours it (read once, not per request)."""
    from vau_annotate.annotate.backends.openai_http import env_proxy

    monkeypatch.setenv("HTTP_PROXY", peer.base_url.rsplit("/v1", 1)[0])
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    # nothing listens at 127.0.0.2:9: only a request through the proxy (the peer) can be answered
    peer.script.push(Reply("via the proxy"))
    [answer] = run(load_backend("openai:m@http://127.0.0.2:9/v1", timeout=5.0), ask())
    assert isinstance(answer, Result) and answer.text == "via the proxy"
    assert peer.script.last.target == "http://127.0.0.2:9/v1/chat/completions"  # absolute form: a proxy request
    monkeypatch.setenv("NO_PROXY", "127.0.0.2")
    assert env_proxy("http://127.0.0.2:9/v1/chat/completions") is None


@pytest.mark.parametrize(("status", "body", "expected"), [
    (502, b"<html>Bad Gateway</html>", (ErrorClass.RETRYABLE, "server_error", "openai 502: <html>Bad Gateway</html>")),
    (429, b'{"error": {"message": "quota gone", "type": "insufficient_quota", "code": null}}',
     (ErrorClass.FATAL, "quota", "openai 429: quota gone")),
    (400, b'{"message": "flat body", "code": "data_inspection_failed"}',
     (ErrorClass.PERMANENT, "moderation", "openai 400 data_inspection_failed: flat body")),
    (401, b'{"error": "Incorrect API key provided: sk-test-SECRET0123456789abcdef"}',
     (ErrorClass.FATAL, "auth", "openai 401: Incorrect API key provided: *** (check $OPENAI_API_KEY)")),
])
def test_error_bodies_of_every_shape_are_classified_like_the_sdk(status: int, body: bytes, expected: tuple[Any, ...]) -> None:
    """A proxy's HTML page, OpenAI's envelope with a null code, a flat body, a bare string."""
    from vau_annotate.annotate.backends.openai_http import ChatPoster

    poster = ChatPoster("http://127.0.0.1:9/v1", {}, connect_timeout=1.0, secret=KEY, api_key_env="OPENAI_API_KEY")
    error = poster._status_error(status, body, {})
    error_class, code, text = expected
    assert (error.error_class, error.code, error.status, str(error)) == (error_class, code, status, text)
