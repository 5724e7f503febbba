"""Ctrl-C on a model-backed stage (issue 9 item 2): a real SIGINT to a real `build-cot` process.

The first Ctrl-C must keep what is already at the provider: no new call starts, the calls in flight
come back within the grace period and land in the ledger, the process says what it kept and how to
resume, and exits 130. A second Ctrl-C stops at once. The peer is slow (2 s per answer) so that
calls are surely in flight when the signal arrives.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from media import make_clip
from peers import OpenAIPeer, Script
from typer.testing import CliRunner

from vau_annotate.annotate.ledger import Ledger
from vau_annotate.cli import app

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "vau_annotate.cli"]
COLUMNS = ("Video Name", "Question", "Option 1", "Option 2", "Option 3", "Option 4", "Correct Option", "Key Object",
           "Description", "Reasoning", "Anomaly Class", "Start Time", "End Time")


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> tuple[Path, Path]:
    """Four short clips of different lengths (no call is shared between them) and a VAU-Bench CSV."""
    root = tmp_path_factory.mktemp("interrupt")
    folder = root / "videos" / "msad"
    folder.mkdir(parents=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for i, seconds in enumerate((2.0, 2.4, 2.8, 3.2), 1):
        make_clip(folder / f"Fighting_{i}.mp4", seconds=seconds, fps=25, width=96, height=64)
        writer.writerow([f"msad_Fighting_{i}.mp4", "What happens?", "a fight", "a walk", "a race", "a meal", "A", "van",
                         "Two people fight.", "", "Fighting", 0.5, 1.5])
    (root / "val.csv").write_text(buffer.getvalue(), encoding="utf-8")
    return root / "videos", root / "val.csv"


def start(run: Path, videos: tuple[Path, Path], spec: str) -> subprocess.Popen[bytes]:
    args = ["build-cot", "--run", str(run), "--captioner", spec, "--reasoner", spec, "--concurrency", "4",
            "--source", "vau-bench", "--annotations", str(videos[1]), "--videos", str(videos[0])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def wait_for_calls(peer: OpenAIPeer, proc: subprocess.Popen[bytes], n: int) -> None:
    deadline = time.monotonic() + 60
    while peer.script.calls < n and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None and peer.script.calls >= n, proc.stderr.read().decode()[-3000:] if proc.poll() is not None else "no calls"


def test_first_ctrl_c_records_the_calls_in_flight_says_how_to_resume_and_exits_130(tmp_path, videos):
    run = tmp_path / "run"
    with OpenAIPeer(Script(latency_s=2.0)) as peer:
        spec = f"openai:qwen2.5-vl-72b@{peer.base_url}"
        proc = start(run, videos, spec)
        wait_for_calls(peer, proc, 4)  # 4 captioning calls at the provider, none answered yet
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        stderr = " ".join(err.decode().split())
        assert proc.returncode == 130, stderr[-3000:]
        assert "Ctrl-C" in stderr and "interrupted: kept" in stderr and "Run the same command again to resume" in stderr
        sent = [json.dumps(r.body, sort_keys=True) for r in peer.script.received]
        with Ledger(run / "ledger.sqlite") as ledger:
            answered = [c for c in ledger.iter_calls() if c.ok]
        # every request the provider received was answered and recorded: none was thrown away
        assert len(sent) >= 4 and len(answered) == len(sent)

        peer.script.latency_s = 0.0
        received = len(peer.script.received)
        result = CliRunner().invoke(app, ["build-cot", "--run", str(run), "--captioner", spec, "--reasoner", spec, "--concurrency", "4"])
        assert result.exit_code in (0, 3), result.output
        again = [json.dumps(r.body, sort_keys=True) for r in peer.script.received[received:]]
    assert not set(again) & set(sent)  # the resumed run paid for none of the kept calls again


def test_second_ctrl_c_stops_at_once(tmp_path, videos):
    run = tmp_path / "run"
    with OpenAIPeer(Script(latency_s=60.0)) as peer:  # answers would come long after the 10 s grace
        proc = start(run, videos, f"openai:qwen2.5-vl-72b@{peer.base_url}")
        wait_for_calls(peer, proc, 4)
        os.kill(proc.pid, signal.SIGINT)
        time.sleep(0.5)
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=8)  # well inside the grace period the first Ctrl-C granted
    stderr = " ".join(err.decode().split())
    assert proc.returncode == 130, stderr[-3000:]
    assert "Ctrl-C again" in stderr and "Run the same command again to resume" in stderr
