"""Streaming parquet with a fixed schema, one file per split (shared by the verl and EasyR1 writers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vau_annotate.pipelines.formats.base import FILE_SPLIT

BATCH = 256


class SplitParquet:
    def __init__(self, folder: Path, schema: Any) -> None:
        self.folder, self.schema = folder, schema
        self.writers: dict[str, Any] = {}
        self.batches: dict[str, list[dict]] = {}

    def add(self, split: str, row: dict) -> None:
        batch = self.batches.setdefault(split, [])
        batch.append(row)
        if len(batch) >= BATCH:
            self._flush(split)

    def _flush(self, split: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if split not in self.writers:
            self.writers[split] = pq.ParquetWriter(self.folder / f"{FILE_SPLIT[split]}.parquet", self.schema)
        self.writers[split].write_table(pa.Table.from_pylist(self.batches[split], schema=self.schema))
        self.batches[split] = []

    def close(self) -> None:
        for split in list(self.batches):
            if self.batches[split] or split not in self.writers:
                self._flush(split)
        for writer in self.writers.values():
            writer.close()
