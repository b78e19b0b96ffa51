"""Recall@K curves as a picture: text→video and video→text side by side, one line per method.

matplotlib is imported inside the functions (the ``train`` extra has it; ``import
jemc_infer.train.plots`` costs nothing), and a figure is drawn on its own Agg canvas rather than
through pyplot, so no display is needed and a caller's pyplot backend and figure list are left as
they were.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jemc_infer.atomic import write_file
from jemc_infer.errors import InputError, InputShapeError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORMATS = ("png", "svg", "pdf")  # what --plot writes, chosen by the path's suffix
FIGSIZE = (11.0, 4.5)  # inches: two panels side by side
DPI = 100  # a PNG is FIGSIZE * DPI pixels (1100 × 450)
DIRECTIONS = ("text→video", "video→text")
MARK_K = (1, 5, 10)  # the printed R@K, marked on each line


def check_plot_path(path: Path | str) -> Path:
    """Refuse a path the plot cannot be written to, before any long computation runs.

    Also imports matplotlib, so that a missing one is reported now rather than after training.

    Args:
        path: Where :func:`plot_recall_curves` will write; its suffix picks the format.

    Returns:
        ``path`` as a :class:`Path`.

    Raises:
        InputError: If the suffix is not one of :data:`FORMATS`, or the path is a directory.
        ImportError: If matplotlib is not installed (the CLI names the extra to install).
    """
    path = Path(path)
    if path.suffix.lower().lstrip(".") not in FORMATS:
        raise InputError(f"{path} | suffix {path.suffix!r} | expected a plot file ending in {', '.join('.' + f for f in FORMATS)}")
    if path.is_dir():
        raise InputError(f"{path} | is a directory | expected a file path for the plot")
    import matplotlib  # noqa: F401 - fail early when the train extra is missing

    return path


def plot_recall_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path | str | None, title: str) -> Figure:
    """Draw recall@K against K, text→video on the left and video→text on the right.

    Args:
        curves: Method label → ``(t2v, v2t)`` recall in percent for K = 1…len, as
            :func:`jemc_infer.train.metrics.recall_curve` returns; one line each, in order.
        path: Where to write the figure (parent directories are created; written to a temporary
            sibling and renamed, so a reader never sees half a file). The suffix picks the format,
            one of :data:`FORMATS`. None: only return the figure.
        title: The figure's title (e.g. the dataset and split).

    Returns:
        The figure; its two axes are ``fig.axes``, the legend is on the first.

    Raises:
        InputShapeError: If ``curves`` is empty or a curve is not two 1-D arrays of one length >= 1.
        InputError: If ``path`` cannot be written (see :func:`check_plot_path`), or the write fails.
    """
    if not curves:
        raise InputShapeError("recall curves | none given | expected at least one method")
    for label, pair in curves.items():
        shapes = [np.shape(c) for c in pair]
        if len(shapes) != 2 or len(shapes[0]) != 1 or shapes[0] != shapes[1] or shapes[0][0] < 1:
            raise InputShapeError(f"recall curve {label!r} | shapes {shapes} | expected (t2v, v2t), two 1-D arrays of one length >= 1")
    if path is not None:
        path = check_plot_path(path)

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself to fig: savefig renders with Agg, whatever pyplot's backend is
    axes = fig.subplots(1, 2, sharey=True)
    kmax = max(len(t2v) for t2v, _ in curves.values())
    for d, (ax, direction) in enumerate(zip(axes, DIRECTIONS, strict=True)):
        for label, pair in curves.items():
            y = np.asarray(pair[d], dtype=np.float64)
            k = np.arange(1, len(y) + 1)
            # clip_on=False: the markers at K = 1 and at 100 % sit on the frame, drawn whole
            ax.plot(k, y, label=label, marker="o", markersize=4, markevery=[m - 1 for m in MARK_K if m <= len(y)], clip_on=False)
        ax.set_title(direction)
        ax.set_xlabel("K")
        ax.set_xlim(1, max(kmax, 2))  # one K alone would make a singular axis
        ax.set_xticks(sorted({k for k in (*MARK_K, *range(20, kmax + 1, 10)) if k <= kmax}))
        ax.set_ylim(0, 100)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("recall@K (%)")
    axes[0].legend(loc="lower right", fontsize="small")
    fig.suptitle(title)
    if path is not None:
        _save(fig, path)
    return fig


def _save(fig: Figure, path: Path) -> None:
    fmt = path.suffix.lower().lstrip(".")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # the temporary name has no image suffix, so the format is given explicitly
        write_file(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=DPI))
    except OSError as err:
        raise InputError(f"{path} | cannot write ({err.strerror or err}) | expected a writable file path for the plot") from err
