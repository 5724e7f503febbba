"""`vau-annotate build-cot`: Vad-R1's Perception-to-Cognition chain of thought for every video.

Per video (one item, run concurrently with the others):

1. captions — the frames of the caption sampling (every 16th frame by default) are described by
   the captioner VLM, K frames per request (`--caption-batch`); a batch whose reply does not parse
   into K numbered captions is re-asked frame by frame. Captions keep their frame index and time.
2. the chain — the reasoner (text only: the captions are its evidence) writes step 1 global
   perception (the normal pattern), step 2 local perception (the captions inside the annotated
   span, or all of them when the span is unknown), step 3 shallow cognition (+ the annotators'
   description and the ground-truth class) and step 4 deep cognition; normal videos get two steps
   (perception, cognition). Each step sees the steps before it.
3. the answer — the steps merged into `<which><what><when><where><why><how>` (normal:
   `<which><what><why>`); the tool writes `<which>` as the canonical class and `<when>` from the
   ground-truth span when it is known (the model's own `<when>` is checked against it).
4. gates (`annotate/checks/cot.py`) — a failing step or answer is re-asked once with its failures
   listed (`cot_repair`); still failing, the item is rejected with every failed gate.

Every call goes through the engine, so the ledger caches it: the captions of a video are made once
and reused by every step, and a re-run after a crash repeats no call.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, Sequence

from vau_annotate.annotate.backends import (
    BackendError,
    ErrorClass,
    ImagePart,
    Message,
    Request,
    Result,
    SamplingParams,
    TextPart,
)
from vau_annotate.annotate.backends._hosted import MODERATION_CODES
from vau_annotate.annotate.backends.registry import SpecOnly
from vau_annotate.annotate.checks import Gate, GateReport, run_gates
from vau_annotate.annotate.checks.cot import CotCandidate, cot_gates
from vau_annotate.annotate.classes import NORMAL, Taxonomy, default_taxonomy
from vau_annotate.annotate.engine import Engine, combined_usage
from vau_annotate.annotate.ledger import Ledger
from vau_annotate.annotate.media import image_parts
from vau_annotate.annotate.pricing import Price
from vau_annotate.annotate.rundir import RunDir
from vau_annotate.annotate.tags import extract_tag, parse_span
from vau_annotate.pipelines.models import ModelAccess, open_backend
from vau_annotate.pipelines.models import make_engine as make_stage_engine
from vau_annotate.pipelines.runner import Accepted, Outcome, Rejected, RunCounts, StageRunner, StageStore
from vau_annotate.pipelines.summary import StageSummary
from vau_annotate.prompts import load_prompt
from vau_annotate.schemas import FrameSet, VideoRecord
from vau_annotate.schemas.cot import Caption, CotAnswer, CotProvenance, CotRecord, answer_fields, format_when, step_names
from vau_annotate.schemas.run import utc_now

STAGE = "cot"
ROLES = ("captioner", "reasoner")
CAPTION_PROMPT = "cot_caption"
CAPTION_BATCH_PROMPT = "cot_caption_batch"
REPAIR_PROMPT = "cot_repair"
ANSWER = "answer"
DEFAULT_POLICY = "stride:16"
DEFAULT_MAX_PIXELS = 448 * 448

# --dry-run guesses for text nobody has written yet
CAPTION_WORDS_GUESS = 60
STEP_WORDS_GUESS = 90
ESTIMATE_ASSUMPTIONS = (
    "frames per video follow the caption policy applied to the probed frame count (the sampled frames when they exist)",
    "every frame has the pixel budget's size",
    f"each caption is ~{CAPTION_WORDS_GUESS} words and each step ~{STEP_WORDS_GUESS} words (Vad-R1's think bands ÷ steps)",
    "every caption batch parses (no per-frame re-asks)",
    "no repairs (each repaired step or answer adds one reasoner call)",
    "output tokens are the max_tokens upper bound",
    "videos already done are not counted",
)


@dataclass(frozen=True)
class StepSpec:
    """One step of the chain: its tag name, its prompt file, and its title in later prompts."""

    name: str
    prompt: str
    title: str


CHAINS: dict[str, tuple[StepSpec, ...]] = {
    "abnormal": (
        StepSpec("step1", "cot_global", "global perception"),
        StepSpec("step2", "cot_local", "local perception"),
        StepSpec("step3", "cot_shallow", "shallow cognition"),
        StepSpec("step4", "cot_deep", "deep cognition"),
    ),
    "normal": (
        StepSpec("step1", "cot_global", "perception"),
        StepSpec("step2", "cot_normal_cognition", "cognition"),
    ),
}
ANSWER_PROMPTS: dict[str, str] = {"abnormal": "cot_answer", "normal": "cot_answer_normal"}


def stage_of(role: str) -> str:
    """Ledger stage of one role's calls, so `status` tells captioner and reasoner usage apart."""
    return f"{STAGE}:{role}"


def cot_prompt_names() -> list[str]:
    """Every prompt the stage may use (their hashes go into run.json)."""
    names = [CAPTION_PROMPT, CAPTION_BATCH_PROMPT, REPAIR_PROMPT, *ANSWER_PROMPTS.values()]
    names += [step.prompt for chain in CHAINS.values() for step in chain]
    return sorted(set(names))


# -- options ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CotOptions:
    """What `vau-annotate build-cot` was asked to do (recorded in run.json; never a secret)."""

    captioner: str
    reasoner: str
    caption_policy: str = DEFAULT_POLICY
    caption_batch: int = 4
    max_pixels: int = DEFAULT_MAX_PIXELS
    limit: int | None = None
    concurrency: int = 8
    rpm: float | None = None
    tpm: float | None = None
    gates: tuple[str, ...] | None = None
    skip_gates: tuple[str, ...] = ()
    length_gate: Literal["warn", "reject"] = "warn"
    dry_run: bool = False
    retry_rejected: bool = False
    caption_tokens: int = 256
    step_tokens: int = 512
    answer_tokens: int = 512
    temperature: float = 0.0
    decoder: str = "auto"
    workers: int = 0
    api_key_env: str | None = None
    access: ModelAccess = field(default_factory=ModelAccess)
    show_progress: bool = True

    @property
    def warn_gates(self) -> set[str]:
        return {"length"} if self.length_gate == "warn" else set()

    def backend_options(self) -> dict[str, Any]:
        return {"api_key_env": self.api_key_env} if self.api_key_env else {}

    def recorded(self) -> dict[str, Any]:
        keep = ("captioner", "reasoner", "caption_policy", "caption_batch", "max_pixels", "limit", "concurrency", "rpm", "tpm",
                "gates", "skip_gates", "length_gate", "caption_tokens", "step_tokens", "answer_tokens", "temperature")
        return {**{k: getattr(self, k) for k in keep}, **self.access.recorded()}


# -- facts about one video -----------------------------------------------------------------------------

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
    description: str


def video_length(video: VideoRecord, frames: FrameSet | None = None) -> float | None:
    """Seconds of video: the probed duration, else frames ÷ fps, else the last sampled timestamp."""
    if video.duration:
        return video.duration
    if video.num_frames and video.fps:
        return video.num_frames / video.fps
    if frames is not None and frames.timestamps and frames.timestamps[-1] > 0:
        return frames.timestamps[-1]
    return None


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
    return VideoFacts(video.id, video.label, category, length, span_s, span, (video.description or "").strip() or "none")


# -- captions -----------------------------------------------------------------------------------------

_FRAME_LABEL = re.compile(r"^\s*(?:[-*]\s*)?(?:\*\*)?\s*(?:frame\s*)?(\d+)\s*(?:\([^)]*\))?\s*(?:\*\*)?\s*[.:)\]–-]\s*(?:\*\*)?\s*(.*)$", re.I)
_LEADING_LABEL = re.compile(r"^\s*(?:\*\*)?\s*(?:frame\s*\d*|caption|description)\s*(?:\([^)]*\))?\s*(?:\*\*)?\s*[:.–-]\s*(?:\*\*)?\s*", re.I)


def clean_caption(text: str) -> str:
    """A reply to a one-frame request as a caption: no 'Frame 3:' label, no quotes, one line."""
    text = _LEADING_LABEL.sub("", (text or "").strip(), count=1)
    return " ".join(text.strip().strip("\"'").split())


def parse_caption_list(text: str, count: int) -> list[str] | None:
    """`count` captions in frame order from a batch reply (JSON list, else numbered lines); None if not exactly that."""
    for parse in (_json_captions, _numbered_captions):
        captions = parse(text or "", count)
        if captions is not None:
            return captions
    return None


def _json_captions(text: str, count: int) -> list[str] | None:
    start, end = text.find("["), text.rfind("]")
    if start < 0 or end <= start:
        return None
    try:
        data = json.loads(text[start:end + 1])
    except ValueError:
        return None
    if not isinstance(data, list):
        return None
    entries: list[tuple[int, str]] = []
    for position, entry in enumerate(data, 1):
        if isinstance(entry, str):
            entries.append((position, entry))
        elif isinstance(entry, dict):
            caption = next((entry[k] for k in ("caption", "description", "text") if isinstance(entry.get(k), str)), None)
            number = entry.get("frame", position)
            if caption is None or not isinstance(number, int):
                return None
            entries.append((number, caption))
        else:
            return None
    return _in_order(entries, count)


def _numbered_captions(text: str, count: int) -> list[str] | None:
    entries: list[tuple[int, str]] = []
    for line in text.splitlines():
        match = _FRAME_LABEL.match(line)
        if match:
            entries.append((int(match.group(1)), match.group(2)))
        elif entries and line.strip():
            entries[-1] = (entries[-1][0], f"{entries[-1][1]} {line.strip()}")
    return _in_order(entries, count) if entries else None


def _in_order(entries: list[tuple[int, str]], count: int) -> list[str] | None:
    """Captions ordered by frame number when the numbers are exactly 1…count and none is empty."""
    if sorted(n for n, _ in entries) != list(range(1, count + 1)):
        return None
    captions = [clean_caption(text) for _, text in sorted(entries)]
    return captions if all(captions) else None


def frame_label(number: int, timestamp: float) -> str:
    return f"Frame {number} (t = {timestamp:.1f} s):"


def caption_request(images: Sequence[ImagePart], stamps: Sequence[float], length: float, options: CotOptions) -> Request:
    """One captioning request: a single frame, or a numbered batch asking for a JSON list."""
    if len(images) == 1:
        prompt = load_prompt(CAPTION_PROMPT)
        parts: list[TextPart | ImagePart] = [TextPart(prompt.render(timestamp=f"{stamps[0]:.1f}", duration=f"{length:.1f}")), images[0]]
    else:
        prompt = load_prompt(CAPTION_BATCH_PROMPT)
        parts = [TextPart(prompt.render(count=len(images), duration=f"{length:.1f}"))]
        for number, (image, stamp) in enumerate(zip(images, stamps), 1):
            parts += [TextPart(frame_label(number, stamp)), image]
    params = SamplingParams(max_tokens=options.caption_tokens * len(images), temperature=options.temperature)
    return Request(messages=(Message("user", tuple(parts)),), params=params, prompt_name=prompt.name, prompt_hash=prompt.hash)


def batches(count: int, size: int) -> list[list[int]]:
    """Frame positions split into consecutive groups of at most `size`."""
    size = max(1, size)
    return [list(range(i, min(i + size, count))) for i in range(0, count, size)]


# -- step prompts --------------------------------------------------------------------------------------

def format_captions(captions: Sequence[Caption]) -> str:
    return "\n".join(f"[{c.timestamp:.1f} s] {c.text}" for c in captions)


def local_captions(captions: Sequence[Caption], span_s: tuple[float, float] | None) -> list[Caption]:
    """Captions inside the span (all of them when it is unknown; the nearest one when none falls inside)."""
    if span_s is None:
        return list(captions)
    inside = [c for c in captions if span_s[0] <= c.timestamp <= span_s[1]]
    if inside or not captions:
        return inside
    middle = (span_s[0] + span_s[1]) / 2
    return [min(captions, key=lambda c: abs(c.timestamp - middle))]


def describe_span(facts: VideoFacts) -> str:
    if facts.label == "normal":
        return "none (the video is normal)"
    if facts.span is None or facts.span_s is None:
        return "not annotated (unknown)"
    return f"{facts.span_s[0]:.1f} s to {facts.span_s[1]:.1f} s, that is {format_when(facts.span)} of the video length"


def format_previous(chain: Sequence[StepSpec], texts: Sequence[str]) -> str:
    """The steps written so far, labelled, for the next prompt."""
    if not texts:
        return "(none yet)"
    return "\n\n".join(f"Step {i} ({spec.title}): {text}" for i, (spec, text) in enumerate(zip(chain, texts), 1))


def step_values(facts: VideoFacts, captions: Sequence[Caption], chain: Sequence[StepSpec], previous: Sequence[str]) -> dict[str, str]:
    """Every value a step or answer prompt may use (each template picks what it needs)."""
    return {
        "duration": f"{facts.length:.1f}",
        "captions": format_captions(captions),
        "local_captions": format_captions(local_captions(captions, facts.span_s)),
        "span": describe_span(facts),
        "category": facts.category,
        "description": facts.description,
        "previous": format_previous(chain, previous),
    }


def text_request(prompt_name: str, values: dict[str, str], max_tokens: int, temperature: float) -> Request:
    prompt = load_prompt(prompt_name)
    params = SamplingParams(max_tokens=max_tokens, temperature=temperature)
    return Request(messages=(Message.text("user", prompt.render(**values)),), params=params, prompt_name=prompt.name, prompt_hash=prompt.hash)


def repair_request(original: Request, reply: str, failures: Sequence[str]) -> Request:
    """The original conversation, the failing reply, and the failures listed: one chance to fix them."""
    prompt = load_prompt(REPAIR_PROMPT)
    text = prompt.render(failures="\n".join(f"- {line}" for line in failures))
    messages = (*original.messages, Message.text("assistant", reply), Message.text("user", text))
    return Request(messages=messages, params=original.params, prompt_name=prompt.name, prompt_hash=prompt.hash)


_STEP_HEADING = re.compile(r"^\s*(?:\*\*)?\s*step\s*\d+\b[^:\n]{0,40}:\s*(?:\*\*)?\s*", re.I)


def clean_step(text: str) -> str:
    """A step reply as plain prose: a wrapping `<stepN>`/`<think>` pair or a 'Step 2 (…):' heading removed."""
    text = (text or "").strip()
    for tag in ("think", *step_names("abnormal")):
        inner = extract_tag(text, tag)
        if inner is not None and text.lower().startswith(f"<{tag}>") and text.lower().endswith(f"</{tag}>"):
            text = inner
    return _STEP_HEADING.sub("", text, count=1).strip()


# -- assembly ----------------------------------------------------------------------------------------

def assemble_think(steps: Sequence[str], label: str) -> str:
    """`<think><step1>…</step1>…</think>` in Vad-Reasoning's format."""
    body = "".join(f"<{name}>{text}</{name}>" for name, text in zip(step_names(label), steps))
    return f"<think>{body}</think>"


def answer_values(reply: str, facts: VideoFacts, taxonomy: Taxonomy) -> dict[str, str]:
    """The answer fields to publish: `<which>` canonical when recognised, `<when>` from the truth when known."""
    values = {name: " ".join((extract_tag(reply, name) or "").split()) for name in answer_fields(facts.label)}
    values["which"] = taxonomy.lookup(values["which"]) or values["which"]
    if "when" in values:
        span = facts.span or parse_span(values["when"])
        if span is not None:
            values["when"] = format_when((round(span[0], 3), round(span[1], 3)))
    return values


def assemble_answer(values: dict[str, str], label: str) -> str:
    """`<answer><which>…</which>…</answer>` with the label's fields in Vad-R1 order."""
    body = "".join(f"<{name}>{values.get(name, '')}</{name}>" for name in answer_fields(label))
    return f"<answer>{body}</answer>"


def parsed_answer(values: dict[str, str]) -> CotAnswer:
    when = parse_span(values.get("when"))
    return CotAnswer(which=values["which"], what=values["what"], when=when, where=values.get("where"), why=values["why"], how=values.get("how"))


@dataclass(frozen=True)
class Exchange:
    """One part of the chain (a step or the answer): the request that made it and its reply."""

    part: str
    request: Request
    reply: str


def make_candidate(facts: VideoFacts, steps: Sequence[Exchange], answer: Exchange, taxonomy: Taxonomy) -> CotCandidate:
    texts = tuple(clean_step(e.reply) for e in steps)
    values = answer_values(answer.reply, facts, taxonomy)
    return CotCandidate(
        label=facts.label, category=facts.category, steps=texts, reply=answer.reply,
        think=assemble_think(texts, facts.label), answer=assemble_answer(values, facts.label), span=facts.span,
    )


def repair_targets(report: GateReport, parts: Sequence[str]) -> dict[str, list[str]]:
    """part → failure lines; findings about the whole reasoning ('think', '') go to every step."""
    steps = [p for p in parts if p != ANSWER]
    out: dict[str, list[str]] = {}
    for part, lines in report.by_part().items():
        for target in ([part] if part in parts else steps):
            out.setdefault(target, []).extend(lines)
    return out


def refusal_reason(error: BackendError) -> str:
    """A reject reason for a call that failed for good ('model refused: moderation', …)."""
    code = (error.code or "").lower()
    if code in MODERATION_CODES or "moderation" in code or "inspection" in code:
        return "model refused: moderation"
    if error.error_class is ErrorClass.RETRYABLE:
        return f"model unavailable: {error.code} (re-run with --retry-rejected to try again)"
    return f"model refused: {error.code}"


# -- one video -----------------------------------------------------------------------------------------

@dataclass
class Tally:
    """Calls, tokens, cost and prompts behind one record (cached answers count: the record cost them once)."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    prompts: dict[str, str] = field(default_factory=dict)

    def add(self, request: Request, result: Result, price: Price | None) -> None:
        self.calls += 1
        self.input_tokens += result.input_tokens
        self.output_tokens += result.output_tokens
        self.cost += price.cost(result.input_tokens, result.output_tokens) if price else 0.0
        self.prompts[request.prompt_name] = request.prompt_hash


class CotBuilder:
    """Turns one video into a CotRecord or a reject, through the captioner and reasoner engines."""

    def __init__(self, run: RunDir, options: CotOptions, captioner: Engine, reasoner: Engine, gates: Sequence[Gate[CotCandidate]], taxonomy: Taxonomy) -> None:
        self.run = run
        self.options = options
        self.captioner = captioner
        self.reasoner = reasoner
        self.gates = list(gates)
        self.taxonomy = taxonomy

    async def process(self, video: VideoRecord) -> Outcome:
        """The item function of the StageRunner: never raises for one video's problems."""
        try:
            return await self._build(video)
        except ItemFailure as exc:
            return Rejected(exc.reason, exc.detail)
        except BackendError as exc:
            return Rejected(refusal_reason(exc), {"error": str(exc), "code": exc.code})

    async def _build(self, video: VideoRecord) -> Outcome:
        frames = self.run.load_frameset(video.id, self.options.caption_policy, self.options.max_pixels)
        if frames is None or not frames.paths:
            raise ItemFailure("no frames: the video could not be sampled (see the sample stage's rejects)")
        facts = video_facts(video, self.taxonomy, frames)
        tally = Tally()
        captions = await self.caption_frames(video.id, frames, facts.length, tally)
        steps, answer = await self.write_chain(facts, captions, tally)
        candidate, first = self.judge(facts, steps, answer)
        report, repaired = first, []
        if not first.passed:
            steps, answer, repaired = await self.repair(facts, steps, answer, first, tally)
            candidate, report = self.judge(facts, steps, answer)
        if not report.passed:
            return Rejected(f"failed gates: {', '.join(report.failed_names)}", report.detail())
        fixed = [name for name in first.failed_names if name not in report.failed_names]
        return Accepted(self.record(facts, captions, candidate, tally, report, fixed, repaired), repaired=bool(repaired))

    def judge(self, facts: VideoFacts, steps: Sequence[Exchange], answer: Exchange) -> tuple[CotCandidate, GateReport]:
        candidate = make_candidate(facts, steps, answer, self.taxonomy)
        return candidate, run_gates(candidate, self.gates, warn=self.options.warn_gates)

    async def ask(self, engine: Engine, item: str, request: Request, tally: Tally) -> str:
        result = await engine.call(item, request)
        tally.add(request, result, engine.price)
        return result.text

    # captions ------------------------------------------------------------------------------------
    async def caption_frames(self, item: str, frames: FrameSet, length: float, tally: Tally) -> list[Caption]:
        """One caption per sampled frame, in temporal order, batched as asked."""
        groups = batches(len(frames.paths), self.options.caption_batch)
        texts = await asyncio.gather(*(self.caption_group(item, frames, group, length, tally) for group in groups))
        positions = [p for group in groups for p in group]
        captions = [t for group_texts in texts for t in group_texts]
        return [Caption(frame_index=frames.indices[p], timestamp=frames.timestamps[p], text=t) for p, t in zip(positions, captions)]

    async def caption_group(self, item: str, frames: FrameSet, positions: list[int], length: float, tally: Tally) -> list[str]:
        """Captions of a group of frames; a batch reply that does not parse is re-asked per frame."""
        images = image_parts(self.run.root, frames, positions)
        stamps = [frames.timestamps[p] for p in positions]
        if len(positions) > 1:
            reply = await self.ask(self.captioner, item, caption_request(images, stamps, length, self.options), tally)
            parsed = parse_caption_list(reply, len(positions))
            if parsed is not None:
                return parsed
        singles = [caption_request([image], [stamp], length, self.options) for image, stamp in zip(images, stamps)]
        replies = await asyncio.gather(*(self.ask(self.captioner, item, request, tally) for request in singles))
        captions = [clean_caption(reply) for reply in replies]
        for stamp, caption in zip(stamps, captions):
            if not caption:
                raise ItemFailure(f"empty caption: the captioner described the frame at {stamp:.1f} s with nothing")
        return captions

    # the chain -----------------------------------------------------------------------------------
    async def write_chain(self, facts: VideoFacts, captions: list[Caption], tally: Tally) -> tuple[list[Exchange], Exchange]:
        """The steps in order (each sees the ones before it), then the answer."""
        chain = CHAINS[facts.label]
        steps: list[Exchange] = []
        for spec in chain:
            values = step_values(facts, captions, chain, [clean_step(e.reply) for e in steps])
            request = text_request(spec.prompt, values, self.options.step_tokens, self.options.temperature)
            steps.append(Exchange(spec.name, request, await self.ask(self.reasoner, facts.video_id, request, tally)))
        values = step_values(facts, captions, chain, [clean_step(e.reply) for e in steps])
        request = text_request(ANSWER_PROMPTS[facts.label], values, self.options.answer_tokens, self.options.temperature)
        answer = Exchange(ANSWER, request, await self.ask(self.reasoner, facts.video_id, request, tally))
        return steps, answer

    async def repair(self, facts: VideoFacts, steps: list[Exchange], answer: Exchange, report: GateReport, tally: Tally) -> tuple[list[Exchange], Exchange, list[str]]:
        """Re-ask every failing part once, concurrently, with its failures listed."""
        parts = [*(e.part for e in steps), ANSWER]
        targets = repair_targets(report, parts)
        exchanges = {e.part: e for e in [*steps, answer]}

        async def fix(part: str) -> Exchange:
            old = exchanges[part]
            request = repair_request(old.request, old.reply, targets[part])
            return Exchange(part, request, await self.ask(self.reasoner, facts.video_id, request, tally))

        fixed = await asyncio.gather(*(fix(part) for part in parts if part in targets))
        exchanges.update({e.part: e for e in fixed})
        return [exchanges[e.part] for e in steps], exchanges[ANSWER], [e.part for e in fixed]

    # the record ----------------------------------------------------------------------------------
    def record(self, facts: VideoFacts, captions: list[Caption], candidate: CotCandidate, tally: Tally, report: GateReport, fixed_gates: list[str], repaired_parts: list[str]) -> CotRecord:
        values = answer_values(candidate.reply, facts, self.taxonomy)
        provenance = CotProvenance(
            captioner=self.options.captioner, reasoner=self.options.reasoner, caption_policy=self.options.caption_policy,
            max_pixels=self.options.max_pixels, caption_batch=self.options.caption_batch, prompt_hashes=dict(sorted(tally.prompts.items())),
            calls=tally.calls, input_tokens=tally.input_tokens, output_tokens=tally.output_tokens, cost=round(tally.cost, 8),
            repaired_gates=fixed_gates, repaired_parts=repaired_parts, warnings=report.warning_detail(), created=utc_now(),
        )
        return CotRecord(
            video_id=facts.video_id, label=facts.label, category=facts.category, duration=facts.length, span=facts.span,  # type: ignore[arg-type]
            captions=captions, steps=list(candidate.steps), fields=parsed_answer(values), think=candidate.think,
            answer=candidate.answer, provenance=provenance,
        )


# -- running the stage -----------------------------------------------------------------------------

def make_engine(role: str, backend: Any, ledger: Ledger, options: CotOptions) -> Engine:
    return make_stage_engine(stage_of(role), backend, ledger, options.access, concurrency=options.concurrency, rpm=options.rpm, tpm=options.tpm)


def select_gates(options: CotOptions, taxonomy: Taxonomy) -> list[Gate[CotCandidate]]:
    """The gates asked for; unknown names raise GateSelectionError before anything runs."""
    return cot_gates(taxonomy).select(options.gates, options.skip_gates)


def select_videos(videos: list[VideoRecord], limit: int | None) -> list[VideoRecord]:
    return videos if limit is None else videos[: max(0, limit)]


def sample_frames(run: Path, options: CotOptions, video_ids: set[str]) -> StageSummary:
    """Sample the caption frames of the videos (resumable: sampled videos are skipped)."""
    from vau_annotate.pipelines.sample import run_sample

    return run_sample(run=run, policy=options.caption_policy, max_pixels=options.max_pixels, decoder=options.decoder,
                      workers=options.workers, jpeg_quality=90, video_ids=video_ids, show_progress=options.show_progress)


def load_backends(options: CotOptions) -> tuple[Any, Any]:
    """Captioner and reasoner backends (one shared instance when both specs are the same).

    A missing API key is fatal for the whole run, so it surfaces as RunStopped.
    """
    captioner = open_backend(options.captioner, options.access, **options.backend_options())
    reasoner = captioner if options.reasoner == options.captioner else open_backend(options.reasoner, options.access, **options.backend_options())
    return captioner, reasoner


def run_cot(run: Path, options: CotOptions) -> StageSummary:
    """The whole stage: frames → (dry run: estimate) or captions → chain → gates → record, per video."""
    from vau_annotate.annotate.video import parse_policy

    options = replace(options, caption_policy=str(parse_policy(options.caption_policy)))  # the folder name of the frames
    rd = RunDir(run)
    taxonomy = default_taxonomy()
    gates = select_gates(options, taxonomy)
    videos = select_videos(rd.load_manifest(), options.limit)
    summary = StageSummary("build-cot", counts={"videos": len(videos)})
    ledger = Ledger(rd.ledger_path)
    try:
        if options.dry_run:
            return estimate_cot(rd, videos, options, ledger, summary)
        sampled = sample_frames(run, options, {v.id for v in videos})
        if sampled.rejected:
            summary.notes.append(f"{sampled.rejected} video(s) could not be sampled; they are rejected")
        counts, usage = asyncio.run(_run_videos(rd, videos, options, ledger, gates, taxonomy))
    finally:
        ledger.close()
    summary.add_run_counts(counts)
    hashes = {**rd.load_meta().prompt_hashes, **{n: load_prompt(n).hash for n in cot_prompt_names()}}
    rd.record_stage(STAGE, options.recorded(), dict(summary.counts), prompt_hashes=hashes)
    return summary


async def _run_videos(rd: RunDir, videos: list[VideoRecord], options: CotOptions, ledger: Ledger, gates: list[Gate[CotCandidate]], taxonomy: Taxonomy) -> tuple[RunCounts, dict[str, Any]]:
    store = StageStore(rd, STAGE)
    if options.retry_rejected:
        store.forget_rejects()
    todo = [v for v in videos if not store.is_done(v.id)]
    backends = load_backends(options) if todo else (SpecOnly.of(options.captioner), SpecOnly.of(options.reasoner))
    captioner, reasoner = (make_engine(role, backend, ledger, options) for role, backend in zip(ROLES, backends))
    runner: StageRunner[VideoRecord] = StageRunner(store, concurrency=options.concurrency, usage=lambda: combined_usage(captioner, reasoner), show_progress=options.show_progress)
    builder = CotBuilder(rd, options, captioner, reasoner, gates, taxonomy)
    try:
        counts = await runner.run(((v.id, v) for v in videos), builder.process)
    finally:
        for engine in (captioner, reasoner):
            await engine.aclose()
        for backend in {id(b): b for b in backends}.values():
            await backend.aclose()
    return counts, combined_usage(captioner, reasoner)


# -- dry run -------------------------------------------------------------------------------------------

def estimate_cot(rd: RunDir, videos: list[VideoRecord], options: CotOptions, ledger: Ledger, summary: StageSummary) -> StageSummary:
    """Calls, tokens and cost the run would need, without sampling or calling anything.

    Captions and steps do not exist before the run, so their prompts are built from stand-in
    frames and texts under ESTIMATE_ASSUMPTIONS (printed with the estimate); for the same reason a
    planned call never matches the ledger, and items already done are left out instead.
    """
    store = StageStore(rd, STAGE)
    taxonomy = default_taxonomy()
    engines = {role: make_engine(role, SpecOnly.of(getattr(options, role)), ledger, options) for role in ROLES}
    requests: dict[str, list[tuple[str, Request]]] = {role: [] for role in ROLES}
    unknown = 0
    for video in videos:
        if store.is_done(video.id):
            continue
        planned = planned_requests(rd, video, options, taxonomy)
        if planned is None:
            unknown += 1
            continue
        for role, items in planned.items():
            requests[role] += [(video.id, r) for r in items]
    estimates = {role: engines[role].estimate(requests[role]) for role in ROLES}
    summary.notes.append("dry run: nothing was sampled or called. Assumptions: " + "; ".join(ESTIMATE_ASSUMPTIONS) + ".")
    if unknown:
        summary.notes.append(f"{unknown} video(s) lack probe data or a usable label and are not estimated")
    summary.add_estimates(estimates, {role: getattr(options, role) for role in ROLES})
    return summary


def planned_requests(rd: RunDir, video: VideoRecord, options: CotOptions, taxonomy: Taxonomy) -> dict[str, list[Request]] | None:
    """The requests one video would make, with stand-in frames and texts; None when it cannot be planned."""
    frames = rd.load_frameset(video.id, options.caption_policy, options.max_pixels)
    shape = frame_plan(video, frames, options)
    if shape is None:
        return None
    stamps, size = shape
    try:
        facts = video_facts(video, taxonomy, frames)
    except ItemFailure:
        return None
    image = stand_in_frame(size, video.id)
    captions = [Caption(frame_index=0, timestamp=t, text=f"{video.id}: {words(CAPTION_WORDS_GUESS)}") for t in stamps]
    caption_requests = [caption_request([image] * len(g), [stamps[p] for p in g], facts.length, options) for g in batches(len(stamps), options.caption_batch)]
    chain = CHAINS[facts.label]
    texts = [words(STEP_WORDS_GUESS)] * len(chain)
    reasoner = [
        text_request(spec.prompt, step_values(facts, captions, chain, texts[:i]), options.step_tokens, options.temperature)
        for i, spec in enumerate(chain)
    ]
    reasoner.append(text_request(ANSWER_PROMPTS[facts.label], step_values(facts, captions, chain, texts), options.answer_tokens, options.temperature))
    return {"captioner": caption_requests, "reasoner": reasoner}


def frame_plan(video: VideoRecord, frames: FrameSet | None, options: CotOptions) -> tuple[list[float], tuple[int, int]] | None:
    """Timestamps and (width, height) of the caption frames: the sampled ones, else the policy's plan."""
    if frames is not None:
        return list(frames.timestamps), (frames.width, frames.height)
    from vau_annotate.annotate.video import VideoInfo, parse_policy, select_indices, target_size

    if not (video.num_frames and video.fps and video.width and video.height):
        return None
    time_base = Fraction(1, 1000)
    pts = tuple(round(i / video.fps * 1000) for i in range(video.num_frames))
    info = VideoInfo(path=video.path, duration=video.duration or video.num_frames / video.fps, fps=video.fps, num_frames=video.num_frames,
                     width=video.width, height=video.height, codec="", container="", keyframes=(0,), pts=pts, time_base=time_base)
    indices = select_indices(parse_policy(options.caption_policy), info, video.spans)
    return info.timestamps(indices), target_size(video.width, video.height, options.max_pixels)


def stand_in_frame(size: tuple[int, int], video_id: str) -> ImagePart:
    """A plain frame of the right size (token estimates depend only on the size), coloured by the
    video id so that different videos never look like one repeated call to `Engine.estimate`."""
    import io
    import zlib

    from PIL import Image

    seed = zlib.crc32(video_id.encode("utf-8"))
    buffer = io.BytesIO()
    Image.new("RGB", size, color=(seed & 255, (seed >> 8) & 255, (seed >> 16) & 255)).save(buffer, format="JPEG")
    return ImagePart(data=buffer.getvalue())


def words(n: int) -> str:
    """Stand-in text of about n words (≈ 1.25 tokens per word, like English prose)."""
    return " ".join(["word"] * n)


def cot_records(run: Path) -> list[CotRecord]:
    """Every accepted CoT record of a run, in item order (for export and reports)."""
    return StageStore(RunDir(run), STAGE).accepted(CotRecord)

