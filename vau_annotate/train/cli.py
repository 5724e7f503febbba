"""`vau-annotate train …`: the training sub-commands (added to the main CLI with one add_typer line).

Kept light at import time: torch/transformers load only when a command runs, so `vau-annotate
--help` stays fast.
"""

from __future__ import annotations

from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

train_app = typer.Typer(
    name="train",
    help="Train Qwen2.5-VL models on exported datasets with flat YAML recipes (see `train configs`).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()

CONFIG_OPTION = typer.Option(..., "--config", "-c", help="A recipe: a shipped name (see `train configs`) or a YAML file.")
OVERRIDES_ARGUMENT = typer.Argument(None, help="key=value overrides of recipe keys, e.g. learning_rate=2e-5 lora=true.", show_default=False)


@train_app.command("configs")
def configs() -> None:
    """List the shipped recipes (name, description)."""
    from vau_annotate.train.config import describe, shipped_configs

    table = Table("recipe", "description")
    for name, path in shipped_configs().items():
        table.add_row(name, describe(path))
    out.print(table)


@train_app.command("sft")
def sft(config: str = CONFIG_OPTION, overrides: Optional[List[str]] = OVERRIDES_ARGUMENT) -> None:
    """Supervised fine-tuning on an exported chat config (p2c_sft, reflect_sft, reflect_sft_conditioned).

    Multi-GPU: `accelerate launch --config_file CONFIGS/accelerate/zero2.yaml -m vau_annotate.cli train sft --config …`.
    """
    from vau_annotate.train.config import RecipeError

    try:
        from vau_annotate.train.sft import load_sft_recipe

        recipe = load_sft_recipe(config, list(overrides or []))
    except ImportError as exc:
        console.print(escape(f"train sft needs the train extra (pip install 'vau-annotate[train]'): {exc.name} is missing"), style="red")
        raise typer.Exit(2) from None
    except RecipeError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    from vau_annotate.train.sft import train_sft

    try:
        result = train_sft(recipe)
    except FileNotFoundError as exc:  # a missing export folder, model or checkpoint: a usage error
        console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    except ValueError as exc:  # rows that cannot be trained on (wrong config, bad frames): stopped
        console.print(f"[red]train sft stopped: {escape(str(exc))}[/red]")
        raise typer.Exit(1) from None
    resumed = f" (resumed from {result.resumed_from})" if result.resumed_from else ""
    out.print(f"trained {result.global_step} steps{resumed} in {result.seconds:.1f} s, mean loss {result.train_loss:.4f}")
    out.print(f"model: {result.final_dir}   log: {result.output_dir / 'log.jsonl'}")


@train_app.command("grpo")
def grpo(config: str = CONFIG_OPTION, overrides: Optional[List[str]] = OVERRIDES_ARGUMENT) -> None:
    """GRPO with the papers' rewards on an exported grpo_* config, the video in every forward.

    Recipes: grpo_vau_qwen2_5_vl_3b (VAU-R1), grpo_vad_r1_qwen2_5_vl_3b (AVA-GRPO), grpo_srvau_qwen2_5_vl_3b
    (reflection RL), grpo_tiny. Exit status 3 when rows were rejected (see OUTPUT_DIR/rejects.jsonl).
    Multi-GPU: `accelerate launch --config_file CONFIGS/accelerate/zero2.yaml -m vau_annotate.cli train grpo --config …`.
    """
    from vau_annotate.train.config import RecipeError

    try:
        from vau_annotate.train.grpo import GRPOConfig, GRPORecipe

        recipe = GRPOConfig.load(config, list(overrides or []))
    except ImportError as exc:
        console.print(f"[red]train grpo needs the train extra (pip install 'vau-annotate[train]'): {exc.name} is missing[/red]")
        raise typer.Exit(2) from None
    except (RecipeError, ValueError, KeyError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    try:
        trainer = GRPORecipe(recipe)
        final = trainer.train()
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        console.print(f"[red]train grpo stopped: {exc}[/red]")
        raise typer.Exit(1) from None
    out.print(f"trained {trainer.step} GRPO steps; model: {final}   log: {trainer.log_path}")
    if trainer.rejected:
        out.print(f"{trainer.rejected} row(s) rejected: {trainer.output_dir / 'rejects.jsonl'}")
        raise typer.Exit(3)
