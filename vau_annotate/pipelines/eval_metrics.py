"""The run's scored items → the papers' metrics, through the pure functions of annotate/metrics.py.

One block per task (and per think mode where the task has two prompts):
- qa: accuracy (unparsable = wrong, counted) — VAU-R1 `Acc w/o think` / `Acc w/ think`;
- tag: mIoU, R@0.3/0.5/0.7 over abnormal videos with a known span (VAU-R1 excludes normal ones);
- cls: normal-vs-abnormal accuracy, class accuracy, macro F1, confusion matrix;
- p2c: Vad-R1 detection (acc / prec / rec / F1 from `<which>`), grounding from `<when>`, and
  BLEU / METEOR / ROUGE of the reply against the reference reasoning;
- reflect: SRVAU-R1 initial vs final accuracy and the C→C / W→C / W→W / C→W counts;
- reasoning: VAU-Eval means (judge) and the same text metrics;
- pairwise: wins / ties / losses and the judge's position bias.
Items whose call failed are part of every denominator (their prediction is None).
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from vau_annotate.annotate import metrics as m
from vau_annotate.pipelines import judges

if TYPE_CHECKING:
    from vau_annotate.pipelines.eval_outputs import ItemResult


def _spans(prediction: Any) -> list[tuple[float, float]]:
    return [(float(s[0]), float(s[1])) for s in prediction or []]


def _by_mode(results: list[ItemResult], task: str) -> dict[str, list[ItemResult]]:
    groups: dict[str, list[ItemResult]] = defaultdict(list)
    for r in results:
        if r.ask.item.task == task:
            groups[r.ask.mode or "default"].append(r)
    return dict(groups)


def compute_metrics(results: list[ItemResult], unreadable: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {"items": len({(r.ask.item.task, r.ask.item.id) for r in results}) + unreadable, "unreadable_videos": unreadable}
    for mode, group in _by_mode(results, "qa").items():
        out.setdefault("qa", {})[mode] = m.qa_accuracy([r.prediction for r in group], [r.ask.item.answer for r in group])
    for mode, group in _by_mode(results, "tag").items():
        out.setdefault("tag", {})[mode] = m.grounding_metrics([_spans(r.prediction) for r in group], [r.ask.item.span for r in group])  # type: ignore[misc]
    for mode, group in _by_mode(results, "cls").items():
        out.setdefault("cls", {})[mode] = m.classification_metrics([r.prediction for r in group], [r.ask.item.answer for r in group])
    p2c = [r for r in results if r.ask.item.task == "p2c"]
    if p2c:
        block: dict[str, Any] = {"detection": m.detection_metrics([(r.prediction or {}).get("abnormal") for r in p2c],
                                                                  [r.ask.item.label == "abnormal" for r in p2c])}
        grounded = [r for r in p2c if r.ask.item.label == "abnormal" and r.ask.item.span is not None]
        block["grounding"] = m.grounding_metrics([_spans((r.prediction or {}).get("spans")) for r in grounded], [r.ask.item.span for r in grounded])  # type: ignore[misc]
        block["text"] = _text([r for r in p2c if r.ask.item.reference])
        out["p2c"] = block
    reflect = [r for r in results if r.ask.item.task == "reflect"]
    if reflect:
        block = {"all": m.reflection_metrics([bool(r.scores.get("initial_correct")) for r in reflect], [bool(r.scores.get("final_correct")) for r in reflect])}
        for sub in sorted({r.ask.item.sub_task for r in reflect}):
            group = [r for r in reflect if r.ask.item.sub_task == sub]
            block[sub] = m.reflection_metrics([bool(r.scores.get("initial_correct")) for r in group], [bool(r.scores.get("final_correct")) for r in group])
        out["reflect"] = block
    reasoning = [r for r in results if r.ask.item.task == "reasoning"]
    if reasoning:
        block = {"text": _text([r for r in reasoning if r.ask.item.reference])}
        judged = [r for r in reasoning if r.judge is not None]
        if judged:
            block["vau_eval"] = judges.vau_eval_summary([r.judge["scores"] if r.judge and r.judge.get("status") == "ok" else None for r in judged])
        out["reasoning"] = block
    pairs = [r for r in results if r.pairwise is not None]
    if pairs:
        out["pairwise"] = judges.pairwise_summary([judges.PairVerdict(r.pairwise.get("first"), r.pairwise.get("second")) for r in pairs if r.pairwise])
    return out


def _text(results: list[ItemResult]) -> dict[str, Any] | None:
    """BLEU/METEOR/ROUGE of the replies against the references (a failed call is an empty reply)."""
    if not results:
        return None
    scores = m.text_metrics([r.text if r.error is None else "" for r in results], [r.ask.item.reference for r in results])
    return {**scores, "n": len(results)}
