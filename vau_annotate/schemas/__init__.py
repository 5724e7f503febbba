"""Pydantic records that flow between pipeline stages; one module per record family."""

from vau_annotate.schemas.frames import FrameSet
from vau_annotate.schemas.run import RejectRecord, RunMeta
from vau_annotate.schemas.video import MCQ, Label, Source, Span, VideoRecord

SCHEMAS = {
    "video": VideoRecord,
    "frames": FrameSet,
    "mcq": MCQ,
    "run": RunMeta,
    "reject": RejectRecord,
}

__all__ = ["SCHEMAS", "FrameSet", "Label", "MCQ", "RejectRecord", "RunMeta", "Source", "Span", "VideoRecord"]
