"""`vau-annotate reflect`: SRVAU-R1 reflection triples from a base model and a teacher.

The stage reads as SRVAU-R1's data pipeline (section 3), one module per box:

    reflect_items.py     the items (one per MCQ; one grounding item per video with a usable truth)
                         and how a reply is judged against the ground truth
    reflect_requests.py  what the base and the teacher are shown (frames as one video, prompts)
    checks/reflect.py    the gates on the teacher's reply
    reflect.py           (here) one item through base → teacher → gates → repair once, and the run
    reflect_stats.py     what `status` reports

For every item:

1. the base model answers from frames sampled at F fps, with no hint of reflection in its prompt;
   its reply is kept verbatim and judged against the ground truth (an unparsable reply is wrong);
2. the teacher sees the question, the frames, the base reply, the verdict and the ground truth, and
   writes `<reflection>` (the four aspects: missing key evidence, temporal misalignment, causal
   breaks, consistency with the whole video — pointing at problems, not stating the answer) plus a
   revised `<think>` that shows how the reflection changes the reasoning, and `<answer>`;
3. the reflect gates check the teacher's reply; a failing reply is repaired once (the failures are
   listed back to the teacher), then accepted or rejected with its reasons. A teacher reply cut at
   its token limit is asked again with a larger budget, else the item is rejected as `truncated`.

Each item ends as `RUN/reflect/<item>.json` (a ReflectionRecord) or `<item>.rejected.json`; every
model call is in the ledger, so a re-run after a crash repeats no call and writes no record twice.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

from vau_annotate.annotate.backends import BackendError, Request, Result
from vau_annotate.annotate.backends.registry import SpecOnly
from vau_annotate.annotate.checks import Gate, GateReport, run_gates
from vau_annotate.annotate.checks.reflect import ReflectCandidate, ReflectGateConfig, reflect_gates
from vau_annotate.annotate.engine import Engine, combined_usage
from vau_annotate.annotate.ledger import Ledger
from vau_annotate.annotate.rundir import RunDir
from vau_annotate.annotate.shards import owns as shard_owns
from vau_annotate.pipelines.models import ModelAccess, items_in_flight, open_backend
from vau_annotate.pipelines.models import make_engine as make_stage_engine
from vau_annotate.pipelines.reflect_items import NORMAL, TASKS, ReflectItem, Truth, build_items, judge_reply, judge_tag, predict_tag, tag_truth
from vau_annotate.pipelines.reflect_requests import REPAIR_PROMPT, ReadyItem, ground_truth_text, prepare, repair_request, report_problems, spread, teacher_prompt
from vau_annotate.pipelines.reflect_stats import ROLES, STAGE, reflection_stats, stage_of
from vau_annotate.pipelines.replies import Truncated, is_truncated, refusal_reason, whole_reply
from vau_annotate.pipelines.runner import Accepted, Outcome, Rejected, StageRunner, StageStore
from vau_annotate.pipelines.summary import StageSummary
from vau_annotate.prompts import Prompt, load_prompt
from vau_annotate.schemas.reflection import RFT_PROMPT, SFT_SYSTEM_PROMPT, SFT_USER_PROMPT, Attempt, ReflectionProvenance, ReflectionRecord, Task, Usage, transition_of
from vau_annotate.schemas.run import utc_now

DEFAULT_BASE = "vllm:Qwen/Qwen2.5-VL-3B-Instruct"


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
        """The item function of the StageRunner: never raises for one item's problems."""
        detail: dict[str, Any] = {"task": item.task, "video_id": item.video.id}
        ready = prepare_item(self.run, item, self.options)
        if ready is None:
            return Rejected(f"no frames: video {item.video.id} has no {self.options.policy} frames (see the sample rejects)", detail)
        calls = Calls()
        role = "base"
        try:
            base_result = await self.base.call(item.id, ready.base_request)
            calls.add("base", base_result, self.base)
            initial = judge_reply(item, base_result.text, self.options.initial_min_iou)
            initial.truncated = is_truncated(base_result)
            detail.update(initial_correct=initial.correct, initial=initial.text)
            role = "teacher"
            candidate, report, repaired = await self._revise(item, ready, initial, calls)
        except BackendError as exc:
            return Rejected(f"{role} call failed: {refusal_reason(exc)}", {**detail, "code": exc.code, "error": str(exc)})
        except Truncated as exc:
            return Rejected(exc.reason, {**detail, "part": exc.part, "max_tokens": list(exc.budgets)})
        if not report.passed:
            return gate_reject(report, candidate, initial, detail)
        provenance = self._provenance(item, ready.base_prompt, len(ready.part.frames), calls, repaired)
        return Accepted(build_record(item, ready, initial, candidate, provenance), repaired=repaired)

    async def _revise(self, item: ReflectItem, ready: ReadyItem, initial: Attempt, calls: Calls) -> tuple[ReflectCandidate, GateReport, bool]:
        """The teacher's reflection and revision, repaired once when a gate fails: (reply, gates, repaired)."""
        request = ready.teacher_request(initial, self.options.teacher_max_tokens, self.options.temperature)
        candidate, report = await self._teacher_round(item, request, initial, calls)
        if report.passed:
            return candidate, report, False
        repair = repair_request(request, candidate.reply, report_problems(report), ground_truth_text(item))
        candidate, report = await self._teacher_round(item, repair, initial, calls)
        return candidate, report, True

    def _provenance(self, item: ReflectItem, base_prompt: Prompt, num_frames: int, calls: Calls, repaired: bool) -> ReflectionProvenance:
        prompts = [base_prompt, teacher_prompt(item)] + ([load_prompt(REPAIR_PROMPT)] if repaired else [])
        return ReflectionProvenance(
            base_model=self.options.base, teacher_model=self.options.teacher, prompt_hashes={p.name: p.hash for p in prompts},
            sampling=self.options.policy, max_pixels=self.options.max_pixels, num_frames=num_frames, usage=calls.usage,
            repaired=repaired, created=utc_now(),
        )

    async def _teacher_round(self, item: ReflectItem, request: Request, initial: Attempt, calls: Calls) -> tuple[ReflectCandidate, GateReport]:
        """Ask the teacher (a whole reply), judge its revised answer and run the gates on its reply."""
        result = await whole_reply(self.teacher, item.id, request, "teacher", lambda _, r: calls.add("teacher", r, self.teacher))
        candidate = ReflectCandidate(
            reply=result.text, initial_think=initial.think if initial.think is not None else initial.text,
            revised=judge_reply(item, result.text, self.options.revised_min_iou), truth=item.truth.text,
            min_iou=self.options.revised_min_iou if item.task == "tag" else None,
        )
        return candidate, run_gates(candidate, self.gates)


def prepare_item(rd: RunDir, item: ReflectItem, options: ReflectOptions) -> ReadyItem | None:
    return prepare(rd, item, options.policy, options.max_pixels, options.max_frames, options.base_max_tokens, options.temperature)


def gate_reject(report: GateReport, candidate: ReflectCandidate, initial: Attempt, detail: dict[str, Any]) -> Rejected:
    """A reject that says which gates failed and keeps what `status` counts (transition, gates)."""
    names = report.failed_names
    reason = f"failed gates {', '.join(names)}: " + "; ".join(report_problems(report))
    return Rejected(reason, {
        **detail, "failed": names, "gates": report.detail(), "repaired": True,
        "transition": transition_of(initial.correct, candidate.revised.correct), "reply": candidate.reply,
    })


def build_record(item: ReflectItem, ready: ReadyItem, initial: Attempt, candidate: ReflectCandidate, provenance: ReflectionProvenance) -> ReflectionRecord:
    return ReflectionRecord(
        id=item.id, video_id=item.video.id, task=item.task, label=item.video.label, category=item.video.category,
        duration=round(ready.duration, 3), question=item.question, options=item.options, ground_truth=item.truth.text,
        prompt=ready.prompt_text, initial=initial, reflection=candidate.reflection, revised=candidate.revised,
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
    started = utc_now()
    rd = RunDir(run)
    gates = reflect_gates(options.gates).select(skip=options.skip_gates)
    items, skipped = build_items(rd.load_manifest(), options.tasks)
    if options.limit is not None:
        items = items[: options.limit]
    items = [item for item in items if shard_owns(item.id)]
    summary = StageSummary(STAGE, counts={"items": len(items)})
    summary.counts.update({f"skipped ({why})": n for why, n in sorted(skipped.items())})
    sampled = sample_frames(run, options, {item.video.id for item in items})
    if sampled.rejected:
        summary.notes.append(f"{sampled.rejected} video(s) could not be sampled; their items are rejected")
    ledger = rd.open_ledger()
    try:
        if options.dry_run:
            return dry_run(rd, items, options, ledger, summary)
        rd.claim_shard(STAGE, options.recorded())
        counts = asyncio.run(_run_items(rd, items, options, ledger, gates))
    finally:
        ledger.close()
    summary.add_run_counts(counts)
    meta = rd.load_meta()
    hashes = {**meta.prompt_hashes, **reflect_prompt_hashes(options.tasks)}
    rd.record_stage(STAGE, options.recorded(), dict(summary.counts), started=started, prompt_hashes=hashes)
    return summary


async def _run_items(rd: RunDir, items: list[ReflectItem], options: ReflectOptions, ledger: Ledger, gates: list[Gate[ReflectCandidate]]) -> Any:
    store = StageStore(rd, STAGE)
    if options.retry_rejected:
        store.forget_rejects()
    todo = [item for item in items if not store.is_done(item.id)]
    base_backend = open_backend(options.base, options.access, **options.base_options) if todo else SpecOnly.of(options.base)
    teacher_backend = open_backend(options.teacher, options.access, **options.teacher_options) if todo else SpecOnly.of(options.teacher)
    base, teacher = make_engine("base", base_backend, ledger, options), make_engine("teacher", teacher_backend, ledger, options)
    runner: StageRunner[ReflectItem] = StageRunner(store, concurrency=items_in_flight(options.concurrency, options.access), usage=lambda: combined_usage(base, teacher), show_progress=options.show_progress)
    reflector = Reflector(rd, options, base, teacher, gates)
    try:
        return await runner.run(((item.id, item) for item in items), reflector.process)
    finally:
        for engine in (base, teacher):
            await engine.aclose()
        for backend in (base_backend, teacher_backend):
            await backend.aclose()


def reflect_prompt_hashes(tasks: Iterable[Task]) -> dict[str, str]:
    names = [f"reflect_{kind}_{task}" for task in tasks for kind in ("initial", "teacher")] + [REPAIR_PROMPT, SFT_SYSTEM_PROMPT, SFT_USER_PROMPT, RFT_PROMPT]
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
        ready = None if store.is_done(item.id) else prepare_item(rd, item, options)
        if ready is None:
            continue
        base_requests.append((item.id, ready.base_request))
        known = ledger.get(base.key(ready.base_request))
        reply = known.text if known is not None and known.ok and known.text is not None else "word " * options.base_max_tokens
        initial = judge_reply(item, reply, options.initial_min_iou)
        teacher_requests.append((item.id, ready.teacher_request(initial, options.teacher_max_tokens, options.temperature)))
    estimates = {"base": base.estimate(base_requests), "teacher": teacher.estimate(teacher_requests)}
    summary.notes.append(f"dry run: nothing was called; repairs may add up to {len(teacher_requests)} teacher call(s)")
    summary.add_estimates(estimates, {"base": options.base, "teacher": options.teacher})
    return summary


__all__ = [
    "DEFAULT_BASE", "NORMAL", "TASKS", "ReflectItem", "ReflectOptions", "Reflector", "Truth", "build_items", "judge_reply", "judge_tag",
    "predict_tag", "reflection_stats", "run_reflect", "spread", "stage_of", "tag_truth",
]
