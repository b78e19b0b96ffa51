"""``jemc-infer table1``: train and evaluate every Table 1 configuration, print the table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from jemc_infer.cli._common import echo_err, fail, handle_errors, parse_csv
from jemc_infer.config import TextPooling

app = typer.Typer()


def _loss(name: str | None):  # noqa: ANN202 - LossMode, imported with torch-free config
    from jemc_infer.config import LossMode

    if name is None:
        return None
    try:
        return LossMode(name)
    except ValueError:
        raise fail(f"--loss | {name!r} | expected one of {', '.join(m.value for m in LossMode)}") from None


@app.command()
@handle_errors
def table1(
    data: Annotated[Path, typer.Option(help="Feature dataset directory.")],
    out: Annotated[Path, typer.Option(help="Work directory: one bundle per preset, table1.json.")] = Path("table1-runs"),
    epochs: Annotated[int, typer.Option(min=1, help="Epochs per preset (30 in the paper).")] = 30,
    presets: Annotated[str | None, typer.Option(help="Comma-separated presets; default: all the dataset's features allow.")] = None,
    split: Annotated[str, typer.Option(help="Split to report.")] = "test",
    embed_dim: Annotated[int, typer.Option(min=1, help="Joint-space size.")] = 1024,
    word_dim: Annotated[int, typer.Option(min=1, help="Word-embedding size.")] = 300,
    batch_size: Annotated[int, typer.Option(min=2, help="Captions per step.")] = 128,
    lr: Annotated[float, typer.Option(min=0.0, help="Adam learning rate.")] = 2e-4,
    lr_step: Annotated[int, typer.Option(min=1, help="Decay the learning rate every N epochs.")] = 15,
    margin: Annotated[float, typer.Option(help="Hinge margin (0.2 in the paper; the demo uses 0.4).")] = 0.2,
    loss: Annotated[str | None, typer.Option(help="Train every row with this loss (sum, hardest, weighted) "
                                                  "instead of each preset's own.")] = None,
    text_confidence: Annotated[float, typer.Option(min=0.0, max=8.0, help="Weigh each space's cosine by the norm of its text encoder's "
                                                         "state to this power (0, the paper: plain cosines; the demo uses 4). "
                                                         "Lets a fused model answer a query only one space can.")] = 0.0,
    text_pooling: Annotated[TextPooling, typer.Option(help="What each text encoder keeps of its GRU's states: last (the paper: "
                                                      "the state at the last word) or max (each dimension's maximum over the "
                                                      "words; the demo uses it: short queries find more).")] = TextPooling.LAST,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: Annotated[str, typer.Option(help="auto (CUDA when available), cpu, cuda, cuda:N.")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars and no per-epoch lines (each run's log.jsonl keeps them).")] = False,
    plot: Annotated[Path | None, typer.Option(help="Also draw every row's recall@K for K = 1…50, both directions, into this .png/.svg/.pdf.")] = None,
) -> None:
    """Rerun the paper's Table 1 on a dataset and print it as a Markdown table.

    Every preset of `jemc-infer train` is a row; a dataset without audio (MSVD) runs the
    audio-free ones. Interrupted runs resume where they stopped.
    """
    from jemc_infer.train.loop import TrainConfig
    from jemc_infer.train.plots import check_plot_path, plot_recall_curves
    from jemc_infer.train.table1 import format_table, row_curves, run_table1

    if plot is not None:
        check_plot_path(plot)  # now, not after hours of training
    config = TrainConfig(epochs=epochs, embed_dim=embed_dim, word_dim=word_dim, batch_size=batch_size, lr=lr,
                         lr_step=lr_step, margin=margin, seed=seed, device=device, loss=_loss(loss), text_confidence=text_confidence,
                         text_pooling=text_pooling)
    rows = run_table1(data, out, config, presets=parse_csv(presets), split=split, progress=not quiet, echo=echo_err)
    typer.echo(format_table(rows))
    if plot is not None:
        plot_recall_curves(row_curves(rows), plot, f"Table 1: {Path(data).name}, split {split}")
        echo_err(f"plot: {plot}")
