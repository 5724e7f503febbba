"""Sampled frames as model inputs: FrameSet JPEGs on disk → `VideoPart` / `ImagePart`."""

from __future__ import annotations

from pathlib import Path

from vau_annotate.annotate.backends.base import ImagePart, VideoPart
from vau_annotate.schemas import FrameSet


def video_part(run_root: Path, frames: FrameSet, indices: list[int] | None = None) -> VideoPart:
    """The frames (all, or the positions in `indices`) as one video with their true timestamps."""
    positions = range(len(frames.paths)) if indices is None else indices
    data = tuple((run_root / frames.paths[i]).read_bytes() for i in positions)
    stamps = tuple(frames.timestamps[i] for i in positions)
    return VideoPart(frames=data, timestamps=stamps, fps=frames.sampling_fps)


def image_parts(run_root: Path, frames: FrameSet, indices: list[int] | None = None) -> list[ImagePart]:
    """Frames as separate images (e.g. for per-frame captioning)."""
    positions = range(len(frames.paths)) if indices is None else indices
    return [ImagePart(data=(run_root / frames.paths[i]).read_bytes()) for i in positions]
