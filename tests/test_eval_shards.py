"""`vau-annotate eval --shard I/N` / `--shards N`, and `merge` on an eval directory: n shards, in any
order, with a stopped one run again, give the predictions.jsonl and metrics.json of one process,
byte for byte, and pay for no call twice; bad shard specs and shards with other options are refused.

The loopback peer and its fixed replies are test_evaluate.py's and test_evaluate_csv.py's: they
answer by which video and which prompt a request shows, never from the ground truth.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import test_evaluate_csv as csv_case
from eval_fixtures import write_exported
from peers import Fault, OpenAIPeer, Received, Script
from test_evaluate import dataset_rows, respond
from typer.testing import CliRunner

from vau_annotate.annotate.shards import shard_of
from vau_annotate.cli import app

VIDEOS = ("v1", "v2", "v3", "v4", "v5", "v6")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_exported(tmp_path_factory.mktemp("exported"), dataset_rows())


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-eval-shards-secret")


class Switchable:
    """The test_evaluate peer's replies, or (while `stop` is set) an invalid-key error that stops a run."""

    def __init__(self) -> None:
        self.stop = False

    def __call__(self, received: Received):
        return Fault.of("invalid_key") if self.stop else respond(received)


def evaluate(dataset: Path, out: Path, peer: OpenAIPeer, *extra: str):
    return CliRunner().invoke(app, ["eval", "--data", str(dataset), "--model", f"openai:m@{peer.base_url}", "--judge",
                                    f"openai:judge@{peer.base_url}", "--out", str(out), "--concurrency", "4", *extra])


def merge(out: Path):
    return CliRunner().invoke(app, ["merge", "--run", str(out)])


def test_shard_assignment_of_the_test_videos() -> None:
    """The split below depends on it: every one of 3 shards gets videos, so each really runs."""
    assert {v: shard_of(v, 3) for v in VIDEOS} == {"v1": 0, "v3": 1, "v5": 1, "v2": 2, "v4": 2, "v6": 2}


def test_three_shards_with_a_stopped_one_equal_one_process(dataset, tmp_path) -> None:
    one, three = tmp_path / "one", tmp_path / "three"
    script = Switchable()
    with OpenAIPeer(Script(default=script)) as peer:
        single = evaluate(dataset, one, peer)
        assert single.exit_code == 3, single.output  # v3's VAU-Eval reply is unreadable twice: partial
        one_calls = peer.script.calls

        start = peer.script.calls
        assert evaluate(dataset, three, peer, "--shard", "2/3").exit_code in (0, 3)
        script.stop = True  # shard 0 is stopped by the provider half-way: no marker, nothing of the whole
        refused = peer.script.calls
        stopped = evaluate(dataset, three, peer, "--shard", "0/3")
        assert stopped.exit_code == 1 and "stopped" in stopped.output
        script.stop = False
        refused = peer.script.calls - refused
        assert (three / "shards" / "eval-2-of-3.done").exists() and not (three / "shards" / "eval-0-of-3.done").exists()
        assert not (three / "ledger.sqlite").exists() and (three / "shards" / "ledger-2-of-3.sqlite").exists()
        early = merge(three)
        assert early.exit_code == 3 and "shards 0, 1 of 3 have not finished" in early.output
        assert not (three / "predictions.jsonl").exists() and not (three / "metrics.json").exists()

        for index in (1, 0):
            result = evaluate(dataset, three, peer, "--shard", f"{index}/3")
            assert result.exit_code in (0, 3), result.output
            assert not (three / "metrics.json").exists()  # a shard writes no metrics of the whole
        sharded_calls = peer.script.calls - start
        assert (three / "shards" / "ledger-1-of-3.sqlite").exists()
        shares = {i: [json.loads(line) for line in (three / "shards" / f"predictions-{i}-of-3.jsonl").read_text().splitlines()] for i in range(3)}
        assert {row["record"]["video_id"] for row in shares[1]} == {"v3", "v5"}  # only its own videos

        done = merge(three)
        assert done.exit_code == 3, done.output  # every shard done; the judge failure of v3 stands, as in one process
        assert "have not finished" not in done.output and "eval items" in done.output and (three / "metrics.json").exists()

        # shard 1 killed while it ran again: its old rows are there, its marker is not → nothing of the whole
        (three / "shards" / "eval-1-of-3.done").unlink()
        for name in ("predictions.jsonl", "metrics.json"):
            (three / name).unlink()
        killed = merge(three)
        assert killed.exit_code == 3 and "shards 1 of 3 have not finished" in killed.output
        assert not (three / "predictions.jsonl").exists() and not (three / "metrics.json").exists()

        # a re-run of a finished shard, and a plain eval over the shards' directory, pay for nothing
        before = peer.script.calls
        assert evaluate(dataset, three, peer, "--shard", "1/3").exit_code == 3
        assert merge(three).exit_code == 3
        assert peer.script.calls == before
        merged_predictions = (three / "predictions.jsonl").read_bytes()
        unsharded_again = evaluate(dataset, three, peer)
        assert unsharded_again.exit_code == 3 and peer.script.calls == before
        assert (three / "predictions.jsonl").read_bytes() == merged_predictions

    # every shard's answers (less the calls refused with the invalid key): exactly the calls of one process
    assert refused >= 1 and sharded_calls - refused == one_calls
    assert merged_predictions == (one / "predictions.jsonl").read_bytes()
    lines = merged_predictions.decode().splitlines()  # qa 4×2, tag 2×2, cls 3×2, p2c 4, reasoning 3, reflect 3
    assert len(lines) == 28 and json.loads(lines[0])["id"] == "v1#qa0" and json.loads(lines[-1])["id"] == "v4#rqa"
    again = json.loads((three / "metrics.json").read_text())  # the plain re-run's: every model call from the shards' ledgers
    assert again["usage"]["model"]["cache_hits"] == 31 and again["usage"]["model"]["calls"] == 0
    assert {k: v for k, v in again.items() if k != "usage"} == {k: v for k, v in json.loads((one / "metrics.json").read_text()).items() if k != "usage"}


def test_merged_metrics_are_those_of_one_process_byte_for_byte(dataset, tmp_path) -> None:
    one, three = tmp_path / "one", tmp_path / "three"
    with OpenAIPeer(Script(default=respond)) as peer:
        assert evaluate(dataset, one, peer).exit_code == 3
        for index in (1, 2, 0):
            assert evaluate(dataset, three, peer, "--shard", f"{index}/3").exit_code in (0, 3)
    assert merge(three).exit_code == 3
    assert (three / "predictions.jsonl").read_bytes() == (one / "predictions.jsonl").read_bytes()
    # metrics.json byte-identical, usage included: the shards' calls and tokens add up to one process's
    assert (three / "metrics.json").read_bytes() == (one / "metrics.json").read_bytes()
    assert (three / "metrics.md").read_bytes() == (one / "metrics.md").read_bytes()
    m = json.loads((three / "metrics.json").read_text())
    assert m["qa"]["no_think"] == {"accuracy": 0.5, "n": 4, "unparsable": 1} and m["reasoning"]["vau_eval"]["total_score"] == 27.5
    rejects = [json.loads(line) for line in (three / "rejects.jsonl").read_text().splitlines()]
    assert [r["item"] for r in rejects] == ["reasoning/v3#sft"]  # once, from the shard that owns v3


def test_bad_shard_specs_and_other_options_are_refused_before_any_call(dataset, tmp_path) -> None:
    out = tmp_path / "eval"
    with OpenAIPeer(Script(default=respond)) as peer:
        assert evaluate(dataset, out, peer, "--tasks", "qa", "--shard", "0/3").exit_code == 0
        calls = peer.script.calls
        other = evaluate(dataset, out, peer, "--tasks", "qa,cls", "--shard", "1/3")
        assert other.exit_code == 2 and "other options" in other.output and "tasks" in other.output
        model = CliRunner().invoke(app, ["eval", "--data", str(dataset), "--model", f"openai:other@{peer.base_url}", "--judge",
                                         f"openai:judge@{peer.base_url}", "--out", str(out), "--concurrency", "4", "--tasks", "qa", "--shard", "2/3"])
        assert model.exit_code == 2 and "model" in model.output
        wrong_n = evaluate(dataset, out, peer, "--tasks", "qa", "--shard", "0/2")
        assert wrong_n.exit_code == 2 and "already ran as 3 shards" in wrong_n.output
        out_of_range = evaluate(dataset, out, peer, "--tasks", "qa", "--shard", "3/3")
        assert out_of_range.exit_code == 2 and "out of range" in out_of_range.output
        garbled = evaluate(dataset, out, peer, "--tasks", "qa", "--shard", "one/3")
        assert garbled.exit_code == 2 and "expected I/N" in garbled.output
        both = evaluate(dataset, out, peer, "--tasks", "qa", "--shard", "1/3", "--shards", "3")
        assert both.exit_code == 2 and "exclude each other" in both.output
        assert peer.script.calls == calls
    assert not (out / "shards" / "eval-1-of-3.json").exists()  # a refused shard leaves no state behind


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_shards_through_an_executor_then_merged(dataset, tmp_path, executor) -> None:
    if executor == "ray":
        pytest.importorskip("ray")
    one, two = tmp_path / "one", tmp_path / "two"
    with OpenAIPeer(Script(default=respond)) as peer:
        assert evaluate(dataset, one, peer, "--tasks", "qa,tag,p2c", "--think", "off").exit_code == 0
        driven = evaluate(dataset, two, peer, "--tasks", "qa,tag,p2c", "--think", "off", "--shards", "2", "--executor", executor)
    assert driven.exit_code == 0, driven.output
    assert "shards of eval" in driven.output and "eval shards done" in driven.output
    assert sorted(p.name for p in (two / "shards").glob("eval-*.done")) == ["eval-0-of-2.done", "eval-1-of-2.done"]
    assert (two / "predictions.jsonl").read_bytes() == (one / "predictions.jsonl").read_bytes()
    assert (two / "metrics.json").read_bytes() == (one / "metrics.json").read_bytes()


def test_a_vau_bench_csv_in_shards_is_ingested_once_and_sampled_per_share(tmp_path) -> None:
    from media import make_clip

    for name, seconds in csv_case.CLIPS.items():
        make_clip(tmp_path / "videos" / f"{name}.mp4", seconds=seconds, fps=10, width=64, height=48)
    csv_path = csv_case.write_csv(tmp_path / "test.csv")
    one, two = tmp_path / "one", tmp_path / "two"

    def run(out: Path, peer: OpenAIPeer, *extra: str):
        return CliRunner().invoke(app, ["eval", "--data", str(csv_path), "--videos", str(tmp_path / "videos"), "--model", f"openai:m@{peer.base_url}",
                                        "--judge", f"openai:judge@{peer.base_url}", "--tasks", "qa,tag,cls,reasoning", "--think", "off",
                                        "--max-pixels", "3136", "--out", str(out), *extra])

    with OpenAIPeer(Script(default=csv_case.respond)) as peer:
        assert run(one, peer).exit_code == 0
        driven = run(two, peer, "--shards", "2", "--executor", "local")  # two processes at once, --videos passed on
    assert driven.exit_code == 0, driven.output
    assert (two / "predictions.jsonl").read_bytes() == (one / "predictions.jsonl").read_bytes()
    assert (two / "metrics.json").read_bytes() == (one / "metrics.json").read_bytes()
    meta = json.loads((two / "run.json").read_text())
    assert [s["stage"] for s in meta["stages"]].count("ingest") == 1  # one shard ingested, the other reused its manifest
    sampled = {p.parent.parent.name for p in (two / "frames").glob("*/*/frameset.json")}
    owners = {json.loads(line)["record"]["video_id"]: i for i in range(2)
              for line in (two / "shards" / f"predictions-{i}-of-2.jsonl").read_text().splitlines()}
    assert sampled == set(owners) and len(set(owners.values())) == 2  # each shard sampled its own videos


def test_a_shard_asks_what_one_process_asks(tmp_path) -> None:
    """The CLS prompt lists every class of the split (VAU-R1's 20 + those found in the data), also
    the class of a video another shard owns: a request does not depend on the share."""
    from eval_fixtures import grpo_row
    from peers import Reply
    from peers.openai_server import content_parts

    assert (shard_of("v1", 2), shard_of("v2", 2)) == (0, 1)
    rows = [grpo_row("v1#cls", "v1", 10, "cls", answer="Fighting"), grpo_row("v2#cls", "v2", 60, "cls", answer="Kidnapping", category="Kidnapping")]
    data = write_exported(tmp_path / "ds", {"grpo_cls": rows})
    with OpenAIPeer(Script(default=Reply("<answer>Fighting</answer>"))) as peer:
        result = CliRunner().invoke(app, ["eval", "--data", str(data), "--model", f"openai:m@{peer.base_url}", "--tasks", "cls", "--think", "off",
                                          "--out", str(tmp_path / "eval"), "--shard", "0/2"])
        texts = [" ".join(p.get("text", "") for p in content_parts(r) if p.get("type") == "text") for r in peer.script.received]
    assert result.exit_code == 0, result.output
    assert len(texts) == 1 and "Kidnapping" in texts[0] and "Fighting" in texts[0]  # v1's request names v2's class
