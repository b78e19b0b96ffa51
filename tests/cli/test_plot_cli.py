"""``evaluate --plot`` and ``table1 --plot``: the same stdout, one more stderr line, and a recall@K
figure whose lines pass through the printed R@1/5/10."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from jemc_infer.cli import app

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

runner = CliRunner()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _run(*args: object):  # noqa: ANN202
    return runner.invoke(app, [str(a) for a in args])


def _capture_figures(monkeypatch: pytest.MonkeyPatch) -> list:
    """Keep every figure the command draws (the commands import plot_recall_curves when they plot)."""
    import jemc_infer.train.plots as plots

    drawn: list = []
    real = plots.plot_recall_curves

    def keep(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        drawn.append(real(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(plots, "plot_recall_curves", keep)
    return drawn


def _check_png(path: Path) -> None:
    """A PNG that matplotlib reads back at the figure's size in pixels."""
    import matplotlib.image

    from jemc_infer.train.plots import DPI, FIGSIZE

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert matplotlib.image.imread(path).shape[:2] == (round(FIGSIZE[1] * DPI), round(FIGSIZE[0] * DPI))


def test_evaluate_plot(tiny_bundle: Path, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = _capture_figures(monkeypatch)
    args = ("evaluate", "--model", tiny_bundle, "--data", tiny_data, "--split", "test")
    plain = _run(*args)
    assert plain.exit_code == 0, plain.output
    png = tmp_path / "plots" / "eval.png"
    plotted = _run(*args, "--plot", png)
    assert plotted.exit_code == 0, plotted.output
    assert plotted.stdout == plain.stdout
    assert plotted.stderr.splitlines()[-1] == f"plot: {png}"
    _check_png(png)

    # the line is the bundle's preset label and passes exactly through the printed recalls
    metrics = json.loads(_run(*args, "--json", "--plot", tmp_path / "eval.svg").stdout)
    fig = drawn[-1]
    for ax, d in zip(fig.axes, ("t2v", "v2t"), strict=True):
        (line,) = ax.get_lines()
        assert line.get_label() == "test mix"
        y = line.get_ydata()
        assert len(y) == 50 and (np.diff(y) >= 0).all()
        assert [y[k - 1] for k in (1, 5, 10)] == [metrics[d][f"r{k}"] for k in (1, 5, 10)]


def test_evaluate_plot_refusals(tiny_bundle: Path, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = _run("evaluate", "--model", tiny_bundle, "--data", tiny_data, "--plot", tmp_path / "r.jpg")
    assert r.exit_code == 1 and r.stdout == ""  # refused before evaluating
    assert r.stderr.strip().splitlines() == [f"error: {tmp_path / 'r.jpg'} | suffix '.jpg' | expected a plot file ending in .png, .svg, .pdf"]
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the train extra lacked it
    r = _run("evaluate", "--model", tiny_bundle, "--data", tiny_data, "--plot", tmp_path / "r.png")
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr.strip().splitlines() == ["error: matplotlib | not installed | needed here: pip install 'jemc-infer[train]'"]


def test_table1_plot_and_resume(tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = _capture_figures(monkeypatch)
    args = ("table1", "--data", tiny_data, "--out", tmp_path / "t1", "--epochs", 1, "--presets", "audio,i3d",
            "--batch-size", 64, "--embed-dim", 16, "--word-dim", 8, "--quiet")
    png = tmp_path / "t1.png"
    first = _run(*args, "--plot", png)
    assert first.exit_code == 0, first.output
    assert first.stderr.splitlines()[-1] == f"plot: {png}"
    _check_png(png)
    t2v = drawn[-1].axes[0]
    assert [t.get_text() for t in t2v.get_legend().get_texts()] == ["Audio", "I3D"]

    # table1.json keeps each row's curve; it passes through the row's printed recalls
    saved = json.loads((tmp_path / "t1" / "table1.json").read_text())
    for row, line in zip(saved["rows"], t2v.get_lines(), strict=True):
        assert line.get_label() == row["label"]
        np.testing.assert_array_equal(line.get_ydata(), row["curve"]["t2v"])
        for d in ("t2v", "v2t"):
            assert len(row["curve"][d]) == 50
            assert [row["curve"][d][k - 1] for k in (1, 5, 10)] == [row["metrics"][d][f"r{k}"] for k in (1, 5, 10)]

    # rerun: every preset is already trained, nothing retrains, and the plot is drawn again; same table
    png.unlink()
    again = _run(*args, "--plot", png)
    assert again.exit_code == 0, again.output
    assert "already trained" in again.stderr and again.stdout == first.stdout
    _check_png(png)
    np.testing.assert_array_equal(drawn[-1].axes[1].get_lines()[1].get_ydata(), saved["rows"][1]["curve"]["v2t"])
    without = _run(*args)
    assert without.exit_code == 0 and without.stdout == first.stdout and "plot:" not in without.stderr
