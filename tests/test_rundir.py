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


# -- issue 9: transient failures stay pending, rejects are atomic, the exit status is the run's state ---

from vau_annotate.annotate.backends.base import BackendError, ErrorClass, Message, Request, Result  # noqa: E402
from vau_annotate.annotate.engine import Engine, RunStopped  # noqa: E402
from vau_annotate.annotate.ledger import Ledger  # noqa: E402
from vau_annotate.pipelines.summary import StageSummary  # noqa: E402


class Outage:
    """A backend that answers 500 for the prompts in `down` (all attempts), and answers the rest."""

    provider, model = "fake", "m"

    def __init__(self, down: set[str]) -> None:
        self.down = down
        self.calls: list[str] = []

    async def generate(self, request: Request) -> Result:
        text = request.messages[0].parts[0].text
        self.calls.append(text)
        if text in self.down:
            raise BackendError("internal error", ErrorClass.RETRYABLE, code="500", status=500)
        if text == "refuse":
            raise BackendError("refused", ErrorClass.PERMANENT, code="content_filter", status=400)
        return Result(f"ok {text}", "stop", 10, 2, 0.0)

    async def aclose(self) -> None:
        return None


def stage_run(run: RunDir, backend: Outage, items: list[str]) -> tuple[StageSummary, Engine]:
    """A stage whose item function is shaped like build-cot's: a failed call becomes a reject."""
    ledger = Ledger(run.ledger_path)
    engine = Engine(backend, ledger, stage="demo:model", max_attempts=2, base_delay=0.001)

    async def process(item: str):
        try:
            result = await engine.call(item, Request(messages=(Message.text("user", item),), prompt_name="p", prompt_hash="h"))
        except BackendError as exc:
            return Rejected(f"model refused: {exc.code}", {"code": exc.code})
        return Accepted(Rec(item=result.text))

    runner = StageRunner(StageStore(run, "demo"), concurrency=2, usage=lambda: {"calls": engine.usage.calls, "cache_hits": engine.usage.cache_hits,
                                                                             "input_tokens": 0, "output_tokens": 0, "cost": 0.0}, show_progress=False)
    counts = asyncio.run(runner.run([(i, i) for i in items], process))
    ledger.close()
    summary = StageSummary("demo")
    summary.add_run_counts(counts)
    return summary, engine


def test_an_outage_leaves_items_pending_and_a_plain_rerun_finishes_them(tmp_path):
    run = RunDir(tmp_path)
    backend = Outage(down={"b"})
    summary, _ = stage_run(run, backend, ["a", "b"])
    assert summary.counts["accepted"] == 1 and summary.counts["rejected"] == 0 and summary.counts["pending (transient failure)"] == 1
    assert summary.exit_code == 3 and not run.load_rejects() and not StageStore(run, "demo").is_done("b")
    assert any("run the same command again" in note and "500" in note for note in summary.notes)
    backend.down.clear()  # the provider is back
    again, _ = stage_run(run, backend, ["a", "b"])
    assert again.counts["accepted"] == 1 and again.counts["already done"] == 1 and again.exit_code == 0
    assert backend.calls.count("b") == 3  # 2 attempts in the outage, 1 on the re-run; "a" was never asked again
    assert sorted(r.item for r in StageStore(run, "demo").accepted(Rec)) == ["ok a", "ok b"]


def test_rejects_of_an_earlier_run_keep_the_exit_status_partial_and_are_counted_apart(tmp_path):
    run = RunDir(tmp_path)
    first, engine = stage_run(run, Outage(down=set()), ["a", "refuse"])
    assert first.counts["rejected"] == 1 and first.exit_code == 3 and first.counts["calls made"] == 2
    again, _ = stage_run(run, Outage(down=set()), ["a", "refuse"])
    assert again.counts["rejected"] == 0 and again.counts["rejected earlier"] == 1 and again.rejected == 1
    assert again.exit_code == 3 and again.counts["calls made"] == 0
    assert any("earlier run" in note for note in again.notes)
    only_a, _ = stage_run(run, Outage(down=set()), ["a"])  # the reject is out of scope
    assert only_a.exit_code == 0 and only_a.counts["rejected earlier"] == 0


def test_a_reject_is_one_ledger_commit_and_rejects_jsonl_is_rendered_from_it(tmp_path):
    """A kill after the commit but before the jsonl line: the item is still rejected, and the line comes back."""
    run = RunDir(tmp_path)
    stage_run(run, Outage(down=set()), ["refuse", "a"])
    lines = run.rejects_path.read_text().splitlines()
    assert [json.loads(line)["item"] for line in lines] == ["refuse"]
    run.rejects_path.write_text("")  # the append was lost
    (tmp_path / "demo" / "refuse.rejected.json").unlink()  # and so was the marker copy
    with Ledger(run.ledger_path) as ledger:
        assert ledger.item_status("demo", "refuse") == "rejected" and ledger.rejected_items("demo") == {"refuse"}
    backend = Outage(down=set())
    again, _ = stage_run(RunDir(tmp_path), backend, ["refuse", "a"])
    assert backend.calls == [] and again.counts["rejected earlier"] == 1  # skipped: the ledger says it is done
    assert [json.loads(line)["reason"] for line in run.rejects_path.read_text().splitlines()] == ["model refused: content_filter"]
    assert (tmp_path / "demo" / "refuse.rejected.json").exists()


def test_rejects_from_an_older_rejects_jsonl_are_imported_once(tmp_path):
    (tmp_path / "rejects.jsonl").write_text(json.dumps({"item": "v1", "stage": "demo", "reason": "failed gates: structure", "detail": {"x": 1}}) + "\n")
    run = RunDir(tmp_path)
    assert StageStore(run, "demo").is_done("v1")
    (r,) = run.load_rejects()
    assert (r.item, r.reason, r.detail) == ("v1", "failed gates: structure", {"x": 1})
    run.clear_rejects("demo")
    assert RunDir(tmp_path).load_rejects() == [] and run.rejects_path.read_text() == ""


def test_a_fatal_answer_under_the_stage_runner_records_every_call_in_flight(tmp_path):
    run = RunDir(tmp_path)

    class Keyless(Outage):
        async def generate(self, request: Request) -> Result:
            self.calls.append(request.messages[0].parts[0].text)
            await asyncio.sleep(0.02 * len(self.calls))
            raise BackendError("invalid api key", ErrorClass.FATAL, code="invalid_api_key", status=401)

    ledger = Ledger(run.ledger_path)
    engine = Engine(Keyless(set()), ledger, stage="demo:model", concurrency=4)

    async def process(item: str):
        await engine.call(item, Request(messages=(Message.text("user", item),)))
        return Accepted(Rec(item=item))

    runner = StageRunner(StageStore(run, "demo"), concurrency=4, show_progress=False, grace_s=5.0)
    with pytest.raises(RunStopped):
        asyncio.run(runner.run([(i, i) for i in "abcd"], process))
    (row,) = ledger.usage_summary()
    ledger.close()
    assert row["failed_attempts"] == 4 and row["requests"] == 4 and not run.load_rejects()


def test_an_item_may_hold_rejects_of_several_samplings_and_clearing_one_keeps_the_other(tmp_path):
    run = RunDir(tmp_path)
    run.add_reject("v1", "sample", "decode failed: frame 3", policy="uniform:16", max_pixels=100)
    run.add_reject("v1", "sample", "decode failed: frame 9", policy="fps:1", max_pixels=100)
    run.clear_rejects("sample", {"v1"}, detail={"policy": "uniform:16", "max_pixels": 100})
    assert [(r.item, r.detail["policy"]) for r in run.load_rejects()] == [("v1", "fps:1")]
    assert run.rejected_items("sample") == {"v1"} and len(run.rejects_path.read_text().splitlines()) == 1
    run.clear_rejects("sample", {"v1"})
    assert run.rejected_items("sample") == set() and run.rejects_path.read_text() == ""
    with Ledger(run.ledger_path) as ledger:
        assert ledger.item_status("sample", "v1") is None


def test_status_shows_items_left_pending_and_why_until_they_are_done(tmp_path):
    from vau_annotate.pipelines.status import collect_status

    run = RunDir(tmp_path)
    backend = Outage(down={"b"})
    stage_run(run, backend, ["a", "b", "refuse"])
    report = collect_status(tmp_path)
    assert report["item_stages"]["demo"] == {"accepted": 1, "pending": 1, "rejected": 1}
    with Ledger(run.ledger_path) as ledger:
        assert ledger.conn.execute("SELECT detail FROM items WHERE item = 'b'").fetchone()[0].startswith("500: internal error")
    backend.down.clear()
    stage_run(run, backend, ["a", "b", "refuse"])
    assert collect_status(tmp_path)["item_stages"]["demo"] == {"accepted": 2, "rejected": 1}
