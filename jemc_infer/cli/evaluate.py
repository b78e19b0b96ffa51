"""``jemc-infer evaluate``: the paper's metrics of a bundle on a dataset split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from jemc_infer.cli._common import echo_err, handle_errors

app = typer.Typer()

TIES = ("optimistic", "pessimistic", "average")


def format_metrics(metrics: dict) -> str:
    """The paper's columns for both directions, as aligned text."""
    lines = [f"{'':14}{'R@1':>7}{'R@5':>7}{'R@10':>7}{'MedR':>7}{'MeanR':>8}{'n':>8}"]
    for key, label in (("t2v", "text→video"), ("v2t", "video→text")):
        m = metrics[key]
        lines.append(f"{label:14}{m['r1']:7.1f}{m['r5']:7.1f}{m['r10']:7.1f}{m['medr']:7.0f}{m['meanr']:8.1f}{m['n']:8d}")
    lines.append(f"rsum {metrics['rsum']:.1f}")
    return "\n".join(lines)


@app.command()
@handle_errors
def evaluate(
    model: Annotated[Path, typer.Option(help="Model bundle directory.")],
    data: Annotated[Path, typer.Option(help="Feature dataset directory.")],
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "test",
    ties: Annotated[str, typer.Option(help="Tie policy: optimistic (the official code's), pessimistic, average.")] = "optimistic",
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    device: Annotated[str, typer.Option(help="auto (CUDA when available), cpu, cuda, cuda:N.")] = "auto",
    plot: Annotated[Path | None, typer.Option(help="Also draw recall@K for K = 1…50, both directions, into this .png/.svg/.pdf.")] = None,
) -> None:
    """R@1, R@5, R@10, MedR, MeanR for text→video and video→text, as in the paper."""
    from jemc_infer.bundle import read_bundle
    from jemc_infer.cli._common import fail

    if ties not in TIES:
        raise fail(f"--ties | {ties!r} | expected one of {', '.join(TIES)}")
    if plot is not None:
        from jemc_infer.train.plots import check_plot_path

        check_plot_path(plot)
    from jemc_infer.nn import model_from_bundle, resolve_device
    from jemc_infer.train.data import open_dataset
    from jemc_infer.train.evaluate import split_ranks
    from jemc_infer.train.metrics import curve_from_ranks, metrics_from_ranks

    bundle = read_bundle(model)
    ds = open_dataset(data)
    ranks = split_ranks(model_from_bundle(bundle, resolve_device(device)), bundle.vocab, ds, split)
    metrics = metrics_from_ranks(ranks, ties=ties)  # type: ignore[arg-type]
    typer.echo(json.dumps(metrics) if as_json else format_metrics(metrics))
    if plot is not None:
        from jemc_infer.train.plots import plot_recall_curves

        label = bundle.meta.get("training", {}).get("label") or bundle.path.resolve().name
        title = f"{ds.path.name}, split {split}" + ("" if ties == "optimistic" else f", ties {ties}")
        plot_recall_curves({label: curve_from_ranks(ranks, ties=ties)}, plot, title)  # type: ignore[arg-type]
        echo_err(f"plot: {plot}")
