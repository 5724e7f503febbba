"""`vllm:` through Ray Data LLM (`--executor ray`) against the in-process `vllm:` engine, on the same
video requests (reflect's base-role shape: a system prompt, a video of sampled frames, a question).

Baseline: the in-process backend (`vllm.LLM`, its micro-batcher), in this process. Measured: the
Ray Data LLM backend (one round = one Ray Data job through `vLLMEngineProcessorConfig` +
`build_processor`). Both figures include starting the engine(s), because a Ray Data job starts its
replicas every round; the in-process line also shows its engine start separately.
ratio = Ray requests/s ÷ in-process requests/s.

On a CPU (vLLM's CPU build, `device=cpu`, the offline tiny model) it checks that the path runs and
what a round's fixed cost is. The figure that matters needs GPUs: on a GPU machine or cluster

    python benchmarks/bench_ray_llm.py --model Qwen/Qwen2.5-VL-3B-Instruct --requests 2000 \
        --frames 32 --ray-llm tp=1,replicas=8,batch=32,max-len=32768 [--ray-address auto]

(with `vau-annotate[ray-llm]` installed and the model in the local Hugging Face cache). With
`replicas=R` on R GPUs the Ray line should approach R × the in-process one once the engines'
start-up is small next to the round.

    python benchmarks/bench_ray_llm.py [--requests 24] [--frames 4] [--max-tokens 16] [--ray-llm device=cpu,...]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vau_annotate.annotate.backends import Message, ModelSpec, Request, SamplingParams, TextPart, VideoPart, load_backend  # noqa: E402
from vau_annotate.annotate.backends.ray_llm_backend import create  # noqa: E402
from vau_annotate.annotate.backends.ray_llm_rows import RayLLMOptions  # noqa: E402

CPU_RAY_LLM = "device=cpu,dtype=float32,eager=1,max-len=4096,kv-cache-gb=0.25,batch=8,gather=0.2"
CPU_ENGINE = {"dtype": "float32", "enforce_eager": True, "max_model_len": 4096,
              "engine_options": {"kv_cache_memory_bytes": 256 * 1024**2, "distributed_executor_backend": "uni"}}


def noise_jpeg(seed: int, height: int, width: int) -> bytes:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def requests(count: int, frames: int, side: int, max_tokens: int) -> list[Request]:
    """Distinct video questions (distinct frames and text, so no two share a ledger key)."""
    out = []
    for i in range(count):
        video = VideoPart(frames=tuple(noise_jpeg(i * 100 + f, side, side) for f in range(frames)),
                          timestamps=tuple(f * 1.0 for f in range(frames)), fps=1.0)
        out.append(Request(messages=(Message.text("system", "You watch surveillance video."),
                                     Message("user", (video, TextPart(f"[{i}] What happens in the video?")))),
                           params=SamplingParams(max_tokens=max_tokens)))
    return out


async def timed(backend, batch: list[Request]) -> float:
    started = time.perf_counter()
    results = await asyncio.gather(*(backend.generate(r) for r in batch))
    assert all(r.output_tokens > 0 for r in results)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model directory or cached hub id (default: build the offline tiny model)")
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--side", type=int, default=112, help="frame width and height in pixels")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--ray-llm", default=None, help=f"--ray-llm settings (default on CPU: {CPU_RAY_LLM}; on GPU: tp=1,replicas=1)")
    parser.add_argument("--ray-address", default=None)
    parser.add_argument("--gpu", action="store_true", help="GPU machine: vLLM's defaults instead of the CPU settings")
    args = parser.parse_args()

    model = args.model
    if model is None:
        from vau_annotate.train.tiny import build_tiny_model

        model = str(build_tiny_model(Path(tempfile.mkdtemp(prefix="bench-ray-llm-"))))
    batch = requests(args.requests, args.frames, args.side, args.max_tokens)
    options = RayLLMOptions.parse(args.ray_llm if args.ray_llm is not None else ("" if args.gpu else CPU_RAY_LLM))

    async def in_process() -> tuple[float, float]:
        started = time.perf_counter()
        backend = load_backend(f"vllm:{model}", **({} if args.gpu else CPU_ENGINE))
        start_s = time.perf_counter() - started
        try:
            return start_s, await timed(backend, batch)
        finally:
            await backend.aclose()

    async def on_ray() -> tuple[float, list[int]]:
        backend = create(ModelSpec.parse(f"vllm:{model}"), options, address=args.ray_address)
        try:
            return await timed(backend, batch), list(backend.rounds)
        finally:
            await backend.aclose()

    start_s, local_s = asyncio.run(in_process())
    ray_s, rounds = asyncio.run(on_ray())
    local_rate = args.requests / (start_s + local_s)
    ray_rate = args.requests / ray_s
    print(f"{args.requests} video requests ({args.frames} frames of {args.side}x{args.side}, {args.max_tokens} tokens out), model {model}")
    print(f"in-process vllm: engine start {start_s:6.1f} s + generate {local_s:6.1f} s = {local_rate:7.2f} req/s "
          f"(generate alone {args.requests / local_s:7.2f} req/s)")
    print(f"Ray Data LLM   : {len(rounds)} round(s) of {rounds} rows, {ray_s:6.1f} s incl. replica start = {ray_rate:7.2f} req/s  [{options.recorded()}]")
    print(f"ratio Ray / in-process (both incl. engine start): {ray_rate / local_rate:.2f}")


if __name__ == "__main__":
    main()
