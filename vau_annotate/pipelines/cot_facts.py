"""What build-cot knows about one video before any model speaks: the facts a chain is written from.

Vad-R1 (section 3.2, Vad-Reasoning construction) gives the reasoner the annotated category, the
event description and, for the location of the event, the annotation where one exists. Sources
differ in what they carry, so the facts say where each piece came from:

    description   VAU-Bench `Description`; else the structured `Reasoning` fields (explanation,
                  evidence, cause and effect, conclusion); else a Vad-Reasoning answer's `<what>`;
                  else none (UCF-Crime's temporal annotations have no text) — and the prompt says so
    location      VAU-Bench `Key Object` and the `Location` parsed from `Reasoning`; else None
                  (then `<where>` comes from the captions)
    span          the hull of the annotated abnormal spans; None when unknown (then `<when>` is the
                  reasoner's own estimate and the record says `when_source: model`)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from vau_annotate.annotate.classes import NORMAL, Taxonomy
from vau_annotate.annotate.tags import extract_tag
from vau_annotate.schemas import FrameSet, VideoRecord

DescriptionSource = Literal["description", "reasoning", "answer", "none"]
NO_DESCRIPTION = "none: the annotations give no description of the event; rely on the frame descriptions"
# VAU-Bench Reasoning keys that describe the event (type and location are used elsewhere)
REASONING_EVENT_KEYS = ("Detailed Explanation", "Key Evidence", "Cause and Effect", "Conclusion")


class ItemFailure(Exception):
    """A video this stage cannot turn into a record; the reason goes to rejects.jsonl."""

    def __init__(self, reason: str, **detail: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class VideoFacts:
    """The ground truth a chain is written and checked against."""

    video_id: str
    label: str
    category: str
    length: float
    span_s: tuple[float, float] | None  # hull of the abnormal spans in seconds
    span: tuple[float, float] | None  # the same, normalised to [0, 1] with 3 decimals
    description: str = NO_DESCRIPTION
    description_source: DescriptionSource = "none"
    location: str | None = None  # annotated place of the event
    key_object: str | None = None  # annotated key object of the event

    @property
    def when_source(self) -> Literal["annotation", "model"] | None:
        """Where the published `<when>` comes from: None for a normal video (it has no `<when>`)."""
        if self.label != "abnormal":
            return None
        return "annotation" if self.span is not None else "model"


def video_length(video: VideoRecord, frames: FrameSet | None = None) -> float | None:
    """Seconds of video: the probed duration, else frames ÷ fps, else the last sampled timestamp."""
    if video.duration:
        return video.duration
    if video.num_frames and video.fps:
        return video.num_frames / video.fps
    if frames is not None and frames.timestamps and frames.timestamps[-1] > 0:
        return frames.timestamps[-1]
    return None


def event_description(video: VideoRecord) -> tuple[str, DescriptionSource]:
    """The annotators' words about the event, and which field they came from."""
    if (video.description or "").strip():
        return " ".join(video.description.split()), "description"  # type: ignore[union-attr]
    parts = [f"{key}: {video.reasoning[key].strip()}" for key in REASONING_EVENT_KEYS if (video.reasoning.get(key) or "").strip()]
    if parts:
        return " ".join(" ".join(parts).split()), "reasoning"
    what = extract_tag(video.answer or "", "what")
    if what:
        return " ".join(what.split()), "answer"
    return NO_DESCRIPTION, "none"


def video_facts(video: VideoRecord, taxonomy: Taxonomy, frames: FrameSet | None = None) -> VideoFacts:
    """Ground truth for the chain, or ItemFailure saying why the video cannot have one.

    Several abnormal spans are merged into their hull: Vad-R1's `<when>` is one interval.
    """
    if video.label not in ("normal", "abnormal"):
        raise ItemFailure("no label: build-cot needs each video labelled normal or abnormal", label=video.label)
    category = NORMAL if video.label == "normal" else taxonomy.lookup(video.category or "")
    if category is None:
        raise ItemFailure("no category: an abnormal video needs its anomaly class", category=video.category)
    length = video_length(video, frames)
    if length is None or length <= 0:
        raise ItemFailure("unknown duration: ingest with --probe so spans can be normalised")
    span_s = span = None
    if video.label == "abnormal" and video.span_known and video.spans:
        span_s = (video.spans[0].start, max(s.end for s in video.spans))
        span = (round(min(span_s[0] / length, 1.0), 3), round(min(span_s[1] / length, 1.0), 3))
    description, source = event_description(video)
    location = (video.reasoning.get("Location") or "").strip() or None
    key_object = (video.key_object or "").strip() or None
    return VideoFacts(video.id, video.label, category, length, span_s, span, description, source, location, key_object)
