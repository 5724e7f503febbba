"""Options every model-backed stage shares (--prices, --retry-failed, --video-mode, --timeout)."""

from __future__ import annotations

import asyncio
import json

import pytest
from peers import Fault, OpenAIPeer, Reply, tiny_jpeg
from peers.openai_server import content_parts
from typer.testing import CliRunner

from vau_annotate.annotate.backends import BackendError, Message, Request, SamplingParams, TextPart, VideoPart
from vau_annotate.annotate.ledger import Ledger
from vau_annotate.cli import app
from vau_annotate.pipelines.models import ModelAccess, make_engine, open_backend

VIDEO = VideoPart(frames=tuple(tiny_jpeg(50 * i) for i in range(3)), timestamps=(0.0, 1.0, 2.0), fps=1.0)


def ask(text: str) -> Request:
    return Request(messages=(Message("user", (VIDEO, TextPart(text))),), params=SamplingParams(max_tokens=16))


def call(access: ModelAccess, peer: OpenAIPeer, ledger: Ledger, text: str):
    async def go():
        backend = open_backend(f"openai:judge@{peer.base_url}", access)
        engine = make_engine("test", backend, ledger, access, concurrency=2, rpm=None, tpm=None)
        try:
            return await engine.call("item", ask(text)), engine
        except BackendError as exc:
            return exc, engine
        finally:
            await engine.aclose()
            await backend.aclose()

    return asyncio.run(go())


def test_video_mode_images_sends_one_image_per_frame(tmp_path):
    with OpenAIPeer() as peer, Ledger(tmp_path / "ledger.sqlite") as ledger:
        call(ModelAccess(video_mode="images"), peer, ledger, "describe")
        parts = content_parts(peer.script.last)
        assert [p["type"] for p in parts].count("image_url") == 3
        assert not any(p["type"] == "video_url" for p in parts)
        call(ModelAccess(), peer, ledger, "describe again")
        assert [p["type"] for p in content_parts(peer.script.last)].count("video_url") == 1


def test_prices_file_prices_the_calls(tmp_path):
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"prices": {"openai:judge": {"input": 1000.0, "output": 2000.0}}}))
    with OpenAIPeer() as peer, Ledger(tmp_path / "ledger.sqlite") as ledger:
        result, engine = call(ModelAccess(prices=prices), peer, ledger, "price me")
        expected = (result.input_tokens * 1000.0 + result.output_tokens * 2000.0) / 1e6
        assert engine.usage.cost == pytest.approx(expected) and expected > 0


def test_retry_failed_calls_a_refused_item_again(tmp_path):
    with OpenAIPeer() as peer, Ledger(tmp_path / "ledger.sqlite") as ledger:
        peer.script.push(Fault.of("moderation"))
        first, _ = call(ModelAccess(), peer, ledger, "sensitive")
        assert isinstance(first, BackendError) and first.code == "moderation"
        again, _ = call(ModelAccess(), peer, ledger, "sensitive")
        assert isinstance(again, BackendError) and peer.script.calls == 1  # answered from the ledger
        peer.script.push(Reply("fine now"))
        retried, _ = call(ModelAccess(retry_failed=True), peer, ledger, "sensitive")
        assert retried.text == "fine now" and peer.script.calls == 2


@pytest.mark.parametrize(
    "extra,message",
    [(["--video-mode", "mp4"], "--video-mode must be one of"), (["--prices", "/nonexistent/prices.json"], "does not exist")],
)
def test_bad_model_options_are_usage_errors(tmp_path, extra, message):
    for command in (["build-cot", "--captioner", "mock:echo", "--reasoner", "mock:echo"], ["reflect", "--base", "mock:echo", "--teacher", "mock:echo"]):
        result = CliRunner().invoke(app, [*command, "--run", str(tmp_path), *extra])
        assert result.exit_code == 2, result.output
        assert message in result.output


def test_status_shows_calls_cache_hits_tokens_and_failures(tmp_path):
    from rich.console import Console

    from vau_annotate.pipelines.status import collect_status, render_status

    with OpenAIPeer() as peer, Ledger(tmp_path / "ledger.sqlite") as ledger:
        peer.script.push(Fault.of("moderation"))
        call(ModelAccess(), peer, ledger, "refused")
        call(ModelAccess(), peer, ledger, "answered")
        call(ModelAccess(), peer, ledger, "answered")  # from the ledger
    report = collect_status(tmp_path)
    (row,) = report["usage"]
    assert (row["requests"], row["cache_hits"], row["failed"]) == (2, 1, 1)
    console = Console(width=120, record=True)
    render_status(report, console)
    text = console.export_text()
    assert "model calls" in text and "openai:judge" in text and "permanent" in text
