"""``jemc-infer demo``: the whole job, end to end, on a synthetic world whose right answers are known."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from jemc_infer.cli._common import handle_errors

app = typer.Typer()


@app.command()
@handle_errors
def demo(
    out: Annotated[Path, typer.Option(help="Work folder: the world, its backbones, features, models, index, report.")] = Path("demo"),
    videos: Annotated[int, typer.Option(min=20, help="Videos in the world (20% are held out for the figures).")] = 300,
    seed: Annotated[int, typer.Option(help="The world's seed.")] = 0,
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs per model.")] = 30,
    workers: Annotated[int, typer.Option(min=1, help="Encoder and decoder processes.")] = 2,
) -> None:
    """The main job end to end on a synthetic world whose right answers are known.

    Makes the world, trains its backbones and JEMC on it, exports, embeds the held-out videos,
    and shows queries with their ground truth and the held-out figures. Each step is the real
    command, printed before it runs; a rerun reuses what is built.
    """
    from jemc_infer.train.demo import DemoSettings, run_demo

    run_demo(DemoSettings(out=out, videos=videos, seed=seed, epochs=epochs, workers=workers), echo=typer.echo)
