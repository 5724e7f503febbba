"""Sampling policies: which frame indices `uniform:N`, `fps:F`, `stride:K` and `span:N` pick.

Pure functions of a probed `VideoInfo` (no decoding), deterministic, sorted and unique.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from vau_annotate.annotate.probing import VideoInfo


# ---------------------------------------------------------------------------------------------
# sampling policies
# ---------------------------------------------------------------------------------------------

POLICY_KINDS = ("uniform", "fps", "stride", "span")
_POLICY_HELP = "uniform:N (N frames over the whole video), fps:F (F frames per second), stride:K (every K-th frame), span:N (N frames inside the abnormal span)"


class PolicyError(ValueError):
    """A sampling policy string that cannot be understood; the message says what is accepted."""


@dataclass(frozen=True)
class Policy:
    """A parsed sampling policy. `str(policy)` is its canonical spelling (the resume key)."""

    kind: str
    value: float

    def __str__(self) -> str:
        value = f"{self.value:g}" if self.kind == "fps" else str(int(self.value))
        return f"{self.kind}:{value}"


def parse_policy(text: str) -> Policy:
    """Parse 'uniform:N', 'fps:F', 'stride:K' or 'span:N' (N, K positive integers, F positive)."""
    kind, sep, raw = str(text).strip().partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in POLICY_KINDS:
        raise PolicyError(f"unknown sampling policy {text!r}; use {_POLICY_HELP}")
    raw = raw.strip()
    if kind == "fps":
        try:
            value = float(raw)
        except ValueError:
            raise PolicyError(f"fps:F needs a number of frames per second, not {raw!r}") from None
        if not math.isfinite(value) or value <= 0:
            raise PolicyError(f"fps:F needs a positive frame rate, not {raw!r}")
        return Policy(kind, value)
    if not raw.isdigit() or int(raw) < 1:
        raise PolicyError(f"{kind}:N needs a positive whole number, not {raw!r}")
    return Policy(kind, int(raw))


def _centred(count: int, n: int) -> list[int]:
    """`n` positions out of `count`, one at the centre of each of n equal segments.

    This is TSN-style segment sampling: every n-th of the video is represented by its middle
    frame, and the very first and last frames (often blank, black or cut in surveillance clips)
    are never picked. Qwen's own tooling (qwen-vl-utils `fetch_video`) differs: it takes
    `linspace(0, count - 1, n)`, both end frames included.
    """
    if n >= count:
        return list(range(count))
    return [int((i + 0.5) * count / n) for i in range(n)]


def _span_seconds(spans: Sequence | None, duration: float) -> list[tuple[float, float]]:
    """Spans (Span objects or (start, end) pairs) clipped to the video, empty ones dropped."""
    out = []
    for span in spans or ():
        start, end = (span.start, span.end) if hasattr(span, "start") else span
        start, end = max(float(start), 0.0), min(float(end), duration)
        if end > start:
            out.append((start, end))
    return out


def _times_in_spans(spans: list[tuple[float, float]], n: int) -> list[float]:
    """n instants centred in n equal pieces of the spans laid end to end."""
    total = sum(end - start for start, end in spans)
    times = []
    for k in range(n):
        offset = (k + 0.5) * total / n
        for start, end in spans:
            if offset <= end - start:
                times.append(start + offset)
                break
            offset -= end - start
    return times


def select_indices(policy: Policy, info: VideoInfo, spans: Sequence | None = None) -> list[int]:
    """Frame indices the policy picks: deterministic, sorted, unique and inside the video.

    `spans` (seconds) matter only for `span:N`; without a usable span it samples like
    `uniform:N` over the whole video (normal videos, unknown spans).
    """
    count = info.num_frames
    if policy.kind == "stride":
        return list(range(0, count, int(policy.value)))
    if policy.kind == "uniform":
        return _centred(count, int(policy.value))
    if policy.kind == "fps":
        step = 1.0 / policy.value
        n = max(1, int(math.floor(info.duration / step + 0.5)))
        times = [min((k + 0.5) * step, info.duration) for k in range(n)]
        return sorted({info.index_at(t) for t in times})
    clipped = _span_seconds(spans, info.duration)
    if not clipped:
        return _centred(count, int(policy.value))
    inside = sorted({i for start, end in clipped for i in range(info.index_at(start), info.index_at(end) + 1)})
    n = int(policy.value)
    if n >= len(inside):
        return inside
    return _distinct_frames(info, inside, _times_in_spans(clipped, n))


def _distinct_frames(info: VideoInfo, frames: list[int], times: list[float]) -> list[int]:
    """One distinct frame of `frames` per instant: the frame shown at that instant, or, when an
    earlier instant took it, the nearest free frame in time.

    On variable-frame-rate video several instants can fall on one long-shown frame; taking each
    frame once would then return fewer frames than asked although the span holds enough.
    """
    stamps = [info.timestamp(i) for i in frames]
    taken: set[int] = set()
    for t in times:
        pos = min(max(bisect.bisect_right(stamps, t + 1e-9) - 1, 0), len(frames) - 1)
        if pos in taken:
            lo, hi = pos - 1, pos + 1
            while lo >= 0 and lo in taken:
                lo -= 1
            while hi < len(frames) and hi in taken:
                hi += 1
            if hi >= len(frames) or (lo >= 0 and t - stamps[lo] <= stamps[hi] - t):
                pos = lo
            else:
                pos = hi
        taken.add(pos)
    return sorted(frames[k] for k in taken)


def sampling_fps(policy: Policy, info: VideoInfo, indices: Sequence[int], spans: Sequence | None = None) -> float:
    """Frames per second of video time that the sample represents: 1 / mean gap between its frames.

    That is the rate a model should be told the frames were taken at (e.g. `fps` for Qwen's
    temporal position ids). A single frame stands for the whole video (or, for `span:N`, the
    spans it was drawn from), so its rate is 1 / that length.
    """
    if len(indices) >= 2:
        gap = (info.timestamp(indices[-1]) - info.timestamp(indices[0])) / (len(indices) - 1)
        return round(1.0 / gap, 6) if gap > 0 else 0.0
    seconds = info.duration
    if policy.kind == "span":
        clipped = _span_seconds(spans, info.duration)
        seconds = sum(end - start for start, end in clipped) if clipped else seconds
    return round(len(indices) / seconds, 6) if seconds > 0 else 0.0
