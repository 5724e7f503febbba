"""What a stage reports back to the CLI: counts to print and whether anything was rejected."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StageSummary:
    stage: str
    counts: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when everything went through, 3 ("partial") when anything was rejected."""
        return 3 if self.rejected else 0
