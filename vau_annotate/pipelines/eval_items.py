"""What `vau-annotate eval` asks about: test items from an exported dataset, a Hub id, or a VAU-Bench CSV.

An `EvalItem` is one question about one video with its ground truth, in one shape whatever the
source was:

- an exported dataset directory or a Hub id (CONTRACT.md): `datasets.load_dataset(DATA, CONFIG)`,
  split `test`; the GRPO configs carry the solution columns (task, answer, options, span,
  duration, label, category); `p2c_sft` carries the reference reasoning text. Embedded frames are
  used as exported; `--frames path` rows are sampled here with `annotate/video.py`.
- a VAU-Bench-format CSV + `--videos`: ingested with the ingest stage into the eval directory
  (every VAU-Bench quirk resolved there, once) and sampled with the sample stage, resumably.

Video parts are loaded lazily (`EvalItem.video()`), so a million-row test split never holds all its
frames in memory at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

from vau_annotate.annotate.backends.base import VideoPart
from vau_annotate.annotate.media import video_part
from vau_annotate.annotate.rundir import RunDir
from vau_annotate.schemas import VideoRecord

Task = Literal["qa", "tag", "cls", "p2c", "reasoning", "reflect"]
TASKS: tuple[Task, ...] = ("qa", "tag", "cls", "p2c", "reasoning", "reflect")

# task → the exported config holding its rows (CONTRACT.md "Configs")
DEFAULT_CONFIGS: dict[str, str] = {
    "qa": "grpo_qa", "tag": "grpo_tag", "cls": "grpo_cls", "p2c": "grpo_p2c", "reflect": "grpo_reflect", "reasoning": "p2c_sft",
}
SPLIT = "test"


class EvalDataError(ValueError):
    """The data to evaluate cannot be read (missing file, config, split or column)."""


@dataclass(frozen=True)
class EvalItem:
    """One question about one video and its truth.

    `answer`: the letter (qa, reflect qa) or canonical class (cls); `span`: the abnormal span in
    seconds or None (normal or unknown); `reference`: ground-truth text for reasoning / p2c
    (description and analysis for VAU-Eval); `sub_task`: qa|tag for reflect items.
    """

    id: str
    video_id: str
    task: Task
    question: str = ""
    options: tuple[str, ...] = ()
    answer: str = ""
    span: tuple[float, float] | None = None
    span_known: bool = False
    duration: float | None = None
    label: str = "unlabeled"
    category: str = ""
    sub_task: str = ""
    gt_description: str = ""
    gt_analysis: str = ""
    loader: Callable[[], VideoPart] | None = field(default=None, compare=False, repr=False)

    def video(self) -> VideoPart:
        if self.loader is None:
            raise EvalDataError(f"item {self.id} has no video")
        return self.loader()

    @property
    def reference(self) -> str:
        """The ground-truth text the model's reasoning is compared with."""
        return "\n".join(t for t in (self.gt_description, self.gt_analysis) if t)


def thin(part: VideoPart, max_frames: int) -> VideoPart:
    """Keep at most `max_frames` frames, evenly spread; the fps follows what is kept."""
    count = len(part.frames)
    if count <= max_frames:
        return part
    keep = [round(i * (count - 1) / (max_frames - 1)) for i in range(max_frames)] if max_frames > 1 else [count // 2]
    stamps = tuple(part.timestamps[i] for i in keep)
    span = stamps[-1] - stamps[0]
    fps = round((len(stamps) - 1) / span, 6) if span > 0 else part.fps
    return replace(part, frames=tuple(part.frames[i] for i in keep), timestamps=stamps, fps=fps)


# -- VAU-Bench CSV (+ videos) ----------------------------------------------------------------------

def items_from_records(records: Iterable[VideoRecord], tasks: Iterable[str], loader_of: Callable[[VideoRecord], Callable[[], VideoPart]]) -> list[EvalItem]:
    """The items each task asks for, in manifest order.

    qa / reflect-qa: one per multiple-choice question; tag / reflect-tag: abnormal videos with a
    known span (VAU-R1 grounds only those; normal videos have no span to ground); cls: videos with
    a class; p2c: labelled videos; reasoning: videos with a description or a reasoning text.
    """
    wanted = set(tasks)
    items: list[EvalItem] = []
    for record in records:
        load = loader_of(record)
        span = (record.spans[0].start, max(s.end for s in record.spans)) if record.span_known and record.spans else None
        base = dict(video_id=record.id, duration=record.duration, label=record.label, category=record.category or "",
                    span=span, span_known=record.span_known, loader=load)
        if "qa" in wanted:
            for i, mcq in enumerate(record.mcqs):
                items.append(EvalItem(id=f"{record.id}#qa{i}", task="qa", question=mcq.question, options=tuple(mcq.options), answer=mcq.answer, **base))
        if "tag" in wanted and record.label == "abnormal" and span is not None:
            items.append(EvalItem(id=f"{record.id}#tag", task="tag", **base))
        if "cls" in wanted and record.category:
            items.append(EvalItem(id=f"{record.id}#cls", task="cls", answer=record.category, **base))
        if "p2c" in wanted and record.label in ("normal", "abnormal"):
            items.append(EvalItem(id=f"{record.id}#p2c", task="p2c", gt_analysis=_vad_reference(record), **base))
        if "reasoning" in wanted and (record.description or record.reasoning):
            analysis = "\n".join(f"{k}: {v}" for k, v in record.reasoning.items())
            items.append(EvalItem(id=f"{record.id}#reasoning", task="reasoning", gt_description=record.description or "", gt_analysis=analysis, **base))
        if "reflect" in wanted:
            for i, mcq in enumerate(record.mcqs):
                items.append(EvalItem(id=f"{record.id}#reflect_qa{i}", task="reflect", sub_task="qa", question=mcq.question,
                                      options=tuple(mcq.options), answer=mcq.answer, **base))
            if record.label == "normal" or span is not None:
                items.append(EvalItem(id=f"{record.id}#reflect_tag", task="reflect", sub_task="tag", **base))
    return items


def _vad_reference(record: VideoRecord) -> str:
    """Reference reasoning text of a video for BLEU/METEOR/ROUGE: Vad-Reasoning's think+answer when
    the source has it, else VAU-Bench's description and reasoning."""
    if record.think or record.answer:
        return "\n".join(t for t in (record.think, record.answer) if t)
    parts = [record.description or ""] + [f"{k}: {v}" for k, v in record.reasoning.items()]
    return "\n".join(p for p in parts if p)


def load_csv_items(csv_path: Path, videos: Path, out: Path, tasks: Iterable[str], policy: str, max_pixels: int, max_frames: int,
                   decoder: str = "auto", show_progress: bool = True) -> tuple[list[EvalItem], set[str]]:
    """Ingest a VAU-Bench CSV into OUT, sample the videos the tasks need, and build the items.

    Returns (every item of the CSV in manifest order, ids of the videos that could not be
    sampled). Ingest and sample rejects go to OUT/rejects.jsonl with their reasons; the caller
    leaves the items of unsampled videos out (and counts them). The item list does not depend on
    which videos could be sampled, so `--limit` and the CLS class list are the same in one process
    and in every shard. As a shard (`--shard I/N`), only the share's videos are sampled (the
    sample stage's own sharding), and the CSV is ingested once for all shards (`_ingest_once`).
    """
    from vau_annotate.annotate.shards import active_shard
    from vau_annotate.annotate.shards import owns as shard_owns
    from vau_annotate.pipelines.sample import run_sample

    _ingest_once(csv_path, videos, out, sharded=active_shard() is not None)
    rd = RunDir(out)
    records = rd.load_manifest()
    probe_items = items_from_records(records, tasks, lambda r: (lambda: _no_video(r.id)))
    needed = {item.video_id for item in probe_items}
    run_sample(run=out, policy=policy, max_pixels=max_pixels, decoder=decoder, video_ids=needed, show_progress=show_progress)

    sampled: dict[str, Any] = {}
    for record in records:
        if record.id in needed and shard_owns(record.id):
            frames = rd.load_frameset(record.id, policy, max_pixels)
            if frames is not None and frames.paths:
                sampled[record.id] = frames

    def loader_of(record: VideoRecord) -> Callable[[], VideoPart]:
        frames = sampled.get(record.id)
        return (lambda: thin(video_part(rd.root, frames), max_frames)) if frames is not None else (lambda: _no_video(record.id))

    unsampled = {vid for vid in needed if shard_owns(vid) and vid not in sampled}
    return items_from_records(records, tasks, loader_of), unsampled


def _ingest_once(csv_path: Path, videos: Path, out: Path, sharded: bool) -> None:
    """Ingest the CSV into OUT. One process: every time (an edited CSV is read afresh). Shards of
    one evaluation: the first to take the lock on OUT/shards/ingest.lock ingests, outside any
    shard (one manifest, one set of ingest rejects); the others find run.json naming the same CSV
    and videos, with a manifest newer than the CSV, and reuse it."""
    import fcntl

    from vau_annotate.annotate.shards import SHARDS_DIR, use_shard
    from vau_annotate.pipelines.ingest import IngestInputError, run_ingest

    def ingest() -> None:
        try:
            with use_shard(None):
                run_ingest(source="vau-bench", annotations=csv_path, videos=videos, run=out)
        except IngestInputError as exc:
            raise EvalDataError(str(exc)) from None

    if not sharded:
        ingest()
        return
    lock_path = out / SHARDS_DIR / "ingest.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            rd = RunDir(out)
            meta = rd.load_meta() if rd.meta_path.exists() else None
            fresh = (meta is not None and rd.manifest_path.exists() and meta.annotations == str(csv_path.resolve())
                     and meta.videos == str(videos.resolve()) and rd.manifest_path.stat().st_mtime >= csv_path.stat().st_mtime)
            if not fresh:
                ingest()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _no_video(video_id: str) -> VideoPart:
    raise EvalDataError(f"video {video_id} has no sampled frames")


# -- exported dataset (directory or Hub id) ------------------------------------------------------------

def load_split(data: str, config: str) -> Any:
    """The test split of one config, with images left as bytes (no decode and re-encode).

    Loaded with `load_export` (schemas/rows.py), which reads a local folder's shards by path:
    `datasets` caches a card-configured folder by its name and config only and served stale rows.
    """
    import datasets

    from vau_annotate.schemas.rows import load_export

    try:
        ds = load_export(data, config, split=SPLIT)
    except ValueError as exc:
        raise EvalDataError(f"{data}: config {config!r} has no {SPLIT!r} split or cannot be read: {exc}") from None
    except FileNotFoundError as exc:
        raise EvalDataError(f"{data}: {exc}") from None
    if "frames" in ds.column_names:
        ds = ds.cast_column("frames", datasets.List(datasets.Image(decode=False)))
    return ds


def available_configs(data: str) -> list[str]:
    import datasets

    try:
        return list(datasets.get_dataset_config_names(data))
    except Exception as exc:  # noqa: BLE001 - any failure to read the card means "no such dataset"
        raise EvalDataError(f"{data} is not a dataset directory, a CSV file or a reachable Hub dataset: {exc}") from None


def row_loader(row: dict[str, Any], videos: Path | None, policy: str | None, max_frames: int, decoder: str = "auto",
               frames_of: Callable[[], list[Any]] | None = None) -> Callable[[], VideoPart]:
    """How to get one row's video: its embedded frames, or its file sampled the way the row says.

    `frames_of` reads the row's embedded frames when asked (from the memory-mapped Arrow table), so
    a large test split is never held in memory; without it the row's own `frames` are used.
    """
    if frames_of is None and row.get("frames"):
        held = row["frames"]
        frames_of = lambda: held  # noqa: E731
    if frames_of is not None and row.get("frame_times") is not None:
        times = [float(t) for t in row.get("frame_times") or []]
        fps = float(row.get("sample_fps") or 0.0)
        read = frames_of

        def embedded() -> VideoPart:
            frames = [f["bytes"] if isinstance(f, dict) else f for f in read() or []]
            if not frames:
                raise EvalDataError(f"row {row.get('id')} has no frames")
            stamps = times if len(times) == len(frames) else [i / fps if fps else float(i) for i in range(len(frames))]
            return thin(VideoPart(frames=tuple(frames), timestamps=tuple(stamps), fps=fps or 1.0), max_frames)

        return embedded
    if row.get("video"):
        if videos is None:
            raise EvalDataError(f"row {row.get('id')} names a video file ({row['video']}): give --videos, the folder it is relative to")
        row_policy = policy or (f"uniform:{int(row['nframes'])}" if row.get("nframes") else f"fps:{float(row.get('fps') or 1.0):g}")
        max_pixels = int(row.get("max_pixels") or 360 * 420)
        path = videos / str(row["video"])
        return lambda: _sampled(str(path), row_policy, max_pixels, max_frames, decoder)
    raise EvalDataError(f"row {row.get('id')} has neither frames nor a video path")


@lru_cache(maxsize=64)
def _sampled(path: str, policy: str, max_pixels: int, max_frames: int, decoder: str) -> VideoPart:
    """A video file sampled with annotate/video.py (several items of one video share the sample)."""
    from vau_annotate.annotate.video import sample_video

    sample = sample_video(path, policy, max_pixels, decoder=decoder)
    return thin(VideoPart(frames=tuple(sample.jpegs), timestamps=tuple(sample.timestamps), fps=sample.sampling_fps), max_frames)


def _span(value: Any) -> tuple[float, float] | None:
    if value is None or len(value) != 2:
        return None
    return float(value[0]), float(value[1])


def item_from_row(row: dict[str, Any], task: str, load: Callable[[], VideoPart]) -> EvalItem:
    """An exported GRPO row (solution columns) or p2c_sft row as an item."""
    common = dict(
        video_id=str(row.get("video_id", "")), duration=float(row["duration"]) if row.get("duration") is not None else None,
        label=str(row.get("label") or "unlabeled"), category=str(row.get("category") or ""), loader=load,
    )
    if task == "reasoning":
        reference = _assistant_text(row.get("messages") or [])
        think, answer = _split_think(reference)
        return EvalItem(id=str(row["id"]), task="reasoning", gt_description=answer, gt_analysis=think, **common)
    span = _span(row.get("span"))
    item = EvalItem(
        id=str(row["id"]), task=task, question=str(row.get("question") or ""), options=tuple(row.get("options") or ()),  # type: ignore[arg-type]
        answer=str(row.get("answer") or ""), span=span, span_known=bool(row.get("span_known", span is not None)),
        sub_task=str(row.get("reflect_task") or ""), **common,
    )
    return item


def _assistant_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "assistant":
            return "".join(p.get("text") or "" for p in message.get("content") or [] if p.get("type") == "text")
    return ""


def _split_think(text: str) -> tuple[str, str]:
    from vau_annotate.annotate.tags import extract_tag

    think, answer = extract_tag(text, "think"), extract_tag(text, "answer")
    return (think or text), (answer or "")


def load_dataset_items(data: str, tasks: Iterable[str], configs: dict[str, str], videos: Path | None, policy: str | None,
                       max_frames: int, decoder: str = "auto") -> tuple[list[EvalItem], list[str]]:
    """Items of every task whose config the dataset has; returns (items, notes on tasks left out)."""
    known = set(available_configs(data))
    items: list[EvalItem] = []
    notes: list[str] = []
    references: dict[str, str] = {}
    if "p2c" in tasks and "p2c_sft" in known:  # Vad-R1's text metrics compare with the p2c_sft target
        sft = load_split(data, "p2c_sft")
        for row in sft.select_columns([c for c in ("video_id", "messages") if c in sft.column_names]):
            references.setdefault(str(row["video_id"]), _assistant_text(row.get("messages") or []))
    for task in tasks:
        config = configs.get(task, DEFAULT_CONFIGS[task])
        if config not in known:
            notes.append(f"{task}: the dataset has no config {config!r} (it has {', '.join(sorted(known)) or 'none'}); task skipped")
            continue
        ds = load_split(data, config)
        embedded = "frames" in ds.column_names
        meta = ds.remove_columns(["frames"]) if embedded else ds
        frames_only = ds.select_columns(["frames"]) if embedded else None
        for index, row in enumerate(meta):
            if task != "reasoning" and row.get("task") not in (None, "", task):
                continue
            frames_of = (lambda i=index, table=frames_only: table[i]["frames"]) if embedded else None
            item = item_from_row(row, task, row_loader(row, videos, policy, max_frames, decoder, frames_of))
            if task == "tag" and (item.label != "abnormal" or item.span is None):
                continue  # VAU-R1 grounds abnormal videos with a known span only
            if task == "p2c":
                item = replace(item, gt_analysis=references.get(item.video_id, ""))
            items.append(item)
    return items, notes


def is_csv(data: str) -> bool:
    return data.lower().endswith(".csv")

