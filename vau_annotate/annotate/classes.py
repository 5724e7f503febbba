"""The canonical anomaly-class taxonomy and the lookup that maps a source's spelling onto it.

Sources spell the same class many ways ('RoadAccidents', 'Traffic accident', 'road_accidents',
'Normal_Videos_event'). Ingest resolves every spelling once, here, so later stages (prompts,
classification rewards, evaluation) only ever see canonical names. Two taxonomies are built in:
`vau-bench` (`vau_annotate/data/classes.json`: VAU-Bench's 20 classes + UCF-Crime's Burglary and
Shoplifting) and `vad-reasoning` (`data/classes_vad_reasoning.json`: the fine-grained categories of
Vad-R1's Vad-Reasoning dataset, each mapped to its VAU-Bench class where one exists);
`--classes FILE` replaces them with a file of the same format.
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
VAU_BENCH = "vau-bench"
VAD_REASONING = "vad-reasoning"
BUILTIN_FILES = {VAU_BENCH: "data/classes.json", VAD_REASONING: "data/classes_vad_reasoning.json"}
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
    """One canonical class: its name, other spellings, which datasets use it, and where it belongs.

    `maps_to` names the class in another taxonomy that this one corresponds to (e.g. Vad-R1's
    'Traffic Accidents' → VAU-Bench 'Traffic_accident', UCF-Crime's 'Shoplifting' → VAU-Bench
    'Stealing', which is how VAU-Bench labels those videos); `group` is the parent category of a
    hierarchical taxonomy (Vad-R1: 'Human Activity / Crime').
    """

    name: str
    aliases: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    maps_to: tuple[tuple[str, str], ...] = ()
    group: str | None = None


def class_key(text: str) -> str:
    """The comparison key of a class spelling: lower case, letters and digits only."""
    return re.sub(r"[^0-9a-z]", "", text.lower())


def _singular(key: str) -> str:
    return key[:-1] if key.endswith("s") and len(key) > 3 else key


@dataclass
class Taxonomy:
    """Canonical classes plus a tolerant lookup (case, spaces, underscores, hyphens, plural 's')."""

    classes: tuple[ClassInfo, ...]
    name: str = VAU_BENCH
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

    def info(self, name: str) -> ClassInfo | None:
        """The ClassInfo of a canonical name (or any spelling of it)."""
        canonical = self.lookup(name)
        return next((c for c in self.classes if c.name == canonical), None)

    def map_to(self, name: str | None, other: str) -> str | None:
        """The class of taxonomy `other` that `name` corresponds to, None when there is none.

        A class listed as used by `other` (its `sources`) is its own counterpart; otherwise its
        `maps_to` entry for `other` decides.
        """
        info = self.info(name) if name else None
        if info is None:
            return None
        mapped = dict(info.maps_to).get(other)
        if mapped:
            return mapped
        return info.name if other in info.sources else None

    def infer_from_name(self, video_name: str, within: str | None = None) -> str | None:
        """A class read off a video's file name or folder ('ucf_Abuse030_x264.mp4' → Abuse).

        UCF-Crime and MSAD name files after their class, and some annotation rows leave the class
        out (VAU-Bench rows of '-1', UCF-Crime's train list); the name is then the best evidence.
        It is only a fallback, and it goes through the same alias table: with `within` (a
        benchmark's taxonomy name, e.g. 'vau-bench') the class found is mapped to that benchmark's
        own label for it ('Shoplifting001_x264.mp4' → 'Stealing', as VAU-Bench labels those videos).
        """
        path = Path(video_name.replace("\\", "/"))
        candidates = [_DATASET_PREFIX.sub("", path.stem)] + [part for part in reversed(path.parts[:-1])]
        for text in candidates:
            match = _NAME_CLASS.match(text)
            if match:
                found = self.lookup(match.group(1)) or self._lookup_words(match.group(1))
                if found:
                    return (self.map_to(found, within) or found) if within else found
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
        return {"name": self.name, "classes": [
            {"name": c.name, "aliases": list(c.aliases), "sources": list(c.sources), "maps_to": dict(c.maps_to), **({"group": c.group} if c.group else {})}
            for c in self.classes
        ]}


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


def parse_taxonomy(data: object, origin: str, name: str | None = None) -> Taxonomy:
    """Build a Taxonomy from the JSON format of classes.json; adds Normal when missing.

    Its name is `name`, else the file's own "name" field, else the file's stem.
    """
    if not isinstance(data, dict) or not isinstance(data.get("classes"), list):
        raise ClassFileError(f"{origin}: expected an object with a 'classes' list")
    infos = [_class_info(entry, origin, i) for i, entry in enumerate(data["classes"])]
    names = [info.name for info in infos]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ClassFileError(f"{origin}: class listed twice: {', '.join(duplicates)}")
    if not any(class_key(n) == class_key(NORMAL) for n in names):
        infos.append(ClassInfo(name=NORMAL, aliases=("Normal Videos", "No anomaly"), maps_to=((VAU_BENCH, NORMAL),)))
    given = data.get("name")
    return Taxonomy(classes=tuple(infos), name=name or (given if isinstance(given, str) and given.strip() else Path(origin).stem))


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
    maps_to = entry.get("maps_to", {})
    if not isinstance(maps_to, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in maps_to.items()):
        raise ClassFileError(f"{origin}: classes[{index}] ({entry['name']}): 'maps_to' must map taxonomy names to class names")
    group = entry.get("group")
    if group is not None and not isinstance(group, str):
        raise ClassFileError(f"{origin}: classes[{index}] ({entry['name']}): 'group' must be a string")
    return ClassInfo(name=entry["name"].strip(), aliases=tuple(a.strip() for a in aliases), sources=tuple(sources),
                     maps_to=tuple(sorted(maps_to.items())), group=group)


@lru_cache(maxsize=None)
def builtin_taxonomy(name: str) -> Taxonomy:
    """A built-in taxonomy by name: 'vau-bench' or 'vad-reasoning'."""
    if name not in BUILTIN_FILES:
        raise ClassFileError(f"unknown built-in taxonomy {name!r}; known: {', '.join(BUILTIN_FILES)}")
    text = resources.files("vau_annotate").joinpath(BUILTIN_FILES[name]).read_text(encoding="utf-8")
    return parse_taxonomy(json.loads(text), f"built-in {BUILTIN_FILES[name]}", name=name)


def default_taxonomy() -> Taxonomy:
    """The built-in VAU taxonomy (VAU-Bench's 20 classes + UCF-Crime's Burglary and Shoplifting)."""
    return builtin_taxonomy(VAU_BENCH)


def load_taxonomy(path: str | Path | None = None, builtin: str = VAU_BENCH) -> Taxonomy:
    """The taxonomy of a user's classes file, or the built-in `builtin` one when `path` is None."""
    if path is None:
        return builtin_taxonomy(builtin)
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
