"""Pydantic records that flow between pipeline stages; one module per record family."""

from vau_annotate.schemas.cot import CotRecord
from vau_annotate.schemas.frames import FrameSet
from vau_annotate.schemas.reflection import ReflectionRecord
from vau_annotate.schemas.run import RejectRecord, RunMeta
from vau_annotate.schemas.video import MCQ, Label, Source, Span, VideoRecord

SCHEMAS = {
    "video": VideoRecord,
    "frames": FrameSet,
    "mcq": MCQ,
    "run": RunMeta,
    "reject": RejectRecord,
    "cot": CotRecord,
    "reflection": ReflectionRecord,
}

__all__ = ["SCHEMAS", "CotRecord", "FrameSet", "Label", "MCQ", "ReflectionRecord", "RejectRecord", "RunMeta", "Source", "Span", "VideoRecord"]
