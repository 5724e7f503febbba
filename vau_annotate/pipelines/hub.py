"""Push an exported dataset folder to the Hugging Face Hub with huggingface_hub.

The token comes from `HF_TOKEN` or the huggingface_hub login (`hf auth login`); without one the
command stops before any work. The folder is uploaded as it is: every config's parquet shards
(already cut at `--max-shard-size` by export) and the dataset card, in one commit. The endpoint
follows `HF_ENDPOINT` (huggingface_hub's own setting), which is how tests push to a loopback peer.
No token ever appears in a message: errors are re-worded from the HTTP status and the Hub's reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class HubError(Exception):
    """The push cannot start (no token, not an export folder) or the Hub refused it."""


@dataclass(frozen=True)
class Pushed:
    repo_id: str
    url: str
    commit: str
    files: int


def require_token() -> str:
    """The Hub token to use, or a clear HubError (checked before any export work)."""
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise HubError("no Hugging Face token: set HF_TOKEN (a write token from https://huggingface.co/settings/tokens) "
                       "or log in with `hf auth login`, then run again")
    return token


def check_export_folder(folder: Path) -> list[Path]:
    """The files to upload; the folder must be a finished export (a card with `configs:`)."""
    card = folder / "README.md"
    if not folder.is_dir():
        raise HubError(f"{folder} is not a directory")
    if not card.is_file() or "\nconfigs:\n" not in card.read_text(encoding="utf-8"):
        raise HubError(f"{folder} is not an exported dataset (no README.md with `configs:`): run `vau-annotate export --out {folder}` first")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not any(p.suffix == ".parquet" for p in files):
        raise HubError(f"{folder} has no parquet files to push")
    return files


def push_folder(folder: Path, repo_id: str, *, private: bool = False, token: str | None = None) -> Pushed:
    """Create the dataset repo if needed and upload the folder in one commit."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    files = check_export_folder(folder)
    token = token or require_token()
    api = HfApi(token=token)
    try:
        repo = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        commit = api.upload_folder(folder_path=folder, repo_id=repo_id, repo_type="dataset",
                                   commit_message="Upload dataset exported by vau-annotate", ignore_patterns=[".*", "**/.*"])
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise HubError(f"the Hub refused the push of {repo_id} (HTTP {status}): {_reason(exc)}") from None
    except (RuntimeError, ValueError, OSError) as exc:  # an LFS upload that failed, invalid card metadata, the network
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        raise HubError(f"pushing {repo_id} failed: {_reason(exc)} ({_reason(cause)})" if cause is not exc else f"pushing {repo_id} failed: {_reason(exc)}") from None
    return Pushed(repo_id, str(repo), commit.oid, len(files))


def _reason(exc: Exception) -> str:
    text = getattr(exc, "server_message", None) or str(exc).splitlines()[0]
    return text.replace(_token_or_empty(), "<token>") if _token_or_empty() else text


def _token_or_empty() -> str:
    from huggingface_hub import get_token

    return get_token() or ""
