"""Rerun the paper's Table 1: train every preset on one dataset, evaluate each on the test split."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jemc_infer.atomic import write_file
from jemc_infer.bundle import read_bundle
from jemc_infer.errors import InputError
from jemc_infer.nn import model_from_bundle, resolve_device
from jemc_infer.train.data import open_dataset
from jemc_infer.train.evaluate import split_ranks
from jemc_infer.train.loop import TrainConfig, train
from jemc_infer.train.metrics import curve_from_ranks, metrics_from_ranks
from jemc_infer.train.presets import GROUPS, PRESETS, get_preset

COLUMNS = ("r1", "r5", "r10", "medr", "meanr")


@dataclass(frozen=True)
class Row:
    preset: str
    label: str
    metrics: dict  # as retrieval_metrics
    best_epoch: int
    # recall in percent at K = 1…50, {"t2v": [...], "v2t": [...]} (recall_curve, ranked as the
    # metrics are: element K-1 is R@K); JSON-ready, as it is kept in table1.json
    curve: dict[str, list[float]]


def default_group(has_audio: bool) -> str:
    return "msrvtt" if has_audio else "msvd"


def run_table1(
    data: Path | str,
    work: Path | str,
    config: TrainConfig = TrainConfig(),
    presets: Sequence[str] | None = None,
    split: str = "test",
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> list[Row]:
    """Train (or resume) every preset into ``work/<preset>`` and evaluate it on ``split``.

    Args:
        data: The feature dataset.
        work: Directory for the bundles, their run state, and ``table1.json``.
        config: Training settings shared by every row; the loss is each preset's own unless
            ``config.loss`` names one for every row.
        presets: Names to run; defaults to every preset the dataset's features allow (the
            ``msvd`` group when the dataset has no audio).
        split: The split to report. Defaults to ``test``.

    Returns:
        One row per preset, in order, each with its metrics and recall curve. Also written to
        ``work/table1.json``.
    """
    ds = open_dataset(data)
    if presets is None:
        group = default_group(ds.has_feature("audio"))
        presets = GROUPS[group]
        echo(f"table1: {len(presets)} presets (group {group!r})")
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise InputError(f"presets | {unknown} | expected names from: {', '.join(PRESETS)}")
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in presets:
        preset = get_preset(name)
        echo(f"== {preset.label} ({name})")
        result = train(ds.path, preset, work / name, config, progress=progress, echo=echo)
        bundle = read_bundle(result.bundle)
        # a resumed run (train() returns at once for a finished preset) evaluates again too: every
        # row's metrics and curve come from its bundle as it is now
        ranks = split_ranks(model_from_bundle(bundle, resolve_device(config.device)), bundle.vocab, ds, split)
        t2v, v2t = curve_from_ranks(ranks)
        label = preset.label if config.loss is None else f"{preset.label}, {config.loss} loss"
        rows.append(Row(name, label, metrics_from_ranks(ranks), result.best_epoch, {"t2v": t2v.tolist(), "v2t": v2t.tolist()}))
        echo(f"   kept epoch {result.best_epoch + 1} (best val rsum {result.best_rsum:.1f}); {split} rsum {rows[-1].metrics['rsum']:.1f}")
        write_file(work / "table1.json", lambda tmp: tmp.write_text(json.dumps(
            {"data": str(ds.path), "split": split, "config": config.identity() | {"epochs": config.epochs},
             "rows": [dataclasses.asdict(r) for r in rows]}, indent=2) + "\n", encoding="utf-8"))
    return rows


def row_curves(rows: Sequence[Row]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each row's recall curve by its Table 1 label, as :func:`jemc_infer.train.plots.plot_recall_curves` takes them."""
    return {r.label: (np.asarray(r.curve["t2v"]), np.asarray(r.curve["v2t"])) for r in rows}


def format_table(rows: Sequence[Row]) -> str:
    """A Markdown table with the paper's columns (text→video, then video→text)."""
    head = ("| # | Method | " + " | ".join(f"T→V {c.upper()}" for c in COLUMNS) + " | "
            + " | ".join(f"V→T {c.upper()}" for c in COLUMNS) + " | rsum |")
    lines = [head, "|" + "---|" * (3 + 2 * len(COLUMNS))]
    for i, r in enumerate(rows, 1):
        cells = [_cell(r.metrics[d][c], c) for d in ("t2v", "v2t") for c in COLUMNS]
        lines.append(f"| {i} | {r.label} | " + " | ".join(cells) + f" | {r.metrics['rsum']:.1f} |")
    return "\n".join(lines)


def _cell(value: float, column: str) -> str:
    return f"{value:.0f}" if column == "medr" else f"{value:.1f}"
