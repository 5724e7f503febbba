"""Run directory conventions, schemas, prompt loading and the resumable stage runner."""

import asyncio
import json

import pytest
from pydantic import BaseModel, ValidationError

from vau_annotate.annotate.rundir import RunDir
from vau_annotate.pipelines.runner import Accepted, Rejected, StageRunner, StageStore
from vau_annotate.prompts import PromptError, load_prompt
from vau_annotate.schemas import MCQ, Span, VideoRecord


def make_record(**kw) -> VideoRecord:
    base = dict(id="v1", path="v1.mp4", source="folder", label="abnormal", category="Fighting", spans=[Span(start=1, end=2)], span_known=True, duration=10.0)
    base.update(kw)
    return VideoRecord(**base)


def test_manifest_roundtrip(tmp_path):
    run = RunDir(tmp_path / "run")
    records = [
        make_record(mcqs=[MCQ(question="q?", options=["a", "b", "c", "d"], answer="C")], reasoning={"Location": "outdoor"}),
        make_record(id="v2", path="v2.mp4", label="normal", category="Normal", spans=[], span_known=False, duration=None),
    ]
    run.save_manifest(records)
    assert run.load_manifest() == records


def test_record_validation_is_readable():
    with pytest.raises(ValidationError, match="ends after the video"):
        make_record(spans=[Span(start=1, end=30)], duration=10.0)
    with pytest.raises(ValidationError, match="normal video cannot have abnormal spans"):
        make_record(label="normal")
    with pytest.raises(ValidationError, match="not after start"):
        Span(start=5, end=2)
    assert Span(start=2.5, end=5).normalised(10.0) == (0.25, 0.5)


def test_rejects_append_and_clear(tmp_path):
    run = RunDir(tmp_path)
    run.add_reject("a", "ingest", "missing video: a.mp4", row=3)
    run.add_reject("b", "sample", "corrupt video: moov atom not found")
    assert run.reject_summary() == {("ingest", "missing video"): 1, ("sample", "corrupt video"): 1}
    run.clear_rejects("ingest")
    assert [r.item for r in run.load_rejects()] == ["b"]


def test_prompt_renders_guidelines_and_hash_changes(tmp_path, monkeypatch):
    from vau_annotate import prompts

    (tmp_path / "_guidelines.txt").write_text("BE NEUTRAL")
    (tmp_path / "demo.txt").write_text("Describe $what.\n$guidelines\nCost: $$5")
    monkeypatch.setattr(prompts, "PROMPT_DIR", tmp_path)
    prompts.load_prompt.cache_clear()
    prompts.load_fragment.cache_clear()
    try:
        prompt = load_prompt("demo")
        assert prompt.render(what="the scene") == "Describe the scene.\nBE NEUTRAL\nCost: $5"
        assert prompt.variables == {"what"}
        first = prompt.hash
        with pytest.raises(PromptError, match=r"\$what"):
            prompt.render()
        (tmp_path / "_guidelines.txt").write_text("BE NEUTRAL AND OBJECTIVE")
        prompts.load_prompt.cache_clear()
        prompts.load_fragment.cache_clear()
        assert load_prompt("demo").hash != first
        with pytest.raises(PromptError, match="no prompt named"):
            load_prompt("nope")
    finally:
        prompts.load_prompt.cache_clear()
        prompts.load_fragment.cache_clear()


class Rec(BaseModel):
    item: str


def test_stage_runner_writes_each_item_once_and_resumes(tmp_path):
    run = RunDir(tmp_path)
    store = StageStore(run, "demo")
    seen: list[str] = []

    async def process(item: str):
        seen.append(item)
        if item == "bad":
            return Rejected("failed gates: structure", {"structure": "missing <answer>"})
        return Accepted(Rec(item=item), repaired=item == "fixed")

    items = [(name, name) for name in ("a", "bad", "fixed", "b")]
    counts = asyncio.run(StageRunner(store, concurrency=2, show_progress=False).run(items, process))
    assert (counts.accepted, counts.repaired, counts.rejected, counts.skipped) == (3, 1, 1, 0)
    assert sorted(r.item for r in store.accepted(Rec)) == ["a", "b", "fixed"]
    assert [(r.item, r.reason) for r in run.load_rejects()] == [("bad", "failed gates: structure")]
    seen.clear()
    counts = asyncio.run(StageRunner(store, show_progress=False).run(items, process))
    assert seen == [] and counts.skipped == 4
    assert store.forget_rejects() == 1
    asyncio.run(StageRunner(store, show_progress=False).run(items, process))
    assert seen == ["bad"]
    assert len(run.load_rejects()) == 1
    json.loads(store.rejected_path("bad").read_text())


def test_schema_command_prints_json_schema():
    from typer.testing import CliRunner

    from vau_annotate.cli import app

    result = CliRunner().invoke(app, ["schema", "video"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert "span_known" in schema["properties"]
    assert CliRunner().invoke(app, ["schema", "nope"]).exit_code == 2
