"""Video probing, keyframe-aware frame sampling, resizing to a pixel budget and JPEG encoding.

Conventions used everywhere in this module:

- A *frame index* is the position of a frame in presentation order, 0-based, counting every
  frame the container stores (one packet = one frame).
- A frame's *timestamp* is its presentation time in seconds relative to the first frame:
  ``(pts - first_pts) * time_base``. Streams whose first pts is not 0 (MPEG-TS, edited MP4)
  therefore still start at 0.0, which is what annotation spans are measured against.
- Every decoder returns RGB ``uint8`` arrays of shape ``(height, width, 3)`` in *display
  orientation*: a file whose display matrix (MP4 `tkhd` matrix / rotate tag, as phones write it)
  says "rotate by 90°" comes out rotated, the way a player shows it, and `VideoInfo.width` /
  `height` are that displayed size.
"""

from __future__ import annotations

import bisect
import math
import os
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Callable, Sequence


class VideoError(Exception):
    """A video that cannot be used, with a reason a person understands (it ends up in rejects.jsonl)."""


# ---------------------------------------------------------------------------------------------
# probing
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video's first video stream, read without full decoding.

    `pts` holds every frame's presentation timestamp (in `time_base` units) in presentation
    order, so index ↔ time mapping is exact even with B-frame reordering or a variable frame
    rate. When the container carries no real presentation times (AVI stores only a chunk order,
    and FFmpeg invents pts that do not survive B-frame reordering), `pts_reliable` is False,
    `pts` is a synthetic constant-rate clock and decoders identify frames by counting from the
    start instead of by pts (and do not seek).

    `keyframes` are the indices of frames a decoder can start from (the seek targets).

    `rotation` is the counter-clockwise rotation (0, 90, 180 or 270 degrees) that turns a decoded
    picture into the displayed one (FFmpeg's display matrix, as `av_display_rotation_get` reads
    it); `width` × `height` is the displayed size, i.e. swapped against the coded size for 90/270.
    """

    path: str
    duration: float
    fps: float
    num_frames: int
    width: int
    height: int
    codec: str
    container: str
    keyframes: tuple[int, ...]
    pts: tuple[int, ...] = field(repr=False)
    time_base: Fraction = Fraction(1, 1)
    pts_reliable: bool = True
    rotation: int = 0

    def timestamp(self, index: int) -> float:
        """Presentation time of frame `index` in seconds from the first frame."""
        return float((self.pts[index] - self.pts[0]) * self.time_base)

    def timestamps(self, indices: Sequence[int]) -> list[float]:
        return [round(self.timestamp(i), 6) for i in indices]

    def index_at(self, seconds: float) -> int:
        """The last frame shown at or before `seconds` (clamped to the video)."""
        target = self.pts[0] + Fraction(seconds) / self.time_base
        pos = bisect.bisect_right(self.pts, target) - 1
        return min(max(pos, 0), self.num_frames - 1)

    def keyframe_before(self, index: int) -> int:
        """Index of the last keyframe at or before `index` (0 when none is indexed before it)."""
        pos = bisect.bisect_right(self.keyframes, index) - 1
        return self.keyframes[pos] if pos >= 0 else 0


# Leading bytes of containers we recognise: a file that starts like one of these but cannot be
# opened is "truncated or corrupt"; anything else that cannot be opened is "not a video".
_MAGICS: tuple[tuple[int, bytes], ...] = (
    (4, b"ftyp"),  # MP4 / MOV / 3GP
    (4, b"moov"),
    (4, b"mdat"),
    (4, b"free"),
    (4, b"wide"),
    (0, b"RIFF"),  # AVI
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska / WebM
    (0, b"FLV"),
    (0, b"\x00\x00\x01\xba"),  # MPEG-PS
    (0, b"\x00\x00\x01\xb3"),  # MPEG-1/2 elementary stream
    (0, b"\x30\x26\xb2\x75"),  # ASF / WMV
)
_TS_SUFFIXES = {".ts", ".m2ts", ".mts"}  # MPEG-TS starts with a lone 0x47 byte: too weak alone


def _looks_like_container(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(16)
    if head[:1] == b"\x47" and path.suffix.lower() in _TS_SUFFIXES:
        return True
    return any(head[offset:offset + len(magic)] == magic for offset, magic in _MAGICS)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoError(f"file does not exist: {path}")
    if not path.is_file():
        raise VideoError(f"not a regular file: {path}")
    if path.stat().st_size == 0:
        raise VideoError("file is empty (0 bytes)")


def _ffmpeg_reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).strip().rstrip(".") or type(exc).__name__


def _open(path: Path):
    """Open with PyAV, turning FFmpeg's errors into a VideoError that says what is wrong."""
    import av

    try:
        return av.open(str(path), mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        if _looks_like_container(path):
            raise VideoError(f"truncated or corrupt: its container cannot be read ({_ffmpeg_reason(exc)})") from None
        raise VideoError(f"not a video: unrecognised format ({_ffmpeg_reason(exc)})") from None


def _video_stream(container):
    if not container.streams.video:
        raise VideoError("not a video: no video stream")
    stream = container.streams.video[0]
    if not stream.codec_context.name or not stream.codec_context.width:
        raise VideoError("not a video: the video stream has no decodable codec or size")
    return stream


@dataclass
class _PacketScan:
    pts: list[int]
    key_pts: set[int]
    missing_pts: bool
    error: str | None


def _scan_packets(container, stream) -> _PacketScan:
    """Demux (no decoding) to collect every frame's pts and which of them are keyframes."""
    import av

    scan = _PacketScan(pts=[], key_pts=set(), missing_pts=False, error=None)
    try:
        for packet in container.demux(stream):
            if packet.size == 0 or packet.is_discard:
                continue  # flush packet, AVI "drop frame" chunk, or pre-roll an edit list cuts away
            ts = packet.pts
            if ts is None:
                scan.missing_pts = True
                ts = packet.dts
            if ts is None:
                continue
            scan.pts.append(ts)
            if packet.is_keyframe:
                scan.key_pts.add(ts)
    except av.error.FFmpegError as exc:
        scan.error = _ffmpeg_reason(exc)
    scan.pts.sort()
    return scan


def _frame_step(pts: list[int]) -> int:
    """The typical pts distance between frames (median), robust to a few odd timestamps."""
    steps = sorted(b - a for a, b in zip(pts, pts[1:]) if b > a)
    return steps[len(steps) // 2] if steps else 0


def _stream_fps(stream, step: int, time_base: Fraction) -> float:
    """Frame rate from the pts spacing; container rate fields are often wrong (AVI field rates)."""
    if step:
        return float(1 / (step * time_base))
    for rate in (stream.guessed_rate, stream.average_rate, stream.base_rate):
        if rate:
            return float(rate)
    return 0.0


def _declared_seconds(container, stream, fps: float) -> float | None:
    """How long the container's header says the stream is, where that header can be trusted."""
    name = container.format.name
    if "mp4" in name or "mov" in name:
        return stream.frames / fps if stream.frames and fps else None
    if name == "avi":  # the stream header's length counts time-base ticks
        return float(stream.frames * stream.time_base) if stream.frames else None
    if "matroska" in name and container.duration:
        return container.duration / 1_000_000
    return None


def _decode_first(container, stream, strict: bool = True) -> int:
    """Decode the first frame and return its display rotation (counter-clockwise degrees, 0-270).

    Decoding it is the cheapest proof that the codec data is usable (`strict`: raise when it is
    not) and the only place PyAV exposes the stream's display matrix (as the frame's rotation).
    """
    import av

    container.seek(0, stream=stream, backward=True, any_frame=False)
    try:
        for frame in container.decode(stream):
            return normalise_rotation(frame.rotation)
    except av.error.FFmpegError as exc:
        if strict:
            raise VideoError(f"truncated or corrupt: the first frame cannot be decoded ({_ffmpeg_reason(exc)})") from None
        return 0
    if strict:
        raise VideoError("truncated or corrupt: no frame could be decoded")
    return 0


def normalise_rotation(degrees: float | None) -> int:
    """A display rotation as 0, 90, 180 or 270 (counter-clockwise; odd angles to the nearest quarter)."""
    return (int(round((degrees or 0) / 90.0)) * 90) % 360


def upright(frame, rotation: int):
    """The decoded RGB array turned by `rotation` degrees counter-clockwise: what a player displays."""
    import numpy as np

    turns = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(frame, turns)) if turns else frame


def probe(path: str | os.PathLike[str], decode_first: bool = True) -> VideoInfo:
    """Read a video's metadata and keyframe index by demuxing its packets (no full decode).

    Raises VideoError for a missing, empty, unrecognised, truncated or undecodable file. With
    `decode_first` the first frame is decoded to prove the codec data is usable (callers that
    decode right afterwards anyway can skip it), and a stream shorter than its container header
    promises is reported as truncated.
    """
    path = Path(path)
    _check_file(path)
    container = _open(path)
    try:
        stream = _video_stream(container)
        time_base = stream.time_base or Fraction(1, 1)
        scan = _scan_packets(container, stream)
        if not scan.pts:
            raise VideoError("truncated or corrupt: the video stream holds no frames")
        if scan.error:
            raise VideoError(f"truncated or corrupt: demuxing failed after {len(scan.pts)} frame(s) ({scan.error})")
        step = _frame_step(scan.pts)
        fps = _stream_fps(stream, step, time_base)
        unique = len(set(scan.pts)) == len(scan.pts)
        reliable = not scan.missing_pts and unique and container.format.name != "avi"
        num = len(scan.pts)
        if reliable:
            pts = scan.pts
            duration = float((pts[-1] - pts[0] + step) * time_base) if step else (num / fps if fps else 0.0)
        else:
            step = step or 1
            pts = [scan.pts[0] + i * step for i in range(num)]
            duration = num / fps if fps else 0.0
        declared = _declared_seconds(container, stream, fps)
        # Matroska's header duration counts from time 0, not from the first frame
        end = max(duration, float((pts[-1] + step) * time_base)) if reliable else duration
        if declared and end < declared * 0.95 - 0.2:
            raise VideoError(f"truncated or corrupt: the container promises {declared:.2f} s but only {duration:.2f} s of frames are present")
        rotation = _decode_first(container, stream, strict=decode_first)
        positions = {ts: i for i, ts in enumerate(scan.pts)}
        keyframes = tuple(sorted({positions[ts] for ts in scan.key_pts} | {0}))
        width, height = int(stream.codec_context.width), int(stream.codec_context.height)
        if rotation in (90, 270):
            width, height = height, width
        return VideoInfo(
            path=str(path),
            duration=round(duration, 6),
            fps=round(fps, 6),
            num_frames=num,
            width=width,
            height=height,
            codec=stream.codec_context.name,
            container=container.format.name,
            keyframes=keyframes,
            pts=tuple(pts),
            time_base=time_base,
            pts_reliable=reliable,
            rotation=rotation,
        )
    finally:
        container.close()


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


# ---------------------------------------------------------------------------------------------
# decoding
# ---------------------------------------------------------------------------------------------

DECODERS = ("auto", "pyav-seek", "pyav-sequential", "decord", "opencv")
_ALIASES = {"pyav": "auto"}
_DECORD_CONTAINERS = ("mp4", "mov", "matroska", "webm")

# Frame threads of the PyAV decoder: two more than cores, so frames stay in flight while the main
# thread is busy in Python between packets (FFmpeg's automatic choice is cores + 1); measured in
# benchmarks/bench_sampling.py.
FRAME_THREADS = (os.cpu_count() or 1) + 2

# Seeking costs a demuxer seek, a decoder flush and restarting the frame-threading pipeline;
# measured on 640×360 H.264 with 2 threads that is about as much as decoding this many frames.
# `auto` seeks only when that skips more frames than this.
SEEK_COST_FRAMES = 6


def canonical_decoder(name: str) -> str:
    """The decoder's canonical name ('pyav' means the keyframe-aware PyAV decoder, 'auto')."""
    name = _ALIASES.get(name, name)
    if name not in DECODERS:
        raise ValueError(f"unknown decoder {name!r}; known: {', '.join(DECODERS)}")
    return name


class _Overshoot(Exception):
    """Decoding went past the wanted frame without producing it (bad seek landing, dropped frame)."""


class _PyAVReader:
    """A PyAV demuxer + decoder that knows which frame index it is at, decodes forward and seeks.

    It feeds packets itself instead of using `container.decode` because that lets it do three
    things that cut decoding work without changing a single output pixel:

    - packets of frames nobody wants are sent with `skip_frame = NONREF`, so the decoder drops
      non-reference frames (most B-frames) instead of decoding them; reference frames are always
      decoded, so every kept frame is bit-identical to a plain decode;
    - after the packet of a wanted frame that will be followed by a seek (or is the last one),
      the decoder is drained instead of being fed further packets it would decode for nothing;
    - frames are converted to RGB only when kept (the conversion costs about a small decode),
      by `convert`, which `decode_frames` runs in a helper thread so that it overlaps decoding.

    Frames are identified by pts when the container has real presentation times; otherwise by
    counting from the start, and then nothing may be skipped and seeking is never done.
    """

    def __init__(self, path: Path, info: VideoInfo, wanted: Sequence[int], threads: bool = True, convert: Callable | None = None) -> None:
        self.path = path
        self.info = info
        self.threads = threads
        self.convert = convert or partial(_to_rgb, rotation=info.rotation)
        self.by_pts = {ts: i for i, ts in enumerate(info.pts)} if info.pts_reliable else None
        self.wanted_pts = {info.pts[i] for i in wanted} if info.pts_reliable else None
        self.pending: deque = deque()
        self._start()

    def _start(self) -> None:
        """Open the file and stand before its first frame."""
        self.container = _open(self.path)
        self.stream = _video_stream(self.container)
        self.codec = self.stream.codec_context
        if self.threads:
            self.stream.thread_type = "AUTO"  # frame + slice threads; x264 output rarely has slices
            self.codec.thread_count = FRAME_THREADS
        self.skipping = False
        self.packets = None
        self.pending.clear()
        self.ended = False
        self.position = -1  # index of the last frame taken from the decoder; the next is position + 1
        self.count = 0

    def close(self) -> None:
        self.container.close()

    def rewind(self) -> None:
        """Back to the very first frame by reopening: seeking to the start is unreliable in
        streams that do not begin at pts 0 (MPEG-TS lands past the first keyframe)."""
        self.close()
        self._start()

    def seek(self, keyframe: int) -> None:
        """Jump so that decoding resumes at `keyframe` (or, on a loose index, somewhat before it)."""
        self.container.seek(self.info.pts[keyframe], stream=self.stream, backward=True, any_frame=False)
        self.packets = None
        self.pending.clear()
        self.ended = False
        self.position = keyframe - 1

    def _set_skipping(self, skip: bool) -> None:
        if skip != self.skipping:
            self.codec.skip_frame = "NONREF" if skip else "DEFAULT"
            self.skipping = skip

    def _feed(self, drain_pts: int | None) -> None:
        """Send one packet to the decoder; drain it at the end or after the packet with `drain_pts`."""
        import av

        if self.packets is None:
            self.packets = self.container.demux(self.stream)
        packet = next(self.packets, None)
        try:
            if packet is None or packet.size == 0:  # end of stream (PyAV's final packet is empty)
                frames = self.codec.decode(None)
                self.ended = True
            else:
                if self.wanted_pts is not None:
                    self._set_skipping(packet.pts is not None and packet.pts not in self.wanted_pts)
                frames = self.codec.decode(packet)
                if drain_pts is not None and packet.pts == drain_pts:
                    frames += self.codec.decode(None)
                    self.ended = True
        except av.error.FFmpegError as exc:
            raise VideoError(f"truncated or corrupt: decoding failed after frame {self.position} ({_ffmpeg_reason(exc)})") from None
        self.pending.extend(frames)

    def _index(self, frame) -> int | None:
        """The frame's index; None for pre-roll frames before the first listed one (edit lists)."""
        if self.by_pts is None:
            self.count += 1
            return self.count - 1
        index = self.by_pts.get(frame.pts)
        if index is None:
            if frame.pts is not None and frame.pts < self.info.pts[0]:
                return None
            raise VideoError(f"truncated or corrupt: decoded a frame with unknown timestamp {frame.pts} after frame {self.position}")
        return index

    def read(self, target: int, drain: bool = False):
        """Decode forward to frame `target` and return it as an RGB array.

        With `drain` the decoder is flushed right after the target's packet: use it when the
        next step is a seek or nothing, so no packet beyond the target is decoded.
        """
        drain_pts = self.info.pts[target] if drain and self.by_pts is not None else None
        while True:
            while self.pending:
                frame = self.pending.popleft()
                index = self._index(frame)
                if index is None:
                    continue
                self.position = index
                if index == target:
                    return self.convert(frame)
                if index > target:
                    raise _Overshoot(target)
            if self.ended:
                raise _Overshoot(target)
            self._feed(drain_pts)

    def seek_and_read(self, target: int, drain: bool = False):
        """Seek to the keyframe before `target` and decode forward.

        A seek that lands too late (loose container index) is retried from the keyframe before,
        and in the end from the very start of the file.
        """
        keyframe = self.info.keyframe_before(target)
        while True:
            self.seek(keyframe)
            try:
                return self.read(target, drain)
            except _Overshoot:
                if keyframe == 0:
                    break
                keyframe = self.info.keyframe_before(keyframe - 1)
        self.rewind()
        try:
            return self.read(target, drain)
        except _Overshoot:
            raise VideoError(f"truncated or corrupt: frame {target} cannot be decoded") from None


def plan_seeks(info: VideoInfo, wanted: Sequence[int], mode: str = "auto") -> list[bool]:
    """For each wanted frame, whether to seek to it (True) or keep decoding forward (False).

    `auto` seeks only when a keyframe lies after the current position and before the target
    and jumping there skips more than SEEK_COST_FRAMES frames: long-GOP videos are then decoded
    in one pass, short-GOP videos hop from keyframe to keyframe. Without real timestamps
    nothing can be seeked.
    """
    if not info.pts_reliable or mode == "pyav-sequential":
        return [False] * len(wanted)
    if mode == "pyav-seek":
        return [True] * len(wanted)
    plan, position = [], -1
    for target in wanted:
        plan.append(info.keyframe_before(target) - (position + 1) > SEEK_COST_FRAMES)
        position = target
    return plan


def _to_rgb(frame, rotation: int = 0):
    """A decoded PyAV frame as an upright RGB uint8 array."""
    return upright(frame.to_ndarray(format="rgb24"), rotation)


def _pyav(path: Path, wanted: list[int], info: VideoInfo, threads: bool, pool: _Finisher, mode: str) -> list:
    """Decode the wanted frames with PyAV following the seek plan of `mode`; `pool` finishes them."""
    plan = plan_seeks(info, wanted, mode)
    reader = _PyAVReader(path, info, wanted, threads=threads, convert=partial(pool.submit, _to_rgb, rotation=info.rotation))
    try:
        out = []
        for n, target in enumerate(wanted):
            drain = n + 1 == len(wanted) or plan[n + 1]
            if plan[n]:
                out.append(reader.seek_and_read(target, drain))
                continue
            try:
                out.append(reader.read(target, drain))
            except _Overshoot:
                if not info.pts_reliable:
                    raise VideoError(f"truncated or corrupt: frame {target} was not produced by the decoder") from None
                out.append(reader.seek_and_read(target, drain))
        return out
    finally:
        reader.close()


def _decord(path: Path, wanted: list[int], info: VideoInfo, threads: bool, pool: _Finisher) -> list:
    """decord's VideoReader.get_batch (its own index, seek and cache logic)."""
    import decord

    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=0 if threads else 1)
        if wanted[-1] >= len(reader):
            raise VideoError(f"truncated or corrupt: decord sees {len(reader)} frames, frame {wanted[-1]} is beyond")
        batch = reader.get_batch(wanted).asnumpy()
    except (decord.DECORDError, RuntimeError) as exc:  # decord raises both for unreadable files
        raise VideoError(f"truncated or corrupt: decord cannot read it ({str(exc).splitlines()[0]})") from None
    return [pool.submit(lambda frame: frame, frame) for frame in batch]


def _opencv(path: Path, wanted: list[int], info: VideoInfo, threads: bool, pool: _Finisher) -> list:
    """OpenCV sequential grab(), retrieve() only for the wanted frames."""
    import cv2

    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [] if threads else [cv2.CAP_PROP_N_THREADS, 1])
    try:
        if not capture.isOpened():
            raise VideoError("not a video: OpenCV cannot open it")
        # OpenCV's own auto-rotation is off: the probed rotation is applied below, as for PyAV
        if not capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0) and info.rotation:
            raise VideoError("unsupported rotation: this OpenCV build cannot report unrotated frames; use --decoder auto")
        keep = set(wanted)
        out = []
        for index in range(wanted[-1] + 1):
            if not capture.grab():
                raise VideoError(f"truncated or corrupt: OpenCV stopped at frame {index}")
            if index in keep:
                ok, image = capture.retrieve()
                if not ok:
                    raise VideoError(f"truncated or corrupt: OpenCV cannot decode frame {index}")
                out.append(pool.submit(_bgr_to_rgb, image, rotation=info.rotation))
        return out
    finally:
        capture.release()


def _bgr_to_rgb(image, rotation: int = 0):
    import cv2

    return upright(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), rotation)


class _Finisher:
    """Runs the per-frame tail (RGB conversion, then the caller's `finish`, e.g. resize + JPEG)
    in one helper thread, so that it overlaps decoding: the conversion and PIL/OpenCV release
    the GIL, and on 2 cores the decoder's threads would otherwise wait for the main thread.
    Without threads everything runs inline, in order (worker processes already use the cores).
    """

    def __init__(self, threads: bool, finish: Callable | None = None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.finish = finish
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="vau-frames") if threads else None

    def _run(self, convert: Callable, frame, **kwargs):
        image = convert(frame, **kwargs)
        return self.finish(image) if self.finish else image

    def submit(self, convert: Callable, frame, **kwargs):
        if self.executor is None:
            return _Done(self._run(convert, frame, **kwargs))
        return self.executor.submit(self._run, convert, frame, **kwargs)

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)


@dataclass
class _Done:
    """An already computed result with the Future interface the decoders' callers use."""

    value: object

    def result(self):
        return self.value


_DECODE: dict[str, Callable[..., list]] = {
    "auto": partial(_pyav, mode="auto"),
    "pyav-seek": partial(_pyav, mode="pyav-seek"),
    "pyav-sequential": partial(_pyav, mode="pyav-sequential"),
    "decord": _decord,
    "opencv": _opencv,
}


def effective_decoder(decoder: str, info: VideoInfo) -> str:
    """The decoder that will really run for this video, so that every choice yields the same frames.

    Without real presentation times (AVI) frames can only be identified by counting from the
    start, so the PyAV modes decode sequentially. decord is used only for MP4/MOV/Matroska:
    elsewhere its seeking returns wrong frames (seen: H.264-in-AVI asked for frame 138 gives
    frame 10; MPEG-TS gives frames shifted by a GOP), so those files go to `auto` instead. Rotated
    files too: decord 0.6 turns ±90° files upright but returns 180° files upside down, and has no
    switch to get the coded picture, so its output cannot be made right reliably.
    """
    name = canonical_decoder(decoder)
    if name == "decord" and (info.rotation or not any(tag in info.container for tag in _DECORD_CONTAINERS)):
        name = "auto"
    if not info.pts_reliable and name in ("auto", "pyav-seek"):
        return "pyav-sequential"
    return name


def decode_frames(path: str | os.PathLike[str], indices: Sequence[int], decoder: str = "auto", info: VideoInfo | None = None, threads: bool = True,
                  finish: Callable | None = None) -> list:
    """RGB uint8 arrays (H, W, 3) of the given frame indices (sorted, unique), in that order.

    Every decoder returns the same frames for the same indices (see `effective_decoder`), upright
    (display orientation). `finish` (e.g. resize + JPEG-encode) is applied to each array and its
    results are returned instead; with `threads` it runs in a helper thread while decoding goes
    on. `threads=False` keeps everything to one thread: right when several processes decode at
    once, since frame threading costs extra CPU that only pays off on otherwise idle cores.
    """
    path = Path(path)
    info = info or probe(path, decode_first=False)
    name = effective_decoder(decoder, info)
    wanted = [int(i) for i in indices]
    if wanted != sorted(set(wanted)):
        raise ValueError("frame indices must be sorted and unique")
    if not wanted:
        return []
    if wanted[0] < 0 or wanted[-1] >= info.num_frames:
        raise ValueError(f"frame indices must lie in 0..{info.num_frames - 1}")
    pool = _Finisher(threads, finish)
    try:
        return [future.result() for future in _DECODE[name](path, wanted, info, threads, pool)]
    finally:
        pool.close()


# ---------------------------------------------------------------------------------------------
# one video, end to end
# ---------------------------------------------------------------------------------------------


@dataclass
class SampledVideo:
    """The frames sampled from one video, resized and JPEG-encoded, with their timing."""

    info: VideoInfo
    policy: Policy
    indices: list[int]
    timestamps: list[float]
    sampling_fps: float
    size: tuple[int, int]
    jpegs: list[bytes]
    decoder: str


def sample_video(
    path: str | os.PathLike[str],
    policy: Policy | str,
    max_pixels: int,
    decoder: str = "auto",
    spans: Sequence | None = None,
    jpeg_quality: int = 90,
    threads: bool = True,
) -> SampledVideo:
    """Probe, pick frames by policy, decode, resize to the pixel budget and JPEG-encode them."""
    policy = parse_policy(policy) if isinstance(policy, str) else policy
    info = probe(path, decode_first=False)  # decoding the sample proves decodability anyway
    indices = select_indices(policy, info, spans)
    size = target_size(info.width, info.height, max_pixels)
    jpegs = decode_frames(path, indices, decoder, info=info, threads=threads, finish=lambda frame: encode_jpeg(resize_frame(frame, size), jpeg_quality))
    return SampledVideo(
        info=info,
        policy=policy,
        indices=indices,
        timestamps=info.timestamps(indices),
        sampling_fps=sampling_fps(policy, info, indices, spans),
        size=size,
        jpegs=jpegs,
        decoder=effective_decoder(decoder, info),
    )
