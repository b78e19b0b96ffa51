"""``jemc-infer world``: a synthetic multimodal world whose right answers are known, and its backbones."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from jemc_infer.cli._common import echo_err, handle_errors

app = typer.Typer(no_args_is_help=True)


@app.command()
@handle_errors
def make(
    out: Annotated[Path, typer.Option(help="Folder to write: videos/ (files + ground truth), captions.jsonl, world.json.")],
    videos: Annotated[int, typer.Option(min=1, help="How many videos (70% train, 10% val, 20% test).")] = 300,
    seed: Annotated[int, typer.Option(help="Everything follows from it.")] = 0,
    workers: Annotated[int, typer.Option(min=1, help="Encoder processes.")] = 2,
) -> None:
    """Write a synthetic world: short videos of coloured shapes that move and sound, with their truth and captions.

    Real files (mp4/mkv/webm/avi, some without audio). Colour, shape, size and background are
    only in the still frames, the activity only in the motion, the sound only in the audio.
    """
    from jemc_infer.train.world import make_world

    w = make_world(out, videos, seed, workers=workers)
    splits = ", ".join(f"{s} {len(w.split(s))}" for s in ("train", "val", "test"))
    typer.echo(f"{out}: {len(w.videos)} videos ({splits}), {len(w.captions)} captions, seed {seed}")


@app.command()
@handle_errors
def backbones(
    world: Annotated[Path, typer.Argument(help="A folder `jemc-infer world make` wrote.")],
    out: Annotated[Path | None, typer.Option(help="Where the weight files go (default WORLD/weights).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Decoder processes.")] = 2,
) -> None:
    """Train a world's backbones on its training split only, as weight files for --weights.

    A compact frame CNN (shape, colour, size, background, which colour and size go with which shape), a compact clip CNN (activity) and
    SoundNet-8 (sound): vgg_compact.safetensors, c3d_compact.safetensors, sound8.safetensors, and
    backbones.json with each head's validation accuracy.
    """
    from jemc_infer.train.world_backbones import REPORT, train_backbones

    report = train_backbones(world, out, workers=workers, echo=echo_err)
    target = out if out is not None else world / "weights"
    typer.echo(f"{target}: 3 backbones in {report['seconds']:.0f} s (report: {target / REPORT}); use them with "
               f"--weights {target} --object vgg-compact --activity c3d-compact --clip-fps 10")
