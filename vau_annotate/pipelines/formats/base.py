"""What a format writer gets: rows and records by split, with video as a relative path."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Iterator

from vau_annotate.pipelines.export_source import Inputs, Video, cot_records
from vau_annotate.schemas.cot import CotRecord
from vau_annotate.schemas.rows import GRPO_CONFIGS, SPLITS

if TYPE_CHECKING:
    from pathlib import Path

    from vau_annotate.pipelines.export import ConfigResult, ExportOptions, Splitter

FILE_SPLIT = {"train": "train", "validation": "val", "test": "test"}


@dataclass
class FormatContext:
    """Rows of the export's configs in `--frames path` form, split per video like the HF export."""

    inputs: Inputs
    splitter: Splitter
    options: ExportOptions
    results: dict[str, ConfigResult] = field(default_factory=dict)
    on_row: Callable[[], None] = lambda: None

    def result(self, name: str) -> ConfigResult:
        from vau_annotate.pipelines.export import ConfigResult

        if name not in self.results:
            self.results[name] = ConfigResult(name, rows={s: 0 for s in SPLITS})
        return self.results[name]

    def rows(self, config: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(split, row) of a config, counted in `results[config]`."""
        from vau_annotate.pipelines.export import iter_rows

        result = self.result(config)
        video = replace(self.options.video, mode="path")
        for split, row in iter_rows(config, self.inputs, self.splitter, video, result):
            result.rows[split] += 1
            self.on_row()
            yield split, row

    def grpo_configs(self) -> list[str]:
        """The GRPO configs asked for (all of them unless --configs names some)."""
        return [c for c in self.options.configs if c in GRPO_CONFIGS] or list(GRPO_CONFIGS)

    def videos(self) -> Iterator[tuple[str, Video]]:
        """(split, video) of every deduplicated video, by id (the writer counts what it writes)."""
        for vid, video in sorted(self.inputs.videos.items()):
            self.on_row()
            yield self.splitter(vid), video

    def chains(self, name: str) -> Iterator[tuple[str, Video, CotRecord]]:
        result = self.result(name)
        for _, record in cot_records(self.inputs.runs):
            video = self.inputs.videos.get(record.video_id)
            if video is None:
                result.skips["record's video is not in any manifest"] += 1
                continue
            split = self.splitter(record.video_id)
            result.rows[split] += 1
            self.on_row()
            yield split, video, record


FormatWriter = Callable[[FormatContext, "Path"], None]


def user_text(prompt: list[dict]) -> str:
    """The text of the user turn of a chat prompt (its video part dropped)."""
    user = next(m for m in prompt if m["role"] == "user")
    return "".join(p["text"] for p in user["content"] if p["type"] == "text")


def system_text(prompt: list[dict]) -> str | None:
    system = next((m for m in prompt if m["role"] == "system"), None)
    return "".join(p["text"] for p in system["content"] if p["type"] == "text") if system else None


def ground_truth(row: dict[str, Any]) -> str:
    """The one-string answer a rule-based reward compares with: letter, class, span or 'normal'."""
    if row["answer"]:
        return row["answer"]
    if row["span"] is not None:
        return f"[{round(row['span'][0], 2)}, {round(row['span'][1], 2)}]"
    if row["label"] == "normal":
        return "normal"
    return row["category"]


class SplitFiles:
    """One open text file per split, created on first use, named `<split>.<ext>`."""

    def __init__(self, folder: Path, ext: str, header: str = "", footer: str = "", separator: str = "") -> None:
        self.folder, self.ext, self.header, self.footer, self.separator = folder, ext, header, footer, separator
        self.files: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def write(self, split: str, text: str) -> None:
        fh = self.files.get(split)
        if fh is None:
            fh = self.files[split] = (self.folder / f"{FILE_SPLIT[split]}.{self.ext}").open("w", encoding="utf-8", newline="")
            fh.write(self.header)
            self.counts[split] = 0
        if self.counts[split]:
            fh.write(self.separator)
        fh.write(text)
        self.counts[split] += 1

    def close(self) -> None:
        for fh in self.files.values():
            fh.write(self.footer)
            fh.close()
