"""`vau-annotate serve-base`: run `vllm serve` for the reflect stage's base model, ready for video.

The reflect stage sends each video as one `video_url` whose data URL carries the sampled JPEG
frames, and the frames' true rate as per-request `media_io_kwargs` (see
`backends/openai_backend.py`). A stock `vllm serve` needs four things to take that:

- `--limit-mm-per-prompt` allowing one video (and no image) per prompt, with profiling options
  (`num_frames`, `width`, `height`) sized to the frames we send, so memory is planned for them;
- `--media-io-kwargs '{"video": {"num_frames": -1}}'`: vLLM keeps only the first 32 frames of a
  `video/jpeg` data URL by default; -1 keeps every frame (the client also asks for it per request);
- `--trust-request-mm-kwargs`: without it vLLM rejects any request carrying `media_io_kwargs`,
  i.e. every video request of ours (acceptable here: the server listens on 127.0.0.1 only);
- a `--max-model-len` that fits a full video plus the prompt and the reply.

This process waits until `/v1/models` answers, prints the `openai:MODEL@http://127.0.0.1:PORT/v1`
spec to pass as `reflect --base`, and on Ctrl-C stops the server's whole process group: SIGTERM,
a grace period, then SIGKILL.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable

from vau_annotate.annotate.pricing import QWEN_FACTOR, QWEN_TEMPORAL_PATCH, QWEN_VIDEO_PIXELS, VISION_MARKER_TOKENS, qwen_smart_resize

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"


class ServeError(RuntimeError):
    """The server could not be started or did not come up; the message says why."""


@dataclass(frozen=True)
class ServeOptions:
    """How to start the base model's server."""

    model: str = DEFAULT_MODEL
    port: int = 8000
    host: str = "127.0.0.1"
    vllm_bin: str | None = None
    served_name: str | None = None
    max_frames: int = 64
    max_pixels: int = 360 * 420
    text_tokens: int = 4096
    max_model_len: int | None = None
    startup_timeout: float = 900.0
    grace_s: float = 20.0
    extra_args: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The model name clients use: a local directory is served under its folder name."""
        if self.served_name:
            return self.served_name
        path = Path(self.model)
        return path.name if path.is_dir() else self.model

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def spec(self) -> str:
        return f"openai:{self.name}@{self.base_url}"


def find_vllm(explicit: str | None = None) -> str:
    """The `vllm` executable: the one given, or the one on PATH."""
    if explicit:
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ServeError(f"--vllm-bin {explicit} is not an executable file")
        return str(path)
    found = shutil.which("vllm")
    if not found:
        raise ServeError("no `vllm` executable on PATH: install vLLM (pip install 'vau-annotate[vllm]') or pass --vllm-bin PATH")
    return found


def frame_side(max_pixels: int) -> tuple[int, int]:
    """(height, width) of a square frame within the pixel budget, as Qwen's video processor sizes it."""
    side = max(QWEN_FACTOR, int(math.sqrt(max_pixels)))
    return qwen_smart_resize(side, side, *QWEN_VIDEO_PIXELS)


def video_tokens(max_frames: int, max_pixels: int) -> int:
    """Tokens of the largest video the reflect stage sends (frames paired in time, 28-px blocks)."""
    height, width = frame_side(max_pixels)
    return math.ceil(max_frames / QWEN_TEMPORAL_PATCH) * (height // QWEN_FACTOR) * (width // QWEN_FACTOR) + VISION_MARKER_TOKENS


def model_len(options: ServeOptions) -> int:
    """--max-model-len: the given one, or a full video plus prompt and reply, rounded up to 1024."""
    if options.max_model_len:
        return options.max_model_len
    need = video_tokens(options.max_frames, options.max_pixels) + options.text_tokens
    return math.ceil(need / 1024) * 1024


def serve_command(options: ServeOptions, vllm: str) -> list[str]:
    """The `vllm serve` command line for one video per prompt at the reflect stage's frame budget."""
    height, width = frame_side(options.max_pixels)
    limits = {"image": 0, "video": {"count": 1, "num_frames": options.max_frames, "width": width, "height": height}}
    return [
        vllm, "serve", options.model,
        "--host", options.host, "--port", str(options.port),
        "--served-model-name", options.name,
        "--limit-mm-per-prompt", json.dumps(limits),
        "--media-io-kwargs", json.dumps({"video": {"num_frames": -1}}),
        "--trust-request-mm-kwargs",
        "--max-model-len", str(model_len(options)),
        *options.extra_args,
    ]


def answers(base_url: str, timeout: float = 2.0) -> bool:
    """Whether an OpenAI-compatible server answers `GET /models` at this base URL."""
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_until_ready(process: subprocess.Popen[bytes], base_url: str, timeout: float, poll_s: float = 0.5) -> None:
    """Block until the server answers; raise if it exits first or takes longer than `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            raise ServeError(f"vllm serve exited with status {code} before it answered (its log is above)")
        if answers(base_url):
            return
        time.sleep(poll_s)
    raise ServeError(f"vllm serve did not answer {base_url}/models within {timeout:g} s")


def stop(process: subprocess.Popen[bytes], grace_s: float) -> int:
    """Stop the server's whole process group: SIGTERM, up to `grace_s` to exit, then SIGKILL.

    vLLM runs its engine in child processes; waiting for the leader alone could leave a worker
    holding the accelerator, so the group must be empty before this returns. Returns the leader's status.
    """
    if process.poll() is None or _group_alive(process.pid):
        _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and (process.poll() is None or _group_alive(process.pid)):
            time.sleep(0.1)
        if process.poll() is None or _group_alive(process.pid):
            _signal_group(process.pid, signal.SIGKILL)
    return process.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)  # the server runs in its own session: pgid == the leader's pid
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group is still running (zombies awaiting their parent do not count)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def serve_base(options: ServeOptions, on_ready: Callable[[str], None], log: IO[str] | None = None) -> int:
    """Start the server, report its spec once it answers, and keep it up until it exits or Ctrl-C.

    Returns 0 after a Ctrl-C (a requested stop), else the server's own exit status.
    """
    if answers(options.base_url):
        raise ServeError(f"something already answers at {options.base_url}: choose another --port")
    command = serve_command(options, find_vllm(options.vllm_bin))
    sink = log if log is not None else sys.stderr
    print("starting: " + " ".join(_quote(a) for a in command), file=sink, flush=True)
    process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_ready(process, options.base_url, options.startup_timeout)
        on_ready(options.spec)
        return process.wait()
    except KeyboardInterrupt:
        print(f"stopping vllm serve (SIGTERM, SIGKILL after {options.grace_s:g} s)…", file=sink, flush=True)
        stop(process, options.grace_s)
        return 0
    finally:
        stop(process, options.grace_s)  # also on errors: never leave a server behind


def _quote(arg: str) -> str:
    return f"'{arg}'" if any(c in arg for c in " {}\"") else arg

