"""The run's SQLite ledger: call keys, durable records, item status, usage across runs."""

from __future__ import annotations

import multiprocessing
import threading

import pytest

from vau_annotate.annotate.backends.base import ImagePart, Message, Request, SamplingParams, TextPart, VideoPart
from vau_annotate.annotate.ledger import CallRecord, Ledger, call_key


def request(text: str = "describe", *, frames: tuple[bytes, ...] = (b"f0", b"f1"), timestamps=(0.0, 0.5), **kw) -> Request:
    video = VideoPart(frames=frames, timestamps=timestamps, fps=2.0)
    params = kw.pop("params", SamplingParams())
    return Request(messages=(Message.text("system", "be brief"), Message("user", (video, TextPart(text)))), params=params, **kw)


def answer(key: str, *, stage: str = "cot", item: str = "v1", **kw) -> CallRecord:
    base = dict(key=key, provider="openai", model="gpt-4o", item=item, stage=stage, text="ok", finish_reason="stop",
                input_tokens=100, output_tokens=20, cost=0.001, latency_s=0.5, attempts=1, created=1.0)
    base.update(kw)
    return CallRecord(**base)


def failure(key: str, error_class: str = "retryable", code: str = "429", **kw) -> CallRecord:
    return answer(key, text=None, finish_reason=None, input_tokens=0, output_tokens=0, cost=0.0,
                  error_class=error_class, error_code=code, error="rate limited", **kw)


# -- call keys --------------------------------------------------------------------------------

def test_call_key_is_stable_and_covers_what_changes_the_answer():
    base = call_key("openai", "gpt-4o", request(prompt_name="cot", prompt_hash="h1"))
    assert base == call_key("OpenAI", "gpt-4o", request(prompt_name="cot", prompt_hash="h1"))
    variants = [
        call_key("dashscope", "gpt-4o", request(prompt_name="cot", prompt_hash="h1")),
        call_key("openai", "gpt-4o-mini", request(prompt_name="cot", prompt_hash="h1")),
        call_key("openai", "gpt-4o", request(prompt_name="cot", prompt_hash="h2")),
        call_key("openai", "gpt-4o", request(prompt_name="cot2", prompt_hash="h1")),
        call_key("openai", "gpt-4o", request("describe!", prompt_name="cot", prompt_hash="h1")),
        call_key("openai", "gpt-4o", request(frames=(b"f0", b"F1"), prompt_name="cot", prompt_hash="h1")),
        call_key("openai", "gpt-4o", request(timestamps=(0.0, 0.6), prompt_name="cot", prompt_hash="h1")),
        call_key("openai", "gpt-4o", request(prompt_name="cot", prompt_hash="h1", params=SamplingParams(temperature=0.7))),
        call_key("openai", "gpt-4o", request(prompt_name="cot", prompt_hash="h1", params=SamplingParams(max_tokens=1024))),
        call_key("openai", "gpt-4o", request(prompt_name="cot", prompt_hash="h1", params=SamplingParams(seed=1))),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_call_key_hashes_media_instead_of_embedding_it():
    big = bytes(range(256)) * 4096  # 1 MiB frame
    image = Request(messages=(Message("user", (ImagePart(big), TextPart("what is this?"))),))
    key = call_key("openai", "gpt-4o", image)
    assert len(key) == 64
    other = Request(messages=(Message("user", (ImagePart(big[:-1] + b"\x00"), TextPart("what is this?"))),))
    assert call_key("openai", "gpt-4o", other) != key


# -- records ------------------------------------------------------------------------------------

def test_answers_are_durable_and_readable_from_a_new_connection(tmp_path):
    path = tmp_path / "ledger.sqlite"
    with Ledger(path) as ledger:
        ledger.put(answer("k1"))
        mode = ledger.conn.execute("PRAGMA journal_mode").fetchone()[0]
        sync = ledger.conn.execute("PRAGMA synchronous").fetchone()[0]
    assert mode == "wal" and sync == 1  # NORMAL
    with Ledger(path) as again:
        record = again.get("k1")
    assert record == answer("k1")
    assert record.ok


def test_failures_are_replaced_by_answers_but_answers_are_never_replaced(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as ledger:
        ledger.put(failure("k", attempts=6), errors=[("retryable", "429")] * 6)
        assert ledger.get("k").error_class == "retryable"
        ledger.put(answer("k", attempts=2), errors=[("retryable", "503")])
        record = ledger.get("k")
        assert record.ok and record.text == "ok" and record.attempts == 8  # attempts add up across runs
        ledger.put(failure("k", "permanent", "400"))  # a racing process must not overwrite a paid answer
        assert ledger.get("k").ok


def test_item_status(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as ledger:
        ledger.set_item("cot", "v1", "pending")
        ledger.set_item("cot", "v1", "done")
        ledger.set_item("cot", "v2", "rejected", "no <answer> tag")
        ledger.set_item("reflect", "v1", "pending")
        assert ledger.item_status("cot", "v1") == "done"
        assert ledger.item_status("cot", "v3") is None
        assert ledger.items("cot") == {"v1": "done", "v2": "rejected"}
        assert ledger.items("cot", "rejected") == {"v2": "rejected"}
        assert ledger.item_status_counts() == {"cot": {"done": 1, "rejected": 1}, "reflect": {"pending": 1}}
        with pytest.raises(ValueError, match="status"):
            ledger.set_item("cot", "v1", "finished")


def test_usage_summary_groups_by_stage_provider_model(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as ledger:
        ledger.put(answer("a", attempts=2), errors=[("retryable", "429")])
        ledger.put(answer("b"))
        ledger.put(failure("c", "permanent", "400"), errors=[("permanent", "400")])
        ledger.put(answer("d", stage="reflect", model="gpt-4o-mini", input_tokens=10, output_tokens=1, cost=0.0001))
        ledger.add_hits({("cot", "openai", "gpt-4o"): 5})
        ledger.add_hits({("cot", "openai", "gpt-4o"): 2})
        ledger.add_errors("cot", "openai", "gpt-4o", [("fatal", "invalid_api_key")])
        rows = ledger.usage_summary()
        totals = ledger.usage_totals()
    assert [(r["stage"], r["model"]) for r in rows] == [("cot", "gpt-4o"), ("reflect", "gpt-4o-mini")]
    cot = rows[0]
    # 4 requests behind the stored calls + the fatal one that stopped the run (it has no calls row)
    assert cot["answered"] == 2 and cot["failed"] == 1 and cot["requests"] == 5
    assert cot["cache_hits"] == 7
    assert cot["input_tokens"] == 200 and cot["output_tokens"] == 40
    assert cot["cost"] == pytest.approx(0.002)
    assert cot["failures"] == {"permanent": 1}
    assert cot["errors"] == {"retryable:429": 1, "permanent:400": 1, "fatal:invalid_api_key": 1}
    assert cot["failed_attempts"] == 3 and totals["failed_attempts"] == 3
    assert totals["answered"] == 3 and totals["cost"] == pytest.approx(0.0021) and totals["cache_hits"] == 7


# -- connections ----------------------------------------------------------------------------------

def test_threads_get_their_own_connections(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(50):
                ledger.put(answer(f"t{n}-{i}"))
            ledger.close()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert ledger.usage_totals()["answered"] == 200
    ledger.close()


def _child_writes(ledger: Ledger, n: int) -> None:
    for i in range(n):
        ledger.put(answer(f"child-{i}"))


def test_processes_share_the_file(tmp_path):
    """A forked child must open its own connection (sqlite handles do not survive fork)."""
    ledger = Ledger(tmp_path / "l.sqlite")
    ledger.put(answer("parent"))  # the parent's connection exists before the fork
    ctx = multiprocessing.get_context("fork")
    children = [ctx.Process(target=_child_writes, args=(ledger, 30)) for _ in range(2)]
    for child in children:
        child.start()
    for i in range(30):
        ledger.put(answer(f"parent-{i}"))
    for child in children:
        child.join(timeout=30)
        assert child.exitcode == 0
    assert ledger.usage_totals()["answered"] == 1 + 30 + 30  # children wrote the same 30 keys
    ledger.close()


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "l.sqlite"
    with Ledger(path) as ledger:
        ledger.conn.execute("PRAGMA user_version = 99")
    with pytest.raises(RuntimeError, match="newer"):
        Ledger(path).get("x")


def test_status_counts_every_failed_attempt_including_the_ones_that_stopped_the_run(tmp_path):
    """8 requests answered 401 (the run stopped) + one call answered after two 429s."""
    from rich.console import Console

    from vau_annotate.pipelines.status import collect_status, render_status

    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        for _ in range(8):
            ledger.add_errors("cot:captioner", "openai", "gpt-4o", [("fatal", "invalid_api_key")])
        ledger.put(answer("a", stage="cot:captioner", attempts=3), errors=[("retryable", "429")] * 2)
    (row,) = collect_status(tmp_path)["usage"]
    assert row["requests"] == 11 and row["failed_attempts"] == 10 and row["failed"] == 0
    console = Console(width=200, record=True)
    render_status(collect_status(tmp_path), console)
    text = console.export_text()
    header = next(line for line in text.splitlines() if "requests" in line)
    cells = [c.strip() for c in next(line for line in text.splitlines() if "cot:captioner" in line).split("│")]
    columns = [c.strip() for c in header.split("┃")]
    assert cells[columns.index("requests")] == "11" and cells[columns.index("failed attempts")] == "10"
    assert "fatal:invalid_api_key=8" in text and "retryable:429=2" in text


def test_a_fresh_file_whose_first_writer_holds_the_lock_is_waited_for(tmp_path):
    """In rollback mode (a file no one has switched to WAL yet), PRAGMA journal_mode=WAL against a
    RESERVED lock fails at once, without the busy handler; opening the ledger must wait instead."""
    import sqlite3
    import time

    path = tmp_path / "l.sqlite"
    first = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    first.execute("CREATE TABLE other (x)")
    first.execute("BEGIN IMMEDIATE")
    first.execute("INSERT INTO other VALUES (1)")

    def release() -> None:
        time.sleep(0.3)
        first.execute("COMMIT")

    releaser = threading.Thread(target=release)
    releaser.start()
    ledger = Ledger(path, timeout=10)
    ledger.put(answer("after-the-lock"))
    releaser.join()
    assert ledger.get(answer("after-the-lock").key).text == answer("after-the-lock").text
    assert ledger.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    ledger.close()
    first.close()
