"""What travels through Ray Data LLM for a `vllm:` role under `--executor ray`: its settings, the row
one of our requests becomes, what the cluster's workers make of that row for vLLM, and how a reply
row becomes a `Result` or a `BackendError`.

Pure functions, no Ray or vLLM import: the driver builds rows, Ray Data's workers run
`engine_inputs` (the processor's preprocess) and `reply_columns` (its postprocess), and the driver
maps the rows that come back. Ray's own stages are used for the engine only: the prompt is rendered
in the driver with the model's chat template (exactly as the in-process `vllm:` backend does, so
both see the same prompt), and the frames go to vLLM already sampled, with their true fps
(`_local.video_metadata`), instead of through Ray's multimodal stage, which would decode a video
file and sample it again by its own `fps`/`num_frames`.

Rows (see ray.llm._internal.batch.stages.vllm_engine_stage in Ray 2.60): the vLLM stage reads
`prompt`, `multimodal_data` and `sampling_params` (a dict → `vllm.SamplingParams`) and adds
`generated_text`, `num_input_tokens`, `num_generated_tokens`, `time_taken_llm`. With
`should_continue_on_error=True` a row that failed comes back with `__inference_error__` set to
"ExceptionName: message" and skips the postprocess; a row whose preprocess sets it skips the engine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from vau_annotate.annotate.backends._local import conversation, decode_image, decode_video, video_metadata
from vau_annotate.annotate.backends.base import BackendError, ErrorClass, ImagePart, Request, Result, VideoPart
from vau_annotate.annotate.backends.vllm_backend import sampling_kwargs

ROW_ID = "vau_row_id"
ERROR_COLUMN = "__inference_error__"  # Ray Data LLM's column for a row that failed
BAD_MEDIA = "vau-bad-media"  # our preprocess's mark for a row whose frames do not decode
DEVICES = ("gpu", "cpu")


@dataclass(frozen=True)
class RayLLMOptions:
    """How a `vllm:` role runs on a Ray cluster (`--ray-llm`); recorded in run.json.

    One engine replica holds `tensor_parallel × pipeline_parallel` GPUs; `replicas` of them run at
    once (Ray Data's `concurrency`; `min_replicas < replicas` lets Ray autoscale between the two),
    each fed `batch_size` rows at a time. A round is one Ray Data job of at most `round_size` rows.
    """

    tensor_parallel: int = 1
    pipeline_parallel: int = 1
    replicas: int = 1
    min_replicas: int | None = None
    batch_size: int = 16
    round_size: int = 1000
    gather_s: float = 1.0
    max_model_len: int | None = None
    dtype: str = "auto"
    gpu_memory_utilization: float | None = None
    kv_cache_gb: float | None = None
    enforce_eager: bool = False
    device: str = "gpu"

    @property
    def devices_per_replica(self) -> int:
        return self.tensor_parallel * self.pipeline_parallel

    @property
    def concurrency(self) -> int | tuple[int, int]:
        """Ray Data's `concurrency`: a fixed pool, or (min, max) for an autoscaling one."""
        if self.min_replicas is not None and self.min_replicas < self.replicas:
            return (self.min_replicas, self.replicas)
        return self.replicas

    def engine_kwargs(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """`vLLMEngineProcessorConfig.engine_kwargs`: the same engine settings as the in-process
        `vllm:` backend (image/video limits, seed), plus the parallelism."""
        kwargs: dict[str, Any] = {
            "tensor_parallel_size": self.tensor_parallel,
            "pipeline_parallel_size": self.pipeline_parallel,
            "dtype": self.dtype,
            "enforce_eager": self.enforce_eager,
            "limit_mm_per_prompt": {"image": 16, "video": 1},
            "seed": 0,
        }
        if self.max_model_len is not None:
            kwargs["max_model_len"] = self.max_model_len
        if self.gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = self.gpu_memory_utilization
        if self.kv_cache_gb is not None:
            kwargs["kv_cache_memory_bytes"] = int(self.kv_cache_gb * 1024**3)
        kwargs.update(extra or {})
        return kwargs

    def placement_group_config(self) -> dict[str, Any] | None:
        """None on GPUs (Ray Data LLM reserves tp×pp GPUs per replica itself); CPU bundles for
        vLLM's CPU build, which would otherwise wait for GPUs that never come."""
        if self.device == "cpu":
            return {"bundles": [{"CPU": 1} for _ in range(self.devices_per_replica)]}
        return None

    def recorded(self) -> str:
        """The settings as the option text that produces them (for run.json)."""
        return format_options(self)

    @classmethod
    def parse(cls, text: str) -> RayLLMOptions:
        """`tp=2,pp=1,replicas=4,batch=32` → options; ValueError names the bad part."""
        return parse_options(text)


def yes_no(text: str) -> bool:
    """1/true/yes or 0/false/no."""
    value = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}.get(text.lower())
    if value is None:
        raise ValueError(text)
    return value


yes_no.__name__ = "yes/no"

# option text key → (field, converter)
_KEYS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "tp": ("tensor_parallel", int),
    "pp": ("pipeline_parallel", int),
    "batch": ("batch_size", int),
    "round": ("round_size", int),
    "gather": ("gather_s", float),
    "max-len": ("max_model_len", int),
    "dtype": ("dtype", str),
    "gpu-mem": ("gpu_memory_utilization", float),
    "kv-cache-gb": ("kv_cache_gb", float),
    "eager": ("enforce_eager", yes_no),
    "device": ("device", str),
}
KNOWN_KEYS = ("tp", "pp", "replicas", *[k for k in _KEYS if k not in ("tp", "pp")])
_REPLICAS = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_options(text: str) -> RayLLMOptions:
    values: dict[str, Any] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not value:
            raise ValueError(f"--ray-llm {part!r}: expected KEY=VALUE (keys: {', '.join(KNOWN_KEYS)})")
        if key == "replicas":
            match = _REPLICAS.match(value)
            if match is None:
                raise ValueError(f"--ray-llm replicas={value!r}: expected N or MIN-MAX")
            low, high = int(match.group(1)), match.group(2)
            values["replicas"] = int(high) if high else low
            values["min_replicas"] = low if high else None
            continue
        if key not in _KEYS:
            raise ValueError(f"--ray-llm: unknown key {key!r} (keys: {', '.join(KNOWN_KEYS)})")
        name, convert = _KEYS[key]
        try:
            values[name] = convert(value)
        except ValueError:
            raise ValueError(f"--ray-llm {key}={value!r}: not a valid {convert.__name__}") from None
    options = RayLLMOptions(**values)
    _check(options)
    return options


def _check(options: RayLLMOptions) -> None:
    for name in ("tensor_parallel", "pipeline_parallel", "replicas", "batch_size", "round_size"):
        if getattr(options, name) < 1:
            raise ValueError(f"--ray-llm: {name.replace('_', ' ')} must be at least 1")
    if options.min_replicas is not None and not 1 <= options.min_replicas <= options.replicas:
        raise ValueError("--ray-llm replicas=MIN-MAX needs 1 ≤ MIN ≤ MAX")
    if options.device not in DEVICES:
        raise ValueError(f"--ray-llm device must be one of {', '.join(DEVICES)}, not {options.device!r}")
    if options.gather_s <= 0 or (options.kv_cache_gb is not None and options.kv_cache_gb <= 0):
        raise ValueError("--ray-llm gather and kv-cache-gb must be positive")
    if options.gpu_memory_utilization is not None and not 0 < options.gpu_memory_utilization <= 1:
        raise ValueError("--ray-llm gpu-mem is a fraction in (0, 1]")
    if options.max_model_len is not None and options.max_model_len < 256:
        raise ValueError("--ray-llm max-len must be at least 256")


def format_options(options: RayLLMOptions) -> str:
    replicas = f"{options.min_replicas}-{options.replicas}" if options.concurrency != options.replicas else str(options.replicas)
    parts = [f"tp={options.tensor_parallel}", f"pp={options.pipeline_parallel}", f"replicas={replicas}",
             f"batch={options.batch_size}", f"round={options.round_size}", f"gather={options.gather_s:g}",
             f"dtype={options.dtype}", f"device={options.device}", f"eager={int(options.enforce_eager)}"]
    for key, value in (("max-len", options.max_model_len), ("gpu-mem", options.gpu_memory_utilization), ("kv-cache-gb", options.kv_cache_gb)):
        if value is not None:
            parts.append(f"{key}={value:g}")
    return ",".join(parts)


# -- request → row (driver) -----------------------------------------------------------------------
def request_row(row_id: str, request: Request, render: Callable[[list[dict[str, Any]]], str]) -> dict[str, Any]:
    """One request as a Ray Data row: the prompt rendered by `render` (the model's chat template),
    its images and videos as the JPEG bytes we sampled (decoded on the workers), each video's
    metadata (true fps, every frame kept), and vLLM sampling keywords. `row_id` maps the reply back."""
    images: list[bytes] = []
    videos: list[list[bytes]] = []
    metadata: list[dict[str, Any]] = []
    for message in request.messages:
        for part in message.parts:
            if isinstance(part, ImagePart):
                images.append(part.data)
            elif isinstance(part, VideoPart):
                videos.append(list(part.frames))
                metadata.append(video_metadata(part))
    return {
        ROW_ID: row_id,
        "prompt": render(conversation(request)),
        "images": images,
        "videos": videos,
        "video_metadata": metadata,
        "sampling_params": sampling_kwargs(request.params),
        "max_tokens": request.params.max_tokens,
    }


# -- row → engine inputs (Ray Data workers: the processor's preprocess) ---------------------------
def engine_inputs(row: dict[str, Any]) -> dict[str, Any]:
    """Decode a row's frames into what vLLM takes: images as PIL, each video as a (T, H, W, 3) uint8
    array paired with its metadata (as the in-process backend passes them). Frames that do not
    decode fail this row only: it is marked and skips the engine. The JPEG bytes are dropped so they
    do not ride along through the later stages."""
    out: dict[str, Any] = {"images": None, "videos": None}
    try:
        media: dict[str, Any] = {}
        images = [decode_image(bytes(data)) for data in row.get("images") or ()]
        videos = []
        for frames, meta in zip(row.get("videos") or (), row.get("video_metadata") or ()):
            part = VideoPart(frames=tuple(bytes(frame) for frame in frames), timestamps=(), fps=float(meta["fps"]))
            videos.append((decode_video(part), dict(meta)))
        if images:
            media["image"] = images
        if videos:
            media["video"] = videos
    except Exception as exc:  # noqa: BLE001 - a damaged frame is this row's failure, not the job's
        out[ERROR_COLUMN] = f"{BAD_MEDIA}: cannot decode an image or video frame of this request ({type(exc).__name__})"
        return out
    if media:
        out["multimodal_data"] = media
    return out


REPLY_COLUMNS = (ROW_ID, "generated_text", "num_input_tokens", "num_generated_tokens", "time_taken_llm", "max_tokens")


def reply_columns(row: dict[str, Any]) -> dict[str, Any]:
    """The processor's postprocess: keep only what `row_outcome` reads."""
    return {name: row.get(name) for name in REPLY_COLUMNS}


# -- reply row → Result | BackendError (driver) ---------------------------------------------------
def row_outcome(row: dict[str, Any]) -> Result | BackendError:
    """A reply row as the engine's outcome for its request.

    Ray Data LLM's rows carry no finish reason: a reply that used its whole `max_tokens` budget is
    reported as "length" (what vLLM would say, unless the end-of-text token fell on the last step),
    anything shorter as "stop". A failed row gets the error class the in-process `vllm:` backend
    gives the same failure.
    """
    error = row.get(ERROR_COLUMN) or ""
    if error:
        return row_error(str(error))
    output_tokens = int(row.get("num_generated_tokens") or 0)
    max_tokens = int(row.get("max_tokens") or 0)
    return Result(
        text=str(row.get("generated_text") or ""),
        finish_reason="length" if max_tokens and output_tokens >= max_tokens else "stop",
        input_tokens=int(row.get("num_input_tokens") or 0),
        output_tokens=output_tokens,
        latency_s=max(float(row.get("time_taken_llm") or 0.0), 0.0),
    )


def row_error(message: str) -> BackendError:
    """`__inference_error__` text → a classified error: out of memory may pass later (retry); the
    engine dying is not the request's fault (retry: Ray restarts the replica); frames that did not
    decode, and anything else about the input (prompt longer than max-len, …) fail the item."""
    text = f"ray-llm: {message}"[:2000]
    lowered = message.lower()
    if message.startswith(BAD_MEDIA):
        return BackendError(text, ErrorClass.PERMANENT, code="bad_media")
    if "outofmemory" in lowered.replace(" ", "") or "out of memory" in lowered:
        return BackendError(text, ErrorClass.RETRYABLE, code="out_of_memory")
    if "enginedead" in lowered:
        return BackendError(text, ErrorClass.RETRYABLE, code="engine_dead")
    return BackendError(text, ErrorClass.PERMANENT, code="bad_request")


def missing_row(row_id: str) -> BackendError:
    """A request whose row did not come back from a finished job: ask again in the next round."""
    return BackendError(f"ray-llm: the Ray Data job returned no row for request {row_id[:12]}; it will be asked again",
                        ErrorClass.RETRYABLE, code="ray_llm_missing")
