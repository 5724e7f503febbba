"""What `vau-annotate build-cot` was asked to do: one frozen options record shared by the stage's modules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from vau_annotate.pipelines.models import ModelAccess

DEFAULT_POLICY = "stride:16"
DEFAULT_MAX_PIXELS = 448 * 448


@dataclass(frozen=True)
class CotOptions:
    """What `vau-annotate build-cot` was asked to do (recorded in run.json; never a secret)."""

    captioner: str
    reasoner: str
    caption_policy: str = DEFAULT_POLICY
    caption_batch: int = 4
    max_pixels: int = DEFAULT_MAX_PIXELS
    limit: int | None = None
    concurrency: int = 8
    rpm: float | None = None
    tpm: float | None = None
    gates: tuple[str, ...] | None = None
    skip_gates: tuple[str, ...] = ()
    length_gate: Literal["warn", "reject"] = "reject"
    dry_run: bool = False
    retry_rejected: bool = False
    caption_tokens: int = 256
    step_tokens: int = 512
    answer_tokens: int = 512
    temperature: float = 0.0
    decoder: str = "auto"
    workers: int = 0
    api_key_env: str | None = None
    access: ModelAccess = field(default_factory=ModelAccess)
    show_progress: bool = True

    @property
    def warn_gates(self) -> set[str]:
        return {"length"} if self.length_gate == "warn" else set()

    def backend_options(self) -> dict[str, Any]:
        return {"api_key_env": self.api_key_env} if self.api_key_env else {}

    def recorded(self) -> dict[str, Any]:
        keep = ("captioner", "reasoner", "caption_policy", "caption_batch", "max_pixels", "limit", "concurrency", "rpm", "tpm",
                "gates", "skip_gates", "length_gate", "caption_tokens", "step_tokens", "answer_tokens", "temperature")
        return {**{k: getattr(self, k) for k in keep}, **self.access.recorded()}
