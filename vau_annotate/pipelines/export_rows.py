"""Rows of every config, built from run records one at a time (video columns are added later).

Each builder yields `Pending` rows: the contract's columns except the video ones, plus which video
and which frames the row shows. Builders never load frames; the writer does, row by row, so a
config of any size streams. What a builder cannot turn into a row is counted by reason in `skips`.

Paper sources: `p2c_sft` is Vad-R1's Perception-to-Cognition SFT form (think = chain, answer = the
six tags, Vad-R1 §3.2); `grpo_p2c` is Vad-R1's RL set, which needs only video-level labels (§4.2);
`reflect_sft` / `reflect_sft_conditioned` are SRVAU-R1's two SFT renderings (§3.3, Eq. 1), built
by `ReflectionRecord.two_round()` / `.conditioned()`; `grpo_reflect` uses SRVAU-R1's RFT prompt;
`grpo_qa` / `grpo_tag` / `grpo_cls` are VAU-R1's multiple-choice, grounding and classification
tasks with its `<think>`/`<answer>` output format (VAU-R1 §3).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from vau_annotate.annotate.classes import NORMAL, default_taxonomy
from vau_annotate.pipelines.export_source import Inputs, Run, Video, cot_records, reflection_records
from vau_annotate.pipelines.reflect import build_items, format_options
from vau_annotate.prompts import load_fragment, load_prompt
from vau_annotate.schemas.cot import CotRecord
from vau_annotate.schemas.reflection import ReflectionRecord
from vau_annotate.schemas.rows import message

SYSTEM_PROMPT = "export_system"
P2C_PROMPT = "p2c_question"
RFT_PROMPT = "reflect_rft"
TAG_QUESTION = "reflect_tag_question"
RFT_ANSWER_FORMAT = {
    "qa": "Each answer is only the letter of the correct option.",
    "tag": "Each answer is the abnormal event's [start, end] in seconds, or normal when nothing abnormal happens.",
}
EXPORT_PROMPTS = (SYSTEM_PROMPT, P2C_PROMPT, RFT_PROMPT, "grpo_qa", "grpo_tag", "grpo_cls")


@dataclass
class Pending:
    """A row without its video columns, and what to show: the video, the run with its frames,
    the samplings to prefer (the one the record's model saw) and, for a caption, the one frame."""

    row: dict[str, Any]
    video: Video
    run: Run
    prefer: list[tuple[str, int]] = field(default_factory=list)
    frame_index: int | None = None


Builder = Callable[[Inputs, Counter], Iterator[Pending]]


def system_text() -> str:
    return load_prompt(SYSTEM_PROMPT).render()


def base_row(row_id: str, video: Video) -> dict[str, Any]:
    return {"id": row_id, "video_id": video.record.id, "source": video.record.source}


def seconds(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "unknown"


def category_of(video: Video) -> str | None:
    """The canonical class of a labelled video ('Normal' for normal); None when unlabeled."""
    record = video.record
    if record.label == "normal":
        return NORMAL
    if record.label == "abnormal":
        return record.category or ""
    return None


def annotated_span(video: Video) -> list[float] | None:
    """The known abnormal span in seconds (the hull of several spans, as reflect's grounding truth)."""
    record = video.record
    if record.label != "abnormal" or not record.span_known or not record.spans:
        return None
    return [record.spans[0].start, max(s.end for s in record.spans)]


def cot_when_source(record: CotRecord) -> str:
    """Where a chain's `<when>` came from. The field is new on CotRecord; older records say it by
    their shape: a ground-truth span means the tool wrote `<when>` from the annotation."""
    value = getattr(record, "when_source", None)
    if value:
        return str(value)
    if record.span is not None:
        return "annotation"
    return "model" if record.fields.when is not None else "none"


def _video_for(inputs: Inputs, video_id: str, skips: Counter) -> Video | None:
    video = inputs.videos.get(video_id)
    if video is None:
        skips["record's video is not in any manifest"] += 1
    return video


# -- SFT -------------------------------------------------------------------------------------------

def p2c_sft(inputs: Inputs, skips: Counter) -> Iterator[Pending]:
    system = system_text()
    for run, record in cot_records(inputs.runs):
        video = _video_for(inputs, record.video_id, skips)
        if video is None:
            continue
        duration = record.duration if record.duration is not None else video.record.duration
        user = load_prompt(P2C_PROMPT).render(duration=seconds(duration))
        row = base_row(record.video_id, video) | {
            "messages": [message("system", system), message("user", user, video=True), message("assistant", record.think + record.answer)],
            "label": record.label, "category": record.category, "duration": duration,
        }
        yield Pending(row, video, run, [(record.provenance.caption_policy, record.provenance.max_pixels)])


def _reflect_rows(form: str) -> Builder:
    def build(inputs: Inputs, skips: Counter) -> Iterator[Pending]:
        fallback_system = system_text()
        for run, record in reflection_records(inputs.runs):
            video = _video_for(inputs, record.video_id, skips)
            if video is None:
                continue
            rendered = getattr(record, form)()
            system = rendered.get("system") or fallback_system
            row = base_row(record.id, video) | {
                "messages": [message("system", system), message("user", rendered["prompt"], video=True), message("assistant", rendered["completion"])],
                "task": record.task, "label": record.label,
            }
            yield Pending(row, video, run, [(record.provenance.sampling, record.provenance.max_pixels)])
    return build


# -- GRPO ------------------------------------------------------------------------------------------

def _solution(task: str, video: Video, *, answer: str = "", options: list[str] | None = None, span: list[float] | None = None,
              when_source: str = "none", question: str = "", reflect_task: str = "") -> dict[str, Any]:
    return {
        "task": task, "answer": answer, "options": options or [], "span": span, "duration": video.record.duration,
        "label": video.record.label, "category": category_of(video) or "", "when_source": when_source,
        "span_known": span is not None and when_source == "annotation", "question": question, "reflect_task": reflect_task,
    }


def _prompt(user: str, system: str) -> list[dict]:
    return [message("system", system), message("user", user, video=True)]


def _labelled(inputs: Inputs, skips: Counter) -> Iterator[Video]:
    for video in inputs.videos.values():
        if video.record.label == "unlabeled":
            skips["unlabeled video"] += 1
            continue
        yield video


def grpo_qa(inputs: Inputs, skips: Counter) -> Iterator[Pending]:
    system = system_text()
    for video in inputs.videos.values():
        if not video.record.mcqs:
            skips["video has no multiple-choice question"] += 1
        for i, mcq in enumerate(video.record.mcqs):
            user = load_prompt("grpo_qa").render(question=mcq.question, options=format_options(mcq.options))
            row = base_row(f"{video.record.id}#qa{i}", video) | {"prompt": _prompt(user, system)}
            row |= _solution("qa", video, answer=mcq.answer, options=list(mcq.options), span=annotated_span(video),
                             when_source="annotation" if annotated_span(video) else "none", question=mcq.question)
            yield Pending(row, video, video.run)


def grpo_tag(inputs: Inputs, skips: Counter) -> Iterator[Pending]:
    system = system_text()
    question = load_fragment(TAG_QUESTION)
    for video in _labelled(inputs, skips):
        span = annotated_span(video)
        if video.record.label == "abnormal" and span is None:
            skips["abnormal video with unknown span (no grounding truth)"] += 1
            continue
        if video.record.duration is None:
            skips["video duration unknown (ingested with --no-probe)"] += 1
            continue
        user = load_prompt("grpo_tag").render(duration=seconds(video.record.duration), question=question)
        row = base_row(f"{video.record.id}#tag", video) | {"prompt": _prompt(user, system)}
        row |= _solution("tag", video, span=span, when_source="annotation" if span else "none", question=question)
        yield Pending(row, video, video.run)


def grpo_cls(inputs: Inputs, skips: Counter) -> Iterator[Pending]:
    system = system_text()
    classes = default_taxonomy().names
    listing = "\n".join(classes)
    for video in _labelled(inputs, skips):
        category = category_of(video)
        if not category:
            skips["abnormal video without a class"] += 1
            continue
        user = load_prompt("grpo_cls").render(classes=listing)
        span = annotated_span(video)
        row = base_row(f"{video.record.id}#cls", video) | {"prompt": _prompt(user, system)}
        row |= _solution("cls", video, answer=category, options=classes, span=span, when_source="annotation" if span else "none",
                         question="Which kind of anomaly, if any, does this video show?")
        yield Pending(row, video, video.run)


def grpo_p2c(inputs: Inputs, skips: Counter) -> Iterator[Pending]:
    """Vad-R1's RL set is weakly labelled: a label and a class per video are enough; a span is
    added when the annotation has one, else when a chain's `<when>` came from the model."""
    system = system_text()
    model_spans: dict[str, list[float]] = {}
    for _, record in cot_records(inputs.runs):
        if cot_when_source(record) == "model" and record.fields.when is not None and record.duration:
            model_spans[record.video_id] = [record.fields.when[0] * record.duration, record.fields.when[1] * record.duration]
    for video in _labelled(inputs, skips):
        user = load_prompt(P2C_PROMPT).render(duration=seconds(video.record.duration))
        span, source = annotated_span(video), "annotation"
        if span is None and video.record.label == "abnormal" and video.record.id in model_spans:
            span, source = model_spans[video.record.id], "model"
        row = base_row(f"{video.record.id}#p2c", video) | {"prompt": _prompt(user, system)}
        row |= _solution("p2c", video, span=span, when_source=source if span else "none", question=user)
        yield Pending(row, video, video.run)


def grpo_reflect(inputs: Inputs, skips: Counter) -> Iterator[Pending]:
    """SRVAU-R1 RFT: the same items as `reflect` (one per MCQ, one grounding item per video with a
    usable truth), asked with the RFT prompt that wants think, answer, reflection, think, answer."""
    system = system_text()
    prompt = load_prompt(RFT_PROMPT)
    for video in inputs.videos.values():
        items, skipped = build_items([video.record], ("qa", "tag"))
        skips.update(skipped)
        for item in items:
            options = format_options(item.options) if item.options else ""
            user = prompt.render(question=item.question, options=options, answer_format=RFT_ANSWER_FORMAT[item.task],
                                 duration=seconds(video.record.duration), task=item.task)
            span = list(item.truth.span) if item.truth.span else annotated_span(video)
            row = base_row(item.id, video) | {"prompt": _prompt(user, system)}
            row |= _solution("reflect", video, answer=item.truth.letter or "", options=item.options, span=span,
                             when_source="annotation" if span else "none", question=item.question, reflect_task=item.task)
            yield Pending(row, video, video.run, [("fps:1", 360 * 420)])


# -- captions ----------------------------------------------------------------------------------------

def captions(inputs: Inputs, skips: Counter) -> Iterator[Pending]:
    for run, record in cot_records(inputs.runs):
        video = _video_for(inputs, record.video_id, skips)
        if video is None:
            continue
        prefer = [(record.provenance.caption_policy, record.provenance.max_pixels)]
        for caption in record.captions:
            row = base_row(f"{record.video_id}#f{caption.frame_index}", video) | {
                "frame_index": caption.frame_index, "timestamp": caption.timestamp, "text": caption.text,
            }
            yield Pending(row, video, run, prefer, frame_index=caption.frame_index)


BUILDERS: dict[str, Builder] = {
    "p2c_sft": p2c_sft,
    "reflect_sft": _reflect_rows("two_round"),
    "reflect_sft_conditioned": _reflect_rows("conditioned"),
    "grpo_qa": grpo_qa,
    "grpo_tag": grpo_tag,
    "grpo_cls": grpo_cls,
    "grpo_p2c": grpo_p2c,
    "grpo_reflect": grpo_reflect,
    "captions": captions,
}


def used_prompt_hashes() -> dict[str, str]:
    """Names and content hashes of the prompts export itself renders (for the dataset card)."""
    return {name: load_prompt(name).hash for name in EXPORT_PROMPTS}


def cot_usage(record: CotRecord) -> tuple[int, int, float]:
    p = record.provenance
    return p.input_tokens, p.output_tokens, p.cost


def reflection_usage(record: ReflectionRecord) -> tuple[int, int, float]:
    usage = record.provenance.usage.values()
    return sum(u.input_tokens for u in usage), sum(u.output_tokens for u in usage), sum(u.cost for u in usage)
