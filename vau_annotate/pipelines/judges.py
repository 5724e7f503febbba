"""LLM judges through any backend: VAU-Eval scores and pairwise comparison of two models.

VAU-Eval (VAU-R1 Sec. 4, `src/evaluation/evaluate_reasoning_deepseek.py`): the judge reads the
ground-truth description + analysis and the model's, and returns JSON with five integer scores
0–10 (classification, key object/action matching, fluency, informativeness, factual consistency)
and their total. VAU-R1's script reads only JSON inside a ```json fence and crashes otherwise;
here the first JSON object is taken from inside a fence or from bare text, a reply that still
does not parse is asked again once (the reply and what was wrong are sent back), and a second
failure counts the item as failed (reported, never scored as 0). The total is the sum of the five
scores (the judge's own arithmetic is kept as `stated_total`).

Pairwise (MT-Bench, Zheng et al. 2023, Sec. 3 and its `pair-v2` prompt): the judge sees one
question, the reference, and two answers and says `[[A]]`, `[[B]]` or `[[C]]` (tie). Every item is
judged in both orders; a model wins only when it is preferred in both, and verdicts that change
with the order count as ties (MT-Bench's conservative rule). Position bias is reported as how
often the verdict followed the position rather than the answer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from vau_annotate.annotate.backends.base import Message, Request, SamplingParams
from vau_annotate.prompts import load_prompt

DIMENSIONS = ("classification_score", "key_matching_score", "fluency_score", "informativeness_score", "factual_score")
VAU_EVAL_PROMPT = "judge_vau_eval"
VAU_EVAL_SYSTEM = "judge_vau_eval_system"
VAU_EVAL_REPAIR = "judge_vau_eval_repair"
PAIRWISE_PROMPT = "judge_pairwise"

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)
_VERDICT = re.compile(r"\[\[([ABC])\]\]")


# -- VAU-Eval ---------------------------------------------------------------------------------------

def vau_eval_request(gt_description: str, gt_analysis: str, description: str, analysis: str, max_tokens: int = 1024) -> Request:
    prompt = load_prompt(VAU_EVAL_PROMPT)
    text = prompt.render(gt_description=gt_description or "(none)", gt_analysis=gt_analysis or "(none)",
                         description=description or "(empty)", analysis=analysis or "(empty)")
    system = load_prompt(VAU_EVAL_SYSTEM).render()
    return Request(messages=(Message.text("system", system), Message.text("user", text)),
                   params=SamplingParams(max_tokens=max_tokens, temperature=0.0), prompt_name=prompt.name, prompt_hash=prompt.hash)


def vau_eval_repair(first: Request, reply: str, problem: str) -> Request:
    """The judge's conversation, its unreadable reply, and a turn saying what was wrong."""
    prompt = load_prompt(VAU_EVAL_REPAIR)
    messages = first.messages + (Message.text("assistant", reply), Message.text("user", prompt.render(problem=problem)))
    return Request(messages=messages, params=first.params, prompt_name=prompt.name, prompt_hash=prompt.hash)


def _json_candidates(text: str) -> list[str]:
    """Fenced blocks first, then every balanced {...} in the bare text, in order."""
    found = [m.strip() for m in _FENCE.findall(text)]
    depth, start = 0, None
    in_string = escape = False
    for i, ch in enumerate(text):
        if in_string:
            escape = (ch == "\\") and not escape
            if ch == '"' and not escape:
                in_string = False
            continue
        if ch == '"' and depth:
            in_string = True
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0 and start is not None:
                found.append(text[start : i + 1])
    return found


def _score(value: Any) -> int | None:
    """An integer score 0–10 (an integral float or a numeric string counts); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and re.fullmatch(r"\s*\d+(?:\.0+)?\s*", value):
        value = float(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and 0 <= value <= 10:
        return value
    return None


def parse_vau_eval(text: str | None) -> tuple[dict[str, int] | None, str]:
    """(scores with `total_score` = sum of the five, "") or (None, what is wrong with the reply)."""
    if not text or not text.strip():
        return None, "the reply is empty"
    problem = "no JSON object in the reply"
    for candidate in _json_candidates(text):
        try:
            data = json.loads(candidate)
        except ValueError:
            problem = "the JSON object does not parse"
            continue
        if not isinstance(data, dict):
            continue
        missing = [d for d in DIMENSIONS if d not in data]
        if missing:
            problem = f"missing scores: {', '.join(missing)}"
            continue
        scores = {d: _score(data[d]) for d in DIMENSIONS}
        bad = [d for d, v in scores.items() if v is None]
        if bad:
            problem = f"scores that are not integers from 0 to 10: {', '.join(f'{d}={data[d]!r}' for d in bad)}"
            continue
        out: dict[str, int] = {d: int(v) for d, v in scores.items() if v is not None}
        out["total_score"] = sum(out.values())
        stated = data.get("total_score")
        if isinstance(stated, (int, float)) and not isinstance(stated, bool):
            out["stated_total"] = int(stated)
        return out, ""
    return None, problem


def vau_eval_summary(results: list[dict[str, int] | None]) -> dict[str, Any]:
    """Mean of each dimension and of the total over the judged items; failures counted apart."""
    scored = [r for r in results if r is not None]
    out: dict[str, Any] = {"n": len(scored), "failed": len(results) - len(scored)}
    for key in DIMENSIONS + ("total_score",):
        out[key] = round(sum(r[key] for r in scored) / len(scored), 4) if scored else None
    return out


# -- pairwise ---------------------------------------------------------------------------------------

def pairwise_request(question: str, reference: str, answer_a: str, answer_b: str, max_tokens: int = 1024) -> Request:
    prompt = load_prompt(PAIRWISE_PROMPT)
    text = prompt.render(question=question, reference=reference or "(none)", answer_a=answer_a or "(empty)", answer_b=answer_b or "(empty)")
    return Request(messages=(Message.text("user", text),), params=SamplingParams(max_tokens=max_tokens, temperature=0.0),
                   prompt_name=prompt.name, prompt_hash=prompt.hash)


def parse_verdict(text: str | None) -> str | None:
    """'A', 'B' or 'C' from the last [[X]] of a reply (a judge may quote the format first); None when absent."""
    found = _VERDICT.findall(text or "")
    return found[-1] if found else None


@dataclass(frozen=True)
class PairVerdict:
    """One item judged in both orders. `first`: the model under test shown as A; `second`: as B."""

    first: str | None
    second: str | None

    @property
    def outcome(self) -> str:
        """win / loss / tie for the model under test, or failed when a verdict is missing."""
        if self.first is None or self.second is None:
            return "failed"
        as_a = {"A": "win", "B": "loss", "C": "tie"}[self.first]
        as_b = {"A": "loss", "B": "win", "C": "tie"}[self.second]
        return as_a if as_a == as_b else "tie"

    @property
    def consistent(self) -> bool:
        return self.outcome != "failed" and {"A": "win", "B": "loss", "C": "tie"}[self.first or "C"] == {"A": "loss", "B": "win", "C": "tie"}[self.second or "C"]


def pairwise_summary(verdicts: list[PairVerdict]) -> dict[str, Any]:
    """Wins / ties / losses of the model under test and the judge's position bias.

    `consistent`: items whose verdict survived the swap; `prefers_first` / `prefers_second`: items
    where the judge chose the same position in both orders (the answer changed, the pick did not).
    """
    judged = [v for v in verdicts if v.outcome != "failed"]
    outcomes = [v.outcome for v in judged]
    n = len(judged)
    first = sum(1 for v in judged if v.first == "A" and v.second == "A")
    second = sum(1 for v in judged if v.first == "B" and v.second == "B")
    consistent = sum(1 for v in judged if v.consistent)
    return {
        "n": n, "failed": len(verdicts) - n,
        "wins": outcomes.count("win"), "ties": outcomes.count("tie"), "losses": outcomes.count("loss"),
        "win_rate": round(outcomes.count("win") / n, 4) if n else None,
        "consistent": consistent, "consistency": round(consistent / n, 4) if n else None,
        "prefers_first": first, "prefers_second": second,
    }
