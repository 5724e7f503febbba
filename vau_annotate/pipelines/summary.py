"""What a stage reports back to the CLI: counts to print and whether anything was rejected."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    from vau_annotate.annotate.engine import Estimate


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

    def add_estimates(self, estimates: Mapping[str, Estimate], specs: Mapping[str, str]) -> None:
        """Counts and cost notes of a --dry-run: one block per model role (captioner, base, …)."""
        for role, estimate in estimates.items():
            self.counts.update({
                f"{role} calls": estimate.calls, f"{role} calls cached": estimate.cached,
                f"{role} input tokens (est.)": estimate.input_tokens, f"{role} output tokens (max)": estimate.output_tokens_est,
            })
        self.notes.extend(
            f"no price known for the {role} model ({specs.get(role, '?')}): its cost is not estimated"
            for role, estimate in estimates.items() if estimate.cost is None
        )
        costs = [e.cost for e in estimates.values() if e.cost is not None]
        if costs:
            self.notes.append(f"estimated cost at most ${sum(costs):.4f} (without repairs)")
