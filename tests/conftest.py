"""Shared fixtures. Heavy ones are session-scoped: importing transformers costs seconds per process."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Qwen2.5-VL built offline once per test session (see vau_annotate.train.tiny)."""
    pytest.importorskip("transformers")
    from vau_annotate.train.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen2.5-vl"))
