"""Backend registry: `PROVIDER:MODEL[@BASE_URL]` → a backend instance.

Built-in providers register themselves lazily (their SDKs are imported only when used); third-party
packages add providers through the `vau_annotate.backends` entry-point group, whose entries point
to a factory `(spec: ModelSpec, **options) -> Backend`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable

from vau_annotate.annotate.backends.base import Backend, Request, Result

ENTRY_POINT_GROUP = "vau_annotate.backends"

Factory = Callable[..., Backend]

# provider → "module:attribute" of its factory, imported on first use
_BUILTIN: dict[str, str] = {
    "openai": "vau_annotate.annotate.backends.openai_backend:create",
    "dashscope": "vau_annotate.annotate.backends.dashscope_backend:create",
    "vllm": "vau_annotate.annotate.backends.vllm_backend:create",
    "hf": "vau_annotate.annotate.backends.hf_backend:create",
    "mock": "vau_annotate.annotate.backends.mock_backend:create",
}
_REGISTERED: dict[str, Factory] = {}


class SpecError(ValueError):
    """A model spec string that cannot be understood."""


@dataclass(frozen=True)
class ModelSpec:
    provider: str
    model: str
    base_url: str | None = None

    @classmethod
    def parse(cls, spec: str) -> ModelSpec:
        if ":" not in spec:
            raise SpecError(f"model spec {spec!r} must look like PROVIDER:MODEL[@BASE_URL], e.g. openai:gpt-4o")
        provider, rest = spec.split(":", 1)
        provider = provider.strip().lower()
        base_url = None
        if "@" in rest:
            # the model name never contains '@http', so split on the last '@' before a URL scheme or path
            model, base_url = rest.rsplit("@", 1)
        else:
            model = rest
        if not provider or not model:
            raise SpecError(f"model spec {spec!r} must look like PROVIDER:MODEL[@BASE_URL]")
        return cls(provider=provider, model=model.strip(), base_url=(base_url or None))

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}" + (f"@{self.base_url}" if self.base_url else "")


def register_backend(provider: str) -> Callable[[Factory], Factory]:
    """Decorator: register a factory for a provider name (overrides built-ins)."""

    def decorate(factory: Factory) -> Factory:
        _REGISTERED[provider.lower()] = factory
        return factory

    return decorate


def _entry_point_factories() -> dict[str, metadata.EntryPoint]:
    try:
        return {ep.name.lower(): ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    except Exception:  # a broken third-party distribution must not break the tool
        return {}


def providers() -> list[str]:
    return sorted(set(_BUILTIN) | set(_REGISTERED) | set(_entry_point_factories()))


def get_factory(provider: str) -> Factory:
    provider = provider.lower()
    if provider in _REGISTERED:
        return _REGISTERED[provider]
    plugins = _entry_point_factories()
    if provider in plugins:
        return plugins[provider].load()
    if provider in _BUILTIN:
        module_name, attr = _BUILTIN[provider].split(":")
        return getattr(importlib.import_module(module_name), attr)
    raise SpecError(f"unknown model provider {provider!r}; known: {', '.join(providers())}")


def load_backend(spec: str | ModelSpec, **options: Any) -> Backend:
    """Create the backend for a spec string; options are provider-specific (api_key_env, timeout…)."""
    parsed = spec if isinstance(spec, ModelSpec) else ModelSpec.parse(spec)
    return get_factory(parsed.provider)(parsed, **options)


@dataclass(frozen=True)
class SpecOnly:
    """A model's identity without a connection: what `--dry-run` prices against, calling nothing."""

    provider: str
    model: str
    base_url: str | None = None

    @classmethod
    def of(cls, spec: str) -> SpecOnly:
        parsed = ModelSpec.parse(spec)
        return cls(parsed.provider, parsed.model, parsed.base_url)

    async def generate(self, request: Request) -> Result:
        raise RuntimeError("a dry run makes no model calls")

    async def aclose(self) -> None:
        return None
