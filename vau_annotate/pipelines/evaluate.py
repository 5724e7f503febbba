"""`vau-annotate eval`: the metrics of VAU-R1, Vad-R1 and SRVAU-R1 for one model, in one command.

    items (eval_items) ─► model calls (engine: cached in OUT/ledger.sqlite, concurrent, costed)
        ─► replies read and scored per item (eval_tasks) ─► judges (VAU-Eval, pairwise; judges.py)
        ─► OUT/predictions.jsonl, OUT/metrics.json, OUT/metrics.md (eval_report)

Phases run one after another, each at the engine's full concurrency: (1) every first request of
every item and mode, for the model under test and the pairwise opponent together; (2) the
second turn of VAU-R1's two-turn reasoning; (3) every judge call; (4) one re-ask of each judge
reply that could not be read. Running the same command again answers every call from the ledger,
so an interrupted evaluation resumes without paying twice. A failed call or an unreadable video
is a per-item failure: the item scores as wrong/unparsable (counted), its reason goes to
OUT/rejects.jsonl, and the exit status is 3 (partial). With `--shard I/N` a process asks only
the requests of its share of the videos and leaves its rows in OUT/shards/; `merge` writes the
three outputs of the whole (eval_shards.py).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from vau_annotate.annotate.backends.base import Request
from vau_annotate.annotate.backends.registry import SpecOnly
from vau_annotate.annotate.engine import Engine, Outcome
from vau_annotate.annotate.ledger import Ledger
from vau_annotate.annotate.rundir import RunDir
from vau_annotate.annotate.shards import active_shard, shard_of
from vau_annotate.pipelines import judges
from vau_annotate.pipelines.eval_items import DEFAULT_CONFIGS, TASKS, EvalDataError, EvalItem, is_csv, load_csv_items, load_dataset_items
from vau_annotate.pipelines.eval_outputs import ItemResult, add_rejects, iter_predictions, make_rows, write_union
from vau_annotate.pipelines.eval_shards import write_shard
from vau_annotate.pipelines.eval_tasks import Ask, build_ask, class_options, follow_up, modes_for, score
from vau_annotate.pipelines.models import ModelAccess, make_engine, open_backend
from vau_annotate.pipelines.summary import StageSummary
from vau_annotate.prompts import load_prompt

STAGE = "eval"
FREE_TEXT = ("reasoning", "p2c")  # tasks whose replies a pairwise judge compares
ROLES = ("model", "opponent", "judge")


@dataclass(frozen=True)
class EvalOptions:
    """What `vau-annotate eval` was asked to do (written to metrics.json; never a secret)."""

    data: str
    model: str
    out: Path
    tasks: tuple[str, ...] = TASKS
    think: str = "both"
    configs: dict[str, str] = field(default_factory=dict)
    videos: Path | None = None
    sampling: str | None = None  # None: exported rows as exported; CSV: fps:1 (VAU-R1's scripts)
    max_pixels: int = 768 * 28 * 28  # VAU-R1's evaluation processor budget
    max_frames: int = 64
    judge: str | None = None
    pairwise: str | None = None
    concurrency: int = 16
    rpm: float | None = None
    tpm: float | None = None
    max_tokens: int = 1024  # VAU-R1 max_new_tokens
    judge_max_tokens: int = 1024
    temperature: float = 0.0
    limit: int | None = None
    dry_run: bool = False
    decoder: str = "auto"
    access: ModelAccess = field(default_factory=ModelAccess)
    model_options: dict[str, Any] = field(default_factory=dict)
    judge_options: dict[str, Any] = field(default_factory=dict)
    show_progress: bool = True

    def recorded(self) -> dict[str, Any]:
        keep = ("data", "model", "tasks", "think", "configs", "sampling", "max_pixels", "max_frames", "judge", "pairwise",
                "concurrency", "rpm", "tpm", "max_tokens", "judge_max_tokens", "temperature", "limit")
        out = {k: getattr(self, k) for k in keep}
        out["tasks"] = list(self.tasks)
        out["videos"] = str(self.videos) if self.videos else None
        return {**out, **self.access.recorded()}


@dataclass
class EvalResult:
    summary: StageSummary
    metrics: dict[str, Any]
    out: Path


# -- items ------------------------------------------------------------------------------------------

def load_items(options: EvalOptions, summary: StageSummary) -> tuple[list[EvalItem], set[str]]:
    """Items of the asked tasks from a CSV (ingested and sampled into OUT) or an exported dataset,
    and the ids of videos that could not be sampled (their items are left out of the evaluation).

    The list is the whole test split (cut to `--limit`) whatever shard this process is: what a
    request looks like (the CLS class list) and where its line goes must not depend on the share.
    """
    left_out: set[str] = set()
    if is_csv(options.data):
        path = Path(options.data)
        if not path.is_file():
            raise EvalDataError(f"{path} does not exist")
        if options.videos is None:
            raise EvalDataError("a VAU-Bench CSV needs --videos, the folder holding its videos")
        items, left_out = load_csv_items(path, options.videos, options.out, options.tasks, options.sampling or "fps:1",
                                         options.max_pixels, options.max_frames, options.decoder, options.show_progress)
        if left_out:
            summary.rejected += len(left_out)
            summary.notes.append(f"{len(left_out)} video(s) could not be sampled; their items are left out (reasons in {options.out / 'rejects.jsonl'})")
    else:
        items, notes = load_dataset_items(options.data, options.tasks, {**DEFAULT_CONFIGS, **options.configs}, options.videos,
                                          options.sampling, options.max_frames, options.decoder)
        summary.notes.extend(notes)
    if options.limit is not None:
        items = items[: options.limit]
    return items, left_out


def _in_share(item: EvalItem) -> bool:
    """Whether this process asks about the item: always, or (`--shard I/N`) when its video hashes to I."""
    shard = active_shard()
    return shard is None or shard_of(item.video_id or item.id, shard.count) == shard.index


def prepare_asks(items: list[EvalItem], options: EvalOptions) -> list[Ask]:
    """Every (item, mode) to ask; videos are read later, one request at a time."""
    classes = class_options(items)
    return [build_ask(item, mode, classes, options.max_tokens, options.temperature) for item in items for mode in modes_for(item.task, options.think)]


Unreadable = dict[str, tuple[Ask, str]]  # request key → (ask, why its video could not be read)


def first_requests(asks: Iterable[Ask], unreadable: Unreadable) -> Iterator[tuple[str, Request]]:
    """Requests built as the engine consumes them; an unreadable video fails its item, not the run."""
    for ask in asks:
        if ask.key in unreadable:
            continue
        try:
            request = ask.request()
        except Exception as exc:  # noqa: BLE001 - any decode / file error is this item's failure
            unreadable[ask.key] = (ask, f"video: {exc}")
            continue
        yield ask.key, request


# -- calling ------------------------------------------------------------------------------------------

async def _collect(engine: Engine, requests: Iterable[tuple[str, Request]]) -> dict[str, Outcome]:
    return {outcome.item: outcome for outcome in await engine.run_all(requests)}


class Models:
    """The engines of one evaluation: the model under test, the pairwise opponent, the judge."""

    def __init__(self, options: EvalOptions, ledger: Ledger, live: bool) -> None:
        self.options = options
        self.backends: dict[str, Any] = {}
        self.engines: dict[str, Engine] = {}
        specs = {"model": options.model, "opponent": options.pairwise, "judge": options.judge}
        extra = {"model": options.model_options, "opponent": options.model_options, "judge": options.judge_options}
        for role, spec in specs.items():
            if spec is None:
                continue
            backend = open_backend(spec, options.access, **extra[role]) if live else SpecOnly.of(spec)
            self.backends[role] = backend
            self.engines[role] = make_engine(f"{STAGE}:{role}", backend, ledger, options.access, concurrency=options.concurrency,
                                             rpm=options.rpm, tpm=options.tpm)

    def usage(self) -> dict[str, Any]:
        return {role: engine.usage.as_dict() for role, engine in self.engines.items()}

    async def aclose(self) -> None:
        for engine in self.engines.values():
            await engine.aclose()
        for backend in self.backends.values():
            await backend.aclose()


async def _answer(models: Models, asks: list[Ask], unreadable: Unreadable) -> tuple[dict[str, ItemResult], dict[str, str | None]]:
    """Phases 1 and 2 for the model under test (and the opponent on free-text items)."""
    opponent = models.engines.get("opponent")
    first = first_requests(asks, unreadable)
    rival = first_requests([ask for ask in asks if ask.item.task in FREE_TEXT], unreadable) if opponent else iter(())
    mine, theirs = await asyncio.gather(_collect(models.engines["model"], first), _collect(opponent, rival) if opponent else _none())
    results = {ask.key: ItemResult(ask) for ask in asks if ask.key not in unreadable}
    for key, outcome in mine.items():
        _take(results[key], outcome, "raw")
    reasoning = [ask for ask in asks if ask.item.task == "reasoning" and ask.key in results]
    mine_first = {ask.key: results[ask.key].raw for ask in reasoning if results[ask.key].raw is not None}
    theirs_first = {ask.key: theirs[ask.key].result.text for ask in reasoning  # type: ignore[union-attr]
                    if ask.key in theirs and theirs[ask.key].ok and theirs[ask.key].result is not None}

    def follow_ups(replies: dict[str, str | None]) -> Iterator[tuple[str, Request]]:
        """VAU-R1's second turn, built as it is sent (the video is read again, not kept)."""
        for ask in reasoning:
            reply = replies.get(ask.key)
            if reply is not None:
                yield ask.key, follow_up(ask.request(), reply)

    second, second_rival = follow_ups(mine_first), follow_ups(theirs_first)  # type: ignore[arg-type]
    mine2, theirs2 = await asyncio.gather(_collect(models.engines["model"], second), _collect(opponent, second_rival) if opponent else _none())
    for key, outcome in mine2.items():
        _take(results[key], outcome, "analysis")
    opponent_text: dict[str, str | None] = {}
    for key, outcome in theirs.items():
        if key not in results:
            continue
        if not (outcome.ok and outcome.result is not None):
            opponent_text[key] = None
        elif results[key].ask.item.task == "reasoning":
            follow = theirs2.get(key)
            analysis = follow.result.text if follow is not None and follow.ok and follow.result is not None else None
            opponent_text[key] = None if analysis is None else f"Description: {outcome.result.text}\nAnalysis: {analysis}"
        else:
            opponent_text[key] = outcome.result.text
    return results, opponent_text


async def _none() -> dict[str, Outcome]:
    return {}


def _take(result: ItemResult, outcome: Outcome, attr: str) -> None:
    if outcome.ok and outcome.result is not None:
        setattr(result, attr, outcome.result.text)
    else:
        result.error = f"{outcome.error} [{outcome.error.code if outcome.error else ''}]"


def _judge_question(result: ItemResult) -> str:
    if result.ask.item.task == "reasoning":
        return load_prompt("eval_reasoning_description").render() + "\n" + load_prompt("eval_reasoning_analysis").render()
    return result.ask.request().messages[0].parts[-1].text  # type: ignore[union-attr]


async def _judge(models: Models, results: dict[str, ItemResult], opponent_text: dict[str, str | None], options: EvalOptions) -> None:
    """Phases 3 and 4: VAU-Eval on reasoning items, pairwise in both orders, one re-ask of unreadable VAU-Eval replies."""
    engine = models.engines.get("judge")
    if engine is None:
        return
    vau: list[tuple[str, Request]] = []
    pairs: list[tuple[str, Request]] = []
    for key, result in results.items():
        item = result.ask.item
        answered = result.error is None and result.raw is not None
        if item.task == "reasoning" and answered:
            vau.append((key, judges.vau_eval_request(item.gt_description, item.gt_analysis, result.raw or "", result.analysis or "", options.judge_max_tokens)))
        rival = opponent_text.get(key)
        if key in opponent_text and answered and rival is not None:
            question, reference = _judge_question(result), item.reference
            pairs.append((f"{key}|AB", judges.pairwise_request(question, reference, result.text, rival, options.judge_max_tokens)))
            pairs.append((f"{key}|BA", judges.pairwise_request(question, reference, rival, result.text, options.judge_max_tokens)))
        elif key in opponent_text:
            result.pairwise = {"first": None, "second": None, "outcome": "failed",
                               "reason": "the model under test failed" if not answered else "the opponent failed"}
    outcomes = await _collect(engine, vau + pairs)
    repairs: list[tuple[str, Request]] = []
    first_requests = dict(vau)
    for key, request in vau:
        outcome = outcomes.get(key)
        reply = outcome.result.text if outcome is not None and outcome.ok and outcome.result is not None else None
        scores, problem = judges.parse_vau_eval(reply)
        if scores is not None:
            results[key].judge = {"status": "ok", "scores": scores, "raw": reply}
        elif reply is None:
            results[key].judge = {"status": "failed", "reason": f"judge call failed: {outcome.error if outcome else 'no outcome'}", "raw": None}
        else:
            results[key].judge = {"status": "pending", "reason": problem, "raw": reply}
            repairs.append((key, judges.vau_eval_repair(first_requests[key], reply, problem)))
    for key, outcome in (await _collect(engine, repairs)).items():
        reply = outcome.result.text if outcome.ok and outcome.result is not None else None
        scores, problem = judges.parse_vau_eval(reply)
        previous = results[key].judge or {}
        if scores is not None:
            results[key].judge = {"status": "ok", "scores": scores, "raw": reply, "reasked": True, "first_problem": previous.get("reason")}
        else:
            results[key].judge = {"status": "failed", "reason": f"unreadable twice: {previous.get('reason')}; then {problem or outcome.error}",
                                  "raw": previous.get("raw"), "reasked_raw": reply, "reasked": True}
    for key in opponent_text:
        if results[key].pairwise is not None:
            continue
        texts = [outcomes.get(f"{key}|{order}") for order in ("AB", "BA")]
        verdict = judges.PairVerdict(*(judges.parse_verdict(o.result.text) if o is not None and o.ok and o.result else None for o in texts))
        results[key].pairwise = {"first": verdict.first, "second": verdict.second, "outcome": verdict.outcome}


# -- the command --------------------------------------------------------------------------------------

def run_eval(options: EvalOptions) -> EvalResult:
    """Load the items, run the model (and judges), score, and write the three outputs.

    As a shard (`use_shard`, CLI `--shard I/N`), only the share's requests are sent and the rows go
    to OUT/shards/ (eval_shards.py); `vau-annotate merge` writes the three outputs of the whole.
    """
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    rd = RunDir(out)
    shard = active_shard()
    summary = StageSummary(STAGE)
    if options.pairwise and options.judge is None:
        raise EvalDataError("--pairwise needs --judge (the model that compares the two)")
    if shard is not None and not options.dry_run:
        rd.claim_shard(STAGE, options.recorded())  # refuses other options than the sibling shards' before any work
    items, left_out = load_items(options, summary)
    if not items:
        raise EvalDataError(f"{options.data}: no test items for the tasks {', '.join(options.tasks)}" + "".join(f"; {n}" for n in summary.notes))
    if "reasoning" in options.tasks and options.judge is None:
        summary.notes.append("reasoning: no --judge given, so VAU-Eval scores are not computed (text metrics are)")
    every = prepare_asks(items, options)
    positions = {ask.key: index for index, ask in enumerate(every)}
    asks = [ask for ask in every if ask.item.video_id not in left_out and _in_share(ask.item)]
    mine = {ask.key for ask in asks}
    rd.clear_rejects(STAGE, None if shard is None else {key for key in rd.rejected_items(STAGE) if key in mine})
    unreadable: Unreadable = {}
    summary.counts.update(items=len({(ask.item.task, ask.item.id) for ask in asks}), requests=len(asks))
    ledger = rd.open_ledger()  # writes to this process's ledger; answers from every ledger in OUT (shards' too)
    try:
        if options.dry_run:
            return EvalResult(dry_run(asks, options, ledger, summary), {}, out)
        results, usage = asyncio.run(_run(asks, unreadable, options, ledger))
    finally:
        ledger.close()
    for result in results.values():
        result.prediction, result.scores = score(result.ask.item, result.raw if result.error is None else None)
    rows = make_rows(results.values(), unreadable.values(), positions, options.model)
    add_rejects(results.values(), [(key, ask, reason) for key, (ask, reason) in unreadable.items()], rd)
    recorded = json.loads(json.dumps(options.recorded(), default=str))
    if shard is not None:
        write_shard(out, shard, rows, usage, recorded, dict(summary.counts), summary)
        return EvalResult(summary, {}, out)
    return EvalResult(summary, write_union(out, recorded, rows, usage, summary), out)


async def _run(asks: list[Ask], unreadable: Unreadable, options: EvalOptions, ledger: Ledger) -> tuple[dict[str, ItemResult], dict[str, Any]]:
    models = Models(options, ledger, live=True)
    progress = _Progress(options.show_progress, len(asks))
    for engine in models.engines.values():
        engine.on_progress = progress.update
    try:
        with progress:
            results, opponent_text = await _answer(models, asks, unreadable)
            await _judge(models, results, opponent_text, options)
    finally:
        await models.aclose()
    return results, models.usage()


class _Progress:
    """A rich progress bar over all model calls of the evaluation (calls, cache hits, cost)."""

    def __init__(self, show: bool, total: int) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("[bold]eval"), BarColumn(), TextColumn("{task.completed} calls"), TimeElapsedColumn(),
                            TextColumn("{task.fields[info]}"), disable=not show)
        self.task = self.bar.add_task("eval", total=None, info="")
        self.cost = 0.0
        self.hits = 0

    def update(self, usage: Any, outcome: Outcome) -> None:
        self.cost += outcome.cost
        self.hits += int(outcome.cached)
        self.bar.update(self.task, advance=1, info=f"cached {self.hits} · ${self.cost:.4f}")

    def __enter__(self) -> _Progress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()


def dry_run(asks: list[Ask], options: EvalOptions, ledger: Ledger, summary: StageSummary) -> StageSummary:
    """Calls, tokens and cost the evaluation would make; second turns and judges are priced with
    stand-in replies of the full token budget (an upper bound); nothing is called."""
    models = Models(options, ledger, live=False)
    filler = "word " * options.max_tokens
    unreadable: Unreadable = {}

    def model_requests(tasks: tuple[str, ...] | None = None) -> Iterator[tuple[str, Request]]:
        chosen = [a for a in asks if tasks is None or a.item.task in tasks]
        for key, request in first_requests(chosen, unreadable):
            yield key, request
            if key.startswith("reasoning/"):
                yield key, follow_up(request, filler)

    estimates = {"model": models.engines["model"].estimate(model_requests())}
    if "opponent" in models.engines:
        estimates["opponent"] = models.engines["opponent"].estimate(model_requests(FREE_TEXT))
    if "judge" in models.engines:
        judge_requests = [(a.key, judges.vau_eval_request(a.item.gt_description, a.item.gt_analysis, filler, filler, options.judge_max_tokens))
                          for a in asks if a.item.task == "reasoning"]
        if options.pairwise:
            judge_requests += [(f"{a.key}|{o}", judges.pairwise_request("q", a.item.reference, filler, filler, options.judge_max_tokens))
                               for a in asks if a.item.task in FREE_TEXT for o in ("AB", "BA")]
        estimates["judge"] = models.engines["judge"].estimate(judge_requests)
    summary.notes.append("dry run: nothing was called; judge re-asks may add up to one call per VAU-Eval item")
    if unreadable:
        summary.notes.append(f"{len(unreadable)} request(s) have a video that cannot be read; they are not counted")
    summary.add_estimates(estimates, {"model": options.model, "opponent": options.pairwise or "", "judge": options.judge or ""})
    return summary


__all__ = ["EvalOptions", "EvalResult", "ItemResult", "iter_predictions", "run_eval"]
