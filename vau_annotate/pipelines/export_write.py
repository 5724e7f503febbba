"""Splits, video columns and streaming parquet shards for export.

Splits are decided per video, never per row, so one video's rows all land in one split:
`ratio` hashes `seed:video_id` (SHA-256) into [0, 1) and cuts it by the ratios; `column` keeps the
split of the source file the video was ingested from. A row's video columns are filled when the
row is written (frames read from the run one row at a time), and rows go to a pyarrow
ParquetWriter in small batches: memory stays bounded by one batch per split, whatever the size of
the dataset. A shard is closed when it passes `max_shard_bytes`; its final name
(`train-00000-of-00003.parquet`) is given once the count is known. The same inputs and seed give
byte-identical files: rows keep record order and the JPEG bytes are the run's, never re-encoded.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vau_annotate.pipelines.export_source import ExportInputError, find_frames
from vau_annotate.pipelines.export_rows import Pending
from vau_annotate.schemas.rows import SPLITS, FramesMode

# qwen-vl-utils' defaults for video decoding at training time (VIDEO_MIN_PIXELS = 128 * 28 * 28;
# FPS = 2.0); max_pixels as reflect samples (360 × 420).
DEFAULT_VIDEO_FPS = 2.0
DEFAULT_MIN_PIXELS = 128 * 28 * 28
DEFAULT_MAX_PIXELS = 360 * 420
BATCH_ROWS = 64
BATCH_BYTES = 32 << 20


@dataclass(frozen=True)
class SplitPlan:
    """How videos are split: by hashed ratios or by the source file's split."""

    mode: Literal["ratio", "column"] = "ratio"
    ratios: tuple[float, float, float] = (0.9, 0.05, 0.05)
    seed: int = 0

    @classmethod
    def parse(cls, text: str, seed: int) -> SplitPlan:
        """`ratio:0.9,0.05,0.05` (normalised to sum 1) or `column`."""
        if text == "column":
            return cls("column", seed=seed)
        if not text.startswith("ratio:"):
            raise ValueError(f"--split must be 'ratio:TRAIN,VAL,TEST' or 'column', not {text!r}")
        try:
            parts = [float(x) for x in text[len("ratio:"):].split(",")]
        except ValueError:
            raise ValueError(f"--split {text!r}: ratios must be numbers") from None
        if len(parts) != 3 or any(p < 0 for p in parts) or sum(parts) <= 0:
            raise ValueError(f"--split {text!r}: give three non-negative ratios for train, validation, test")
        total = sum(parts)
        return cls("ratio", (parts[0] / total, parts[1] / total, parts[2] / total), seed)

    def of(self, video_id: str, source_split: str | None) -> str:
        if self.mode == "column":
            if source_split is None:
                raise ExportInputError(f"--split column: video {video_id!r} comes from a run whose annotation file names no split "
                                       "(train*.csv / val*.csv / test*.csv); use --split ratio:… for it")
            return source_split
        digest = hashlib.sha256(f"{self.seed}:{video_id}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64
        train, validation, _ = self.ratios
        if point < train:
            return "train"
        return "validation" if point < train + validation else "test"


@dataclass(frozen=True)
class VideoOptions:
    """How rows carry video: embedded frames or a path plus qwen-vl-utils sampling parameters."""

    mode: FramesMode = "embed"
    sampling: str | None = None
    fps: float | None = DEFAULT_VIDEO_FPS
    nframes: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    min_pixels: int = DEFAULT_MIN_PIXELS


class MissingFrames(Exception):
    """A row whose video has no sampled frames in its run (embed mode)."""


def video_columns(pending: Pending, options: VideoOptions) -> dict[str, Any]:
    """The contract's video columns of a row (reads the JPEG bytes in embed mode)."""
    if options.mode == "path":
        extra = {"video": pending.video.record.path}
        if pending.frame_index is None:
            extra |= {"fps": options.fps if options.nframes is None else None, "nframes": options.nframes,
                      "max_pixels": options.max_pixels, "min_pixels": options.min_pixels}
        return extra
    frames = find_frames(pending.run, pending.video.record.id, pending.prefer, options.sampling)
    if frames is None:
        raise MissingFrames(f"no sampled frames for {pending.video.record.id} in {pending.run.root}")
    paths = frames.paths()
    if pending.frame_index is not None:
        try:
            at = frames.frameset.indices.index(pending.frame_index)
        except ValueError:
            raise MissingFrames(f"frame {pending.frame_index} of {pending.video.record.id} was not sampled") from None
        return {"image": {"bytes": _read(paths[at]), "path": None}}
    return {
        "frames": [{"bytes": _read(p), "path": None} for p in paths],
        "frame_times": list(frames.frameset.timestamps), "sample_fps": frames.frameset.sampling_fps, "max_pixels": frames.max_pixels,
    }


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise MissingFrames(f"frame file {path} cannot be read ({exc.strerror})") from None


@dataclass
class ShardWriter:
    """Parquet shards of one split of one config, written batch by batch."""

    folder: Path
    split: str
    features: Any
    max_shard_bytes: int
    rows: int = 0
    shards: list[Path] = field(default_factory=list)
    _batch: list[dict] = field(default_factory=list)
    _batch_bytes: int = 0
    _writer: Any = None

    def add(self, row: dict, size: int) -> None:
        self._batch.append(self.features.encode_example(row))
        self._batch_bytes += size
        self.rows += 1
        if len(self._batch) >= BATCH_ROWS or self._batch_bytes >= BATCH_BYTES:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(self._batch, schema=self.features.arrow_schema)
        if self._writer is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f".{self.split}-{len(self.shards):05d}.parquet.partial"
            self.shards.append(path)
            self._writer = pq.ParquetWriter(path, table.schema, compression="zstd")
        self._writer.write_table(table)
        self._batch, self._batch_bytes = [], 0
        if self.shards[-1].stat().st_size >= self.max_shard_bytes:
            self._writer.close()
            self._writer = None

    def close(self) -> list[str]:
        """Write what is left and name the shards. An empty split gets no file: `datasets` refuses a
        split without data, so the card lists only the splits that have rows."""
        if self._batch:
            self._flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        names = []
        for i, path in enumerate(self.shards):
            final = self.folder / f"{self.split}-{i:05d}-of-{len(self.shards):05d}.parquet"
            os.replace(path, final)
            names.append(final.name)
        return names


def row_size(row: dict) -> int:
    """Bytes of embedded images in a row (what decides batch and shard sizes)."""
    frames = row.get("frames") or ([row["image"]] if row.get("image") else [])
    return sum(len(f["bytes"]) for f in frames) + 1024


def split_writers(folder: Path, features: Any, max_shard_bytes: int) -> dict[str, ShardWriter]:
    return {split: ShardWriter(folder, split, features, max_shard_bytes) for split in SPLITS}
