"""The canonical anomaly-class taxonomy and the lookup that maps a source's spelling onto it.

Sources spell the same class many ways ('RoadAccidents', 'Traffic accident', 'road_accidents',
'Normal_Videos_event'). Ingest resolves every spelling once, here, so later stages (prompts,
classification rewards, evaluation) only ever see canonical names. The built-in list lives in
`vau_annotate/data/classes.json`; `--classes FILE` replaces it with a file of the same format.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

NORMAL = "Normal"
_DATASET_PREFIX = re.compile(r"^(?:ecva|ucf|msad|xd|xdv|ucfcrime|ucf_crime)[_-]", re.IGNORECASE)
_NAME_CLASS = re.compile(r"^([A-Za-z]+(?:[_ -][A-Za-z]+)*)")


class ClassFileError(ValueError):
    """A classes file that cannot be used (unreadable, wrong shape, ambiguous aliases)."""


class UnknownClassError(KeyError):
    """A class name that matches no canonical class or alias; carries the nearest names."""

    def __init__(self, name: str, suggestions: list[str]) -> None:
        super().__init__(name)
        self.name = name
        self.suggestions = suggestions

    def __str__(self) -> str:
        hint = f"; near matches: {', '.join(self.suggestions)}" if self.suggestions else "; no near match"
        return f"unknown class {self.name!r}{hint}"


@dataclass(frozen=True)
class ClassInfo:
    """One canonical class: its name, other spellings, and which datasets use it."""

    name: str
    aliases: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()


def class_key(text: str) -> str:
    """The comparison key of a class spelling: lower case, letters and digits only."""
    return re.sub(r"[^0-9a-z]", "", text.lower())


def _singular(key: str) -> str:
    return key[:-1] if key.endswith("s") and len(key) > 3 else key


@dataclass
class Taxonomy:
    """Canonical classes plus a tolerant lookup (case, spaces, underscores, hyphens, plural 's')."""

    classes: tuple[ClassInfo, ...]
    _exact: dict[str, str] = field(default_factory=dict, repr=False)
    _loose: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._exact, self._loose = _build_index(self.classes)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def lookup(self, text: str) -> str | None:
        """The canonical name for `text`, or None when nothing matches."""
        key = class_key(text)
        if not key:
            return None
        return self._exact.get(key) or self._loose.get(_singular(key))

    def canonical(self, text: str) -> str:
        """The canonical name for `text`; raises UnknownClassError with near matches otherwise."""
        name = self.lookup(text)
        if name is None:
            raise UnknownClassError(text, self.near(text))
        return name

    def near(self, text: str, limit: int = 3) -> list[str]:
        """Canonical names whose spellings are closest to `text` (for a helpful reject reason)."""
        close = difflib.get_close_matches(class_key(text), list(self._exact), n=limit * 3, cutoff=0.6)
        out: list[str] = []
        for key in close:
            if self._exact[key] not in out:
                out.append(self._exact[key])
        return out[:limit]

    def is_normal(self, name: str | None) -> bool:
        return name is not None and self.lookup(name) == NORMAL

    def infer_from_name(self, video_name: str) -> str | None:
        """A class read off a video's file name or folder ('ucf_Abuse030_x264.mp4' → Abuse).

        UCF-Crime and MSAD name files after their class, and some annotation rows leave the class
        out (VAU-Bench rows of '-1', UCF-Crime's train list); the name is then the best evidence.
        """
        path = Path(video_name.replace("\\", "/"))
        candidates = [_DATASET_PREFIX.sub("", path.stem)] + [part for part in reversed(path.parts[:-1])]
        for text in candidates:
            match = _NAME_CLASS.match(text)
            if match:
                found = self.lookup(match.group(1)) or self._lookup_words(match.group(1))
                if found:
                    return found
        return None

    def _lookup_words(self, text: str) -> str | None:
        """Try ever shorter leading word runs ('Normal_Videos_event' → 'Normal_Videos' → 'Normal')."""
        words = re.split(r"[_ -]+", text)
        for end in range(len(words) - 1, 0, -1):
            found = self.lookup(" ".join(words[:end]))
            if found:
                return found
        return None

    def to_json(self) -> dict:
        return {"classes": [{"name": c.name, "aliases": list(c.aliases), "sources": list(c.sources)} for c in self.classes]}


def _build_index(classes: tuple[ClassInfo, ...]) -> tuple[dict[str, str], dict[str, str]]:
    exact: dict[str, str] = {}
    for info in classes:
        for spelling in (info.name, *info.aliases):
            key = class_key(spelling)
            if not key:
                raise ClassFileError(f"class {info.name!r} has an empty spelling {spelling!r}")
            if exact.get(key, info.name) != info.name:
                raise ClassFileError(f"spelling {spelling!r} belongs to both {exact[key]!r} and {info.name!r}")
            exact[key] = info.name
    loose: dict[str, str] = {}
    ambiguous: set[str] = set()
    for key, name in exact.items():
        single = _singular(key)
        if loose.get(single, name) != name:
            ambiguous.add(single)
        loose[single] = name
    for key in ambiguous:
        loose.pop(key, None)
    return exact, loose


def parse_taxonomy(data: object, origin: str) -> Taxonomy:
    """Build a Taxonomy from the JSON format of classes.json; adds Normal when missing."""
    if not isinstance(data, dict) or not isinstance(data.get("classes"), list):
        raise ClassFileError(f"{origin}: expected an object with a 'classes' list")
    infos = [_class_info(entry, origin, i) for i, entry in enumerate(data["classes"])]
    names = [info.name for info in infos]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ClassFileError(f"{origin}: class listed twice: {', '.join(duplicates)}")
    if not any(class_key(n) == class_key(NORMAL) for n in names):
        infos.append(ClassInfo(name=NORMAL, aliases=("Normal Videos", "No anomaly")))
    return Taxonomy(classes=tuple(infos))


def _class_info(entry: object, origin: str, index: int) -> ClassInfo:
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"].strip():
        raise ClassFileError(f"{origin}: classes[{index}] needs a non-empty 'name'")
    aliases = entry.get("aliases", [])
    sources = entry.get("sources", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise ClassFileError(f"{origin}: classes[{index}] ({entry['name']}): 'aliases' must be a list of strings")
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        raise ClassFileError(f"{origin}: classes[{index}] ({entry['name']}): 'sources' must be a list of strings")
    return ClassInfo(name=entry["name"].strip(), aliases=tuple(a.strip() for a in aliases), sources=tuple(sources))


@lru_cache(maxsize=1)
def default_taxonomy() -> Taxonomy:
    """The built-in VAU taxonomy (VAU-Bench's 20 classes + UCF-Crime's Burglary and Shoplifting)."""
    text = resources.files("vau_annotate").joinpath("data/classes.json").read_text(encoding="utf-8")
    return parse_taxonomy(json.loads(text), "built-in classes.json")


def load_taxonomy(path: str | Path | None = None) -> Taxonomy:
    """The taxonomy of a user's classes file, or the built-in one when `path` is None."""
    if path is None:
        return default_taxonomy()
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ClassFileError(f"cannot read classes file {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ClassFileError(f"classes file {path} is not valid JSON: {exc}") from None
    return parse_taxonomy(data, str(path))


def canonical_class(name: str, taxonomy: Taxonomy | None = None) -> str:
    """Canonical spelling of a class name (`canonical_class("road_accidents") == "Traffic_accident"`)."""
    return (taxonomy or default_taxonomy()).canonical(name)
