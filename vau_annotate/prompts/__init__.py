"""Prompt templates live as text files in this folder; code refers to them by name.

Each template is a `string.Template` (`$name` placeholders, `$$` for a literal dollar) so that
JSON and tag examples inside a prompt need no escaping. `$guidelines` and other shared
fragments are files too (`_guidelines.txt` → `$guidelines`). A prompt's hash covers its own text
and every fragment it uses; the hash is part of every model-call cache key, so editing a prompt
invalidates exactly the calls that used it.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PROMPT_DIR = Path(__file__).parent


class PromptError(KeyError):
    """A prompt that does not exist or was rendered with a missing variable."""


@dataclass(frozen=True)
class Prompt:
    name: str
    text: str
    hash: str
    fragments: tuple[str, ...]

    def render(self, **values: object) -> str:
        """Fill placeholders; shared fragments are filled in automatically."""
        merged = {name: load_fragment(name) for name in self.fragments}
        merged.update({k: str(v) for k, v in values.items()})
        try:
            return string.Template(self.text).substitute(merged).strip()
        except KeyError as exc:
            raise PromptError(f"prompt {self.name!r} needs a value for ${exc.args[0]}") from None

    @property
    def variables(self) -> set[str]:
        return set(string.Template(self.text).get_identifiers()) - set(self.fragments)


def _fragment_path(name: str) -> Path:
    return PROMPT_DIR / f"_{name}.txt"


@lru_cache(maxsize=None)
def load_fragment(name: str) -> str:
    return _fragment_path(name).read_text(encoding="utf-8").strip()


@lru_cache(maxsize=None)
def load_prompt(name: str) -> Prompt:
    path = PROMPT_DIR / f"{name}.txt"
    if not path.is_file():
        raise PromptError(f"no prompt named {name!r} in {PROMPT_DIR} (known: {', '.join(prompt_names())})")
    text = path.read_text(encoding="utf-8")
    used = sorted(set(string.Template(text).get_identifiers()))
    fragments = tuple(n for n in used if _fragment_path(n).is_file())
    digest = hashlib.sha256(text.encode())
    for fragment in fragments:
        digest.update(b"\0" + fragment.encode() + b"\0" + load_fragment(fragment).encode())
    return Prompt(name=name, text=text, hash=digest.hexdigest()[:16], fragments=fragments)


def prompt_names() -> list[str]:
    return sorted(p.stem for p in PROMPT_DIR.glob("*.txt") if not p.stem.startswith("_"))


def prompt_hashes(names: list[str] | None = None) -> dict[str, str]:
    """name → content hash, recorded in run.json so a dataset says which prompts made it."""
    return {n: load_prompt(n).hash for n in (names or prompt_names())}
