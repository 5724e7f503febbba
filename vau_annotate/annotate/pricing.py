"""Prices per provider:model, and token estimates for `--dry-run` and rate limiting.

Prices live in `vau_annotate/data/prices.json` (USD per million input / output tokens, with the
date they were taken); `--prices FILE` merges a user file over them, because list prices change
and negotiated ones differ.

Token estimates exist to answer "what will this cost?" before anything is paid, and to reserve a
request's share of a tokens-per-minute budget before it is sent. They follow each provider's
published rule for images, which dominate the cost of video prompts:

    qwen          (dashscope:, vllm:, hf:, mock:, openai: serving a non-OpenAI model, and any
                  unknown provider) — the image is resized to multiples of 28 px within a pixel
                  budget (Qwen's smart_resize); each 28×28 block is one token (14-px patches
                  merged 2×2); a video's frames are paired temporally (2 frames per temporal
                  patch), so a video costs ceil(frames/2) × (h/28)(w/28) tokens; +2 tokens for the
                  vision start/end markers of each image or video.
    openai-tile   (openai:gpt-4o, gpt-4.1, o1, o3 … at detail "high"/"auto") — fit in 2048×2048,
                  then shrink so the short side is at most 768 px, count 512-px tiles:
                  base + per_tile × tiles (85 + 170 for gpt-4o / gpt-4.1; 2833 + 5667 for
                  gpt-4o-mini, whose price per token is lower; 75 + 150 for o1 / o3). Video frames
                  are sent as images, so each frame pays the image price.
    openai-patch  (openai:gpt-4.1-mini, gpt-4.1-nano, o4-mini) — 32-px patches, at most 1536
                  (the image is scaled down to fit), × a per-model multiplier (1.62, 2.46, 1.72).

Text is estimated at one token per four characters unless a token counter is given.
"""

from __future__ import annotations

import io
import ipaddress
import json
import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlparse

from vau_annotate.annotate.backends.base import ImagePart, Request, TextPart, VideoPart

MESSAGE_OVERHEAD_TOKENS = 4  # role markers and separators the chat template adds per message
VISION_MARKER_TOKENS = 2  # <|vision_start|> … <|vision_end|>
DEFAULT_IMAGE_SIZE = (448, 448)  # used when an image's header cannot be read

# Qwen smart_resize bounds. Images: DashScope's default budget (1280 tokens; min 4 tokens);
# video frames: qwen-vl-utils' per-frame bounds.
QWEN_FACTOR = 28
QWEN_IMAGE_PIXELS = (4 * 28 * 28, 1280 * 28 * 28)
QWEN_VIDEO_PIXELS = (128 * 28 * 28, 768 * 28 * 28)
QWEN_TEMPORAL_PATCH = 2

# OpenAI's published image rules: model-name prefix → (base, per 512-px tile) or patch multiplier.
OPENAI_TILE_RULES: tuple[tuple[str, tuple[int, int]], ...] = (
    ("gpt-4o-mini", (2833, 5667)),
    ("o1", (75, 150)),
    ("o3", (75, 150)),
    ("gpt-4o", (85, 170)),
    ("gpt-4.1", (85, 170)),
    ("gpt-4.5", (85, 170)),
    ("gpt-4", (85, 170)),
)
OPENAI_PATCH_RULES: tuple[tuple[str, float], ...] = (
    ("gpt-4.1-mini", 1.62),
    ("gpt-4.1-nano", 2.46),
    ("o4-mini", 1.72),
)
OPENAI_PATCH_LIMIT = 1536
_OPENAI_MODEL = re.compile(r"^(gpt-|o\d|chatgpt)", re.IGNORECASE)
_SNAPSHOT_SUFFIX = re.compile(r"-(latest|\d{4}-\d{2}-\d{2}|\d{4}|\d{8})$")

TextCounter = Callable[[str], int]


class PriceFileError(ValueError):
    """A price file that cannot be used (bad JSON, missing or negative numbers)."""


@dataclass(frozen=True)
class Price:
    """USD per million input and output tokens."""

    input: float
    output: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input + output_tokens * self.output) / 1_000_000


FREE = Price(0.0, 0.0)


class PriceTable:
    """provider:model → Price, with fallbacks for snapshots, gateways and local servers."""

    def __init__(self, entries: Mapping[str, Price], about: Mapping[str, Any] | None = None) -> None:
        self.entries = {_normalise_key(k): v for k, v in entries.items()}
        self.about = dict(about or {})

    @classmethod
    def default(cls) -> PriceTable:
        """The bundled table."""
        text = resources.files("vau_annotate").joinpath("data/prices.json").read_text(encoding="utf-8")
        return cls.from_json(json.loads(text), source="bundled prices.json")

    @classmethod
    def load(cls, user_file: str | Path | None = None) -> PriceTable:
        """The bundled table with `user_file` (the `--prices` option) merged over it."""
        table = cls.default()
        if user_file is None:
            return table
        path = Path(user_file)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise PriceFileError(f"cannot read price file {path}: {exc}") from None
        return table.merged(cls.from_json(data, source=str(path)))

    @classmethod
    def from_json(cls, data: Any, *, source: str = "price file") -> PriceTable:
        """Accepts {"prices": {...}, "_about": {...}} or a flat {"provider:model": {...}} object."""
        if not isinstance(data, dict):
            raise PriceFileError(f"{source}: expected a JSON object")
        about = data.get("_about", {})
        raw = data.get("prices", {k: v for k, v in data.items() if not k.startswith("_")})
        if not isinstance(raw, dict):
            raise PriceFileError(f"{source}: 'prices' must be an object of provider:model entries")
        return cls({key: _parse_price(key, value, source) for key, value in raw.items()}, about)

    def merged(self, other: PriceTable) -> PriceTable:
        """A new table: `other`'s entries win."""
        return PriceTable({**self.entries, **other.entries}, {**self.about, **other.about})

    def lookup(self, provider: str, model: str, base_url: str | None = None) -> Price | None:
        """The price of a model, or None when nothing in the table applies.

        Order: exact entry; the same without a snapshot suffix (-2025-01-25, -latest);
        PROVIDER:*; free when served from a loopback address; the same model name under
        another provider (a gateway such as openai:deepseek-chat@api.deepseek.com).
        """
        provider, model = provider.lower(), model.lower()
        names = [model]
        base = _SNAPSHOT_SUFFIX.sub("", model)
        if base != model:
            names.append(base)
        for name in names:
            if f"{provider}:{name}" in self.entries:
                return self.entries[f"{provider}:{name}"]
        if f"{provider}:*" in self.entries:
            return self.entries[f"{provider}:*"]
        if base_url and _is_loopback(base_url):
            return FREE
        for name in names:
            for key, price in self.entries.items():
                if key.split(":", 1)[1] == name:
                    return price
        return None

    def cost(self, provider: str, model: str, input_tokens: int, output_tokens: int, base_url: str | None = None) -> float | None:
        price = self.lookup(provider, model, base_url)
        return None if price is None else price.cost(input_tokens, output_tokens)


def _normalise_key(key: str) -> str:
    if ":" not in key:
        raise PriceFileError(f"price key {key!r} must look like PROVIDER:MODEL or PROVIDER:*")
    provider, model = key.split(":", 1)
    return f"{provider.strip().lower()}:{model.strip().lower()}"


def _parse_price(key: str, value: Any, source: str) -> Price:
    _normalise_key(key)
    if not isinstance(value, dict) or "input" not in value or "output" not in value:
        raise PriceFileError(f"{source}: {key} needs {{\"input\": USD_PER_M, \"output\": USD_PER_M}}")
    try:
        price = Price(float(value["input"]), float(value["output"]))
    except (TypeError, ValueError):
        raise PriceFileError(f"{source}: {key} prices must be numbers") from None
    if price.input < 0 or price.output < 0 or math.isnan(price.input) or math.isnan(price.output):
        raise PriceFileError(f"{source}: {key} prices must be non-negative numbers")
    return price


def _is_loopback(base_url: str) -> bool:
    host = urlparse(base_url if "//" in base_url else f"//{base_url}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- token estimates ---------------------------------------------------------------------------

def image_rule(provider: str, model: str) -> str:
    """Which image-token rule a provider:model follows: "openai-tile", "openai-patch" or "qwen"."""
    if provider.lower() != "openai" or not _OPENAI_MODEL.match(model):
        return "qwen"
    name = model.lower()
    if any(name.startswith(prefix) for prefix, _ in OPENAI_PATCH_RULES):
        return "openai-patch"
    return "openai-tile"


def estimate_tokens(request: Request, provider: str, model: str = "", *, count_text: TextCounter | None = None) -> int:
    """Input tokens a request will likely be billed for (text + images + videos + chat overhead)."""
    rule = image_rule(provider, model)
    total = 0
    for message in request.messages:
        total += MESSAGE_OVERHEAD_TOKENS
        for part in message.parts:
            if isinstance(part, TextPart):
                total += count_text(part.text) if count_text else text_tokens(part.text)
            elif isinstance(part, ImagePart):
                total += image_tokens(image_size(part.data), rule, model)
            elif isinstance(part, VideoPart):
                total += video_tokens(part, rule, model)
    return total


def text_tokens(text: str) -> int:
    """≈ 4 characters per token: right within ~25 % for English prose on GPT/Qwen tokenizers."""
    return math.ceil(len(text) / 4)


def image_tokens(size: tuple[int, int], rule: str, model: str = "") -> int:
    """Tokens of one image of (width, height) under a rule (see the module docstring)."""
    width, height = size
    if rule == "openai-tile":
        return _openai_tile_tokens(width, height, model)
    if rule == "openai-patch":
        return _openai_patch_tokens(width, height, model)
    h, w = qwen_smart_resize(height, width, *QWEN_IMAGE_PIXELS)
    return (h // QWEN_FACTOR) * (w // QWEN_FACTOR) + VISION_MARKER_TOKENS


def video_tokens(video: VideoPart, rule: str, model: str = "") -> int:
    """Qwen pairs frames temporally; OpenAI-style APIs receive each frame as an image."""
    if not video.frames:
        return 0
    width, height = image_size(video.frames[0])
    if rule != "qwen":
        return len(video.frames) * image_tokens((width, height), rule, model)
    h, w = qwen_smart_resize(height, width, *QWEN_VIDEO_PIXELS)
    groups = math.ceil(len(video.frames) / QWEN_TEMPORAL_PATCH)
    return groups * (h // QWEN_FACTOR) * (w // QWEN_FACTOR) + VISION_MARKER_TOKENS


def qwen_smart_resize(height: int, width: int, min_pixels: int, max_pixels: int, factor: int = QWEN_FACTOR) -> tuple[int, int]:
    """Qwen2-VL's resize: sides rounded to multiples of `factor`, area kept within the bounds."""
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def _openai_tile_tokens(width: int, height: int, model: str) -> int:
    base, per_tile = next((rule for prefix, rule in OPENAI_TILE_RULES if model.lower().startswith(prefix)), (85, 170))
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        scale = 2048 / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = w * scale, h * scale
    tiles = math.ceil(w / 512) * math.ceil(h / 512)
    return base + per_tile * tiles


def _openai_patch_tokens(width: int, height: int, model: str) -> int:
    multiplier = next((m for prefix, m in OPENAI_PATCH_RULES if model.lower().startswith(prefix)), 1.0)
    patches = math.ceil(width / 32) * math.ceil(height / 32)
    if patches > OPENAI_PATCH_LIMIT:
        scale = math.sqrt(OPENAI_PATCH_LIMIT * 32 * 32 / (width * height))
        w, h = width * scale, height * scale
        # shrink further so whole patches cover the image within the limit
        scale = min(math.floor(w / 32) / (w / 32), math.floor(h / 32) / (h / 32))
        patches = min(OPENAI_PATCH_LIMIT, math.ceil(w * scale / 32) * math.ceil(h * scale / 32))
    return math.ceil(patches * multiplier)


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the image header; a default when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (UnidentifiedImageError, OSError, ValueError):
        return DEFAULT_IMAGE_SIZE
