"""Step 0 of Vad-R1's annotation pipeline: a dense caption for every sampled frame.

The captioner VLM sees K frames per request (`--caption-batch`), each labelled with its time, and
answers a JSON list (numbered lines are read too). A batch whose reply does not parse, or that the
provider refuses, is asked again frame by frame; a frame the provider still refuses is left out
(the record lists it) instead of failing the whole video. Captions keep their frame index and time.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Sequence

from vau_annotate.annotate.backends import BackendError, ErrorClass, ImagePart, Message, Request, SamplingParams, TextPart
from vau_annotate.pipelines.cot_facts import ItemFailure
from vau_annotate.pipelines.replies import RETRY_FAILED, RETRY_REJECTED, is_refusal
from vau_annotate.prompts import load_prompt
from vau_annotate.schemas import FrameSet
from vau_annotate.schemas.cot import Caption

CAPTION_PROMPT = "cot_caption"
CAPTION_BATCH_PROMPT = "cot_caption_batch"

Ask = Callable[[Request, str], Awaitable[str]]  # (request, part name) → whole reply text

_FRAME_LABEL = re.compile(r"^\s*(?:[-*]\s*)?(?:\*\*)?\s*(?:frame\s*)?(\d+)\s*(?:\([^)]*\))?\s*(?:\*\*)?\s*[.:)\]–-]\s*(?:\*\*)?\s*(.*)$", re.I)
_LEADING_LABEL = re.compile(r"^\s*(?:\*\*)?\s*(?:frame\s*\d*|caption|description)\s*(?:\([^)]*\))?\s*(?:\*\*)?\s*[:.–-]\s*(?:\*\*)?\s*", re.I)


# -- parsing ---------------------------------------------------------------------------------------

def clean_caption(text: str) -> str:
    """A reply to a one-frame request as a caption: no 'Frame 3:' label, no quotes, one line."""
    text = _LEADING_LABEL.sub("", (text or "").strip(), count=1)
    return " ".join(text.strip().strip("\"'").split())


def parse_caption_list(text: str, count: int) -> list[str] | None:
    """`count` captions in frame order from a batch reply (JSON list, else numbered lines); None if not exactly that."""
    for parse in (_json_captions, _numbered_captions):
        captions = parse(text or "", count)
        if captions is not None:
            return captions
    return None


def _json_captions(text: str, count: int) -> list[str] | None:
    start, end = text.find("["), text.rfind("]")
    if start < 0 or end <= start:
        return None
    try:
        data = json.loads(text[start:end + 1])
    except ValueError:
        return None
    if not isinstance(data, list):
        return None
    entries: list[tuple[int, str]] = []
    for position, entry in enumerate(data, 1):
        if isinstance(entry, str):
            entries.append((position, entry))
        elif isinstance(entry, dict):
            caption = next((entry[k] for k in ("caption", "description", "text") if isinstance(entry.get(k), str)), None)
            number = entry.get("frame", position)
            if caption is None or not isinstance(number, int):
                return None
            entries.append((number, caption))
        else:
            return None
    return _in_order(entries, count)


def _numbered_captions(text: str, count: int) -> list[str] | None:
    entries: list[tuple[int, str]] = []
    for line in text.splitlines():
        match = _FRAME_LABEL.match(line)
        if match:
            entries.append((int(match.group(1)), match.group(2)))
        elif entries and line.strip():
            entries[-1] = (entries[-1][0], f"{entries[-1][1]} {line.strip()}")
    return _in_order(entries, count) if entries else None


def _in_order(entries: list[tuple[int, str]], count: int) -> list[str] | None:
    """Captions ordered by frame number when the numbers are exactly 1…count and none is empty."""
    if sorted(n for n, _ in entries) != list(range(1, count + 1)):
        return None
    captions = [clean_caption(text) for _, text in sorted(entries)]
    return captions if all(captions) else None


# -- requests --------------------------------------------------------------------------------------

def frame_label(number: int, timestamp: float) -> str:
    return f"Frame {number} (t = {timestamp:.1f} s):"


def caption_request(images: Sequence[ImagePart], stamps: Sequence[float], length: float, max_tokens: int, temperature: float) -> Request:
    """One captioning request: a single frame, or a numbered batch asking for a JSON list.

    `max_tokens` is the budget per frame; a batch gets it once per frame.
    """
    if len(images) == 1:
        prompt = load_prompt(CAPTION_PROMPT)
        parts: list[TextPart | ImagePart] = [TextPart(prompt.render(timestamp=f"{stamps[0]:.1f}", duration=f"{length:.1f}")), images[0]]
    else:
        prompt = load_prompt(CAPTION_BATCH_PROMPT)
        parts = [TextPart(prompt.render(count=len(images), duration=f"{length:.1f}"))]
        for number, (image, stamp) in enumerate(zip(images, stamps), 1):
            parts += [TextPart(frame_label(number, stamp)), image]
    params = SamplingParams(max_tokens=max_tokens * len(images), temperature=temperature)
    return Request(messages=(Message("user", tuple(parts)),), params=params, prompt_name=prompt.name, prompt_hash=prompt.hash)


def batches(count: int, size: int) -> list[list[int]]:
    """Frame positions split into consecutive groups of at most `size`."""
    size = max(1, size)
    return [list(range(i, min(i + size, count))) for i in range(0, count, size)]


# -- one video -------------------------------------------------------------------------------------

@dataclass
class CaptionResult:
    """The captions of one video, and the frames the provider refused to describe."""

    captions: list[Caption] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)  # frame indices


async def caption_video(ask: Ask, frames: FrameSet, images: Sequence[ImagePart], length: float, batch: int,
                        max_tokens: int, temperature: float) -> CaptionResult:
    """One caption per sampled frame, in temporal order; refused frames left out (ItemFailure if all are)."""
    groups = batches(len(images), batch)
    texts = await asyncio.gather(*(
        caption_group(ask, [images[p] for p in group], [frames.timestamps[p] for p in group], length, max_tokens, temperature)
        for group in groups
    ))
    result = CaptionResult()
    for group, group_texts in zip(groups, texts):
        for position, text in zip(group, group_texts):
            if text is None:
                result.refused.append(frames.indices[position])
            else:
                result.captions.append(Caption(frame_index=frames.indices[position], timestamp=frames.timestamps[position], text=text))
    if not result.captions:
        raise ItemFailure(f"model refused: moderation, every frame of the video (re-run with {RETRY_REJECTED} {RETRY_FAILED} to ask again)",
                          refused_frames=result.refused)
    return result


async def caption_group(ask: Ask, images: Sequence[ImagePart], stamps: Sequence[float], length: float, max_tokens: int,
                        temperature: float) -> list[str | None]:
    """Captions of a group of frames (None for a refused frame).

    A batch reply that does not parse, or a batch the provider refuses, is asked again frame by frame.
    """
    if len(images) > 1:
        try:
            reply = await ask(caption_request(images, stamps, length, max_tokens, temperature), "caption batch")
        except BackendError as exc:
            if exc.error_class is not ErrorClass.PERMANENT:
                raise
            reply = ""  # refused or rejected as a whole: each frame gets its own chance
        parsed = parse_caption_list(reply, len(images))
        if parsed is not None:
            return list(parsed)
    return list(await asyncio.gather(*(
        single_caption(ask, image, stamp, length, max_tokens, temperature) for image, stamp in zip(images, stamps)
    )))


async def single_caption(ask: Ask, image: ImagePart, stamp: float, length: float, max_tokens: int, temperature: float) -> str | None:
    """One frame's caption; None when the provider refuses that frame."""
    try:
        reply = await ask(caption_request([image], [stamp], length, max_tokens, temperature), "caption")
    except BackendError as exc:
        if exc.error_class is ErrorClass.PERMANENT and is_refusal(exc):
            return None
        raise
    caption = clean_caption(reply)
    if not caption:
        raise ItemFailure(f"empty caption: the captioner described the frame at {stamp:.1f} s with nothing")
    return caption
