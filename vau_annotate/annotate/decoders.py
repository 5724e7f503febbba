"""Frame decoders: the keyframe-aware PyAV decoder (`auto`) and the PyAV, decord and OpenCV alternatives.

Every decoder returns the same frames for the same indices, as upright RGB uint8 arrays (see
`effective_decoder` for the files a decoder is not trusted with), and can hand each frame to a
`finish` step (resize + JPEG) that runs in a helper thread beside decoding.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

from vau_annotate.annotate.probing import VideoError, VideoInfo, _ffmpeg_reason, _open, _video_stream, probe, upright


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

# A seek plan whose runs (frames decoded per seek) are shorter than this on average is decoded
# without frame threads (see `decoder_threads`).
SHORT_RUN_FRAMES = 48

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

    def __init__(self, path: Path, info: VideoInfo, wanted: Sequence[int], threads: bool | str = True, convert: Callable | None = None) -> None:
        self.path = path
        self.info = info
        self.threads = threads  # True/"FRAME": frame + slice threads; "SLICE": slice threads only; False: one thread
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
        if self.threads == "SLICE":
            self.stream.thread_type = "SLICE"  # no frame pipeline to refill after every seek
        elif self.threads:
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


def decoder_threads(info: VideoInfo, wanted: Sequence[int], plan: Sequence[bool]) -> str:
    """'FRAME' (frame threads) for long decoding runs, 'SLICE' when the plan mostly seeks and
    decodes short runs.

    Frame threading keeps FRAME_THREADS frames in flight, which pays off over long runs but has
    to be drained and refilled at every seek; on short-GOP video sampled sparsely (a seek per
    wanted frame, ~15 frames decoded after it) that refill costs more than it saves. The helper
    thread that converts frames still runs beside the decoder either way.
    """
    seeks = sum(plan)
    if not seeks:
        return "FRAME"
    decoded, position = 0, -1
    for target, seek in zip(wanted, plan):
        start = info.keyframe_before(target) if seek else position + 1
        decoded += target - start + 1
        position = target
    return "SLICE" if decoded / seeks < SHORT_RUN_FRAMES else "FRAME"


def _to_rgb(frame, rotation: int = 0):
    """A decoded PyAV frame as an upright RGB uint8 array."""
    return upright(frame.to_ndarray(format="rgb24"), rotation)


def _pyav(path: Path, wanted: list[int], info: VideoInfo, threads: bool, pool: _Finisher, mode: str) -> list:
    """Decode the wanted frames with PyAV following the seek plan of `mode`; `pool` finishes them."""
    plan = plan_seeks(info, wanted, mode)
    reader = _PyAVReader(path, info, wanted, threads=decoder_threads(info, wanted, plan) if threads else False,
                         convert=partial(pool.submit, _to_rgb, rotation=info.rotation))
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
