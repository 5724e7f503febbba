"""The run directory: the unit of resumable work.

Every stage reads and writes its files through `RunDir` so that paths, atomic writes and the
reject log follow one convention: `run.json`, `manifest.parquet`, `frames/`, `ledger.sqlite`,
`rejects.jsonl`, `dataset/`, `report.html`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from vau_annotate import __version__
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
        return self.root / "ledger.sqlite"

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

    def record_stage(self, stage: str, options: dict[str, Any], counts: dict[str, int], started: str | None = None, **meta_fields: Any) -> None:
        """Append one stage invocation to run.json (options must already be free of secrets); `started` is when it began."""
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
    def add_reject(self, item: str, stage: str, reason: str, **detail: Any) -> RejectRecord:
        record = RejectRecord(item=item, stage=stage, reason=reason, detail=detail)
        self.root.mkdir(parents=True, exist_ok=True)
        with self.rejects_path.open("a", encoding="utf-8") as fh:
            fh.write(record.model_dump_json() + "\n")
        return record

    def load_rejects(self) -> list[RejectRecord]:
        if not self.rejects_path.exists():
            return []
        out = []
        for line in self.rejects_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                out.append(RejectRecord.model_validate_json(line))
        return out

    def clear_rejects(self, stage: str, items: set[str] | None = None, detail: dict[str, Any] | None = None) -> None:
        """Drop earlier rejects of a stage (for the given items, or all; only those whose detail matches `detail`) before it runs again."""
        def matches(r: RejectRecord) -> bool:
            return all(r.detail.get(k) == v for k, v in (detail or {}).items())
        kept = [r for r in self.load_rejects() if not (r.stage == stage and (items is None or r.item in items) and matches(r))]
        atomic_write_text(self.rejects_path, "".join(r.model_dump_json() + "\n" for r in kept))

    def reject_summary(self) -> Counter[tuple[str, str]]:
        return Counter((r.stage, r.reason.split(":")[0]) for r in self.load_rejects())


def safe_name(video_id: str) -> str:
    """A file-system-safe folder name for a video id."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in video_id)


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and value != value
