"""Recall@K plots: what is drawn (lines, labels, panels), the files written, and the refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jemc_infer.errors import InputError, InputShapeError
from jemc_infer.train.plots import DPI, FIGSIZE, check_plot_path, plot_recall_curves

pytest.importorskip("matplotlib")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
K = np.arange(1, 51)
CURVES = {"VSE (ResNet)": (np.minimum(100.0, 2.0 * K), np.minimum(100.0, 3.0 * K)),
          "JEMC": (np.minimum(100.0, 4.0 * K), np.minimum(100.0, 5.0 * K))}


def test_two_panels_one_line_per_method(tmp_path: Path) -> None:
    fig = plot_recall_curves(CURVES, tmp_path / "deep" / "er" / "r.png", "Table 1: synthetic, split test")
    t2v, v2t = fig.axes
    assert (t2v.get_title(), v2t.get_title()) == ("text→video", "video→text")
    assert [t.get_text() for t in t2v.get_legend().get_texts()] == ["VSE (ResNet)", "JEMC"]
    for ax, d in ((t2v, 0), (v2t, 1)):
        lines = ax.get_lines()
        assert [ln.get_label() for ln in lines] == list(CURVES)
        for ln, pair in zip(lines, CURVES.values(), strict=True):
            np.testing.assert_array_equal(ln.get_xdata(), K)
            np.testing.assert_array_equal(ln.get_ydata(), pair[d])
        assert ax.get_xlabel() == "K" and ax.get_ylim() == (0.0, 100.0)
    assert t2v.get_ylabel() == "recall@K (%)"
    assert fig.get_suptitle() == "Table 1: synthetic, split test"


def test_writes_a_png_of_the_stated_size_atomically(tmp_path: Path) -> None:
    import matplotlib.image

    path = tmp_path / "plots" / "r.png"  # the parent does not exist yet
    plot_recall_curves(CURVES, path, "t")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert matplotlib.image.imread(path).shape[:2] == (round(FIGSIZE[1] * DPI), round(FIGSIZE[0] * DPI))
    assert [p.name for p in path.parent.iterdir()] == ["r.png"]  # no temporary left behind
    plot_recall_curves({"one": CURVES["JEMC"]}, path, "again")  # replaces the old file
    assert path.read_bytes()[:8] == PNG_SIGNATURE and len(list(path.parent.iterdir())) == 1


def test_the_suffix_picks_the_format(tmp_path: Path) -> None:
    plot_recall_curves(CURVES, tmp_path / "r.svg", "t")
    assert b"<svg" in (tmp_path / "r.svg").read_bytes()[:400]
    plot_recall_curves(CURVES, tmp_path / "r.PDF", "t")
    assert (tmp_path / "r.PDF").read_bytes()[:5] == b"%PDF-"


def test_without_a_path_only_the_figure() -> None:
    fig = plot_recall_curves({"a": (np.array([10.0]), np.array([20.0]))}, None, "t")
    assert len(fig.axes) == 2


def test_refusals(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"suffix '\.jpg' \| expected a plot file ending in \.png, \.svg, \.pdf"):
        check_plot_path(tmp_path / "r.jpg")
    (tmp_path / "d.png").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        plot_recall_curves(CURVES, tmp_path / "d.png", "t")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="cannot write"):
        plot_recall_curves(CURVES, tmp_path / "file" / "r.png", "t")
    with pytest.raises(InputShapeError, match="none given"):
        plot_recall_curves({}, None, "t")
    with pytest.raises(InputShapeError, match="'bad'"):
        plot_recall_curves({"bad": (np.zeros(5), np.zeros(4))}, None, "t")
    with pytest.raises(InputShapeError, match="'empty'"):
        plot_recall_curves({"empty": (np.zeros(0), np.zeros(0))}, None, "t")


def test_importing_the_module_does_not_import_matplotlib() -> None:
    code = "import sys, jemc_infer.train.plots; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
