"""`export --push-to-hub` and `push` against a loopback peer of the Hub's HTTP API.

The peer receives a real push from huggingface_hub (repo create, card validation, preupload, LFS
basic transfer or regular upload, NDJSON commit); the test then loads the dataset from the files
the peer received and compares it with the local export. No request leaves 127.0.0.1.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from peers.hub_server import HubPeer
from test_export import flat, rows_of
from vau_annotate.cli import app
from vau_annotate.schemas.rows import CONFIGS

TOKEN = "hf_peerTestToken0123456789"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    import huggingface_hub.constants as constants

    with HubPeer(TOKEN, lfs_min_bytes=20_000) as peer:
        monkeypatch.setattr(constants, "ENDPOINT", peer.endpoint)  # what HF_ENDPOINT sets at import
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # the peer speaks LFS, not Xet
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-login" / "token"))
        monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        yield peer


def received(peer: HubPeer, repo_id: str, into: Path) -> Path:
    for name, data in peer.repos[repo_id].files.items():
        path = into / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return into


def test_export_pushes_every_config_and_the_card(hub: HubPeer, demo_run: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "local"
    result = CliRunner().invoke(app, ["export", "--run", str(demo_run), "--out", str(out), "--push-to-hub", "me/vau-demo", "--private"])
    assert result.exit_code == 0, result.output
    assert "pushed" in flat(result.output) and TOKEN not in result.output
    repo = hub.repos["me/vau-demo"]
    assert repo.private and repo.repo_type == "dataset" and len(repo.commits) == 1
    local = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert sorted(repo.files) == local
    assert "lfs" in hub.upload_modes.values() and "regular" in hub.upload_modes.values()  # both upload paths taken
    assert ("POST", "/datasets/me/vau-demo.git/info/lfs/objects/batch") in hub.requests
    copy = received(hub, "me/vau-demo", tmp_path / "from-hub")
    for config in CONFIGS:
        assert rows_of(copy, config) == rows_of(out, config)
    assert TOKEN not in repo.files["README.md"].decode()


def test_push_command_and_a_second_push_to_the_same_repo(hub: HubPeer, demo_run: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "local"
    assert CliRunner().invoke(app, ["export", "--run", str(demo_run), "--out", str(out), "--frames", "path", "--configs", "grpo_qa,grpo_tag"]).exit_code == 0
    for _ in range(2):  # the repo exists the second time: create_repo(exist_ok) takes the 409
        result = CliRunner().invoke(app, ["push", str(out), "me/again"])
        assert result.exit_code == 0, result.output
    assert len(hub.repos["me/again"].commits) == 2
    copy = received(hub, "me/again", tmp_path / "copy")
    assert rows_of(copy, "grpo_tag") == rows_of(out, "grpo_tag")


def test_no_token_stops_before_any_work(hub: HubPeer, demo_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.delenv("HF_TOKEN")
    out = tmp_path / "never"
    result = CliRunner().invoke(app, ["export", "--run", str(demo_run), "--out", str(out), "--push-to-hub", "me/x"])
    assert result.exit_code == 2 and "no Hugging Face token: set HF_TOKEN" in flat(result.output)
    assert not out.exists() and hub.requests == []
    assert CliRunner().invoke(app, ["push", str(tmp_path), "me/x"]).exit_code == 2  # not an export folder


def test_wrong_token_is_a_clear_failure_without_the_token(hub: HubPeer, demo_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    out = tmp_path / "local"
    assert CliRunner().invoke(app, ["export", "--run", str(demo_run), "--out", str(out), "--frames", "path", "--configs", "grpo_cls"]).exit_code == 0
    wrong = "hf_wrongWrongWrong987654321"
    monkeypatch.setenv("HF_TOKEN", wrong)
    result = CliRunner().invoke(app, ["push", str(out), "me/denied"])
    assert result.exit_code == 1 and "HTTP 401" in flat(result.output)
    assert wrong not in result.output and "me/denied" not in hub.repos
