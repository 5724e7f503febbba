"""Shards (`--shard I/N`, `--shards N --executor local|ray`, `merge`): n shards in any order, with a
re-run, give the same records, rejects and usage as one process; bad shard specs and shards with
other options are refused before any work."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from peers import OpenAIPeer, Script
from test_cot import MAIN_ROWS, clips, dataset, records, rejects, respond  # noqa: F401 (clips: a fixture)
from typer.testing import CliRunner

from vau_annotate.annotate.shards import ShardError, parse_shard, shard_of
from vau_annotate.cli import app
from vau_annotate.pipelines.status import collect_status


def test_shard_spec_and_assignment() -> None:
    assert parse_shard("3/4").index == 3 and parse_shard(" 0 / 1 ").count == 1
    for bad in ("4/4", "1/0", "-1/4", "two/4"):
        with pytest.raises(ShardError):
            parse_shard(bad)
    ids = [f"video_{i}" for i in range(400)]
    owners = Counter(shard_of(i, 4) for i in ids)
    assert sorted(owners) == [0, 1, 2, 3] and all(60 < n < 140 for n in owners.values())
    # an item goes with its video: a video's questions land in the video's shard
    assert {shard_of(f"clip#qa{i}", 7) for i in range(5)} == {shard_of("clip", 7)}
    # stable across processes and versions: sha256, not hash()
    assert shard_of("Fighting003_x264", 4) == int.from_bytes(__import__("hashlib").sha256(b"Fighting003_x264").digest()[:8], "big") % 4


def usage(run: Path) -> dict:
    totals = Counter()
    for row in collect_status(run)["usage"]:
        for key in ("answered", "input_tokens", "output_tokens"):
            totals[key] += row[key]
    return dict(totals)


@pytest.fixture
def cot_data(tmp_path, clips):
    videos, csv_path = dataset(tmp_path, clips, MAIN_ROWS)
    return videos, csv_path


def build(run: Path, spec: str, *extra: str) -> object:
    return CliRunner().invoke(app, ["build-cot", "--run", str(run), "--captioner", spec, "--reasoner", spec, "--concurrency", "3", *extra])


def ingest(run: Path, videos: Path, csv_path: Path) -> None:
    result = CliRunner().invoke(app, ["ingest", str(csv_path), "--source", "vau-bench", "--videos", str(videos), "--run", str(run)])
    assert result.exit_code == 0, result.output


def test_four_shards_in_any_order_equal_one_process(tmp_path, cot_data) -> None:
    videos, csv_path = cot_data
    one, four = tmp_path / "one", tmp_path / "four"
    with OpenAIPeer(Script(default=respond)) as peer:
        spec = f"openai:qwen2.5-vl-72b@{peer.base_url}"
        ingest(one, videos, csv_path)
        assert build(one, spec).exit_code == 3
        one_calls = peer.script.calls
        ingest(four, videos, csv_path)
        calls_before = peer.script.calls
        for index in (3, 1, 2, 0):
            result = build(four, spec, "--shard", f"{index}/4")
            assert result.exit_code in (0, 3), result.output
        assert (four / "shards" / "ledger-2-of-4.sqlite").exists() and not (four / "ledger.sqlite").exists()
        sharded_calls = peer.script.calls - calls_before
        again = build(four, spec, "--shard", "2/4")  # a re-run of a finished shard: nothing to do, nothing paid
        assert again.exit_code in (0, 3) and peer.script.calls - calls_before == sharded_calls
        # a shard with other options, or another N, is refused before any work
        other = build(four, spec, "--shard", "1/4", "--caption-batch", "2")
        assert other.exit_code == 2 and "other options" in other.output and "caption_batch" in other.output
        wrong_n = build(four, spec, "--shard", "0/3")
        assert wrong_n.exit_code == 2 and "already ran as 4 shards" in wrong_n.output
        out_of_range = build(four, spec, "--shard", "4/4")
        assert out_of_range.exit_code == 2 and "out of range" in out_of_range.output
    a, b = records(one), records(four)
    assert sorted(a) == sorted(b) and len(a) == 4
    for name in a:
        assert (a[name].think, a[name].answer, a[name].captions) == (b[name].think, b[name].answer, b[name].captions)
    assert {k: (r["reason"]) for k, r in rejects(one).items()} == {k: r["reason"] for k, r in rejects(four).items()}
    lines = {run: (run / "rejects.jsonl").read_text().splitlines() for run in (one, four)}
    assert len(lines[four]) == len(lines[one]) == 2  # every reject once, however many ledgers
    assert usage(one) == usage(four)
    # each shard did only its share: the shares add up to the videos, once each
    shares = [json.loads((four / "shards" / f"cot-{i}-of-4.json").read_text())["counts"]["videos"] for i in range(4)]
    assert sum(shares) == 6 and max(shares) < 6
    assert sharded_calls == one_calls
    merged = CliRunner().invoke(app, ["merge", "--run", str(four)])
    assert merged.exit_code == 3  # the run's rejects stand (partial), every shard is done
    meta = json.loads((four / "run.json").read_text())
    cot = [s for s in meta["stages"] if s["stage"] == "cot"]
    assert len(cot) == 1 and cot[0]["counts"]["shards done"] == 4 and cot[0]["options"]["shards"] == 4
    assert CliRunner().invoke(app, ["merge", "--run", str(four)]).exit_code == 3
    assert len([s for s in json.loads((four / "run.json").read_text())["stages"] if s["stage"] == "cot"]) == 1  # merged once


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_executor_runs_the_shards_and_merges(tmp_path, cot_data, executor) -> None:
    if executor == "ray":
        pytest.importorskip("ray")
    videos, csv_path = cot_data
    run = tmp_path / executor
    with OpenAIPeer(Script(default=respond)) as peer:
        spec = f"openai:qwen2.5-vl-72b@{peer.base_url}"
        result = build(run, spec, "--source", "vau-bench", "--annotations", str(csv_path), "--videos", str(videos),
                       "--shards", "2", "--executor", executor)
        assert result.exit_code == 3, result.output  # partial: the scripted rejects
    assert sorted(records(run)) == ["Assault", "Explosion", "Fighting", "Normal"]
    assert sorted(p.name for p in (run / "shards").glob("cot-*.done")) == ["cot-0-of-2.done", "cot-1-of-2.done"]
    assert "shards of build-cot" in result.output and "cot shards done" in result.output
    status = collect_status(run)
    assert sum(status["rejects"]["cot"].values()) == 2
