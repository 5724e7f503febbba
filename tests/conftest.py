"""Shared fixtures. Heavy ones are session-scoped: importing transformers costs seconds per process."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# A fresh `datasets` cache per test session, set before `datasets` is imported: its cache of a local
# folder is keyed by folder and config name only, so an earlier session's rows could be served.
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="vau-test-hf-datasets-"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Qwen2.5-VL built offline once per test session (see vau_annotate.train.tiny)."""
    pytest.importorskip("transformers")
    from vau_annotate.train.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen2.5-vl"))


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """One complete run made by the offline demo (ingest → … → export → train → eval → report), shared
    read-only by the tests of export, formats, the Hub push, lmms-eval and the report."""
    from typer.testing import CliRunner

    from vau_annotate.cli import app

    run = tmp_path_factory.mktemp("demo-run") / "run"
    result = CliRunner().invoke(app, ["demo", "--run", str(run), "--tiny-model", str(tiny_model_dir)])
    assert result.exit_code == 0, result.output[-3000:]
    return run
