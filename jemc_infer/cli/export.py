"""``jemc-infer export``: a trained bundle → ONNX graphs (and TensorRT engines), parity-gated."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from jemc_infer.cli import _common
from jemc_infer.cli._common import echo_err, fail, handle_errors

if TYPE_CHECKING:
    from jemc_infer.bundle import Bundle
    from jemc_infer.export.specs import ShapeLimits

app = typer.Typer()


@app.command()
@handle_errors
def export(
    bundle: Annotated[Path, typer.Argument(help="The model bundle to export into.")],
    to: Annotated[str, typer.Option(help="onnx (graphs + parity gate), tensorrt (engines from the exported graphs) or "
                                         "triton (a Triton model repository from them, at --out).")] = "onnx",
    out: Annotated[Path | None, typer.Option(help="triton: the model repository folder to write.")] = None,
    fp16: Annotated[bool, typer.Option("--fp16", help="Also fp16 variants (onnx: needs --eval-data for retrieval parity).")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="tensorrt: int8 engines for text and video, calibrated on --calibration.")] = False,
    text_int8: Annotated[bool, typer.Option("--text-int8", help="onnx: also an int8 text encoder for the CPU (about 3x faster at "
                                                                 "batch 1), kept only if it passes graph and retrieval parity on --eval-data.")] = False,
    calibration: Annotated[Path | None, typer.Option(help="Feature dataset whose train split calibrates int8.")] = None,
    eval_data: Annotated[Path | None, typer.Option(help="Held-out feature dataset (test split) for fp16 and int8 retrieval parity.")] = None,
    backbones: Annotated[bool, typer.Option("--backbones/--no-backbones",
                                            help="Also export the backbone graphs resnet (ResNet-152), i3d (I3D or S3D) and "
                                                 "audio (SoundNet).")] = True,
    weights: Annotated[Path | None, typer.Option(help="Folder with the backbone weights (else $JEMC_WEIGHTS, torchvision's cache).")] = None,
    random_init: Annotated[bool, typer.Option("--random-init", help="Random backbones (tests, demos): recorded in the manifest.")] = False,
    object: Annotated[str, typer.Option("--object", help="The network of the resnet graph: resnet152 or vgg-compact.")] = "resnet152",  # noqa: A002
    activity: Annotated[str, typer.Option(help="The network of the i3d graph (activity clip features): i3d, s3d or c3d-compact.")] = "i3d",
    max_batch: Annotated[int, typer.Option(min=1, help="Largest batch the graphs are checked (and engines built) for.")] = 64,
    max_seq: Annotated[int, typer.Option(min=2, help="Longest caption in tokens, <start> and <end> included.")] = 64,
) -> None:
    """Export a bundle's text encoders, video heads and the feature backbones to ONNX.

    Each graph is checked against torch on fresh random inputs (batch 1, 7 and --max-batch;
    sequence lengths 1 and --max-seq, unsorted) and refused beyond 1e-4 (fp32). With
    --to tensorrt, builds TensorRT engines from the exported graphs for this GPU.
    """
    if to not in ("onnx", "tensorrt", "triton"):
        raise fail(f"--to | {to!r} | expected onnx, tensorrt or triton")
    if text_int8 and to != "onnx":
        raise fail(f"--text-int8 | with --to {to} | expected --to onnx (the int8 text graph is for onnxruntime on the CPU)")
    from jemc_infer.bundle import read_bundle
    from jemc_infer.export.specs import ShapeLimits

    b = read_bundle(bundle)
    if to == "triton":
        if out is None:
            raise fail("--to triton | no --out | expected --out REPO, the model repository folder to write")
        from jemc_infer.export.triton import export_triton

        names = export_triton(b, out, echo=echo_err)
        typer.echo(f"{out}: Triton model repository with {len(names)} models ({', '.join(names)}); "
                   f"serve it with `tritonserver --model-repository {out}`")
        return
    limits = ShapeLimits(max_batch=max_batch, max_seq=max_seq, opt_batch=min(16, max_batch), opt_seq=min(16, max_seq))
    if to == "onnx":
        if int8:
            raise fail("--int8 | with --to onnx | expected --to tensorrt (int8 is a TensorRT build)")
        if text_int8 and eval_data is None:
            raise fail("--text-int8 | no held-out data | expected --eval-data DATA (a feature dataset with a test split): "
                       "the int8 text graph is only kept if R@1/5/10 move by at most 0.5 points")
        if fp16 and eval_data is None:
            raise fail("--fp16 | no held-out data | expected --eval-data DATA (a feature dataset with a test split): "
                       "fp16 graphs are only kept if R@1/5/10 move by at most 0.5 points")
        nets = None
        if backbones:
            from jemc_infer.nn.backbones import load_backbones

            nets = load_backbones(weights, random_init=random_init, activity=activity, object=object)
        _export_onnx(b, limits, fp16, eval_data, nets, text_int8)
        return
    if int8 and calibration is None:
        raise fail("--int8 | no calibration data | expected --calibration DATA (a feature dataset)")
    _build_engines(b, "int8" if int8 else "fp16" if fp16 else "fp32", limits, calibration)


def _export_onnx(b: Bundle, limits: ShapeLimits, fp16: bool, eval_data: Path | None, nets: Any, text_int8: bool = False) -> None:
    """One line per graph on stderr, the summary on stdout; what torch's exporter said only with
    --debug, or before the error when a graph is refused."""
    from jemc_infer.export.onnx import ParityError, export_bundle

    try:
        records = export_bundle(b, limits, fp16=fp16, eval_data=eval_data, backbones=nets, echo=echo_err,
                                show_exporter_output=_common.DEBUG, text_int8=text_int8)
    except ParityError as err:
        if err.details:
            echo_err("torch's exporter said:\n" + "\n".join(f"  {line}" for line in err.details))
        raise
    typer.echo(f"{b.path}: exported {', '.join(records)} (manifest: {b.path / 'manifest.json'})")


def _build_engines(b: Bundle, precision: str, limits: ShapeLimits, calibration: Path | None) -> None:
    from jemc_infer.export.tensorrt import build_engines

    def built(graph: str, entry: dict[str, Any]) -> None:
        typer.echo(f"{graph}: TensorRT {entry['tensorrt']} {entry['precision']} engine for {entry['gpu']} ({entry['file']})")

    records = build_engines(b.path, precision, limits, calibration_data=calibration, on_built=built)
    if precision == "int8" and any(r["precision"] != "int8" for r in records.values()):
        echo_err("backbone graphs were built fp16: int8 calibration is from features and captions only")
