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

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from vau_annotate.annotate.ledger import Ledger
from vau_annotate.annotate.rundir import RunDir
from vau_annotate.pipelines.demo_data import (
    BASE_MAX_TOKENS, CAPTION_BATCH, CAPTION_POLICY, CLIPS, CSV_NAME, REFLECT_PIXELS, SAMPLE_PIXELS, SAMPLE_POLICY,
    REAL_CLIP, SOURCE_DIR, TINY_DIR, ensure_tiny_model, install_teacher, load_clips, write_source,
)
from vau_annotate.pipelines.demo_show import (
    announce, farewell, show_calls, show_checks, show_examples, show_rejects, show_status, show_summary, step,
)
from vau_annotate.pipelines.report import ReportInputs, write_report
from vau_annotate.pipelines.summary import StageSummary
from vau_annotate.schemas.run import RejectRecord

DEFAULT_RUN = Path("outputs/demo")
DATASET_DIR, TRAIN_DIR, EVAL_DIR = "dataset", "train", "eval"
DEMO_SPLIT, DEMO_SEED = "ratio:0.6,0.2,0.2", 5  # seed 5: 3 train videos, Explosion012 validation, Fighting003 (2 MCQs, a span) test
TRAIN_STEPS = 3
__all__ = ["CSV_NAME", "SOURCE_DIR", "DemoError", "DemoOptions", "DemoResult", "reset_run", "run_demo"]


class DemoError(Exception):
    """Something the user asked for cannot be done (e.g. --fresh on a directory the demo did not make)."""


# -- options and results -------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoOptions:
    """What `vau-annotate demo` was asked for."""

    run: Path = DEFAULT_RUN
    tiny_model: Path | None = None  # a prebuilt tiny model (tests reuse theirs); default: built under RUN
    fresh: bool = False
    show_progress: bool = True
    real_data: Path | None = None  # a folder with the real clip vtest.avi (`make demo` passes $VAU_REAL_DATA)


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
    if options.real_data is not None and not (options.real_data / REAL_CLIP).is_file():
        raise DemoError(f"--real-data {options.real_data} holds no {REAL_CLIP}")
    clips = load_clips(options.real_data)
    teacher = install_teacher(run, clips)
    announce(console, run, teacher)
    before = ledger_totals(run)

    real = [c.file for c in clips if c.real is not None]
    step(console, "1. ingest", f"a VAU-Bench CSV with its real quirks, {len(clips)} clips (one truncated)"
         + (f", the real clip {', '.join(real)} among them" if real else ""))
    source = write_source(run / SOURCE_DIR, clips)
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

        step(console, "6. export", "every config as a Hugging Face dataset (frames embedded), split by video")
        exported = export_dataset(run, options.show_progress)
        show_summary(console, exported.summary)

        step(console, "7. train sft", f"{TRAIN_STEPS} SFT steps of the tiny model on p2c_sft (loss on the assistant's tokens only)")
        sft = train_sft_steps(run, tiny)
        resumed = f" — resumed from {sft.resumed_from}, nothing left to train" if sft.resumed_from else f", mean loss {sft.train_loss:.4f}"
        console.print(f"{sft.global_step} steps{resumed}: {sft.final_dir}")

        step(console, "8. train grpo", f"{TRAIN_STEPS} steps of video GRPO on grpo_qa from the SFT model (format + accuracy rewards)")
        grpo = train_grpo_steps(run, sft.final_dir)
        console.print(f"model: {grpo}")

        step(console, "9. eval", "the GRPO model on the test split: QA (with and without think), grounding, classification")
        evaluated = evaluate(run, grpo, options.show_progress)
        show_summary(console, evaluated.summary)

    step(console, "10. report", "one self-contained page over the run, the dataset, training and eval")
    page = write_report(ReportInputs(run=run, dataset=run / DATASET_DIR, trains=[run / TRAIN_DIR], evals=[run / EVAL_DIR]))
    console.print(f"report: {page}")

    result = DemoResult(checks=check_outcome(run, clips), new_requests=after[0] - before[0], ledger_hits=after[1] - before[1])
    step(console, "status", f"what `vau-annotate status --run {run}` reports")
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


def export_dataset(run: Path, show_progress: bool) -> Any:
    """Every config of the run as a dataset in RUN/dataset (3/1/1 videos for train/validation/test)."""
    from vau_annotate.pipelines.export import ExportOptions, run_export
    from vau_annotate.pipelines.export_write import SplitPlan

    plan = SplitPlan.parse(DEMO_SPLIT, seed=DEMO_SEED)
    return run_export(ExportOptions(runs=(run,), out=run / DATASET_DIR, split=plan, overwrite=True, show_progress=show_progress))


def train_sft_steps(run: Path, tiny: Path) -> Any:
    """The shipped tiny SFT recipe on the demo's p2c_sft config (resumes: a second demo trains no more)."""
    from vau_annotate.train.sft import load_sft_recipe, train_sft

    recipe = load_sft_recipe("sft_tiny", {"model": str(tiny), "dataset": str(run / DATASET_DIR), "dataset_config": "p2c_sft",
                                          "output_dir": str(run / TRAIN_DIR / "sft"), "max_steps": TRAIN_STEPS})
    return train_sft(recipe)


def train_grpo_steps(run: Path, model: Path) -> Path:
    """The shipped tiny GRPO recipe on grpo_qa, starting from the SFT model."""
    from vau_annotate.train.grpo import GRPOConfig, run as run_grpo

    config = GRPOConfig.load("grpo_tiny", {"model": str(model), "dataset": str(run / DATASET_DIR), "dataset_config": ["grpo_qa"],
                                           "output_dir": str(run / TRAIN_DIR / "grpo"), "max_steps": TRAIN_STEPS, "resume": True})
    return run_grpo(config)


def evaluate(run: Path, model: Path, show_progress: bool) -> Any:
    """`vau-annotate eval` of a checkpoint through `hf:` on the dataset's test split (its own ledger)."""
    from vau_annotate.pipelines.evaluate import EvalOptions, run_eval

    options = EvalOptions(data=str(run / DATASET_DIR), model=f"hf:{model}", out=run / EVAL_DIR, tasks=("qa", "tag", "cls"),
                          max_pixels=REFLECT_PIXELS, max_tokens=BASE_MAX_TOKENS, concurrency=4, show_progress=show_progress)
    return run_eval(options)


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
    import datasets

    enabled = hf_logging.is_progress_bar_enabled()
    datasets_enabled = datasets.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()
        if datasets_enabled:
            datasets.enable_progress_bars()


def ledger_totals(run: Path) -> tuple[int, int]:
    """(requests sent to models, calls answered from the ledger) over the run's whole life."""
    path = RunDir(run).ledger_path
    if not path.exists():
        return 0, 0
    with Ledger(path) as ledger:
        totals = ledger.usage_totals()
    return int(totals["requests"]), int(totals["cache_hits"])


# -- what the demo expects ------------------------------------------------------------------------


def check_outcome(run: Path, clips: tuple[Any, ...] = CLIPS) -> list[Check]:
    """The outcomes the recorded teacher was written to produce, read back from the run directory.

    The real clip (with VAU_REAL_DATA) is a normal video with one question: one more chain, two
    more reflection items, no more rejects; it lands in the train split."""
    from vau_annotate.pipelines.runner import StageStore
    from vau_annotate.schemas.cot import CotRecord
    from vau_annotate.schemas.reflection import ReflectionRecord

    rd = RunDir(run)
    rejects = rd.load_rejects()
    cot = StageStore(rd, "cot").accepted(CotRecord)
    reflections = StageStore(rd, "reflect").accepted(ReflectionRecord)
    sampling = rd.frames_path("any", SAMPLE_POLICY, SAMPLE_PIXELS).name
    extra = sum(1 for clip in clips if getattr(clip, "real", None) is not None)

    def reasons(stage: str, shorten: Callable[[str], str]) -> str:
        return "; ".join(sorted(f"{r.item}: {shorten(r.reason)}" for r in rejects if r.stage == stage)) or "none"

    return [
        Check("videos ingested", str(len(clips) - 1), str(len(rd.load_manifest()))),
        Check("ingest rejects", "msad_Robbery_9.mp4: truncated or corrupt", reasons("ingest", lambda r: r.split(":")[0])),
        Check(f"videos sampled ({SAMPLE_POLICY})", str(len(clips) - 1), str(len(rd.sampled_video_ids().get(sampling, ())))),
        Check("build-cot accepted (repaired)", f"{4 + extra} (1)", f"{len(cot)} ({sum(bool(r.provenance.repaired_parts) for r in cot)})"),
        Check("build-cot rejects", "Traffic_accident_7: failed gates: neutrality", reasons("cot", lambda r: r)),
        Check("reflect accepted (repaired)", f"{9 + 2 * extra} (1)", f"{len(reflections)} ({sum(r.provenance.repaired for r in reflections)})"),
        Check("reflect rejects", "Explosion012_x264#qa0: failed gates revised-answer", reasons("reflect", lambda r: r.split(":")[0])),
        Check("base replies from real local inference", f"{10 + 2 * extra} of {10 + 2 * extra}", base_inference(reflections, rejects)),
        Check("dataset configs with rows", "9", str(sum(1 for d in (run / DATASET_DIR).glob("*/") if any(d.glob("*.parquet"))))),
        Check("SFT steps logged", str(TRAIN_STEPS), str(logged_steps(run / TRAIN_DIR / "sft" / "log.jsonl"))),
        Check("GRPO steps logged", str(TRAIN_STEPS), str(logged_steps(run / TRAIN_DIR / "grpo" / "log.jsonl"))),
        Check("eval predictions (4 test items, with and without think)", "8", str(sum(1 for _ in open(run / EVAL_DIR / "predictions.jsonl", encoding="utf-8")) if (run / EVAL_DIR / "predictions.jsonl").exists() else 0)),
        Check("report written", "yes", "yes" if (run / "report.html").is_file() else "no"),
    ]


def logged_steps(log: Path) -> int:
    """The last step a training log reached (0 when there is no log)."""
    if not log.exists():
        return 0
    steps = [json.loads(line).get("step", 0) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    return max(steps, default=0)


def base_inference(reflections: list[Any], rejects: list[RejectRecord]) -> str:
    """How many reflect items got their initial reply from the local hf: model (accepted and rejected)."""
    accepted = sum(r.provenance.base_model.startswith("hf:") and r.provenance.usage["base"].calls == 1 for r in reflections)
    rejected = [r for r in rejects if r.stage == "reflect"]
    answered = sum("initial" in r.detail for r in rejected)
    return f"{accepted + answered} of {len(reflections) + len(rejected)}"


