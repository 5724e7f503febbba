"""Training recipes: flat YAML files (torchtune style) read into a typed dataclass, with `key=value`
overrides from the command line.

A recipe is one readable file with every knob at top level (no nesting, no inheritance): what
you read is what runs. The trainer defines the keys and their types as a dataclass; unknown keys
are errors (a typo must not silently train with a default), and values are coerced to the
declared type, so YAML's `1e-5` (a *string* to PyYAML) and the CLI's `lr=2e-5` both become floats.
Shipped recipes live in `vau_annotate/train/configs/` and are found by name (`sft_tiny`).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Sequence, TypeVar

CONFIGS_DIR = Path(__file__).parent / "configs"
T = TypeVar("T")


class RecipeError(ValueError):
    """A recipe that cannot be loaded: missing file, unknown key, value of the wrong type."""


def shipped_configs(prefix: str = "") -> dict[str, Path]:
    """Shipped recipe names (file stem) → path, optionally only those starting with `prefix`."""
    return {path.stem: path for path in sorted(CONFIGS_DIR.glob("*.yaml")) if path.stem.startswith(prefix)}


def describe(path: Path) -> str:
    """A recipe's one-line description: its first comment line."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return ""


def resolve_config(name_or_file: str | Path) -> Path:
    """A YAML path as given, else a shipped recipe by name (with or without `.yaml`)."""
    path = Path(name_or_file)
    if path.is_file():
        return path
    shipped = shipped_configs()
    stem = path.name[:-5] if path.name.endswith(".yaml") else path.name
    if stem in shipped and path.parent == Path("."):
        return shipped[stem]
    close = difflib.get_close_matches(stem, list(shipped), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; shipped recipes: {', '.join(shipped)}"
    raise RecipeError(f"no recipe file {str(name_or_file)!r} and no shipped recipe of that name{hint}")


def read_yaml(path: Path) -> dict[str, Any]:
    """A flat mapping from a YAML file (nested mappings are refused: recipes are flat)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of key: value lines")
    nested = [key for key, value in data.items() if isinstance(value, dict)]
    if nested:
        raise RecipeError(f"{path}: recipes are flat; nested keys: {', '.join(map(str, nested))}")
    return {str(key): value for key, value in data.items()}


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    """`key=value` strings → {key: raw value} (the value may itself contain '=')."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"override {item!r} is not key=value")
        out[key.strip()] = value
    return out


_NONE_WORDS = {"", "null", "none", "~"}
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def coerce(key: str, value: Any, hint: Any) -> Any:
    """`value` (from YAML or a CLI string) as type `hint`: int, float, bool, str, list[...] or
    `X | None`; a clear error otherwise."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS):
            return None
        errors = []
        for member in members:
            try:
                return coerce(key, value, member)
            except RecipeError as exc:
                errors.append(str(exc))
        raise RecipeError(errors[0])
    if origin is list:
        (item,) = typing.get_args(hint) or (str,)
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import yaml

                value = yaml.safe_load(text)
            else:
                value = [piece.strip() for piece in text.split(",") if piece.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [coerce(key, element, item) for element in value]
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            word = str(value).strip().lower()
            if word in _TRUE | _FALSE:
                return word in _TRUE
            raise ValueError
        if hint is int:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if hint is str:
            if value is None:
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        name = getattr(hint, "__name__", str(hint))
        raise RecipeError(f"{key}: {value!r} is not a valid {name}") from None
    return value


def load_recipe(cls: type[T], name_or_file: str | Path | None = None, overrides: Sequence[str] | dict[str, Any] = ()) -> T:
    """The dataclass `cls` filled from the recipe file (if any), then from `key=value` overrides;
    every key is checked against `cls`'s fields and coerced to its declared type."""
    values: dict[str, Any] = {}
    source = resolve_config(name_or_file) if name_or_file else None
    if source is not None:
        values.update(read_yaml(source))
    from_file = set(values)
    cli = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    values.update(cli)
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        hints_text = []
        for key in unknown:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hints_text.append(f"{key} (did you mean {close[0]}?)" if close else key)
        where = f" in {source}" if source and set(unknown) <= from_file - set(cli) else ""
        raise RecipeError(f"unknown recipe key{'s' if len(unknown) > 1 else ''}{where}: {', '.join(hints_text)}")
    typed = {key: coerce(key, value, hints[key]) for key, value in values.items()}
    missing = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in typed]  # type: ignore[arg-type]
    if missing:
        raise RecipeError(f"recipe needs: {', '.join(missing)}")
    return cls(**typed)


def recipe_dict(recipe: Any) -> dict[str, Any]:
    """The resolved recipe as a flat dict (written next to checkpoints so a run says what it ran)."""
    return dataclasses.asdict(recipe)


def dump_yaml(recipe: Any, path: Path) -> None:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe_dict(recipe), sort_keys=False), encoding="utf-8")
