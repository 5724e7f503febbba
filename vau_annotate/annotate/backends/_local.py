"""What the in-process backends (`hf:`, `vllm:`) share: where the weights come from, how a
`Request` becomes a chat conversation plus decoded media, and a micro-batcher that turns the
engine's concurrent `generate()` calls into batches.

Nothing here imports torch, transformers or vLLM at module level: the registry imports backends
lazily, and `vllm:` runs in an environment that may hold a different transformers.
"""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from vau_annotate.annotate.backends.base import BackendError, ErrorClass, ImagePart, Request, Result, TextPart, VideoPart

Outcome = Result | BackendError


# -- weights ---------------------------------------------------------------------------------------
def resolve_model_path(provider: str, model: str, *, allow_download: bool) -> str:
    """A local directory for `model`, or the hub id itself when the user allowed downloads.

    The tool runs unattended on machines where a silent multi-GB download is a surprise (or
    impossible), so a name that is not a directory is looked up only in the local Hugging Face
    cache unless `allow_download=True`.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BackendError(f"{provider}: {path} has no config.json: not a model directory", ErrorClass.FATAL, code="model_not_found")
        return str(path.resolve())
    if allow_download:
        return model
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(model, local_files_only=True)
    except Exception:
        raise BackendError(
            f"{provider}: {model!r} is neither a local model directory nor in the local Hugging Face cache; "
            "pass a directory, or allow the download explicitly (option allow_download=True)",
            ErrorClass.FATAL,
            code="model_not_found",
        ) from None


# -- requests → conversation + media -----------------------------------------------------------------
@dataclass
class Prepared:
    """One request as a chat-template conversation and its media, in placeholder order."""

    conversation: list[dict[str, Any]]
    images: list[Any] = field(default_factory=list)  # PIL.Image
    videos: list[Any] = field(default_factory=list)  # numpy (T, H, W, 3) uint8
    video_metadata: list[dict[str, Any]] = field(default_factory=list)


def decode_image(data: bytes):
    """JPEG/PNG bytes → RGB PIL image (loaded now, so a corrupt file fails here, per request)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def video_fps(video: VideoPart) -> float:
    """The sampling rate of the frames: the recorded one, else derived from the timestamps."""
    if video.fps and video.fps > 0:
        return float(video.fps)
    if len(video.timestamps) >= 2 and video.timestamps[-1] > video.timestamps[0]:
        return (len(video.timestamps) - 1) / (video.timestamps[-1] - video.timestamps[0])
    return 1.0


def video_metadata(video: VideoPart) -> dict[str, Any]:
    """transformers' `VideoMetadata` fields for frames that were already sampled at `fps`.

    With `frames_indices` = 0..n-1 and `total_num_frames` = n, `sampled_fps` equals `fps`, which
    Qwen2.5-VL turns into `second_per_grid_ts` = temporal_patch_size / fps: the time step of its
    temporal M-RoPE positions. `do_sample_frames=False` keeps every frame we send.
    """
    count = len(video.frames)
    fps = video_fps(video)
    return {
        "total_num_frames": count,
        "fps": fps,
        "duration": count / fps,
        "frames_indices": list(range(count)),
        "video_backend": "jpeg_sequence",
        "do_sample_frames": False,
    }


def decode_video(video: VideoPart):
    """JPEG frames → one (T, H, W, 3) uint8 array; frames of another size are resized to the first."""
    import numpy as np

    if not video.frames:
        raise ValueError("video part has no frames")
    images = [decode_image(frame) for frame in video.frames]
    size = images[0].size
    return np.stack([np.asarray(img if img.size == size else img.resize(size)) for img in images])


def conversation(request: Request) -> list[dict[str, Any]]:
    """Messages → HF chat format with `{"type": "image"}` / `{"type": "video"}` placeholders, media not
    decoded (the Ray Data LLM backend decodes on the cluster's workers instead)."""
    turns: list[dict[str, Any]] = []
    for message in request.messages:
        content: list[dict[str, Any]] = []
        for part in message.parts:
            if isinstance(part, TextPart):
                content.append({"type": "text", "text": part.text})
            elif isinstance(part, ImagePart):
                content.append({"type": "image"})
            elif isinstance(part, VideoPart):
                content.append({"type": "video"})
        if all(c["type"] == "text" for c in content):  # plain strings suit text-only templates too
            turns.append({"role": message.role, "content": "".join(c["text"] for c in content)})
        else:
            turns.append({"role": message.role, "content": content})
    return turns


def prepare(request: Request) -> Prepared:
    """Messages → HF chat format (see `conversation`) + media decoded in placeholder order."""
    prepared = Prepared(conversation=conversation(request))
    for message in request.messages:
        for part in message.parts:
            if isinstance(part, ImagePart):
                prepared.images.append(decode_image(part.data))
            elif isinstance(part, VideoPart):
                prepared.videos.append(decode_video(part))
                prepared.video_metadata.append(video_metadata(part))
    return prepared


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Text up to (not including) the first stop string, and whether one was found."""
    cuts = [text.find(s) for s in stop if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


# -- failures ------------------------------------------------------------------------------------------
def classify(provider: str, exc: BaseException) -> BackendError:
    """Out-of-memory may pass with a smaller batch or later: retry; a dead engine stops the run;
    anything else is about this item's input (bad image, prompt too long): the item fails."""
    if isinstance(exc, BackendError):
        return exc
    name = type(exc).__name__
    text = f"{provider}: {name}: {exc}"
    if isinstance(exc, MemoryError) or "OutOfMemory" in name or "out of memory" in str(exc).lower():
        return BackendError(text, ErrorClass.RETRYABLE, code="out_of_memory")
    if name == "EngineDeadError":
        return BackendError(text, ErrorClass.FATAL, code="engine_dead")
    return BackendError(text, ErrorClass.PERMANENT, code="bad_request")


def run_isolated(provider: str, run: Callable[[list[Request]], list[Result]], requests: Sequence[Request]) -> list[Outcome]:
    """Run a batch; if it fails as a whole, rerun its requests one by one so one bad item
    cannot fail its neighbours. Runs in a worker thread."""
    try:
        return list(run(list(requests)))
    except Exception as exc:
        if len(requests) == 1:
            return [classify(provider, exc)]
    outcomes: list[Outcome] = []
    for request in requests:
        try:
            outcomes.append(run([request])[0])
        except Exception as exc:
            outcomes.append(classify(provider, exc))
    return outcomes


def first_error(outcomes: Sequence[Outcome]) -> list[Result]:
    """`generate_batch` returns results or raises the first item's error."""
    for outcome in outcomes:
        if isinstance(outcome, BackendError):
            raise outcome
    return list(outcomes)  # type: ignore[arg-type]


# -- micro-batching ----------------------------------------------------------------------------------
class MicroBatcher:
    """Collects concurrent requests for `wait_s` (or until `batch_size`), runs them as one batch in a
    worker thread, and resolves each caller's future. One batch runs at a time: the model is not
    thread-safe (Qwen2.5-VL keeps `rope_deltas` on the module), and while a batch runs the next
    one fills up, so a busy engine reaches full batches by itself."""

    def __init__(self, run_batch: Callable[[list[Request]], list[Outcome]], *, batch_size: int = 8, wait_s: float = 0.005) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._run_batch = run_batch
        self.batch_size = batch_size
        self.wait_s = wait_s
        self._pending: list[tuple[Request, asyncio.Future[Outcome], float]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, request: Request) -> Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._pending.append((request, future, time.perf_counter()))
        if self._drainer is None or self._drainer.done() or self._drainer.get_loop() is not loop:
            self._drainer = loop.create_task(self._drain())
        outcome = await future
        if isinstance(outcome, BackendError):
            raise outcome
        return outcome

    async def _drain(self) -> None:
        while self._pending:
            if len(self._pending) < self.batch_size:
                await asyncio.sleep(self.wait_s)
            batch, self._pending = self._pending[: self.batch_size], self._pending[self.batch_size:]
            live = [(req, fut, t0) for req, fut, t0 in batch if not fut.cancelled()]
            if not live:
                continue
            try:
                outcomes = await asyncio.to_thread(self._run_batch, [req for req, _, _ in live])
            except asyncio.CancelledError:
                for _, future, _ in live:
                    future.cancel()
                raise
            except Exception as exc:  # every waiter must hear about it
                outcomes = [classify("batch", exc)] * len(live)
            now = time.perf_counter()
            for (_, future, started), outcome in zip(live, outcomes):
                if future.cancelled():
                    continue
                if isinstance(outcome, Result):
                    # the caller waited in the queue too: its latency counts from submission
                    outcome = Result(outcome.text, outcome.finish_reason, outcome.input_tokens, outcome.output_tokens, now - started)
                future.set_result(outcome)
