"""The run directory: the unit of resumable work.

Every stage reads and writes its files through `RunDir` so that paths, atomic writes and the
reject log follow one convention: `run.json`, `manifest.parquet`, `frames/`, `ledger.sqlite`,
`rejects.jsonl`, `dataset/`, `report.html`.

Rejects live in the ledger (`rejects` table), where a reject and its item's "rejected" status are
one transaction; `rejects.jsonl` is a rendering of that table for people and other tools. A line is
appended after each commit, and the whole file is rendered again whenever it may be stale (a stage
starts, rejects are cleared), so a kill between the commit and the append loses nothing: the tool
itself reads rejects from the ledger. A run made by an older version (rejects only in the jsonl)
has its lines imported into the ledger once, the first time they are needed.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from vau_annotate import __version__
from vau_annotate.annotate.ledger import Ledger, RejectRow
from vau_annotate.annotate.shards import SHARDS_DIR, active_shard, claim
from vau_annotate.annotate.shards import finish as finish_shard
from vau_annotate.annotate.shards import finish_hashes
from vau_annotate.annotate.shards import ledger_paths as shard_ledger_paths
from vau_annotate.annotate.shards import owns as shard_owns
from vau_annotate.schemas import FrameSet, RejectRecord, RunMeta, VideoRecord
from vau_annotate.schemas.run import StageRun, utc_now


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file + rename so a crash never leaves a half-written file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour shapes the outputs (recorded in run.json)."""
    from importlib import metadata

    versions = {"vau-annotate": __version__}
    for name in ("av", "decord", "opencv-python-headless", "pydantic", "datasets", "openai", "dashscope", "transformers", "torch"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


class RunDir:
    """Paths and small I/O helpers of one run directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._ledger: Ledger | None = None  # opened on first use; each use closes its connection

    # paths -----------------------------------------------------------------
    @property
    def meta_path(self) -> Path:
        return self.root / "run.json"

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.parquet"

    @property
    def frames_dir(self) -> Path:
        return self.root / "frames"

    @property
    def ledger_path(self) -> Path:
        """The ledger this process writes: the run's, or its shard's (`--shard I/N`)."""
        shard = active_shard()
        if shard is None:
            return self.root / "ledger.sqlite"
        return self.root / SHARDS_DIR / f"ledger-{shard.tag}.sqlite"

    def ledger_paths(self) -> list[Path]:
        """Every ledger of the run (unsharded and shards'): what reading commands take the union of."""
        return shard_ledger_paths(self.root)

    def _has_ledger(self) -> bool:
        return self.ledger_path.exists() or bool(self.ledger_paths())

    def open_ledger(self) -> Ledger:
        """A new Ledger on this process's ledger file that also reads every other ledger of the run."""
        return Ledger(self.ledger_path, also_read=self.ledger_paths())

    @property
    def rejects_path(self) -> Path:
        return self.root / "rejects.jsonl"

    @property
    def dataset_dir(self) -> Path:
        return self.root / "dataset"

    def frames_path(self, video_id: str, policy: str, max_pixels: int) -> Path:
        """Folder of one video's frames for one sampling (each stage may sample differently)."""
        return self.frames_dir / safe_name(video_id) / f"{safe_name(policy.replace(':', '-'))}_{max_pixels}px"

    def frameset_path(self, video_id: str, policy: str, max_pixels: int) -> Path:
        return self.frames_path(video_id, policy, max_pixels) / "frameset.json"

    # run.json --------------------------------------------------------------
    def load_meta(self) -> RunMeta:
        if self.meta_path.exists():
            return RunMeta.model_validate_json(self.meta_path.read_text())
        return RunMeta(tool_version=__version__, versions=library_versions())

    def save_meta(self, meta: RunMeta) -> None:
        atomic_write_text(self.meta_path, meta.model_dump_json(indent=2))

    def claim_shard(self, stage: str, options: dict[str, Any]) -> None:
        """As a shard (`--shard I/N`): record this shard's options, refusing ones that differ from a
        sibling's (ShardError). Nothing to do in an unsharded run."""
        shard = active_shard()
        if shard is not None:
            claim(self.root, stage, shard, options)

    def record_stage(self, stage: str, options: dict[str, Any], counts: dict[str, int], started: str | None = None, **meta_fields: Any) -> None:
        """Append one stage invocation to run.json (options must already be free of secrets); `started` is when it began.

        A shard writes its own `shards/STAGE-I-of-N.json` instead (and its completion marker when
        nothing of its share is pending): concurrent shards must not rewrite one run.json.
        `vau-annotate merge` folds those into run.json.
        """
        shard = active_shard()
        if shard is not None:
            pending = sum(v for k, v in counts.items() if k.startswith("pending") and isinstance(v, int))
            finish_shard(self.root, stage, shard, counts, complete=pending == 0)
            if meta_fields.get("prompt_hashes"):
                finish_hashes(self.root, stage, shard, meta_fields["prompt_hashes"])
            return
        meta = self.load_meta()
        for key, value in meta_fields.items():
            setattr(meta, key, value)
        meta.versions = library_versions()
        meta.stages.append(StageRun(stage=stage, options=options, counts=counts, finished=utc_now(), **({"started": started} if started else {})))
        self.save_meta(meta)

    # manifest --------------------------------------------------------------
    def save_manifest(self, records: Iterable[VideoRecord]) -> None:
        import pandas as pd

        rows = [r.model_dump(mode="json") for r in records]
        frame = pd.DataFrame(rows, columns=list(VideoRecord.model_fields))
        for column in ("spans", "mcqs", "reasoning"):
            frame[column] = frame[column].map(json.dumps)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.manifest_path.with_suffix(".parquet.tmp")
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, self.manifest_path)

    def load_manifest(self) -> list[VideoRecord]:
        import pandas as pd

        if not self.manifest_path.exists():
            raise FileNotFoundError(f"{self.manifest_path} does not exist: run `vau-annotate ingest --run {self.root}` first")
        frame = pd.read_parquet(self.manifest_path)
        records = []
        for row in frame.to_dict(orient="records"):
            for column in ("spans", "mcqs", "reasoning"):
                row[column] = json.loads(row[column])
            records.append(VideoRecord.model_validate({k: (None if _is_nan(v) else v) for k, v in row.items()}))
        return records

    # frames ----------------------------------------------------------------
    def load_frameset(self, video_id: str, policy: str, max_pixels: int) -> FrameSet | None:
        path = self.frameset_path(video_id, policy, max_pixels)
        if not path.exists():
            return None
        return FrameSet.model_validate_json(path.read_text())

    def sampled_video_ids(self) -> dict[str, set[str]]:
        """Sampling folder name → ids of the videos finished in it (for `status`)."""
        done: dict[str, set[str]] = {}
        if self.frames_dir.exists():
            for marker in self.frames_dir.glob("*/*/frameset.json"):
                done.setdefault(marker.parent.name, set()).add(marker.parent.parent.name)
        return done

    # rejects ---------------------------------------------------------------
    def ledger(self) -> Ledger:
        """The run's ledger, with any rejects of an older rejects.jsonl imported (use it with `with`)."""
        if self._ledger is None:
            ledger = self.open_ledger()
            if ledger.get_meta(_IMPORTED) is None:
                # Only a run's first ledger imports an older rejects.jsonl: once shards exist, that
                # file is a rendering of their ledgers, and importing it would count rejects twice.
                others = [p for p in self.ledger_paths() if p != self.ledger_path]
                if active_shard() is None and not others:
                    ledger.add_rejects(_row(r) for r in self._read_rejects_jsonl())
                ledger.set_meta(_IMPORTED, utc_now())
            self._ledger = ledger
        return self._ledger

    def add_reject(self, item: str, stage: str, reason: str, **detail: Any) -> RejectRecord:
        """Record a reject (committed to the ledger first), then append its line to rejects.jsonl."""
        record = RejectRecord(item=item, stage=stage, reason=reason, detail=detail)
        with self.ledger() as ledger:
            ledger.add_rejects([_row(record)])
        with self.rejects_path.open("a", encoding="utf-8") as fh:
            fh.write(record.model_dump_json() + "\n")
        return record

    def load_rejects(self, stage: str | None = None) -> list[RejectRecord]:
        """Every reject (of one stage, or all) in the order they happened, from the ledger."""
        if not self._has_ledger():
            return [r for r in self._read_rejects_jsonl() if stage is None or r.stage == stage]
        with self.ledger() as ledger:
            return [_record(row) for row in ledger.rejects(stage)]

    def rejected_items(self, stage: str) -> set[str]:
        """Items of a stage that stand rejected (they count as done until --retry-rejected)."""
        if not self._has_ledger() and not self.rejects_path.exists():
            return set()
        with self.ledger() as ledger:
            return ledger.rejected_items(stage)

    def pending_items(self, stage: str) -> set[str]:
        """Items of a stage left pending after a transient failure (a plain re-run tries them)."""
        if not self._has_ledger():
            return set()
        with self.ledger() as ledger:
            return set(ledger.items(stage, "pending"))

    def clear_rejects(self, stage: str, items: set[str] | None = None, detail: dict[str, Any] | None = None) -> None:
        """Drop earlier rejects of a stage (for the given items, or all; only those whose detail
        matches `detail`, e.g. one sampling policy's) before it runs again."""
        if not self._has_ledger() and not self.rejects_path.exists():
            return
        if items is None and active_shard() is not None:  # a shard clears only its own share
            items = {item for item in self.rejected_items(stage) if shard_owns(item)}
        with self.ledger() as ledger:
            ledger.clear_rejects(stage, items, detail)
        for path in self.ledger_paths():  # rejects an earlier run (or shard layout) left in other ledgers
            if path != self.ledger_path:
                with Ledger(path) as other:
                    other.clear_rejects(stage, items, detail)
        self.render_rejects()

    def render_rejects(self) -> None:
        """Write rejects.jsonl again from the ledger (atomically), so it says what the ledger says."""
        if not self._has_ledger() and not self.rejects_path.exists():
            return
        records = self.load_rejects()
        if records or self.rejects_path.exists():
            atomic_write_text(self.rejects_path, "".join(r.model_dump_json() + "\n" for r in records))

    def reject_summary(self) -> Counter[tuple[str, str]]:
        return Counter((r.stage, r.reason.split(":")[0]) for r in self.load_rejects())

    def _read_rejects_jsonl(self) -> list[RejectRecord]:
        if not self.rejects_path.exists():
            return []
        out = []
        for line in self.rejects_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                out.append(RejectRecord.model_validate_json(line))
        return out


_IMPORTED = "rejects_jsonl_imported"


def _row(record: RejectRecord) -> RejectRow:
    return RejectRow(record.stage, record.item, record.reason, json.dumps(record.detail, default=str), record.time)


def _record(row: RejectRow) -> RejectRecord:
    return RejectRecord(item=row.item, stage=row.stage, reason=row.reason, detail=json.loads(row.detail or "{}"), time=row.time or utc_now())


def safe_name(video_id: str) -> str:
    """A file-system-safe folder name for a video id."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in video_id)


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and value != value
