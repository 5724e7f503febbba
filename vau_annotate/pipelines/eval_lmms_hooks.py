"""The functions an lmms-eval task folder written by `formats/lmms_eval.py` calls (`!function utils.…`).

They run inside lmms-eval, on its docs (our exported GRPO rows): the prompt is the one
`vau-annotate eval` sends (eval_tasks.render_prompt), replies are read by the same parsers
(eval_tasks.score → annotate/answers.py) and aggregated by the same metric functions
(annotate/metrics.py), so a model scored by lmms-eval and by `vau-annotate eval` gets the same
numbers from the same replies.

lmms-eval's hook signatures (lmms_eval/api/task.py, 0.7.3): `doc_to_visual(doc)`,
`doc_to_text(doc, lmms_eval_specific_kwargs)`, `process_results(doc, results) -> {metric: value}`,
aggregation `fn(values) -> float`.
"""

from __future__ import annotations

import io
from typing import Any, Callable

from vau_annotate.annotate import metrics as m
from vau_annotate.pipelines.eval_items import EvalItem, item_from_row
from vau_annotate.pipelines.eval_tasks import render_prompt, score

# task → the metrics its lmms-eval YAML lists (names are lmms-eval metric keys)
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "qa": ("accuracy", "unparsable"),
    "tag": ("miou", "r_at_0.3", "r_at_0.5", "r_at_0.7"),
    "cls": ("accuracy", "binary_accuracy", "macro_f1"),
    "p2c": ("accuracy", "precision", "recall", "f1", "miou"),
    "reflect": ("initial_accuracy", "final_accuracy", "w_to_c", "c_to_w"),
}


def _item(doc: dict[str, Any]) -> EvalItem:
    return item_from_row(doc, str(doc.get("task") or "qa"), lambda: None)  # type: ignore[arg-type,return-value]


def doc_to_visual(doc: dict[str, Any]) -> list[Any]:
    """Embedded frames as PIL images in time order, or the row's video path (`--frames path` exports)."""
    from PIL import Image

    frames = doc.get("frames")
    if frames:
        return [f if isinstance(f, Image.Image) else Image.open(io.BytesIO(f["bytes"])).convert("RGB") for f in frames]
    return [doc["video"]] if doc.get("video") else []


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    kwargs = lmms_eval_specific_kwargs or {}
    item = _item(doc)
    mode = "think" if kwargs.get("think") else "no_think"
    if item.task not in ("qa", "tag", "cls"):
        mode = ""
    times = doc.get("frame_times") or []
    fps = float(doc.get("sample_fps") or doc.get("fps") or 1.0)
    duration = float(doc.get("duration") or (times[-1] + 1.0 / fps if times else 0.0))
    _prompt, text = render_prompt(item, mode, fps, duration)
    return text


def doc_to_target(doc: dict[str, Any]) -> str:
    return str(doc.get("answer") or doc.get("label") or "")


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, Any]:
    """One doc's reply parsed and scored; every metric of the task gets the same JSON-able record."""
    item = _item(doc)
    reply = results[0] if results else None
    prediction, scores = score(item, reply)
    record = {"task": item.task, "prediction": prediction, "scores": scores, "answer": item.answer, "label": item.label,
              "span": list(item.span) if item.span else None}
    return {name: record for name in TASK_METRICS.get(item.task, ())}


def _spans(value: Any) -> list[tuple[float, float]]:
    return [(float(s[0]), float(s[1])) for s in value or []]


def _block(task: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    if task == "qa":
        return m.qa_accuracy([r["prediction"] for r in records], [r["answer"] for r in records])
    if task == "tag":  # VAU-R1 grounds abnormal videos with a known span only
        grounded = [r for r in records if r["label"] == "abnormal" and r["span"]]
        block = m.grounding_metrics([_spans(r["prediction"]) for r in grounded], [tuple(r["span"]) for r in grounded])
        return {k.replace("r@", "r_at_"): v for k, v in block.items()}
    if task == "cls":
        return m.classification_metrics([r["prediction"] for r in records], [r["answer"] for r in records])
    if task == "p2c":
        block = m.detection_metrics([(r["prediction"] or {}).get("abnormal") for r in records], [r["label"] == "abnormal" for r in records])
        grounded = [r for r in records if r["label"] == "abnormal" and r["span"]]
        block["miou"] = m.grounding_metrics([_spans((r["prediction"] or {}).get("spans")) for r in grounded], [tuple(r["span"]) for r in grounded])["miou"]
        return block
    if task == "reflect":
        block = m.reflection_metrics([bool(r["scores"]["initial_correct"]) for r in records], [bool(r["scores"]["final_correct"]) for r in records])
        return {**block, "w_to_c": block["W→C"], "c_to_w": block["C→W"]}
    raise ValueError(f"no lmms-eval metrics for task {task!r}")


def _aggregator(task: str, metric: str) -> Callable[[list[dict[str, Any]]], float]:
    def aggregate(records: list[dict[str, Any]]) -> float:
        value = _block(task, records)[metric]
        return float("nan") if value is None else float(value)  # None: no item to score (e.g. mIoU of an all-normal split)

    aggregate.__name__ = f"aggregate_{task}_{metric}".replace(".", "_")
    return aggregate


def aggregator_name(task: str, metric: str) -> str:
    return f"aggregate_{task}_{metric}".replace(".", "_")


AGGREGATORS: dict[str, Callable[[list[dict[str, Any]]], float]] = {
    aggregator_name(task, metric): _aggregator(task, metric) for task, names in TASK_METRICS.items() for metric in names
}
globals().update(AGGREGATORS)
