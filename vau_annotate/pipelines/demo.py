"""`vau-annotate demo`: the tool's main job end to end, offline, in about a minute.

A fresh machine has no model API and no model weights, yet a user should see what the tool does
before paying for a single call. The demo therefore builds everything it needs and says plainly
which parts are stand-ins:

- the data are real in form: synthetic H.264 clips (`annotate/synth.py`) and a VAU-Bench CSV with
  the benchmark's quirks (`ucf_`/`msad_` prefixes the files on disk lack, `-1,-1` unknown span,
  `0,0` normal, Reasoning as a dict string and as `### Key: value`, a Correct Option given as the
  option's text), plus one truncated video that ingest must reject with a reason;
- the base model of `reflect` is real: local transformers inference (`hf:`) of a random-weight
  tiny Qwen2.5-VL built offline (`train/tiny.py`); its replies are noise, so they do not parse and
  are judged wrong, which is what the reflection step is for;
- the captioner, reasoner and teacher are a *recorded* stand-in: the `mock:` backend answering
  from `data/demo_teacher.json`, whose standing rules were written for the demo's annotations (the
  synthetic clips are colour gradients; the replies do not come from looking at them). Most
  replies pass the gates; one build-cot answer and one reflect reply fail a gate first and are
  repaired; one build-cot video and one reflect item stay wrong and are rejected with reasons.

Every stage runs through the same pipeline functions as the CLI commands, so the run directory is
an ordinary run: `vau-annotate status --run RUN` works on it, and running the demo again resumes
(finished items are skipped; the rejected ones are retried, answered entirely from the ledger).
The demo ends with a table of expected outcomes; its exit status is 0 when they all hold.
"""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from vau_annotate.annotate.ledger import Ledger
from vau_annotate.annotate.rundir import RunDir, atomic_write_text
from vau_annotate.annotate.synth import make_clip
from vau_annotate.pipelines.summary import StageSummary
from vau_annotate.schemas.run import RejectRecord

DEFAULT_RUN = Path("outputs/demo")
TEACHER_SCRIPT = "demo_teacher.json"  # package data: vau_annotate/data/
SOURCE_DIR = "source"
CSV_NAME = "vau_bench_demo.csv"
TINY_DIR = "tiny-model"
FPS = 10
WIDTH, HEIGHT = 320, 240
SAMPLE_POLICY = "uniform:16"
SAMPLE_PIXELS = 224 * 224
CAPTION_POLICY = "uniform:8"  # the recorded captioner answers one batch of 8 frames per video
CAPTION_BATCH = 8
REFLECT_PIXELS = 28 * 28 * 16  # the tiny model's own pixel budget: larger frames only cost time
BASE_MAX_TOKENS = 24  # the tiny model's text is noise; a few tokens show that as well as many
CSV_COLUMNS = ("Video Name", "Question", "Option 1", "Option 2", "Option 3", "Option 4", "Correct Option",
               "Key Object", "Description", "Reasoning", "Anomaly Class", "Start Time", "End Time")
REAL_CAPTIONER = "dashscope:qwen-vl-max"
REAL_REASONER = "openai:gpt-4o"


class DemoError(Exception):
    """Something the user asked for cannot be done (e.g. --fresh on a directory the demo did not make)."""


# -- the synthetic dataset ---------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    """One VAU-Bench multiple-choice row; `correct` is the Correct Option cell exactly as written."""

    text: str
    options: tuple[str, str, str, str]
    correct: str


@dataclass(frozen=True)
class DemoClip:
    """One video of the demo dataset: the file on disk and the CSV rows that describe it."""

    file: str
    csv_name: str
    seconds: int
    anomaly_class: str
    start: str
    end: str
    key_object: str
    description: str
    reasoning: str
    questions: tuple[Question, ...]
    truncated: bool = False


CLIPS: tuple[DemoClip, ...] = (
    DemoClip(
        file="Fighting003_x264.mp4", csv_name="ucf_Fighting003_x264", seconds=10, anomaly_class="Fighting", start="3.0", end="6.0",
        key_object="two people at a bus shelter", description="Two people at a bus stop push and punch each other until one walks away.",
        reasoning=("{'Specific Anomaly Type': 'Fighting', 'Location': 'bus shelter on a city sidewalk', 'Key Evidence': "
                   "['a push in the chest', 'a punch', 'grappling against the glass wall'], 'Detailed Explanation': "
                   "'Both people exchange blows in a place where people normally wait calmly.', 'Conclusion': 'A fight.'}"),
        questions=(
            Question("What do the two people at the bus stop do?",
                     ("They wait for the bus together", "They push and punch each other", "They help a fallen passenger", "They leave in a taxi"), "B"),
            Question("How does the person on the bench react?",
                     ("Joins the fight", "Films it with a phone", "Stands up and keeps a distance", "Keeps sleeping on the bench"), "C"),
        ),
    ),
    DemoClip(
        file="Assault_2.mp4", csv_name="msad_Assault_2.mp4", seconds=9, anomaly_class="Assault", start="2.0", end="5.0",
        key_object="a commuter with a backpack", description="A person following a commuter shoves them to the floor, kicks them and runs away.",
        reasoning=("### Specific Anomaly Type: Assault ### Location: subway station corridor ### Key Evidence: ['a shove from behind', "
                   "'a kick at a person on the floor'] ### Conclusion: An unprovoked attack on a commuter."),
        questions=(
            Question("What happens to the person walking through the station corridor?",
                     ("The person stops to buy a ticket", "The person is shoved to the floor and kicked by someone following them",
                      "The person slips on a wet floor", "The person runs to catch a train"), "Option 2"),
        ),
    ),
    DemoClip(
        file="Traffic_accident_7.mp4", csv_name="msad_Traffic_accident_7.mp4", seconds=11, anomaly_class="Traffic_accident", start="4.0", end="7.5",
        key_object="a silver car and a motorcycle", description="A car runs a red light and hits a motorcycle; the rider falls onto the road.",
        reasoning="### Specific Anomaly Type Traffic accident ### Location The middle of the intersection ### Conclusion: A collision caused by a red-light violation.",
        questions=(
            Question("What causes the crash at the intersection?",
                     ("A car runs the red light and hits a motorcycle", "A motorcycle skids on a wet road", "A bus brakes suddenly",
                      "A pedestrian steps into traffic"), "A car runs the red light and hits a motorcycle"),
        ),
    ),
    DemoClip(
        file="Explosion012_x264.mp4", csv_name="ucf_Explosion012_x264.mp4", seconds=12, anomaly_class="Explosion", start="-1", end="-1",
        key_object="a storage tank", description="A storage tank in an industrial yard explodes and burns.",
        reasoning="{'Specific Anomaly Type': 'Explosion', 'Location': 'industrial yard', 'Conclusion': 'A tank bursts into a fireball.'}",
        questions=(
            Question("What causes the smoke in the yard?",
                     ("Exhaust from a truck", "A small fire in a waste bin", "Fog rising from the ground", "A storage tank explodes"), "D"),
        ),
    ),
    DemoClip(
        file="Normal_Videos_015_x264.mp4", csv_name="ucf_Normal_Videos_015_x264.mp4", seconds=8, anomaly_class="Normal", start="0", end="0",
        key_object="shoppers at a checkout", description="Shoppers pay at a supermarket checkout and leave.", reasoning="",
        questions=(
            Question("What are the people at the checkout doing?",
                     ("Paying for their groceries and leaving", "Arguing with the cashier", "Running out without paying", "Helping someone who fell"), "A"),
        ),
    ),
    DemoClip(
        file="Robbery_9.mp4", csv_name="msad_Robbery_9.mp4", seconds=10, anomaly_class="Robbery", start="1.0", end="4.0",
        key_object="a shop counter", description="A person takes money from a shop counter by force.", reasoning="",
        questions=(), truncated=True,
    ),
)


@dataclass(frozen=True)
class SourceFiles:
    """Where the demo dataset lies: the annotation CSV and the folder of videos."""

    csv: Path
    videos: Path


def write_source(root: Path) -> SourceFiles:
    """The demo dataset under `root`: clips that already exist are kept (they are deterministic)."""
    videos = root / "videos"
    for clip in CLIPS:
        target = videos / clip.file
        if not target.exists():
            write_clip(clip, target, root / ".partial")
    csv_path = root / CSV_NAME
    atomic_write_text(csv_path, annotation_csv(CLIPS))
    return SourceFiles(csv_path, videos)


def write_clip(clip: DemoClip, target: Path, scratch: Path) -> None:
    """Encode the clip in a scratch folder and move it into place, so a killed run leaves no half file.

    A truncated clip keeps the first third of its bytes: the MP4 index (written at the end) is
    lost, as when a download or copy is cut off.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    made = make_clip(scratch / clip.file, seconds=clip.seconds, fps=FPS, width=WIDTH, height=HEIGHT)
    if clip.truncated:
        data = made.read_bytes()
        made.write_bytes(data[: len(data) // 3])
    target.parent.mkdir(parents=True, exist_ok=True)
    made.replace(target)
    shutil.rmtree(scratch, ignore_errors=True)


def annotation_csv(clips: tuple[DemoClip, ...]) -> str:
    """The VAU-Bench CSV: one row per question; a video without questions gets one row of -1 cells."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for clip in clips:
        tail = [clip.key_object, clip.description, clip.reasoning, clip.anomaly_class, clip.start, clip.end]
        for q in clip.questions:
            writer.writerow([clip.csv_name, q.text, *q.options, q.correct, *tail])
        if not clip.questions:
            writer.writerow([clip.csv_name, "-1", "-1", "-1", "-1", "-1", "-1", *tail])
    return buffer.getvalue()


# -- the models ------------------------------------------------------------------------------------


def teacher_script() -> Path:
    """The recorded teacher shipped with the package."""
    return Path(str(resources.files("vau_annotate.data").joinpath(TEACHER_SCRIPT)))


def install_teacher(run: Path) -> Path:
    """A copy of the recorded script in the run directory, so the run shows what answered it."""
    target = run / "recorded_teacher.json"
    atomic_write_text(target, teacher_script().read_text(encoding="utf-8"))
    return target.resolve()


def ensure_tiny_model(directory: Path) -> Path:
    """The tiny random-weight Qwen2.5-VL, built once per run directory (complete or absent)."""
    from vau_annotate.train.tiny import build_tiny_model

    if (directory / "config.json").is_file():
        return directory.resolve()
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    build_tiny_model(partial)
    partial.replace(directory)
    return directory.resolve()


# -- options and results -------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoOptions:
    """What `vau-annotate demo` was asked for."""

    run: Path = DEFAULT_RUN
    tiny_model: Path | None = None  # a prebuilt tiny model (tests reuse theirs); default: built under RUN
    fresh: bool = False
    show_progress: bool = True


@dataclass(frozen=True)
class Check:
    """One expected outcome of the demo, and what the run actually produced."""

    what: str
    expected: str
    got: str

    @property
    def ok(self) -> bool:
        return self.expected == self.got


@dataclass
class DemoResult:
    """The demo's verdict: its checks and the model calls this invocation made or took from the ledger."""

    checks: list[Check] = field(default_factory=list)
    new_requests: int = 0
    ledger_hits: int = 0

    @property
    def exit_code(self) -> int:
        """0 when the pipeline did what the demo expects (its rejects included), 1 otherwise."""
        return 0 if self.checks and all(c.ok for c in self.checks) else 1


def reset_run(run: Path) -> None:
    """Delete a previous demo run for --fresh; refuse any directory the demo did not make."""
    if not run.exists():
        return
    if not run.is_dir():
        raise DemoError(f"{run} is not a directory")
    if any(run.iterdir()) and not (run / SOURCE_DIR / CSV_NAME).is_file():
        raise DemoError(f"--fresh would delete {run}, which is not a demo run (no {SOURCE_DIR}/{CSV_NAME}); choose another --run")
    shutil.rmtree(run)


# -- the demo -------------------------------------------------------------------------------------


def run_demo(options: DemoOptions, console: Console) -> DemoResult:
    """Every stage in order, each printed as it finishes, then status, the checks and the real commands.

    Raises DemoError for a bad request and lets RunStopped through (the CLI maps both to exit codes).
    """
    from vau_annotate.pipelines.ingest import run_ingest
    from vau_annotate.pipelines.sample import run_sample

    run = options.run
    if options.fresh:
        reset_run(run)
    run.mkdir(parents=True, exist_ok=True)
    teacher = install_teacher(run)
    announce(console, run, teacher)
    before = ledger_totals(run)

    step(console, "1. ingest", f"a VAU-Bench CSV with its real quirks, {len(CLIPS)} clips (one truncated)")
    source = write_source(run / SOURCE_DIR)
    show_summary(console, run_ingest(source="vau-bench", annotations=source.csv, videos=source.videos, run=run))

    step(console, "2. sample", f"{SAMPLE_POLICY} frames of every video, keyframe-aware, resized to a pixel budget")
    show_summary(console, run_sample(run=run, policy=SAMPLE_POLICY, max_pixels=SAMPLE_PIXELS, show_progress=options.show_progress))

    with quiet_model_loading():
        step(console, "3. tiny model", "a random-weight Qwen2.5-VL built offline: the real (local) base model of reflect")
        tiny = options.tiny_model.resolve() if options.tiny_model else ensure_tiny_model(run / TINY_DIR)
        console.print(f"base model: hf:{tiny}")

        step(console, "4. build-cot", "captions → 4 reasoning steps → tagged answer → gates (recorded captioner and reasoner)")
        show_summary(console, build_cot(run, teacher, options.show_progress))

        step(console, "5. reflect", "the tiny base model answers (real inference) → recorded teacher reflects and revises → gates")
        show_summary(console, reflect(run, teacher, tiny, options.show_progress))

    show_examples(console, run)
    after = ledger_totals(run)
    result = DemoResult(checks=check_outcome(run), new_requests=after[0] - before[0], ledger_hits=after[1] - before[1])
    step(console, "6. status", f"what `vau-annotate status --run {run}` reports")
    show_status(console, run)
    show_rejects(console, run)
    show_calls(console, result)
    show_checks(console, result)
    farewell(console, run, teacher, tiny)
    return result


def build_cot(run: Path, teacher: Path, show_progress: bool) -> StageSummary:
    """build-cot with the recorded teacher as captioner and reasoner (one backend serves both)."""
    from vau_annotate.pipelines.cot import CotOptions, run_cot

    spec = f"mock:{teacher}"
    options = CotOptions(captioner=spec, reasoner=spec, caption_policy=CAPTION_POLICY, caption_batch=CAPTION_BATCH,
                         max_pixels=SAMPLE_PIXELS, retry_rejected=True, show_progress=show_progress)
    return run_cot(run, options)


def reflect(run: Path, teacher: Path, tiny: Path, show_progress: bool) -> StageSummary:
    """reflect (QA and grounding) with the tiny model as base and the recorded teacher."""
    from vau_annotate.pipelines.reflect import ReflectOptions, run_reflect

    options = ReflectOptions(teacher=f"mock:{teacher}", base=f"hf:{tiny}", task="both", max_pixels=REFLECT_PIXELS,
                             base_max_tokens=BASE_MAX_TOKENS, retry_rejected=True, show_progress=show_progress)
    return run_reflect(run, options)


@contextmanager
def quiet_model_loading() -> Iterator[None]:
    """Switch off transformers' progress bars (writing and loading weights) while the demo runs.

    They would interleave with the demo's tables and say nothing the demo does not; the previous
    setting is restored afterwards.
    """
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def ledger_totals(run: Path) -> tuple[int, int]:
    """(requests sent to models, calls answered from the ledger) over the run's whole life."""
    path = RunDir(run).ledger_path
    if not path.exists():
        return 0, 0
    with Ledger(path) as ledger:
        totals = ledger.usage_totals()
    return int(totals["requests"]), int(totals["cache_hits"])


# -- what the demo expects ------------------------------------------------------------------------


def check_outcome(run: Path) -> list[Check]:
    """The outcomes the recorded teacher was written to produce, read back from the run directory."""
    from vau_annotate.pipelines.runner import StageStore
    from vau_annotate.schemas.cot import CotRecord
    from vau_annotate.schemas.reflection import ReflectionRecord

    rd = RunDir(run)
    rejects = rd.load_rejects()
    cot = StageStore(rd, "cot").accepted(CotRecord)
    reflections = StageStore(rd, "reflect").accepted(ReflectionRecord)
    sampling = rd.frames_path("any", SAMPLE_POLICY, SAMPLE_PIXELS).name

    def reasons(stage: str, shorten: Callable[[str], str]) -> str:
        return "; ".join(sorted(f"{r.item}: {shorten(r.reason)}" for r in rejects if r.stage == stage)) or "none"

    return [
        Check("videos ingested", str(len(CLIPS) - 1), str(len(rd.load_manifest()))),
        Check("ingest rejects", "msad_Robbery_9.mp4: truncated or corrupt", reasons("ingest", lambda r: r.split(":")[0])),
        Check(f"videos sampled ({SAMPLE_POLICY})", str(len(CLIPS) - 1), str(len(rd.sampled_video_ids().get(sampling, ())))),
        Check("build-cot accepted (repaired)", "4 (1)", f"{len(cot)} ({sum(bool(r.provenance.repaired_parts) for r in cot)})"),
        Check("build-cot rejects", "Traffic_accident_7: failed gates: neutrality", reasons("cot", lambda r: r)),
        Check("reflect accepted (repaired)", "9 (1)", f"{len(reflections)} ({sum(r.provenance.repaired for r in reflections)})"),
        Check("reflect rejects", "Explosion012_x264#qa0: failed gates revised-answer", reasons("reflect", lambda r: r.split(":")[0])),
        Check("base replies from real local inference", "10 of 10", base_inference(reflections, rejects)),
    ]


def base_inference(reflections: list[Any], rejects: list[RejectRecord]) -> str:
    """How many reflect items got their initial reply from the local hf: model (accepted and rejected)."""
    accepted = sum(r.provenance.base_model.startswith("hf:") and r.provenance.usage["base"].calls == 1 for r in reflections)
    rejected = [r for r in rejects if r.stage == "reflect"]
    answered = sum("initial" in r.detail for r in rejected)
    return f"{accepted + answered} of {len(reflections) + len(rejected)}"


# -- printing -------------------------------------------------------------------------------------


def announce(console: Console, run: Path, teacher: Path) -> None:
    """The opening notice: which parts are real and which are a recorded stand-in."""
    console.print(Panel.fit(
        "[bold]vau-annotate demo[/] — the whole annotation job on a synthetic VAU-Bench dataset, offline.\n\n"
        "[bold yellow]RECORDED TEACHER:[/] no model API is reachable here, so the captioner, reasoner and teacher are a "
        "recorded stand-in: the [bold]mock:[/] backend answering from a script written for this demo's annotations "
        f"({teacher}). Its replies were not produced by looking at the clips (they are colour gradients). Most pass the "
        "quality gates; in each model stage one reply is repaired and one item is rejected, on purpose, to show the reasons.\n\n"
        "[bold green]REAL:[/] ingest, frame sampling, the gates, the ledger, and the reflect base model: local inference of a "
        "random-weight tiny Qwen2.5-VL, whose replies are noise and are judged wrong.",
        title="what is real and what is recorded", border_style="yellow",
    ))
    console.print(f"run directory: {run}")


def step(console: Console, title: str, what: str) -> None:
    console.rule(f"[bold]{title}[/]")
    console.print(what)


def show_summary(console: Console, summary: StageSummary) -> None:
    """A stage's counts and notes, as the CLI command would print them."""
    table = Table(title=summary.stage, show_header=False)
    for key, value in summary.counts.items():
        table.add_row(key, str(value))
    console.print(table)
    for note in summary.notes:
        console.print(note)
    if summary.rejected:
        console.print(f"[yellow]{summary.rejected} item(s) rejected[/] (expected in this demo; reasons below)")


def show_examples(console: Console, run: Path) -> None:
    """One accepted record of each model stage, as the dataset will hold it (the files are JSON)."""
    from vau_annotate.pipelines.runner import StageStore
    from vau_annotate.schemas.cot import CotRecord
    from vau_annotate.schemas.reflection import ReflectionRecord

    rd = RunDir(run)
    chains = StageStore(rd, "cot").accepted(CotRecord)
    chain = next((r for r in chains if r.provenance.repaired_parts), chains[0] if chains else None)
    if chain is not None:
        table = Table(title=f"a build-cot record: {run / 'cot' / chain.video_id}.json", show_header=False)
        table.add_column(overflow="fold")
        table.add_column(overflow="fold")
        table.add_row("captions", f"{len(chain.captions)}, e.g. [{chain.captions[0].timestamp:.1f} s] {chain.captions[0].text}")
        table.add_row("think", clip(chain.think, 300))
        table.add_row("answer", chain.answer)
        table.add_row("repaired", ", ".join(chain.provenance.repaired_gates) or "-")
        console.print(table)
    reflections = [r for r in StageStore(rd, "reflect").accepted(ReflectionRecord) if r.task == "qa"]
    if reflections:
        record = reflections[0]
        table = Table(title=f"a reflect record ({record.id}, {record.transition})", show_header=False)
        table.add_column(overflow="fold")
        table.add_column(overflow="fold")
        table.add_row("question", record.question)
        table.add_row("base reply (tiny model)", record.initial.text.strip() or "(empty)")
        table.add_row("verdict", f"{record.initial.prediction or 'no answer read'} vs truth {record.ground_truth}: {'right' if record.initial.correct else 'wrong'}")
        table.add_row("reflection", record.reflection)
        table.add_row("revised", f"<think>{record.revised.think}</think><answer>{record.revised.answer}</answer>")
        console.print(table)


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def show_status(console: Console, run: Path) -> None:
    from vau_annotate.pipelines.status import collect_status, render_status

    render_status(collect_status(run), console)


def show_rejects(console: Console, run: Path) -> None:
    """rejects.jsonl, one line per reject: every reason a person needs to fix the data or the prompt."""
    table = Table(title=f"{run / 'rejects.jsonl'} — expected in this demo")
    for column in ("stage", "item", "reason"):
        table.add_column(column, overflow="fold")
    for reject in RunDir(run).load_rejects():
        table.add_row(reject.stage, reject.item, explain(reject))
    console.print(table)


def explain(reject: RejectRecord) -> str:
    """The reason, plus what each failed gate found when the reason only names the gates (build-cot)."""
    named = reject.reason.removeprefix("failed gates: ")
    if named == reject.reason:
        return reject.reason
    findings = [str(reject.detail[name]) for name in named.split(", ") if name in reject.detail]
    return f"{reject.reason} — {'; '.join(findings)}" if findings else reject.reason


def show_calls(console: Console, result: DemoResult) -> None:
    console.print(
        f"model calls made by this invocation: [bold]{result.new_requests}[/]; answered from the ledger: [bold]{result.ledger_hits}[/]"
        + ("  (a resumed run: finished items are skipped, rejected ones retried from the ledger)" if result.new_requests == 0 and result.ledger_hits else "")
    )


def show_checks(console: Console, result: DemoResult) -> None:
    table = Table(title="expected outcomes")
    for column in ("check", "expected", "got", ""):
        table.add_column(column, overflow="fold")
    for check in result.checks:
        table.add_row(check.what, check.expected, check.got, "[green]ok[/]" if check.ok else "[bold red]DIFFERS[/]")
    console.print(table)


def farewell(console: Console, run: Path, teacher: Path, tiny: Path) -> None:
    """The closing notice: the teacher was recorded, and the commands to run with a real one."""
    source = run / SOURCE_DIR
    real = Path("outputs/my-run")
    console.print(Panel.fit(
        "[bold yellow]The captioner, reasoner and teacher above were RECORDED[/] (mock:, no model API reachable here). "
        "Rejects in a demo are expected.\n\n"
        "With real models, on the demo's files or your own (keys from the environment: DASHSCOPE_API_KEY, OPENAI_API_KEY):\n"
        f"  vau-annotate ingest {source / CSV_NAME} --source vau-bench --videos {source / 'videos'} --run {real}\n"
        f"  vau-annotate sample --run {real} --policy {SAMPLE_POLICY}\n"
        f"  vau-annotate build-cot --run {real} --captioner {REAL_CAPTIONER} --reasoner {REAL_REASONER} --dry-run\n"
        f"  vau-annotate build-cot --run {real} --captioner {REAL_CAPTIONER} --reasoner {REAL_REASONER}\n"
        f"  vau-annotate reflect --run {real} --base vllm:Qwen/Qwen2.5-VL-3B-Instruct --teacher {REAL_REASONER} --task both\n"
        f"  vau-annotate status --run {real}\n\n"
        "The demo's own stages as commands (finished items are skipped; the rejected ones run again, every call "
        "answered from this run's ledger):\n"
        f"  vau-annotate build-cot --run {run} --captioner mock:{teacher} --reasoner mock:{teacher} "
        f"--caption-policy {CAPTION_POLICY} --caption-batch {CAPTION_BATCH} --max-pixels {SAMPLE_PIXELS} --retry-rejected\n"
        f"  vau-annotate reflect --run {run} --base hf:{tiny} --teacher mock:{teacher} --max-pixels {REFLECT_PIXELS} "
        f"--base-max-tokens {BASE_MAX_TOKENS} --retry-rejected",
        title="next: real models", border_style="yellow",
    ))
