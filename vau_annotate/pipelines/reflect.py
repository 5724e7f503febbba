"""`vau-annotate reflect`: SRVAU-R1 reflection triples from a base model and a teacher.

For every question (multiple-choice QA, one item per MCQ) and every video with a usable truth for
temporal anomaly grounding (TAG, one item per video):

1. the base model answers from frames sampled at F fps, with no hint of reflection in its prompt;
   its reply is kept verbatim and judged against the ground truth (an unparsable reply is wrong);
2. the teacher sees the question, the frames, the base reply, the verdict and the ground truth, and
   writes `<reflection>` (why the answer is unsupported and what supports the right one, or how
   right reasoning could be clearer) plus a revised `<think>` and `<answer>`;
3. the reflect gates check the teacher's reply; a failing reply is repaired once (the failures are
   listed back to the teacher), then accepted or rejected with its reasons.

Each item ends as `RUN/reflect/<item>.json` (a ReflectionRecord) or `<item>.rejected.json`; every
model call is in the ledger, so a re-run after a crash repeats no call and writes no record twice.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Literal

from vau_annotate.annotate.backends import Message, Request, Result, SamplingParams, TextPart, VideoPart
from vau_annotate.annotate.checks import Gate, GateReport, run_gates
from vau_annotate.annotate.checks.reflect import ReflectCandidate, ReflectGateConfig, reflect_gates
from vau_annotate.annotate.engine import Engine
from vau_annotate.annotate.ledger import Ledger
from vau_annotate.annotate.media import video_part
from vau_annotate.annotate.rundir import RunDir
from vau_annotate.annotate.tags import extract_letter, extract_tag, parse_span, temporal_iou
from vau_annotate.annotate.backends.registry import SpecOnly
from vau_annotate.annotate.engine import combined_usage
from vau_annotate.pipelines.models import ModelAccess, open_backend
from vau_annotate.pipelines.models import make_engine as make_stage_engine
from vau_annotate.pipelines.runner import Accepted, Outcome, Rejected, StageRunner, StageStore
from vau_annotate.pipelines.summary import StageSummary
from vau_annotate.prompts import Prompt, load_fragment, load_prompt
from vau_annotate.schemas import MCQ, FrameSet, VideoRecord
from vau_annotate.schemas.reflection import Attempt, ReflectionProvenance, ReflectionRecord, Task, Usage, transition_of
from vau_annotate.schemas.run import utc_now

STAGE = "reflect"
ROLES = ("base", "teacher")
DEFAULT_BASE = "vllm:Qwen/Qwen2.5-VL-3B-Instruct"
TASKS: tuple[Task, ...] = ("qa", "tag")
NORMAL = "normal"
REPAIR_PROMPT = "reflect_repair"
TAG_QUESTION_FRAGMENT = "reflect_tag_question"

_NORMAL_ANSWER = re.compile(r"^\W*(?:normal|none|no anomal\w*|nothing abnormal(?: happens)?)\W*$", re.I)


def stage_of(role: str) -> str:
    """Ledger stage of one role's calls, so `status` can tell base and teacher usage apart."""
    return f"{STAGE}:{role}"


# -- options -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReflectOptions:
    """What `vau-annotate reflect` was asked to do (recorded in run.json, never a secret)."""

    teacher: str
    base: str = DEFAULT_BASE
    task: Literal["qa", "tag", "both"] = "both"
    fps: float = 1.0
    max_pixels: int = 360 * 420
    max_frames: int = 64
    limit: int | None = None
    concurrency: int = 4
    rpm: float | None = None
    tpm: float | None = None
    initial_min_iou: float = 0.5
    revised_min_iou: float = 0.7
    gates: ReflectGateConfig = field(default_factory=ReflectGateConfig)
    skip_gates: tuple[str, ...] = ()
    base_max_tokens: int = 512
    teacher_max_tokens: int = 1024
    temperature: float = 0.0
    decoder: str = "auto"
    workers: int = 0
    retry_rejected: bool = False
    dry_run: bool = False
    base_options: dict[str, Any] = field(default_factory=dict)
    teacher_options: dict[str, Any] = field(default_factory=dict)
    access: ModelAccess = field(default_factory=ModelAccess)
    show_progress: bool = True

    @property
    def tasks(self) -> tuple[Task, ...]:
        return TASKS if self.task == "both" else (self.task,)

    @property
    def policy(self) -> str:
        return f"fps:{self.fps:g}"

    def recorded(self) -> dict[str, Any]:
        """The options as run.json keeps them (backend options may name key variables, never keys)."""
        keep = ("teacher", "base", "task", "fps", "max_pixels", "max_frames", "limit", "concurrency", "rpm", "tpm",
                "initial_min_iou", "revised_min_iou", "skip_gates", "base_max_tokens", "teacher_max_tokens", "temperature")
        out = {k: getattr(self, k) for k in keep}
        out["gates"] = {"reflection_words": list(self.gates.reflection_words), "max_similarity": self.gates.max_similarity}
        return {**out, **self.access.recorded()}


# -- items and ground truth -------------------------------------------------------------------------

@dataclass(frozen=True)
class Truth:
    """The ground truth of one item: a letter (QA), a span in seconds, or neither (a normal video)."""

    letter: str | None = None
    span: tuple[float, float] | None = None

    @property
    def text(self) -> str:
        if self.letter is not None:
            return self.letter
        if self.span is not None:
            return format_span(self.span)
        return NORMAL


@dataclass(frozen=True)
class ReflectItem:
    """One question about one video: what the base is asked and what the right answer is."""

    id: str
    video: VideoRecord
    task: Task
    truth: Truth
    mcq: MCQ | None = None

    @property
    def question(self) -> str:
        return self.mcq.question if self.mcq is not None else load_fragment(TAG_QUESTION_FRAGMENT)

    @property
    def options(self) -> list[str]:
        return list(self.mcq.options) if self.mcq is not None else []


def format_span(span: tuple[float, float]) -> str:
    return f"[{round(span[0], 2)}, {round(span[1], 2)}]"


def tag_truth(video: VideoRecord) -> Truth | str:
    """The grounding truth of a video, or why it cannot have one (a skip reason).

    Several abnormal spans become their hull: the answer format holds one span, and the hull is
    the one span that can match them all.
    """
    if video.label == "normal":
        return Truth()
    if video.label != "abnormal":
        return "tag: unlabeled video"
    if not video.span_known or not video.spans:
        return "tag: abnormal video with unknown span"
    return Truth(span=(video.spans[0].start, max(s.end for s in video.spans)))


def build_items(videos: Iterable[VideoRecord], tasks: Iterable[Task]) -> tuple[list[ReflectItem], Counter[str]]:
    """Every item the tasks ask for, in manifest order, and how many were skipped for which reason."""
    wanted = set(tasks)
    items: list[ReflectItem] = []
    skipped: Counter[str] = Counter()
    for video in videos:
        if "qa" in wanted:
            if not video.mcqs:
                skipped["qa: video has no multiple-choice question"] += 1
            for i, mcq in enumerate(video.mcqs):
                items.append(ReflectItem(f"{video.id}#qa{i}", video, "qa", Truth(letter=mcq.answer), mcq))
        if "tag" in wanted:
            truth = tag_truth(video)
            if isinstance(truth, str):
                skipped[truth] += 1
            else:
                items.append(ReflectItem(f"{video.id}#tag", video, "tag", truth))
    return items, skipped


# -- judging a reply ---------------------------------------------------------------------------------

def predict_tag(text: str) -> str | tuple[float, float] | None:
    """The grounding answer of a reply: 'normal', a span, or None. The answer tag wins over free text."""
    answer = extract_tag(text, "answer")
    if answer is not None:
        if _NORMAL_ANSWER.match(answer):
            return NORMAL
        span = parse_span(answer)
        if span is not None:
            return span
    return parse_span(text)


def judge_tag(text: str, truth: Truth, min_iou: float) -> tuple[str | None, bool, float | None]:
    """(prediction, correct, IoU): 'normal' is right only for a normal video, a span only by IoU."""
    predicted = predict_tag(text)
    if predicted is None:
        return None, False, None
    if predicted == NORMAL:
        return NORMAL, truth.span is None, None
    assert isinstance(predicted, tuple)
    if truth.span is None:
        return format_span(predicted), False, None
    iou = temporal_iou(predicted, truth.span)
    return format_span(predicted), iou >= min_iou, round(iou, 4)


def judge_reply(item: ReflectItem, text: str, min_iou: float) -> Attempt:
    """A reply parsed and judged against the item's truth; what does not parse is wrong."""
    think, answer = extract_tag(text, "think"), extract_tag(text, "answer")
    if item.task == "qa":
        letter = extract_letter(text, item.options)
        return Attempt(text=text, think=think, answer=answer, prediction=letter, correct=letter == item.truth.letter)
    prediction, correct, iou = judge_tag(text, item.truth, min_iou)
    return Attempt(text=text, think=think, answer=answer, prediction=prediction, correct=correct, iou=iou)


# -- frames and prompts --------------------------------------------------------------------------

def spread(count: int, n: int) -> list[int]:
    """`n` positions evenly over `count`, first and last included."""
    if n >= count:
        return list(range(count))
    if n == 1:
        return [count // 2]
    return [round(i * (count - 1) / (n - 1)) for i in range(n)]


def video_input(run_root: Path, frames: FrameSet, max_frames: int) -> VideoPart:
    """The frames as one video, thinned evenly to `max_frames`; the fps follows what is kept."""
    if len(frames.paths) <= max_frames:
        return video_part(run_root, frames)
    part = video_part(run_root, frames, spread(len(frames.paths), max_frames))
    span = part.timestamps[-1] - part.timestamps[0]
    return replace(part, fps=round((len(part.timestamps) - 1) / span, 6) if span > 0 else part.fps)


def video_duration(video: VideoRecord, part: VideoPart) -> float:
    """The video's length: probed at ingest, else the time the frames cover."""
    if video.duration:
        return video.duration
    return part.timestamps[-1] + (1.0 / part.fps if part.fps else 0.0)


def format_options(options: list[str]) -> str:
    return "\n".join(f"{letter}. {text}" for letter, text in zip("ABCD", options))


def ground_truth_text(item: ReflectItem) -> str:
    """The truth as the teacher reads it (a QA letter comes with its option's text)."""
    if item.mcq is not None:
        return f"{item.mcq.answer}. {item.mcq.answer_text}"
    return item.truth.text


def verdict(attempt: Attempt) -> str:
    if attempt.correct:
        return "correct"
    return "wrong" if attempt.prediction is not None else "wrong: no answer could be read from the reply"


def prompt_values(item: ReflectItem, part: VideoPart, duration: float) -> dict[str, str]:
    """Placeholders shared by the base and teacher prompts of an item."""
    return {
        "fps": f"{part.fps:.2g}",
        "duration": f"{duration:.1f}",
        "question": item.question,
        "options": format_options(item.options),
    }


def initial_prompt(item: ReflectItem) -> Prompt:
    return load_prompt(f"reflect_initial_{item.task}")


def teacher_prompt(item: ReflectItem) -> Prompt:
    return load_prompt(f"reflect_teacher_{item.task}")


def render_teacher(item: ReflectItem, values: dict[str, str], initial: Attempt) -> str:
    return teacher_prompt(item).render(
        **values, initial=initial.text.strip() or "(an empty reply)", ground_truth=ground_truth_text(item),
        verdict=verdict(initial), letter=item.truth.letter or "",
    )


def video_request(prompt: Prompt, text: str, part: VideoPart, max_tokens: int, temperature: float) -> Request:
    """One user turn: the video, then the rendered prompt."""
    return Request(
        messages=(Message("user", (part, TextPart(text))),),
        params=SamplingParams(max_tokens=max_tokens, temperature=temperature),
        prompt_name=prompt.name, prompt_hash=prompt.hash,
    )


@dataclass(frozen=True)
class ReadyItem:
    """An item ready to ask: its video, the prompt values, and the base model's request."""

    item: ReflectItem
    part: VideoPart
    values: dict[str, str]
    base_prompt: Prompt
    prompt_text: str
    base_request: Request

    def teacher_request(self, initial: Attempt, options: ReflectOptions) -> Request:
        text = render_teacher(self.item, self.values, initial)
        return video_request(teacher_prompt(self.item), text, self.part, options.teacher_max_tokens, options.temperature)


def prepare(rd: RunDir, item: ReflectItem, options: ReflectOptions) -> ReadyItem | None:
    """The item's frames and base request; None when its video has no frames at the stage's sampling."""
    frames = rd.load_frameset(item.video.id, options.policy, options.max_pixels)
    if frames is None or not frames.paths:
        return None
    part = video_input(rd.root, frames, options.max_frames)
    values = prompt_values(item, part, video_duration(item.video, part))
    prompt = initial_prompt(item)
    text = prompt.render(**values)
    return ReadyItem(item, part, values, prompt, text, video_request(prompt, text, part, options.base_max_tokens, options.temperature))


def repair_request(first: Request, reply: str, problems: list[str], truth: str) -> Request:
    """The first conversation, the failed reply, and a turn listing what to fix."""
    prompt = load_prompt(REPAIR_PROMPT)
    text = prompt.render(failures="\n".join(f"- {p}" for p in problems), ground_truth=truth)
    messages = first.messages + (Message.text("assistant", reply), Message.text("user", text))
    return Request(messages=messages, params=first.params, prompt_name=prompt.name, prompt_hash=prompt.hash)


def report_problems(report: GateReport) -> list[str]:
    """Failures as lines the teacher can act on: 'gate: part: message'."""
    return [f"{r.gate}: {f}" for r in report.failures for f in r.findings]


# -- one item --------------------------------------------------------------------------------------

@dataclass
class Calls:
    """Tokens and cost of one item's calls per role (what its record's provenance reports)."""

    usage: dict[str, Usage] = field(default_factory=lambda: {role: Usage() for role in ROLES})

    def add(self, role: str, result: Result, engine: Engine) -> None:
        entry = self.usage[role]
        entry.calls += 1
        entry.input_tokens += result.input_tokens
        entry.output_tokens += result.output_tokens
        if engine.price is not None:
            entry.cost += engine.price.cost(result.input_tokens, result.output_tokens)


class Reflector:
    """Turns one item into an accepted record or a reject: base → teacher → gates → repair once."""

    def __init__(self, run: RunDir, options: ReflectOptions, base: Engine, teacher: Engine, gates: list[Gate[ReflectCandidate]]) -> None:
        self.run = run
        self.options = options
        self.base = base
        self.teacher = teacher
        self.gates = gates

    async def process(self, item: ReflectItem) -> Outcome:
        detail: dict[str, Any] = {"task": item.task, "video_id": item.video.id}
        ready = prepare(self.run, item, self.options)
        if ready is None:
            return Rejected(f"no frames: video {item.video.id} has no {self.options.policy} frames (see the sample rejects)", detail)
        calls = Calls()
        base_result = await self._call("base", item, ready.base_request, calls)
        if isinstance(base_result, Rejected):
            return base_result
        initial = judge_reply(item, base_result.text, self.options.initial_min_iou)
        detail.update(initial_correct=initial.correct, initial=initial.text)
        revised = await self._revise(item, ready.teacher_request(initial, self.options), initial, calls)
        if isinstance(revised, Rejected):
            return revised
        candidate, report, repaired = revised
        if not report.passed:
            return gate_reject(report, candidate, initial, detail)
        provenance = self._provenance(item, ready.base_prompt, len(ready.part.frames), calls, repaired)
        return Accepted(build_record(item, ready.prompt_text, initial, candidate, provenance), repaired=repaired)

    async def _revise(self, item: ReflectItem, request: Request, initial: Attempt, calls: Calls) -> tuple[ReflectCandidate, GateReport, bool] | Rejected:
        """The teacher's reflection and revision, repaired once when a gate fails: (reply, gates, repaired)."""
        judged = await self._teacher_round(item, request, initial, calls)
        if isinstance(judged, Rejected):
            return judged
        candidate, report = judged
        if report.passed:
            return candidate, report, False
        repair = repair_request(request, candidate.reply, report_problems(report), ground_truth_text(item))
        judged = await self._teacher_round(item, repair, initial, calls)
        if isinstance(judged, Rejected):
            return judged
        return judged[0], judged[1], True

    def _provenance(self, item: ReflectItem, base_prompt: Prompt, num_frames: int, calls: Calls, repaired: bool) -> ReflectionProvenance:
        prompts = [base_prompt, teacher_prompt(item)] + ([load_prompt(REPAIR_PROMPT)] if repaired else [])
        return ReflectionProvenance(
            base_model=self.options.base, teacher_model=self.options.teacher, prompt_hashes={p.name: p.hash for p in prompts},
            sampling=self.options.policy, max_pixels=self.options.max_pixels, num_frames=num_frames, usage=calls.usage,
            repaired=repaired, created=utc_now(),
        )

    async def _call(self, role: str, item: ReflectItem, request: Request, calls: Calls) -> Result | Rejected:
        """One call of a role; a permanent failure rejects the item (RunStopped ends the run)."""
        engine = self.base if role == "base" else self.teacher
        outcome = await engine.outcome(item.id, request)
        if outcome.error is not None:
            return Rejected(f"{role} call failed: {outcome.error}", {"task": item.task, "video_id": item.video.id, "code": outcome.error.code})
        assert outcome.result is not None
        calls.add(role, outcome.result, engine)
        return outcome.result

    async def _teacher_round(self, item: ReflectItem, request: Request, initial: Attempt, calls: Calls) -> tuple[ReflectCandidate, GateReport] | Rejected:
        """Ask the teacher, judge its revised answer and run the gates on its reply."""
        result = await self._call("teacher", item, request, calls)
        if isinstance(result, Rejected):
            return result
        candidate = ReflectCandidate(
            reply=result.text, initial_think=initial.think if initial.think is not None else initial.text,
            revised=judge_reply(item, result.text, self.options.revised_min_iou), truth=item.truth.text,
            min_iou=self.options.revised_min_iou if item.task == "tag" else None,
        )
        return candidate, run_gates(candidate, self.gates)


def gate_reject(report: GateReport, candidate: ReflectCandidate, initial: Attempt, detail: dict[str, Any]) -> Rejected:
    """A reject that says which gates failed and keeps what `status` counts (transition, gates)."""
    names = report.failed_names
    reason = f"failed gates {', '.join(names)}: " + "; ".join(report_problems(report))
    return Rejected(reason, {
        **detail, "failed": names, "gates": report.detail(), "repaired": True,
        "transition": transition_of(initial.correct, candidate.revised.correct), "reply": candidate.reply,
    })


def build_record(item: ReflectItem, prompt_text: str, initial: Attempt, candidate: ReflectCandidate, provenance: ReflectionProvenance) -> ReflectionRecord:
    return ReflectionRecord(
        id=item.id, video_id=item.video.id, task=item.task, label=item.video.label, category=item.video.category,
        question=item.question, options=item.options, ground_truth=item.truth.text, prompt=prompt_text,
        initial=initial, reflection=candidate.reflection, revised=candidate.revised,
        transition=transition_of(initial.correct, candidate.revised.correct), provenance=provenance,
    )


# -- running the stage ------------------------------------------------------------------------------

def make_engine(role: str, backend: Any, ledger: Ledger, options: ReflectOptions) -> Engine:
    return make_stage_engine(stage_of(role), backend, ledger, options.access, concurrency=options.concurrency, rpm=options.rpm, tpm=options.tpm)


def sample_frames(run: Path, options: ReflectOptions, video_ids: set[str]) -> StageSummary:
    """Sample the videos the items need at the stage's fps (resumable: sampled videos are skipped)."""
    from vau_annotate.pipelines.sample import run_sample

    return run_sample(run=run, policy=options.policy, max_pixels=options.max_pixels, decoder=options.decoder,
                      workers=options.workers, jpeg_quality=90, video_ids=video_ids, show_progress=options.show_progress)


def run_reflect(run: Path, options: ReflectOptions) -> StageSummary:
    """The whole stage: items → frames → (dry run: estimate) or base/teacher/gates per item."""
    rd = RunDir(run)
    gates = reflect_gates(options.gates).select(skip=options.skip_gates)
    items, skipped = build_items(rd.load_manifest(), options.tasks)
    if options.limit is not None:
        items = items[: options.limit]
    summary = StageSummary(STAGE, counts={"items": len(items)})
    summary.counts.update({f"skipped ({why})": n for why, n in sorted(skipped.items())})
    sampled = sample_frames(run, options, {item.video.id for item in items})
    if sampled.rejected:
        summary.notes.append(f"{sampled.rejected} video(s) could not be sampled; their items are rejected")
    ledger = Ledger(rd.ledger_path)
    try:
        if options.dry_run:
            return dry_run(rd, items, options, ledger, summary)
        counts = asyncio.run(_run_items(rd, items, options, ledger, gates))
    finally:
        ledger.close()
    summary.add_run_counts(counts)
    meta = rd.load_meta()
    hashes = {**meta.prompt_hashes, **reflect_prompt_hashes(options.tasks)}
    rd.record_stage(STAGE, options.recorded(), dict(summary.counts), prompt_hashes=hashes)
    return summary


async def _run_items(rd: RunDir, items: list[ReflectItem], options: ReflectOptions, ledger: Ledger, gates: list[Gate[ReflectCandidate]]) -> Any:
    store = StageStore(rd, STAGE)
    if options.retry_rejected:
        store.forget_rejects()
    todo = [item for item in items if not store.is_done(item.id)]
    base_backend = open_backend(options.base, options.access, **options.base_options) if todo else SpecOnly.of(options.base)
    teacher_backend = open_backend(options.teacher, options.access, **options.teacher_options) if todo else SpecOnly.of(options.teacher)
    base, teacher = make_engine("base", base_backend, ledger, options), make_engine("teacher", teacher_backend, ledger, options)
    runner: StageRunner[ReflectItem] = StageRunner(store, concurrency=options.concurrency, usage=lambda: combined_usage(base, teacher), show_progress=options.show_progress)
    reflector = Reflector(rd, options, base, teacher, gates)
    try:
        return await runner.run(((item.id, item) for item in items), reflector.process)
    finally:
        for engine in (base, teacher):
            await engine.aclose()
        for backend in (base_backend, teacher_backend):
            await backend.aclose()


def reflect_prompt_hashes(tasks: Iterable[Task]) -> dict[str, str]:
    names = [f"reflect_{kind}_{task}" for task in tasks for kind in ("initial", "teacher")] + [REPAIR_PROMPT]
    return {name: load_prompt(name).hash for name in names}


# -- dry run -----------------------------------------------------------------------------------------

def dry_run(rd: RunDir, items: list[ReflectItem], options: ReflectOptions, ledger: Ledger, summary: StageSummary) -> StageSummary:
    """What the run would call and cost: base calls exactly; teacher calls with the base replies
    the ledger already has, else a stand-in reply of the base's full token budget (an upper bound)."""
    base = make_engine("base", SpecOnly.of(options.base), ledger, options)
    teacher = make_engine("teacher", SpecOnly.of(options.teacher), ledger, options)
    store = StageStore(rd, STAGE)
    base_requests, teacher_requests = [], []
    for item in items:
        ready = None if store.is_done(item.id) else prepare(rd, item, options)
        if ready is None:
            continue
        base_requests.append((item.id, ready.base_request))
        known = ledger.get(base.key(ready.base_request))
        reply = known.text if known is not None and known.ok and known.text is not None else "word " * options.base_max_tokens
        teacher_requests.append((item.id, ready.teacher_request(judge_reply(item, reply, options.initial_min_iou), options)))
    estimates = {"base": base.estimate(base_requests), "teacher": teacher.estimate(teacher_requests)}
    summary.notes.append(f"dry run: nothing was called; repairs may add up to {len(teacher_requests)} teacher call(s)")
    summary.add_estimates(estimates, {"base": options.base, "teacher": options.teacher})
    return summary


# -- stats for `status` --------------------------------------------------------------------------------

def reflection_stats(rd: RunDir) -> dict[str, Any] | None:
    """Initial accuracy, transitions, accepted / rejected by gate, tokens and cost of the reflect stage."""
    store = StageStore(rd, STAGE)
    if not store.dir.exists():
        return None
    records = store.accepted(ReflectionRecord)
    rejects = [json.loads(p.read_text()) for p in sorted(store.dir.glob("*.rejected.json"))]
    judged = [(r.task, r.initial.correct) for r in records]
    judged += [(d["detail"]["task"], d["detail"]["initial_correct"]) for d in rejects if "initial_correct" in d.get("detail", {})]
    transitions = Counter(r.transition for r in records)
    transitions.update(d["detail"]["transition"] for d in rejects if "transition" in d.get("detail", {}))
    stats: dict[str, Any] = {
        "accepted": len(records),
        "repaired": sum(r.provenance.repaired for r in records),
        "rejected": len(rejects),
        "initial accuracy": accuracy(judged),
        **{f"initial accuracy ({task})": accuracy([j for j in judged if j[0] == task]) for task in TASKS if any(j[0] == task for j in judged)},
        "transitions": {t: transitions[t] for t in ("C→C", "W→C", "W→W", "C→W")},
        "rejected by gate": dict(Counter(g for d in rejects for g in d.get("detail", {}).get("failed", []))),
        "rejected otherwise": dict(Counter(d["reason"].split(":")[0] for d in rejects if not d.get("detail", {}).get("failed"))),
    }
    stats.update(ledger_usage(rd))
    return stats


def accuracy(judged: list[tuple[str, bool]]) -> str:
    if not judged:
        return "-"
    right = sum(correct for _, correct in judged)
    return f"{right}/{len(judged)} ({right / len(judged):.0%})"


def ledger_usage(rd: RunDir) -> dict[str, Any]:
    """Tokens and cost of the base and teacher calls as the ledger recorded them (all runs)."""
    if not rd.ledger_path.exists():
        return {}
    with Ledger(rd.ledger_path) as ledger:
        groups = ledger.usage_summary()
    out: dict[str, Any] = {}
    for role in ROLES:
        rows = [g for g in groups if g["stage"] == stage_of(role)]
        if rows:
            out[f"{role} tokens"] = {"input": sum(g["input_tokens"] for g in rows), "output": sum(g["output_tokens"] for g in rows)}
            out[f"{role} cost"] = round(sum(g["cost"] for g in rows), 6)
    return out


__all__ = [
    "DEFAULT_BASE", "ReflectItem", "ReflectOptions", "Reflector", "Truth", "build_items", "judge_reply", "judge_tag",
    "predict_tag", "reflection_stats", "run_reflect", "tag_truth",
]
