"""Frames to model inputs: the pixel budget on Qwen's 28-px grid, resizing and JPEG encoding."""

from __future__ import annotations

import math


# ---------------------------------------------------------------------------------------------
# resizing and encoding
# ---------------------------------------------------------------------------------------------

MIN_PIXELS = 4 * 28 * 28  # qwen-vl-utils' image default
MAX_RATIO = 200


def target_size(width: int, height: int, max_pixels: int, factor: int = 28, min_pixels: int = MIN_PIXELS) -> tuple[int, int]:
    """(width, height) to resize to: aspect kept, both sides multiples of `factor`, area ≤ max_pixels.

    Same rule as qwen-vl-utils' `smart_resize` (which takes and returns height first), so frames
    sampled here map onto whole 28×28 vision patches without the model processor resizing again.
    The one difference: for extremely thin frames, where smart_resize returns a side of 0, the
    short side stays one patch wide and the long side is cut to fit the budget.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, not {width}×{height}")
    if max(width, height) / min(width, height) > MAX_RATIO:
        raise ValueError(f"aspect ratio of {width}×{height} exceeds {MAX_RATIO}")
    max_pixels = max(max_pixels, factor * factor)
    min_pixels = min(min_pixels, max_pixels)
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
        # A very thin frame: smart_resize would make the short side 0; keep it at one patch and
        # shorten the long side instead, so the budget still holds.
        longest = max(factor, math.floor(max_pixels / factor / factor) * factor)
        if h_bar == factor:
            w_bar = min(w_bar, longest)
        if w_bar == factor:
            h_bar = min(h_bar, longest)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return w_bar, h_bar


def resize_frame(frame, size: tuple[int, int]):
    """Resize an RGB array to (width, height): area averaging when shrinking, bicubic when growing."""
    import cv2

    width, height = size
    if (frame.shape[1], frame.shape[0]) == (width, height):
        return frame
    shrinking = width * height < frame.shape[0] * frame.shape[1]
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def encode_jpeg(frame, quality: int = 90) -> bytes:
    """JPEG bytes of an RGB uint8 array (baseline, 4:2:0, like most image pipelines expect)."""
    import io

    from PIL import Image

    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be within 1..100, not {quality}")
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=int(quality))
    return buffer.getvalue()
