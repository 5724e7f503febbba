"""Exported rows → Qwen2.5-VL model inputs: frames, chat messages, processor call and SFT labels.

Shared by `train sft` and `train grpo` (see /CONTRACT.md for the row shape).

Why not TRL's collator: TRL's vision collators take images only, so a video row would reach the
model either as N unrelated images (no temporal M-RoPE, 2× the visual tokens since images are not
merged in time) or not at all. Here the frames go through the processor's own *video* path, with
the rate they were really sampled at, so the model sees the same tensors it sees at inference:
`pixel_values_videos`, `video_grid_thw`, `second_per_grid_ts` (= temporal_patch_size / fps, the
time scale of Qwen2.5-VL's temporal position ids) and `mm_token_type_ids` (without which
Qwen2.5-VL silently falls back to 1-D RoPE).

Labels: only assistant turns are trained (content + the turn's end token); system, user, video
and padding tokens carry -100. VAU-R1's released trainer trains on prompt tokens; the papers'
objective is the response likelihood, so we mask. The assistant spans are found on the token ids
with the markers the chat template itself renders (ChatML for the Qwen family), so the mask does
not depend on `{% generation %}` blocks that Qwen's official templates lack.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

IGNORE_INDEX = -100
DEFAULT_FPS = 2.0  # qwen-vl-utils' default sampling rate: used only when a row gives no timing at all
DEFAULT_MAX_PIXELS = 128 * 28 * 28  # per frame, for a path row that names no budget (Vad-R1's setting)


class RowError(ValueError):
    """An exported row that cannot become model inputs; the message names the row and the reason."""


# ---------------------------------------------------------------------------------------------
# messages
# ---------------------------------------------------------------------------------------------


def strip_none(value: Any) -> Any:
    """Drop None-valued keys recursively: Arrow gives every part every key of every other part,
    and Qwen's template tests `'video' in part`, so a leftover `video: None` renders text as video."""
    if isinstance(value, dict):
        return {key: strip_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [strip_none(item) for item in value]
    return value


def _qwen_part(part: Any) -> dict:
    part = strip_none(part)
    if isinstance(part, str):
        return {"type": "text", "text": part}
    kind = part.get("type") or ("video" if "video" in part else "image" if "image" in part else "text")
    if kind in ("video", "video_url"):
        return {"type": "video"}
    if kind in ("image", "image_url"):
        return {"type": "image"}
    if kind == "text":
        return {"type": "text", "text": str(part.get("text", ""))}
    raise RowError(f"unknown message part type {kind!r}")


def to_qwen_messages(messages: Sequence[Any]) -> list[dict]:
    """Contract messages (`{"role", "content": [{"type", "text"}]}`, possibly with Arrow's None
    keys, possibly a JSON-ish string content) → Qwen chat parts (`{"type": "video"}` placeholders;
    the frames travel separately to the processor)."""
    out = []
    for message in messages:
        message = strip_none(dict(message))
        if "role" not in message:
            raise RowError("a message has no role")
        content = message.get("content", "")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else [_qwen_part(part) for part in content]
        out.append({"role": message["role"], "content": parts})
    return out


def count_videos(messages: Sequence[dict]) -> int:
    """Video placeholders in Qwen messages (one per user turn that shows the clip)."""
    return sum(1 for message in messages for part in message["content"] if part.get("type") == "video")


# ---------------------------------------------------------------------------------------------
# frames
# ---------------------------------------------------------------------------------------------


def _to_image(frame: Any):
    """A PIL RGB image from what `datasets` hands out for an Image() feature (decoded or not)."""
    from PIL import Image

    if isinstance(frame, Image.Image):
        return frame.convert("RGB")
    if isinstance(frame, dict):
        if frame.get("bytes"):
            return Image.open(io.BytesIO(frame["bytes"])).convert("RGB")
        if frame.get("path"):
            return Image.open(frame["path"]).convert("RGB")
    if isinstance(frame, (bytes, bytearray)):
        return Image.open(io.BytesIO(frame)).convert("RGB")
    raise RowError(f"cannot read a frame of type {type(frame).__name__}")


def _resolve_video(path: str, videos_root: str | Path | None) -> Path:
    candidate = Path(path)
    if not candidate.is_absolute():
        if videos_root is None:
            raise RowError(f"row has video path {path!r} relative to the videos root, but no videos_root was given")
        candidate = Path(videos_root) / candidate
    if not candidate.is_file():
        raise RowError(f"video file not found: {candidate}")
    return candidate


def decode_path_row(row: dict, videos_root: str | Path | None = None, decoder: str = "auto") -> tuple[list, list[float]]:
    """Sample a `--frames path` row's video the way export described it: `fps` frames per second
    if set, else `nframes` frames spread over the clip, each resized into [min_pixels, max_pixels]
    (same rule as qwen-vl-utils' smart_resize). Our sampler (annotate/video.py) takes the centre
    of each segment where qwen-vl-utils takes linspace with both end frames; it is the sampler
    that produced the `--frames embed` datasets, so both modes see the same frames."""
    from PIL import Image

    from vau_annotate.annotate import video as vid

    path = _resolve_video(str(row["video"]), videos_root)
    if row.get("fps"):
        policy = vid.Policy("fps", float(row["fps"]))
    elif row.get("nframes"):
        policy = vid.Policy("uniform", int(row["nframes"]))
    else:
        raise RowError(f"row {row.get('id', '?')}: a path row needs fps or nframes")
    info = vid.probe(path, decode_first=False)
    indices = vid.select_indices(policy, info)
    max_pixels = int(row.get("max_pixels") or DEFAULT_MAX_PIXELS)
    min_pixels = int(row.get("min_pixels") or vid.MIN_PIXELS)
    size = vid.target_size(info.width, info.height, max_pixels, min_pixels=min_pixels)
    frames = vid.decode_frames(path, indices, decoder, info=info, threads=False)
    return [Image.fromarray(vid.resize_frame(frame, size)) for frame in frames], info.timestamps(indices)


def row_frames(row: dict, videos_root: str | Path | None = None, decoder: str = "auto") -> tuple[list, list[float]]:
    """(PIL frames in time order, their times in seconds) for an embed row (`frames`,
    `frame_times`) or a path row (`video` + sampling parameters, decoded here)."""
    if row.get("frames") is not None:
        frames = [_to_image(frame) for frame in row["frames"]]
        times = [float(t) for t in (row.get("frame_times") or [])]
        if not times:
            fps = float(row.get("sample_fps") or DEFAULT_FPS)
            times = [i / fps for i in range(len(frames))]
        if len(times) != len(frames):
            raise RowError(f"row {row.get('id', '?')}: {len(frames)} frames but {len(times)} frame_times")
        if not frames:
            raise RowError(f"row {row.get('id', '?')}: no frames")
        return frames, times
    if row.get("video"):
        return decode_path_row(row, videos_root, decoder)
    raise RowError(f"row {row.get('id', '?')}: neither frames (--frames embed) nor video (--frames path)")


def frames_fps(times: Sequence[float], fallback: float | None = None) -> float:
    """The rate the frames stand for: 1 / mean gap between their true times (what Qwen2.5-VL's
    `second_per_grid_ts` must reflect); a single frame uses the row's `sample_fps`."""
    if len(times) >= 2 and times[-1] > times[0]:
        return (len(times) - 1) / (float(times[-1]) - float(times[0]))
    return float(fallback) if fallback and fallback > 0 and math.isfinite(fallback) else DEFAULT_FPS


def video_metadata(frame_count: int, fps: float) -> dict:
    """Metadata that makes the processor keep every frame and derive sampled_fps == fps
    (sampled_fps = len(frames_indices) / total_num_frames * fps)."""
    return {"total_num_frames": frame_count, "fps": float(fps), "frames_indices": list(range(frame_count)), "duration": frame_count / fps}


@dataclass
class Example:
    """One row made ready for the processor: Qwen messages and the clip shown by its video parts."""

    messages: list[dict]
    frames: list | None = None
    fps: float | None = None
    row_id: str = ""


def row_example(row: dict, column: str = "messages", videos_root: str | Path | None = None, decoder: str = "auto") -> Example:
    """Messages from `column` (`messages` for SFT configs, `prompt` for GRPO ones) plus the
    row's frames when a message shows the video."""
    if column not in row or row[column] is None:
        raise RowError(f"row {row.get('id', '?')} has no {column!r} column (is this the right dataset config?)")
    messages = to_qwen_messages(row[column])
    example = Example(messages=messages, row_id=str(row.get("id", "")))
    if count_videos(messages):
        frames, times = row_frames(row, videos_root, decoder)
        example.frames, example.fps = frames, frames_fps(times, row.get("sample_fps") or row.get("fps"))
    return example


# ---------------------------------------------------------------------------------------------
# processor call
# ---------------------------------------------------------------------------------------------


def render(processor: Any, messages: list[dict], add_generation_prompt: bool = False) -> str:
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def build_inputs(
    processor: Any,
    messages: Sequence[Any],
    frames: Sequence[Any] | None = None,
    frame_times: Sequence[Any] | None = None,
    *,
    fps: Sequence[float | None] | None = None,
    add_generation_prompt: bool = False,
    max_pixels: int | None = None,
    min_pixels: int | None = None,
    padding_side: str = "right",
) -> Any:
    """Tokenised batch (`input_ids`, `attention_mask`, `mm_token_type_ids`, and for videos
    `pixel_values_videos`, `video_grid_thw`, `second_per_grid_ts`) for conversations.

    `messages` is a batch of Qwen conversations (a single conversation is accepted too);
    `frames[i]` the PIL frames shown by conversation i's video part(s) (None without video),
    `frame_times[i]` their times in seconds (the rate passed to the processor comes from them,
    or from `fps[i]`). `add_generation_prompt=True` for prompts to generate from (GRPO, eval),
    False for full conversations (SFT). `max_pixels`/`min_pixels` set the per-frame pixel budget
    (None keeps the processor's own). GRPO generation wants `padding_side="left"`.
    """
    if messages and isinstance(messages[0], dict) and "role" in messages[0]:
        messages, frames, frame_times = [messages], [frames] if frames is not None else None, [frame_times] if frame_times is not None else None
        fps = [fps] if fps is not None and not isinstance(fps, (list, tuple)) else fps
    batch = len(messages)
    frames = list(frames) if frames is not None else [None] * batch
    frame_times = list(frame_times) if frame_times is not None else [None] * batch
    fps = list(fps) if fps is not None else [None] * batch
    conversations = [to_qwen_messages(conversation) for conversation in messages]
    texts = [render(processor, conversation, add_generation_prompt) for conversation in conversations]
    videos, metadata = [], []
    for conversation, clip, times, rate in zip(conversations, frames, frame_times, fps):
        wanted = count_videos(conversation)
        if not wanted:
            continue
        if not clip:
            raise RowError("a conversation shows the video but no frames were given")
        clip = [_to_image(frame) for frame in clip]
        rate = rate or frames_fps(times or [], None)
        for _ in range(wanted):  # every video part shows the same clip
            videos.append(clip)
            metadata.append(video_metadata(len(clip), rate))
    kwargs: dict[str, Any] = {"text": texts, "padding": True, "return_tensors": "pt", "padding_side": padding_side}
    if videos:
        videos_kwargs: dict[str, Any] = {"video_metadata": metadata, "do_sample_frames": False}
        if max_pixels or min_pixels:
            default = processor.video_processor.size
            videos_kwargs["size"] = {
                "longest_edge": int(max_pixels or default["longest_edge"]),
                "shortest_edge": int(min(min_pixels or default["shortest_edge"], max_pixels or default["longest_edge"])),
            }
        kwargs["videos"] = videos
        kwargs["videos_kwargs"] = videos_kwargs
    return processor(**kwargs)


# ---------------------------------------------------------------------------------------------
# labels
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TurnMarkers:
    """Token ids that open an assistant turn and the id that closes it, read off the template."""

    header: tuple[int, ...]
    end: int


def turn_markers(processor: Any) -> TurnMarkers:
    """Render a probe conversation with the model's own template: the generation prompt is the
    assistant header (`<|im_start|>assistant\\n` for ChatML) and the first token after the
    assistant's text is the end-of-turn token (`<|im_end|>`)."""
    tokenizer = getattr(processor, "tokenizer", processor)
    user = [{"role": "user", "content": [{"type": "text", "text": "probe"}]}]
    bare = render(processor, user, False)
    prompted = render(processor, user, True)
    if not prompted.startswith(bare) or prompted == bare:
        raise RowError("the chat template has no generation prompt: cannot locate assistant turns")
    header = prompted[len(bare):]
    marker = "\x00ANSWER\x00"
    full = render(processor, user + [{"role": "assistant", "content": [{"type": "text", "text": marker}]}], False)
    tail = full[full.index(marker) + len(marker):]
    end_ids = tokenizer(tail, add_special_tokens=False).input_ids
    if not end_ids:
        raise RowError("the chat template closes assistant turns with nothing: cannot bound them")
    return TurnMarkers(header=tuple(tokenizer(header, add_special_tokens=False).input_ids), end=int(end_ids[0]))


def assistant_labels(input_ids: Any, markers: TurnMarkers, expected_turns: Sequence[int] | None = None) -> Any:
    """Labels = input_ids on assistant tokens (after each header, up to and including the end
    token), -100 elsewhere. `expected_turns[i]` (assistant messages in conversation i) is checked
    so a tokenisation that hides a header fails loudly instead of training on nothing."""
    import torch

    labels = torch.full_like(input_ids, IGNORE_INDEX)
    header = list(markers.header)
    width = len(header)
    for row_index, ids in enumerate(input_ids.tolist()):
        position, turns = 0, 0
        while position <= len(ids) - width:
            if ids[position:position + width] != header:
                position += 1
                continue
            start = position + width
            stop = start
            while stop < len(ids) and ids[stop] != markers.end:
                stop += 1
            stop = min(stop + 1, len(ids))  # the end token is trained: the model must learn to stop
            labels[row_index, start:stop] = input_ids[row_index, start:stop]
            turns += 1
            position = stop
        if expected_turns is not None and turns != expected_turns[row_index]:
            raise RowError(f"found {turns} assistant turns in tokenised conversation {row_index}, expected {expected_turns[row_index]}")
    return labels


def _rows_budget(rows: list[dict], key: str, pick: Any) -> int | None:
    """The pixel budget the rows were exported with (one per processor call: the batch's max / min)."""
    values = [int(row[key]) for row in rows if row.get(key)]
    return pick(values) if values else None


class SFTCollator:
    """Rows of an SFT config (`messages` ending with the assistant's target) → a training batch
    with labels on assistant tokens only. Used as `data_collator` with `remove_unused_columns=False`.

    The per-frame pixel budget is `max_pixels`/`min_pixels` when given (a recipe's setting), else
    the rows' own `max_pixels`/`min_pixels` (what export sampled at), else the processor's."""

    def __init__(
        self,
        processor: Any,
        *,
        column: str = "messages",
        videos_root: str | Path | None = None,
        max_pixels: int | None = None,
        min_pixels: int | None = None,
        decoder: str = "auto",
    ) -> None:
        self.processor = processor
        self.column = column
        self.videos_root = videos_root
        self.max_pixels = max_pixels
        self.min_pixels = min_pixels
        self.decoder = decoder
        self.markers = turn_markers(processor)

    def __call__(self, rows: list[dict]) -> dict:
        examples = [row_example(row, self.column, self.videos_root, self.decoder) for row in rows]
        for example in examples:
            if not any(message["role"] == "assistant" for message in example.messages):
                raise RowError(f"row {example.row_id}: no assistant turn to train on")
        inputs = build_inputs(
            self.processor,
            [example.messages for example in examples],
            [example.frames for example in examples],
            fps=[example.fps for example in examples],
            max_pixels=self.max_pixels or _rows_budget(rows, "max_pixels", max),
            min_pixels=self.min_pixels or _rows_budget(rows, "min_pixels", min),
            padding_side="right",
        )
        turns = [sum(message["role"] == "assistant" for message in example.messages) for example in examples]
        inputs["labels"] = assistant_labels(inputs["input_ids"], self.markers, turns)
        return dict(inputs)
