"""`vau-annotate build-cot`: Vad-R1's Perception-to-Cognition chain of thought for every video.

The stage reads as Vad-R1's annotation pipeline (section 3.2), one module per box of its figure:

    cot_facts.py      what the annotations say: category, span, description, location / key object
    cot_captions.py   a dense caption per sampled frame (the captioner VLM)
    cot_steps.py      the four P2C steps (two for normal videos) and exactly what each one sees
    cot_options.py    what the command was asked to do
    cot_assembly.py   the replies merged into Vad-Reasoning's `think` and `answer`
    checks/cot.py     the gates (structure, category, when, sentences, length, neutrality, repetition)
    cot_builder.py    one video through all of it, with one repair and whole replies only
    cot.py            (here) options, the run over every video, the dry run, and statistics

Every call goes through the engine, so the ledger caches it: the captions of a video are made once
and reused by every step, and a re-run after a crash repeats no call.
"""

from __future__ import annotations

import asyncio
import statistics
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from vau_annotate.annotate.backends import ImagePart, Request
from vau_annotate.annotate.backends.registry import SpecOnly
from vau_annotate.annotate.checks import Gate
from vau_annotate.annotate.checks.common import count_words, split_sentences
from vau_annotate.annotate.checks.cot import THINK_WORD_BANDS, CotCandidate, cot_gates
from vau_annotate.annotate.classes import BUILTIN_FILES, Taxonomy, builtin_taxonomy, default_taxonomy
from vau_annotate.annotate.engine import Engine, combined_usage
from vau_annotate.annotate.ledger import Ledger
from vau_annotate.annotate.rundir import RunDir
from vau_annotate.pipelines.cot_assembly import answer_values, assemble_answer, assemble_think, repair_targets
from vau_annotate.pipelines.cot_builder import CotBuilder
from vau_annotate.pipelines.cot_captions import CAPTION_BATCH_PROMPT, CAPTION_PROMPT, batches, caption_request, clean_caption, parse_caption_list
from vau_annotate.pipelines.cot_facts import ItemFailure, VideoFacts, video_facts
from vau_annotate.pipelines.cot_options import DEFAULT_MAX_PIXELS, DEFAULT_POLICY, CotOptions
from vau_annotate.pipelines.cot_steps import ANSWER_PROMPTS, CHAINS, clean_step, local_captions, step_request
from vau_annotate.pipelines.cot_steps import prompt_names as chain_prompt_names
from vau_annotate.annotate.shards import owns as shard_owns
from vau_annotate.pipelines.models import items_in_flight, open_backend
from vau_annotate.pipelines.models import make_engine as make_stage_engine
from vau_annotate.pipelines.replies import refusal_reason
from vau_annotate.pipelines.runner import RunCounts, StageRunner, StageStore
from vau_annotate.pipelines.summary import StageSummary
from vau_annotate.prompts import load_prompt
from vau_annotate.schemas import FrameSet, VideoRecord
from vau_annotate.schemas.cot import Caption, CotRecord
from vau_annotate.schemas.run import utc_now

STAGE = "cot"
ROLES = ("captioner", "reasoner")

# --dry-run guesses for text nobody has written yet
CAPTION_WORDS_GUESS = 60
STEP_WORDS_GUESS = 90
ESTIMATE_ASSUMPTIONS = (
    "frames per video follow the caption policy applied to the probed frame count (the sampled frames when they exist)",
    "every frame has the pixel budget's size",
    f"each caption is ~{CAPTION_WORDS_GUESS} words and each step ~{STEP_WORDS_GUESS} words (Vad-R1's think bands ÷ steps)",
    "every caption batch parses (no per-frame re-asks)",
    "no repairs (each repaired step or answer adds one reasoner call; each reply cut at its token limit adds one more)",
    "output tokens are the max_tokens upper bound",
    "videos already done are not counted",
)

# Vad-Reasoning's shape, for `status` next to a run's accepted chains: the think length bands of the
# dataset (Vad-R1 section 3.2 statistics; abnormal chains average about 260 words) and the
# guideline of 4-6 sentences per step.
PAPER_SHAPE: dict[str, dict[str, str]] = {
    "abnormal": {"words": "233–456 (mean ≈ 260)", "sentences per step": "4–6"},
    "normal": {"words": "140–261", "sentences per step": "4–6"},
}


def stage_of(role: str) -> str:
    """Ledger stage of one role's calls, so `status` tells captioner and reasoner usage apart."""
    return f"{STAGE}:{role}"


def cot_prompt_names() -> list[str]:
    """Every prompt the stage may use (their hashes go into run.json)."""
    return sorted({CAPTION_PROMPT, CAPTION_BATCH_PROMPT, *chain_prompt_names()})


# -- running the stage -----------------------------------------------------------------------------

def make_engine(role: str, backend: Any, ledger: Ledger, options: CotOptions) -> Engine:
    return make_stage_engine(stage_of(role), backend, ledger, options.access, concurrency=options.concurrency, rpm=options.rpm, tpm=options.tpm)


def run_taxonomy(videos: list[VideoRecord]) -> Taxonomy:
    """The class list the chains' `<which>` is checked against: the one ingest gave the videos
    (Vad-Reasoning's own for `--source vad-reasoning`), VAU-Bench's otherwise."""
    names = {v.taxonomy for v in videos if v.taxonomy}
    if len(names) == 1 and (name := names.pop()) in BUILTIN_FILES:
        return builtin_taxonomy(name)
    return default_taxonomy()


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
    started = utc_now()
    rd = RunDir(run)
    manifest = rd.load_manifest()
    taxonomy = run_taxonomy(manifest)
    gates = select_gates(options, taxonomy)
    videos = [v for v in select_videos(manifest, options.limit) if shard_owns(v.id)]
    summary = StageSummary("build-cot", counts={"videos": len(videos)})
    ledger = rd.open_ledger()
    try:
        if options.dry_run:
            return estimate_cot(rd, videos, options, ledger, summary)
        rd.claim_shard(STAGE, options.recorded())
        sampled = sample_frames(run, options, {v.id for v in videos})
        if sampled.rejected:
            summary.notes.append(f"{sampled.rejected} video(s) could not be sampled; they are rejected")
        counts, usage = asyncio.run(_run_videos(rd, videos, options, ledger, gates, taxonomy))
    finally:
        ledger.close()
    summary.add_run_counts(counts)
    hashes = {**rd.load_meta().prompt_hashes, **{n: load_prompt(n).hash for n in cot_prompt_names()}}
    rd.record_stage(STAGE, options.recorded(), dict(summary.counts), started=started, prompt_hashes=hashes)
    return summary


async def _run_videos(rd: RunDir, videos: list[VideoRecord], options: CotOptions, ledger: Ledger, gates: list[Gate[CotCandidate]], taxonomy: Taxonomy) -> tuple[RunCounts, dict[str, Any]]:
    store = StageStore(rd, STAGE)
    if options.retry_rejected:
        store.forget_rejects()
    todo = [v for v in videos if not store.is_done(v.id)]
    backends = load_backends(options) if todo else (SpecOnly.of(options.captioner), SpecOnly.of(options.reasoner))
    captioner, reasoner = (make_engine(role, backend, ledger, options) for role, backend in zip(ROLES, backends))
    runner: StageRunner[VideoRecord] = StageRunner(store, concurrency=items_in_flight(options.concurrency, options.access), usage=lambda: combined_usage(captioner, reasoner), show_progress=options.show_progress)
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
    taxonomy = run_taxonomy(videos)
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
    caption_requests = [caption_request([image] * len(g), [stamps[p] for p in g], facts.length, options.caption_tokens, options.temperature)
                        for g in batches(len(stamps), options.caption_batch)]
    chain = CHAINS[facts.label]
    texts = [words(STEP_WORDS_GUESS)] * len(chain)
    reasoner = [
        step_request(facts, captions, chain, texts[:i], spec.prompt, options.step_tokens, options.temperature)
        for i, spec in enumerate(chain)
    ]
    reasoner.append(step_request(facts, captions, chain, texts, ANSWER_PROMPTS[facts.label], options.answer_tokens, options.temperature))
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



# -- the shape of the accepted chains, for `status` -------------------------------------------------

def cot_shape(rd: RunDir) -> dict[str, Any] | None:
    """Word and sentence distributions of the accepted chains per label, next to Vad-Reasoning's.

    None when the run has no build-cot stage yet. Words are counted over all steps of a think
    (the unit of Vad-R1's bands), sentences per step (the unit of its guideline).
    """
    store = StageStore(rd, STAGE)
    if not store.dir.exists():
        return None
    shape: dict[str, Any] = {}
    for label in ("abnormal", "normal"):
        records = [r for r in store.accepted(CotRecord) if r.label == label]
        if not records:
            continue
        words = [sum(count_words(step) for step in r.steps) for r in records]
        sentences = [len(split_sentences(step)) for r in records for step in r.steps]
        low, high = THINK_WORD_BANDS[label]
        shape[label] = {
            "chains": len(records),
            "words": distribution(words),
            "words inside the band": f"{sum(low <= w <= high for w in words)}/{len(words)}",
            "sentences per step": distribution(sentences),
            "paper words": PAPER_SHAPE[label]["words"],
            "paper sentences per step": PAPER_SHAPE[label]["sentences per step"],
        }
    return shape


def distribution(values: list[int]) -> str:
    """'mean 261.5, median 258, range 240–290' of a non-empty list."""
    return f"mean {statistics.fmean(values):.1f}, median {statistics.median(values):g}, range {min(values)}–{max(values)}"


__all__ = [  # the stage's entry points, and the pieces of the figure tests and other stages reach for by this name
    "DEFAULT_MAX_PIXELS", "DEFAULT_POLICY", "CotBuilder", "CotOptions", "VideoFacts", "answer_values", "assemble_answer", "assemble_think", "clean_caption", "clean_step",
    "cot_records", "cot_shape", "local_captions", "parse_caption_list", "refusal_reason", "repair_targets", "run_cot",
]
