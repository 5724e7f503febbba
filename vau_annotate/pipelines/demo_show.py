"""What `vau-annotate demo` prints: the notices about what is real and what is recorded, each
stage's summary, one record of each kind, status, rejects, the checks, and the real commands."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from vau_annotate.annotate.rundir import RunDir
from vau_annotate.pipelines.demo_data import (
    BASE_MAX_TOKENS, CAPTION_BATCH, CAPTION_POLICY, CSV_NAME, REAL_CAPTIONER, REAL_REASONER, REFLECT_PIXELS, SAMPLE_PIXELS,
    SAMPLE_POLICY, SOURCE_DIR,
)
from vau_annotate.pipelines.summary import StageSummary
from vau_annotate.schemas.run import RejectRecord

if TYPE_CHECKING:
    from vau_annotate.pipelines.demo import DemoResult


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
    console.print(summary.counts_table())
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
        f"  vau-annotate status --run {real}\n"
        f"  vau-annotate export --run {real} --out {real}/dataset --push-to-hub YOU/vau-reasoning\n"
        f"  vau-annotate train sft --config sft_p2c_qwen2_5_vl_3b dataset={real}/dataset output_dir={real}/train/sft\n"
        f"  vau-annotate train grpo --config grpo_vad_r1_qwen2_5_vl_3b dataset={real}/dataset model={real}/train/sft/final\n"
        f"  vau-annotate eval --data {real}/dataset --model hf:{real}/train/grpo/final --out {real}/eval --judge {REAL_REASONER}\n"
        f"  vau-annotate report --run {real} --dataset {real}/dataset --train {real}/train --eval {real}/eval\n\n"
        "The demo's own stages as commands (finished items are skipped; the rejected ones run again, every call "
        "answered from this run's ledger):\n"
        f"  vau-annotate build-cot --run {run} --captioner mock:{teacher} --reasoner mock:{teacher} "
        f"--caption-policy {CAPTION_POLICY} --caption-batch {CAPTION_BATCH} --max-pixels {SAMPLE_PIXELS} --retry-rejected\n"
        f"  vau-annotate reflect --run {run} --base hf:{tiny} --teacher mock:{teacher} --max-pixels {REFLECT_PIXELS} "
        f"--base-max-tokens {BASE_MAX_TOKENS} --retry-rejected",
        title="next: real models", border_style="yellow",
    ))
