"""`vau-annotate report`: one self-contained HTML page over a run, its dataset, training and eval.

Why one file with everything inline: the page is mailed around, opened from a cluster's shared
disk or attached to a paper's supplementary material, where there is no network and no CDN. So the
data goes in as one JSON blob, the scripts and styles as inline text (`data/report/`), and frames as
small JPEG thumbnails (data URIs). The browser renders records a page at a time, so a run of several
thousand records stays usable.

The page reads only what the run directory already holds (run.json, manifest, cot/ and reflect/
records, rejects, the ledger through `status`), plus, when given, an exported dataset (counts per
config and split), training logs (any `*.jsonl` with a `step` key) and an eval directory
(`metrics.json`).
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from PIL import Image

from vau_annotate.annotate.checks.common import count_words, split_sentences
from vau_annotate.annotate.rundir import RunDir, atomic_write_text, safe_name
from vau_annotate.annotate.tags import temporal_iou
from vau_annotate.pipelines.status import collect_status

THUMB_WIDTH = 128
THUMB_QUALITY = 60
# Vad-R1's chain-length band (words of <think>), the same defaults as the `length` gate.
LENGTH_BANDS = {"normal": (140, 261), "abnormal": (233, 456)}


class ReportInputError(ValueError):
    """A directory given to `report` is missing or holds nothing the report can read."""


@dataclass
class ReportInputs:
    """What the report is built from; only `run` is required."""

    run: Path
    dataset: Path | None = None
    evals: list[Path] = field(default_factory=list)
    trains: list[Path] = field(default_factory=list)
    max_records: int | None = None


def write_report(inputs: ReportInputs, out: Path | None = None) -> Path:
    """Collect, render and atomically write `report.html` (default: inside the run directory)."""
    payload = collect(inputs)
    target = out or (inputs.run / "report.html")
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, render(payload))
    target.chmod(0o644)  # a page to share: readable by others, unlike the run's private temp files
    return target


# ---------------------------------------------------------------- collection


def collect(inputs: ReportInputs) -> dict[str, Any]:
    """Everything the page shows, as JSON-ready data."""
    run = inputs.run
    if not (run / "run.json").exists() and not (run / "manifest.parquet").exists():
        raise ReportInputError(f"{run} is not a run directory (no run.json or manifest.parquet)")
    rd = RunDir(run)
    videos = {v.id: v for v in rd.load_manifest()} if rd.manifest_path.exists() else {}
    cot = _load_records(run / "cot")
    reflect = _load_records(run / "reflect")
    rejects = [r.model_dump(mode="json") for r in rd.load_rejects()] if rd.rejects_path.exists() else []
    thumbs = _Thumbnails(rd)

    records: list[dict[str, Any]] = []
    for rec in cot:
        records.append(_cot_entry(rec, videos.get(rec["video_id"]), thumbs))
    for rec in reflect:
        records.append(_reflect_entry(rec, videos.get(rec["video_id"]), thumbs))
    for rej in rejects:
        if rej.get("stage") in ("cot", "reflect", "sample", "ingest"):
            records.append(_reject_entry(rej, videos.get(str(rej.get("item", "")).split("#")[0]), thumbs))
    if inputs.max_records is not None:
        records = records[: inputs.max_records]

    status = collect_status(run)
    return {
        "title": f"vau-annotate report — {run.name}",
        "run": str(run),
        "meta": _meta(rd),
        "status": status,
        "gates": _gate_counts(cot, reflect, rejects),
        "plots": _plots(videos, cot, reflect),
        "records": records,
        "thumbs": thumbs.table,
        "dataset": _dataset_summary(inputs.dataset) if inputs.dataset else None,
        "train": [_train_log(p) for p in inputs.trains],
        "eval": [_eval_summary(p) for p in inputs.evals],
    }


def _load_records(folder: Path) -> list[dict[str, Any]]:
    """Accepted records of a stage (`*.rejected.json` markers are reported from rejects.jsonl)."""
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("*.json")):
        if path.name.endswith(".rejected.json"):
            continue
        try:
            out.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            continue
    return out


def _meta(rd: RunDir) -> dict[str, Any]:
    if not rd.meta_path.exists():
        return {}
    meta = rd.load_meta().model_dump(mode="json")
    stages = []
    for stage in meta.get("stages", []):
        stages.append({k: stage.get(k) for k in ("stage", "started", "finished", "counts")})
    return {"source": meta.get("source"), "created": meta.get("created"), "stages": stages,
            "prompt_hashes": meta.get("prompt_hashes", {}), "versions": meta.get("versions", {})}


class _Thumbnails:
    """Frame strips as small data-URI JPEGs, made once per frame set and shared by records."""

    def __init__(self, rd: RunDir) -> None:
        self.rd = rd
        self.table: dict[str, list[dict[str, Any]]] = {}

    def strip(self, video_id: str, policy: str | None = None, max_pixels: int | None = None) -> str | None:
        """Key of the video's frame strip in `table`, or None when it was never sampled."""
        folder = self.rd.frames_dir / safe_name(video_id)
        if not folder.is_dir():
            return None
        sets = sorted(p for p in folder.glob("*/frameset.json"))
        if policy is not None and max_pixels is not None:
            wanted = self.rd.frameset_path(video_id, policy, max_pixels)
            sets = [wanted] if wanted.exists() else sets
        if not sets:
            return None
        chosen = sets[0]
        key = str(chosen.parent.relative_to(self.rd.root))
        if key not in self.table:
            frameset = json.loads(chosen.read_text(encoding="utf-8"))
            self.table[key] = [
                {"t": round(float(t), 2), "src": _thumbnail(self.rd.root / p)}
                for t, p in zip(frameset["timestamps"], frameset["paths"])
            ]
        return key


def _thumbnail(path: Path) -> str:
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            height = max(1, round(img.height * THUMB_WIDTH / img.width))
            img = img.resize((THUMB_WIDTH, height))
            buffer = io.BytesIO()
            img.save(buffer, "JPEG", quality=THUMB_QUALITY)
    except OSError:
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _video_info(video: Any) -> dict[str, Any]:
    if video is None:
        return {}
    spans = [[s.start, s.end] for s in video.spans]
    return {"duration": video.duration, "spans": spans, "span_known": video.span_known}


def _cot_entry(rec: dict[str, Any], video: Any, thumbs: _Thumbnails) -> dict[str, Any]:
    prov = rec.get("provenance", {})
    duration = rec.get("duration") or (video.duration if video is not None else None)
    when = (rec.get("fields") or {}).get("when")
    iou = None
    if when and rec.get("span"):
        iou = round(temporal_iou(tuple(when), tuple(rec["span"])), 3)
    words = count_words(rec.get("think", ""))
    return {
        "kind": "cot", "id": rec["video_id"], "video_id": rec["video_id"], "status": "repaired" if prov.get("repaired_gates") else "accepted",
        "label": rec.get("label"), "category": rec.get("category"), "gates": prov.get("repaired_gates", []),
        "frames": thumbs.strip(rec["video_id"], prov.get("caption_policy"), prov.get("max_pixels")),
        "video": _video_info(video), "duration": duration,
        "captions": [{"t": c["timestamp"], "text": c["text"]} for c in rec.get("captions", [])],
        "steps": rec.get("steps", []), "answer": rec.get("answer", ""), "when": when, "when_iou": iou,
        "when_source": rec.get("when_source"), "words": words,
        "sentences": [len(split_sentences(s)) for s in rec.get("steps", [])],
        "warnings": prov.get("warnings", {}),
    }


def _reflect_entry(rec: dict[str, Any], video: Any, thumbs: _Thumbnails) -> dict[str, Any]:
    prov = rec.get("provenance", {})
    initial, revised = rec.get("initial", {}), rec.get("revised", {})
    return {
        "kind": "reflect", "id": rec["id"], "video_id": rec["video_id"], "status": "repaired" if prov.get("repaired") else "accepted",
        "label": rec.get("label"), "category": rec.get("category"), "task": rec.get("task"),
        "frames": thumbs.strip(rec["video_id"]), "video": _video_info(video),
        "question": rec.get("question", ""), "options": rec.get("options", []), "ground_truth": rec.get("ground_truth"),
        "initial": {"text": initial.get("text", ""), "prediction": initial.get("prediction"), "correct": initial.get("correct")},
        "reflection": rec.get("reflection", ""),
        "revised": {"text": _round(revised), "prediction": revised.get("prediction"), "correct": revised.get("correct")},
        "transition": rec.get("transition"), "gates": [],
    }


def _round(attempt: dict[str, Any]) -> str:
    if attempt.get("think") is None and attempt.get("answer") is None:
        return attempt.get("text", "")
    return f"<think>{attempt.get('think') or ''}</think><answer>{attempt.get('answer') or ''}</answer>"


def _reject_entry(rej: dict[str, Any], video: Any, thumbs: _Thumbnails) -> dict[str, Any]:
    detail = rej.get("detail") or {}
    gates = reject_gates(rej)
    video_id = str(rej.get("item", "")).split("#")[0]
    return {
        "kind": rej.get("stage"), "id": rej.get("item"), "video_id": video_id, "status": "rejected",
        "label": video.label if video is not None else None, "category": video.category if video is not None else None,
        "frames": thumbs.strip(video_id) if video is not None else None, "video": _video_info(video),
        "reason": rej.get("reason", ""), "gates": gates, "detail": detail, "transition": detail.get("transition"),
    }


_NOT_GATES = {"reply", "initial", "task", "video_id", "path", "transition", "row"}


def reject_gates(rej: dict[str, Any]) -> list[str]:
    """The gates a reject names: its `failed` list, its `gates` map, or gate → message keys."""
    detail = rej.get("detail") or {}
    named = detail.get("failed") or list((detail.get("gates") or {}).keys())
    if named:
        return [str(g) for g in named]
    return [k for k, v in detail.items() if isinstance(v, str) and k not in _NOT_GATES]


def _gate_counts(cot: list[dict], reflect: list[dict], rejects: list[dict]) -> dict[str, dict[str, dict[str, int]]]:
    """Per stage and gate: items that passed first time, were repaired, or were rejected by it."""
    out: dict[str, dict[str, Counter]] = {}
    for rec in cot:
        for gate in rec.get("provenance", {}).get("repaired_gates", []):
            out.setdefault("cot", {}).setdefault(gate, Counter())["repaired"] += 1
    for rec in reflect:
        if rec.get("provenance", {}).get("repaired"):
            out.setdefault("reflect", {}).setdefault("(any)", Counter())["repaired"] += 1
    for rej in rejects:
        for gate in reject_gates(rej) or [rej.get("reason", "other").split(":")[0]]:
            out.setdefault(str(rej.get("stage")), {}).setdefault(str(gate), Counter())["rejected"] += 1
    accepted = {"cot": len(cot), "reflect": len(reflect)}
    return {"accepted": accepted, "by_gate": {s: {g: dict(c) for g, c in gates.items()} for s, gates in out.items()}}


def _plots(videos: dict[str, Any], cot: list[dict], reflect: list[dict]) -> dict[str, Any]:
    categories = Counter(v.category or "(none)" for v in videos.values())
    durations = [round(v.duration, 2) for v in videos.values() if v.duration]
    lengths = [{"label": r.get("label"), "words": count_words(r.get("think", ""))} for r in cot]
    ious = []
    for rec in cot:
        when = (rec.get("fields") or {}).get("when")
        if when and rec.get("span"):
            ious.append(round(temporal_iou(tuple(when), tuple(rec["span"])), 3))
    transitions = Counter(r.get("transition") for r in reflect if r.get("transition"))
    return {
        "categories": dict(categories.most_common()), "durations": durations, "lengths": lengths,
        "length_bands": LENGTH_BANDS, "when_iou": ious, "transitions": {t: transitions.get(t, 0) for t in ("C→C", "W→C", "W→W", "C→W")},
    }


def _dataset_summary(folder: Path) -> dict[str, Any]:
    """Rows per config and split of an exported dataset (parquet metadata only: no decoding)."""
    import pyarrow.parquet as pq

    if not folder.is_dir():
        raise ReportInputError(f"dataset directory {folder} does not exist")
    counts: dict[str, dict[str, int]] = {}
    for path in sorted(folder.rglob("*.parquet")):
        config = path.parent.name if path.parent != folder else "default"
        split = path.name.split("-")[0]
        counts.setdefault(config, {}).setdefault(split, 0)
        counts[config][split] += pq.ParquetFile(path).metadata.num_rows
    card = folder / "README.md"
    return {"path": str(folder), "counts": counts, "card": card.read_text(encoding="utf-8")[:20000] if card.exists() else ""}


def _train_log(folder: Path) -> dict[str, Any]:
    """Numeric series by step from every jsonl log in a training output directory."""
    if not folder.exists():
        raise ReportInputError(f"training directory {folder} does not exist")
    files = [folder] if folder.is_file() else sorted(folder.rglob("*.jsonl"))
    series: dict[str, list[list[float]]] = {}
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(row, dict) or "step" not in row:
                continue
            for key, value in _numbers(row).items():
                if key not in NOT_CURVES:
                    series.setdefault(key, []).append([row["step"], value])
    return {"path": str(folder), "series": series}


NOT_CURVES = {"step", "time", "epoch", "rollout_s", "step_s", "rejected"}


def _numbers(row: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric values of a log line, nested ones (e.g. per-reward components) as `outer.inner`."""
    out: dict[str, float] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_numbers(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = value
    return out


def _eval_summary(folder: Path) -> dict[str, Any]:
    path = folder / "metrics.json" if folder.is_dir() else folder
    if not path.exists():
        raise ReportInputError(f"no metrics.json in {folder}")
    metrics = json.loads(path.read_text(encoding="utf-8"))
    markdown = path.with_name("metrics.md")
    return {"path": str(folder), "metrics": _flatten(metrics), "markdown": markdown.read_text(encoding="utf-8") if markdown.exists() else ""}


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, (int, float, str)) or value is None:
        return {prefix: value}
    return {prefix: json.dumps(value)[:200]}


# ---------------------------------------------------------------- rendering


def _asset(name: str) -> str:
    return resources.files("vau_annotate").joinpath(f"data/report/{name}").read_text(encoding="utf-8")


def render(payload: dict[str, Any]) -> str:
    """The page: template with the styles, the script and the data inlined."""
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    page = _asset("template.html")
    return (page.replace("{{TITLE}}", html.escape(payload["title"]))
            .replace("/*{{STYLE}}*/", _asset("report.css"))
            .replace("{{DATA}}", data)
            .replace("/*{{SCRIPT}}*/", _asset("report.js")))

