"""Model backends behind one protocol, chosen by a `PROVIDER:MODEL[@BASE_URL]` spec."""

from vau_annotate.annotate.backends.base import (
    Backend,
    BackendError,
    ErrorClass,
    ImagePart,
    Message,
    Request,
    Result,
    SamplingParams,
    TextPart,
    VideoPart,
)
from vau_annotate.annotate.backends.registry import ModelSpec, SpecError, load_backend, providers, register_backend

__all__ = [
    "Backend", "BackendError", "ErrorClass", "ImagePart", "Message", "ModelSpec", "Request", "Result",
    "SamplingParams", "SpecError", "TextPart", "VideoPart", "load_backend", "providers", "register_backend",
]
