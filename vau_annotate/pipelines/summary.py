"""What a stage reports back to the CLI: counts to print and whether anything was rejected."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

from rich.table import Table

if TYPE_CHECKING:
    from vau_annotate.annotate.engine import Estimate
    from vau_annotate.pipelines.runner import RunCounts


@dataclass
class StageSummary:
    stage: str
    counts: dict[str, int] = field(default_factory=dict)
    rejected: int = 0  # rejects standing for the items in scope, this invocation's and earlier ones
    pending: int = 0  # items left pending after transient failures (a plain re-run tries them again)
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when every item in scope is done and accepted; 3 ("partial") when any stands rejected
        (from this invocation or an earlier one) or is still pending after a transient failure."""
        return 3 if self.rejected or self.pending else 0

    def counts_table(self, title: str | None = None) -> Table:
        """The counts as a two-column table, the way every command prints its summary."""
        table = Table(title=title or self.stage, show_header=False)
        for key, value in self.counts.items():
            table.add_row(key, str(value))
        return table

    def add_run_counts(self, counts: RunCounts) -> None:
        """A model-backed stage's item counts, calls and cost (from the StageRunner), and its state."""
        self.counts.update({
            "accepted": counts.accepted, "repaired": counts.repaired, "rejected": counts.rejected,
            "rejected earlier": counts.rejected_before, "already done": counts.skipped,
        })
        if counts.pending:
            self.counts["pending (transient failure)"] = counts.pending
        usage = counts.usage
        if usage:
            self.counts.update({"calls made": usage.get("calls", 0), "calls from ledger": usage.get("cache_hits", 0),
                                "input tokens": usage.get("input_tokens", 0), "output tokens": usage.get("output_tokens", 0)})
            self.notes.append(f"cost of this run: ${usage.get('cost', 0.0):.4f}")
        self.rejected = counts.rejects_in_scope
        self.pending = counts.pending
        if counts.rejected_before:
            self.notes.append(f"{counts.rejected_before} reject(s) from an earlier run still stand for these items (--retry-rejected runs them again)")
        if counts.pending:
            why = ", ".join(f"{code} ×{n}" for code, n in counts.transient.most_common())
            self.notes.append(f"{counts.pending} item(s) left pending after transient failures ({why}): run the same command again to retry them")

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
