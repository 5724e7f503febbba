"""Synthetic media for the demo, the tests and the benchmarks: H.264 clips whose frames encode their index.

Every frame shows its index as a 12-bit binary pattern of black/white blocks in its top band, over
a moving gradient, so a test can tell which frame a decoder returned, even after JPEG encoding.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

BITS = 12  # frame indices up to 4095


def frame_image(index: int, width: int, height: int) -> np.ndarray:
    """An RGB frame whose top band encodes `index` in binary (white = 1)."""
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    base = ((x + y + index * 3) % 256).astype(np.uint8)
    img = np.stack([base, np.roll(base, index, axis=1), 255 - base], axis=-1)
    band = height // 6
    block = width // BITS
    for bit in range(BITS):
        value = 255 if (index >> bit) & 1 else 0
        img[:band, bit * block:(bit + 1) * block] = value
    return img


def read_index(img: np.ndarray) -> int:
    """Recover the frame index from a decoded (possibly resized, JPEG-compressed) RGB frame."""
    height, width = img.shape[:2]
    band = max(height // 6, 1)
    block = width // BITS
    index = 0
    for bit in range(BITS):
        patch = img[band // 4: band * 3 // 4, bit * block + block // 4: bit * block + block * 3 // 4]
        if patch.mean() > 127:
            index |= 1 << bit
    return index


def make_clip(
    path: Path, seconds: float = 4.0, fps: int = 25, width: int = 320, height: int = 240, gop: int = 250, codec: str = "libx264",
    *, preset: str = "ultrafast", crf: int = 18, bframes: int | None = 0, container_options: dict[str, str] | None = None,
    rotation: int = 0,
) -> Path:
    """Encode an H.264 MP4 with a keyframe every `gop` frames (250 ≈ x264 default, 30 = frequent).

    The defaults make small, fast clips for tests; the benchmark asks for realistic ones
    (`preset="veryfast"`, `crf=23`, `bframes=None` = the encoder's B-frames), and a test of files
    whose index comes first passes `container_options={"movflags": "faststart"}`. `rotation`
    (counter-clockwise degrees) writes a display matrix, as a phone filming upright does.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(round(seconds * fps))
    with av.open(str(path), mode="w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "preset": preset, "crf": str(crf)}
        if bframes is not None:
            options["bf"] = str(bframes)
        stream.options = options
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(frame_image(i, width, height), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
