"""Video probing, keyframe-aware frame sampling, resizing to a pixel budget and JPEG encoding.

Conventions used everywhere in these modules:

- A *frame index* is the position of a frame in presentation order, 0-based, counting every
  frame the container stores (one packet = one frame).
- A frame's *timestamp* is its presentation time in seconds relative to the first frame:
  ``(pts - first_pts) * time_base``. Streams whose first pts is not 0 (MPEG-TS, edited MP4)
  therefore still start at 0.0, which is what annotation spans are measured against.
- Every decoder returns RGB ``uint8`` arrays of shape ``(height, width, 3)`` in *display
  orientation*: a file whose display matrix (MP4 `tkhd` matrix / rotate tag, as phones write it)
  says "rotate by 90°" comes out rotated, the way a player shows it, and `VideoInfo.width` /
  `height` are that displayed size.

The work is split by job: `probing` (what a file holds), `policies` (which frames to take),
`decoders` (getting them, upright), `images` (pixel budget, resize, JPEG). This module is the
one place the rest of the project imports them from, and runs them end to end for one video.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

from vau_annotate.annotate.decoders import (  # noqa: F401 - re-exported
    DECODERS,
    FRAME_THREADS,
    SEEK_COST_FRAMES,
    canonical_decoder,
    decode_frames,
    effective_decoder,
    plan_seeks,
)
from vau_annotate.annotate.images import MAX_RATIO, MIN_PIXELS, encode_jpeg, resize_frame, target_size  # noqa: F401
from vau_annotate.annotate.policies import POLICY_KINDS, Policy, PolicyError, parse_policy, sampling_fps, select_indices  # noqa: F401
from vau_annotate.annotate.probing import VideoError, VideoInfo, normalise_rotation, probe, upright  # noqa: F401


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
