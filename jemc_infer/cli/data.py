"""``jemc-infer data``: write feature datasets (synthetic, MSR-VTT, MSVD) and describe them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from jemc_infer.cli._common import echo_err, fail, handle_errors

if TYPE_CHECKING:
    from jemc_infer.train.data import FeatureDataset
    from jemc_infer.train.formats import Annotations

app = typer.Typer(no_args_is_help=True)


def _summary(ds: FeatureDataset) -> str:
    splits = ", ".join(f"{k} {len(v)}" for k, v in ds.splits.items())
    feats = ", ".join(f"{k} {d}-d ({int(ds.masks[k].sum())}/{len(ds.videos)} present)" for k, d in ds.feature_dims.items())
    return f"{ds.path}: {len(ds.videos)} videos ({splits}), {len(ds.captions)} captions; features: {feats}"


@app.command()
@handle_errors
def synth(
    out: Annotated[Path, typer.Option(help="Dataset directory to write.")],
    train: Annotated[int, typer.Option(min=1, help="Training videos.")] = 1000,
    val: Annotated[int, typer.Option(min=1, help="Validation videos.")] = 200,
    test: Annotated[int, typer.Option(min=1, help="Test videos.")] = 1000,
    captions: Annotated[int, typer.Option(min=1, help="Captions per video.")] = 10,
    noise: Annotated[float, typer.Option(min=0.0, help="Per-video latent noise (higher is harder).")] = 1.0,
    resnet_dim: Annotated[int, typer.Option(min=1)] = 2048,
    i3d_dim: Annotated[int, typer.Option(min=1)] = 1024,
    audio_dim: Annotated[int, typer.Option(min=1)] = 1024,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """A synthetic dataset where appearance, motion and sound carry different concepts (for
    tests, benchmarks and the demo; its features are not real video features)."""
    from jemc_infer.train.synthetic import synthesize

    ds = synthesize(out, n_train=train, n_val=val, n_test=test, captions_per_video=captions, noise=noise,
                    feature_dims={"resnet": resnet_dim, "i3d": i3d_dim, "audio": audio_dim}, seed=seed)
    typer.echo(_summary(ds))


def _import(out: Path, ann: Annotations, folders: dict[str, tuple[Path | None, str]], name: str) -> None:
    """Import with the feature folders given on the command line (option name → (folder, kind))."""
    from jemc_infer.train.formats import FeatureFolder, import_dataset

    given = {feature: FeatureFolder(directory, kind) for feature, (directory, kind) in folders.items() if directory is not None}
    if not given:
        raise fail(f"no feature folders given | expected at least one of {', '.join('--' + f for f in folders)}")
    result = import_dataset(out, ann, given, name)
    for feature, missing in result.missing.items():
        echo_err(f"{feature}: {len(missing)} of {len(ann.videos)} videos have no file in {given[feature].directory} "
                 f"(e.g. {missing[0]}); they get zero features and mask False")
    typer.echo(_summary(result.dataset))


@app.command()
@handle_errors
def msrvtt(
    annotations: Annotated[list[Path], typer.Option(help="videodatainfo JSON (repeat: train_val_videodatainfo.json, test_videodatainfo.json).")],
    out: Annotated[Path, typer.Option(help="Dataset directory to write.")],
    resnet: Annotated[Path | None, typer.Option(help="Folder of per-video ResNet .npy ([T, 2048]).")] = None,
    i3d: Annotated[Path | None, typer.Option(help="Folder of per-video I3D .npy ([T, 1024]).")] = None,
    audio: Annotated[Path | None, typer.Option(help="Folder of SoundNet .h5 (layer24 [1024, T]).")] = None,
) -> None:
    """Import MSR-VTT (standard 6513/497/2990 split) with the official JEMC feature files."""
    from jemc_infer.train.formats import load_msrvtt

    _import(out, load_msrvtt(*annotations),
            {"resnet": (resnet, "npy"), "i3d": (i3d, "npy"), "audio": (audio, "soundnet")}, "msrvtt")


@app.command()
@handle_errors
def msvd(
    captions: Annotated[Path, typer.Option(help="Caption list: '<clip id> <caption>' per line (AllVideoDescriptions.txt).")],
    out: Annotated[Path, typer.Option(help="Dataset directory to write.")],
    mapping: Annotated[Path | None, typer.Option(help="youtube_mapping.txt ('<clip id> vid<N>'): standard ids and order.")] = None,
    split: Annotated[str, typer.Option(help="Train,val,test video counts.")] = "1200,100,670",
    resnet: Annotated[Path | None, typer.Option(help="Folder of per-video ResNet .npy.")] = None,
    i3d: Annotated[Path | None, typer.Option(help="Folder of per-video I3D .npy.")] = None,
) -> None:
    """Import MSVD (standard 1200/100/670 split, no audio) with per-video feature files."""
    from jemc_infer.train.formats import load_msvd

    try:
        sizes = [int(x) for x in split.split(",")]
        if len(sizes) != 3 or min(sizes) < 0:
            raise ValueError
    except ValueError:
        raise fail(f"--split | {split!r} | expected three counts like 1200,100,670") from None
    _import(out, load_msvd(captions, mapping, sizes), {"resnet": (resnet, "npy"), "i3d": (i3d, "npy")}, "msvd")


@app.command()
@handle_errors
def info(data: Annotated[Path, typer.Argument(help="Feature dataset directory.")]) -> None:
    """Validate a dataset and summarise it."""
    from jemc_infer.train.data import open_dataset

    typer.echo(_summary(open_dataset(data)))
