"""``jemc-infer train``: train a Table 1 preset on a feature dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from jemc_infer.cli._common import echo_err, handle_errors
from jemc_infer.config import LossMode, TextPooling
from jemc_infer.errors import InputError
from jemc_infer.train.presets import PRESETS

app = typer.Typer()


@app.command()
@handle_errors
def train(
    data: Annotated[Path, typer.Option(help="Feature dataset directory (from `jemc-infer data ...`).")],
    preset: Annotated[str, typer.Option(help=f"Table 1 configuration: {', '.join(PRESETS)}.")],
    out: Annotated[Path, typer.Option(help="Bundle directory to write; run state and log go to OUT.run/.")],
    epochs: Annotated[int, typer.Option(min=1, help="Epochs.")] = 30,
    batch_size: Annotated[int, typer.Option(min=2, help="Captions per step.")] = 128,
    lr: Annotated[float, typer.Option(min=0.0, help="Adam learning rate.")] = 2e-4,
    lr_step: Annotated[int, typer.Option(min=1, help="Decay the learning rate every N epochs.")] = 15,
    lr_gamma: Annotated[float, typer.Option(min=0.0, help="Decay factor.")] = 0.1,
    loss: Annotated[LossMode | None, typer.Option(help="Override the preset's loss.")] = None,
    margin: Annotated[float, typer.Option(help="Hinge margin.")] = 0.2,
    grad_clip: Annotated[float, typer.Option(min=0.0, help="Max gradient norm per space.")] = 2.0,
    embed_dim: Annotated[int, typer.Option(min=1, help="Joint-space size.")] = 1024,
    word_dim: Annotated[int, typer.Option(min=1, help="Word-embedding size.")] = 300,
    text_confidence: Annotated[float, typer.Option(min=0.0, max=8.0, help="Weigh each space's cosine by the norm of its text encoder's "
                                                         "state to this power (0, the paper: plain cosines; the demo uses 4). "
                                                         "Lets a fused model answer a query only one space can.")] = 0.0,
    text_pooling: Annotated[TextPooling, typer.Option(help="What each text encoder keeps of its GRU's states: last (the paper: "
                                                      "the state at the last word) or max (each dimension's maximum over the "
                                                      "words; the demo uses it: short queries find more).")] = TextPooling.LAST,
    min_count: Annotated[int, typer.Option(min=1, help="Vocabulary: keep words seen this often.")] = 4,
    seed: Annotated[int, typer.Option(help="Random seed (runs are deterministic on the CPU).")] = 0,
    checkpoint_seconds: Annotated[float, typer.Option(min=0.0, help="Checkpoint within an epoch this often.")] = 120.0,
    device: Annotated[str, typer.Option(help="auto (CUDA when available), cpu, cuda, cuda:N.")] = "auto",
    restart: Annotated[bool, typer.Option("--restart", help="Discard OUT.run/ instead of resuming it.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no per-epoch lines (the run's log.jsonl keeps them).")] = False,
) -> None:
    """Train a JEMC model; keeps the epoch with the best validation rsum as a bundle.

    Rerunning the same command after an interruption resumes from the last checkpoint.
    """
    from jemc_infer.train.loop import RunConflictError, TrainConfig
    from jemc_infer.train.loop import train as run_training

    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, lr_step=lr_step, lr_gamma=lr_gamma, loss=loss,
                         margin=margin, grad_clip=grad_clip, embed_dim=embed_dim, word_dim=word_dim,
                         min_count=min_count, seed=seed, checkpoint_seconds=checkpoint_seconds, device=device,
                         text_confidence=text_confidence, text_pooling=text_pooling)
    try:
        result = run_training(data, preset, out, config, restart=restart, progress=not quiet, echo=echo_err)
    except RunConflictError as err:  # the same error, naming this command's options
        raise InputError(f"{err.where} | {err.got} | expected {err.expected}; pass --restart to discard it "
                         "or choose another --out") from err
    typer.echo(f"{result.bundle}: best validation rsum {result.best_rsum:.1f} at epoch {result.best_epoch + 1} "
               f"(log: {result.log})")
