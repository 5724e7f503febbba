"""One video through build-cot: captions → the chain's steps in order → the answer → gates → record.

A failing step or answer is re-asked once with its failures listed (`cot_repair`); still failing,
the video is rejected with every failed gate. A reply cut at its token limit is asked again with a
larger budget and otherwise rejects the video as `truncated` (see `replies.py`); refused caption
frames are left out and listed on the record.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Sequence

from vau_annotate.annotate.backends import BackendError, Request, Result
from vau_annotate.annotate.checks import Gate, GateReport, run_gates
from vau_annotate.annotate.checks.cot import CotCandidate
from vau_annotate.annotate.classes import Taxonomy
from vau_annotate.annotate.engine import Engine
from vau_annotate.annotate.media import image_parts
from vau_annotate.annotate.pricing import Price
from vau_annotate.annotate.rundir import RunDir
from vau_annotate.pipelines.cot_assembly import Exchange, answer_values, make_candidate, parsed_answer, repair_targets
from vau_annotate.pipelines.cot_captions import caption_video
from vau_annotate.pipelines.cot_facts import ItemFailure, VideoFacts, video_facts
from vau_annotate.pipelines.cot_options import CotOptions
from vau_annotate.pipelines.cot_steps import ANSWER, ANSWER_PROMPTS, CHAINS, clean_step, repair_request, step_request
from vau_annotate.pipelines.replies import Truncated, is_truncated, refusal_reason, whole_reply
from vau_annotate.pipelines.runner import Accepted, Outcome, Rejected
from vau_annotate.schemas import VideoRecord
from vau_annotate.schemas.cot import Caption, CotProvenance, CotRecord
from vau_annotate.schemas.run import utc_now


@dataclass
class Tally:
    """Calls, tokens, cost and prompts behind one record (cached answers count: the record cost them once)."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    prompts: dict[str, str] = field(default_factory=dict)
    budget_repairs: list[str] = field(default_factory=list)  # parts re-asked because their reply was cut off

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
        except Truncated as exc:
            return Rejected(exc.reason, {"part": exc.part, "max_tokens": list(exc.budgets)})
        except BackendError as exc:
            return Rejected(refusal_reason(exc), {"error": str(exc), "code": exc.code})

    async def _build(self, video: VideoRecord) -> Outcome:
        frames = self.run.load_frameset(video.id, self.options.caption_policy, self.options.max_pixels)
        if frames is None or not frames.paths:
            raise ItemFailure("no frames: the video could not be sampled (see the sample stage's rejects)")
        facts = video_facts(video, self.taxonomy, frames)
        tally = Tally()
        images = image_parts(self.run.root, frames)
        captioned = await caption_video(lambda request, part: self.ask(self.captioner, video.id, request, part, tally), frames, images,
                                        facts.length, self.options.caption_batch, self.options.caption_tokens, self.options.temperature)
        steps, answer = await self.write_chain(facts, captioned.captions, tally)
        candidate, first = self.judge(facts, steps, answer)
        report, repaired = first, []
        if not first.passed:
            steps, answer, repaired = await self.repair(facts, steps, answer, first, tally)
            candidate, report = self.judge(facts, steps, answer)
        if not report.passed:
            return Rejected(f"failed gates: {', '.join(report.failed_names)}", report.detail())
        fixed = [name for name in first.failed_names if name not in report.failed_names]
        record = self.record(facts, captioned.captions, candidate, tally, report, fixed, repaired, captioned.refused)
        return Accepted(record, repaired=bool(repaired))

    def judge(self, facts: VideoFacts, steps: Sequence[Exchange], answer: Exchange) -> tuple[CotCandidate, GateReport]:
        candidate = make_candidate(facts, steps, answer, self.taxonomy)
        return candidate, run_gates(candidate, self.gates, warn=self.options.warn_gates)

    async def ask(self, engine: Engine, item: str, request: Request, part: str, tally: Tally) -> str:
        """A whole reply's text (one more call with a larger budget if the first was cut off)."""

        def count(asked: Request, result: Result) -> None:
            tally.add(asked, result, engine.price)
            if is_truncated(result):
                tally.budget_repairs.append(part)

        return (await whole_reply(engine, item, request, part, count)).text

    # the chain -----------------------------------------------------------------------------------
    async def write_chain(self, facts: VideoFacts, captions: list[Caption], tally: Tally) -> tuple[list[Exchange], Exchange]:
        """The steps in order (each sees the ones before it), then the answer."""
        chain = CHAINS[facts.label]
        steps: list[Exchange] = []
        for spec in chain:
            request = step_request(facts, captions, chain, [clean_step(e.reply) for e in steps], spec.prompt,
                                   self.options.step_tokens, self.options.temperature)
            steps.append(Exchange(spec.name, request, await self.ask(self.reasoner, facts.video_id, request, spec.name, tally)))
        request = step_request(facts, captions, chain, [clean_step(e.reply) for e in steps], ANSWER_PROMPTS[facts.label],
                               self.options.answer_tokens, self.options.temperature)
        answer = Exchange(ANSWER, request, await self.ask(self.reasoner, facts.video_id, request, ANSWER, tally))
        return steps, answer

    async def repair(self, facts: VideoFacts, steps: list[Exchange], answer: Exchange, report: GateReport, tally: Tally) -> tuple[list[Exchange], Exchange, list[str]]:
        """Re-ask every failing part once, concurrently, with its failures listed."""
        parts = [*(e.part for e in steps), ANSWER]
        targets = repair_targets(report, parts)
        exchanges = {e.part: e for e in [*steps, answer]}

        async def fix(part: str) -> Exchange:
            old = exchanges[part]
            request = repair_request(old.request, old.reply, targets[part])
            return Exchange(part, request, await self.ask(self.reasoner, facts.video_id, request, part, tally))

        fixed = await asyncio.gather(*(fix(part) for part in parts if part in targets))
        exchanges.update({e.part: e for e in fixed})
        return [exchanges[e.part] for e in steps], exchanges[ANSWER], [e.part for e in fixed]

    # the record ----------------------------------------------------------------------------------
    def record(self, facts: VideoFacts, captions: list[Caption], candidate: CotCandidate, tally: Tally, report: GateReport,
               fixed_gates: list[str], repaired_parts: list[str], refused_frames: list[int]) -> CotRecord:
        values = answer_values(candidate.reply, facts, self.taxonomy)
        provenance = CotProvenance(
            captioner=self.options.captioner, reasoner=self.options.reasoner, caption_policy=self.options.caption_policy,
            max_pixels=self.options.max_pixels, caption_batch=self.options.caption_batch, prompt_hashes=dict(sorted(tally.prompts.items())),
            calls=tally.calls, input_tokens=tally.input_tokens, output_tokens=tally.output_tokens, cost=round(tally.cost, 8),
            repaired_gates=fixed_gates, repaired_parts=repaired_parts, budget_repairs=tally.budget_repairs,
            refused_frames=refused_frames, description_source=facts.description_source,
            warnings=report.warning_detail(), created=utc_now(),
        )
        return CotRecord(
            video_id=facts.video_id, label=facts.label, category=facts.category, duration=facts.length, span=facts.span,  # type: ignore[arg-type]
            when_source=facts.when_source, captions=captions, steps=list(candidate.steps), fields=parsed_answer(values),
            think=candidate.think, answer=candidate.answer, provenance=provenance,
        )
