"""Video probing: what a file holds (frames, timestamps, keyframes, size, rotation), read without full decoding.

Frame indices, timestamps and display orientation follow the conventions written down once in
video.py's docstring.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Sequence


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
