"""Generated test media: synthetic clips (from the package) and deliberately broken files."""

from __future__ import annotations

from pathlib import Path

from vau_annotate.annotate.backends import VideoPart
from vau_annotate.annotate.synth import BITS, frame_image, make_clip, read_index

__all__ = ["BITS", "frame_image", "make_clip", "make_empty", "make_not_a_video", "make_truncated", "read_index"]


def make_truncated(src: Path, dst: Path, keep: float = 0.3) -> Path:
    """A copy of `src` cut after `keep` of its bytes (moov atom at the end is lost)."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def make_not_a_video(dst: Path) -> Path:
    dst.write_text("this is a text file with a video extension\n")
    return dst


def make_empty(dst: Path) -> Path:
    dst.write_bytes(b"")
    return dst


def random_jpeg(seed: int, height: int = 84, width: int = 112) -> bytes:
    """A JPEG of seeded noise: distinct images for model inputs, no file needed."""
    import io

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def random_video(fps: float = 2.0, frames: int = 4) -> VideoPart:
    """`frames` noise JPEGs as a video sampled at `fps`."""
    return VideoPart(frames=tuple(random_jpeg(i) for i in range(frames)), timestamps=tuple(i / fps for i in range(frames)), fps=fps)
