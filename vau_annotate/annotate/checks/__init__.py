"""Quality gates: named checks that decide whether a generated record is accepted, repaired or rejected.

A gate looks at one candidate (whatever a stage generates: a CoT draft, a reflection triple) and
returns findings — each says which *part* of the output is at fault (`step2`, `answer`, …) and
what is wrong, in words that can be shown to a person and pasted into a repair prompt. Parts make
repair targeted: a stage re-asks only the calls whose parts failed.

Gates are registered by name in a `GateRegistry` per stage, so the command line can select them
(`--gates`, `--skip-gate NAME`) and demote some to warnings (`--length-gate warn`). Generic gates
(sentence count, word band, neutrality lexicon, repetition, well-formed tags) live in `common.py`
and are parameterised by functions that pick the texts out of a candidate; stage-specific ones
live next to it (`cot.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Collection, Generic, Iterable, Literal, TypeVar

S = TypeVar("S")
Severity = Literal["reject", "warn"]
WHOLE = ""  # the part name of a finding about the output as a whole


class GateSelectionError(ValueError):
    """Gate names on the command line that the stage does not know."""


@dataclass(frozen=True)
class Finding:
    """One problem: the part of the output at fault and what is wrong with it."""

    part: str
    message: str

    def __str__(self) -> str:
        return f"{self.part}: {self.message}" if self.part else self.message


@dataclass(frozen=True)
class Gate(Generic[S]):
    """A named check; `find` returns no findings when the candidate passes."""

    name: str
    description: str
    find: Callable[[S], list[Finding]]


@dataclass(frozen=True)
class GateResult:
    """What one gate said about one candidate."""

    gate: str
    severity: Severity
    findings: tuple[Finding, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def message(self) -> str:
        return "; ".join(str(f) for f in self.findings)


@dataclass(frozen=True)
class GateReport:
    """All gate results of one candidate: failures decide, warnings are only recorded."""

    results: tuple[GateResult, ...]

    @property
    def failures(self) -> list[GateResult]:
        return [r for r in self.results if not r.ok and r.severity == "reject"]

    @property
    def warnings(self) -> list[GateResult]:
        return [r for r in self.results if not r.ok and r.severity == "warn"]

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def failed_names(self) -> list[str]:
        return [r.gate for r in self.failures]

    def detail(self) -> dict[str, str]:
        """gate → message of every failure (the `detail` of a reject line)."""
        return {r.gate: r.message for r in self.failures}

    def warning_detail(self) -> dict[str, str]:
        return {r.gate: r.message for r in self.warnings}

    def by_part(self) -> dict[str, list[str]]:
        """part → 'gate: message' lines of the failures, for targeted repair prompts."""
        out: dict[str, list[str]] = {}
        for result in self.failures:
            for finding in result.findings:
                out.setdefault(finding.part, []).append(f"{result.gate}: {finding.message}")
        return out


@dataclass
class GateRegistry(Generic[S]):
    """The gates of one stage, in the order they run and are reported."""

    stage: str
    gates: dict[str, Gate[S]] = field(default_factory=dict)

    def register(self, gate: Gate[S]) -> Gate[S]:
        if gate.name in self.gates:
            raise ValueError(f"gate {gate.name!r} is registered twice for stage {self.stage!r}")
        self.gates[gate.name] = gate
        return gate

    @property
    def names(self) -> list[str]:
        return list(self.gates)

    def select(self, only: Iterable[str] | None = None, skip: Iterable[str] = ()) -> list[Gate[S]]:
        """The gates to run: all (or those named in `only`) minus those in `skip`; unknown names raise."""
        wanted = list(only) if only is not None else self.names
        skipped = set(skip)
        unknown = [n for n in [*wanted, *skipped] if n not in self.gates]
        if unknown:
            raise GateSelectionError(f"unknown {self.stage} gate(s): {', '.join(unknown)}; known: {', '.join(self.names)}")
        return [self.gates[n] for n in self.names if n in wanted and n not in skipped]


def run_gates(candidate: S, gates: Iterable[Gate[S]], *, warn: Collection[str] = ()) -> GateReport:
    """Run every gate on a candidate; gates named in `warn` report but never fail it."""
    results = []
    for gate in gates:
        severity: Severity = "warn" if gate.name in warn else "reject"
        results.append(GateResult(gate=gate.name, severity=severity, findings=tuple(gate.find(candidate))))
    return GateReport(results=tuple(results))


def parse_gate_list(text: str | None) -> list[str] | None:
    """`--gates a,b c` → ['a', 'b', 'c']; None/empty → None (all gates)."""
    if not text:
        return None
    names = [n for n in text.replace(",", " ").split() if n]
    return names or None


__all__ = [
    "Finding", "Gate", "GateRegistry", "GateReport", "GateResult", "GateSelectionError", "Severity", "WHOLE",
    "parse_gate_list", "run_gates",
]
