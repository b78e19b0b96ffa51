"""Per-window rows: where in a video a query matches best (torch-free).

Beside each shard of pooled rows an index with moments keeps a *window shard*
(``windows/000001.npy``, float16/float32 [m, D]) holding every window of the shard's videos:
object-space windows (one per sampled frame) and activity-space windows (one per clip), each
with its start and end in seconds. A window row lives in the same fused space as the pooled rows:
it is the video's pooled row with one space's part replaced by that window's own embedding (see
``jemc_infer.moments``), so ``query · window_row`` is the model's score for "this video, judged
in that space by this moment alone", and

    score(window) − score(video) = w_s · (cos_s(window) − cos_s(video)),

the gain of the moment in its space. A video's windows are contiguous in its window shard,
sorted by start time; ``offsets`` [n + 1] says where each pooled row's windows begin and end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jemc_infer.errors import InputShapeError


@dataclass(frozen=True)
class WindowRows:
    """The windows of one shard's videos (pooled row i ↔ rows[offsets[i]:offsets[i + 1]])."""

    rows: np.ndarray  # float16/float32 [m, D] fused rows
    offsets: np.ndarray  # int64 [n + 1], non-decreasing, offsets[0] = 0, offsets[-1] = m
    start: np.ndarray  # float64 [m] seconds from the first frame
    end: np.ndarray  # float64 [m] seconds, >= start
    space: np.ndarray  # uint8 [m]: the index of the space whose part is the window's own

    def check(self, videos: int, dim: int) -> None:
        """Raises InputShapeError unless these are the windows of ``videos`` rows of width ``dim``."""
        m = len(self.rows)
        problems = []
        if self.rows.ndim != 2 or (m and self.rows.shape[1] != dim):
            problems.append(f"rows {list(self.rows.shape)} (expected [m, {dim}])")
        if self.offsets.shape != (videos + 1,) or self.offsets[0] != 0 or self.offsets[-1] != m or np.any(np.diff(self.offsets) < 0):
            problems.append(f"offsets {self.offsets.tolist()[:8]} (expected {videos + 1} non-decreasing, 0 to {m})")
        if not (len(self.start) == len(self.end) == len(self.space) == m) or np.any(self.end < self.start):
            problems.append("start/end/space (expected one each per row, end >= start)")
        if problems:
            raise InputShapeError(f"window rows | {'; '.join(problems)} | expected the windows of {videos} videos")

    def of(self, i: int) -> slice:
        """The rows of pooled row ``i``."""
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))


@dataclass(frozen=True)
class VideoWindows:
    """One video's windows, as :meth:`jemc_infer.index.store.Index.windows` returns them."""

    rows: np.ndarray  # [m, D] (a view of a read-only memory map)
    start: np.ndarray  # float64 [m]
    end: np.ndarray  # float64 [m]
    space: np.ndarray  # uint8 [m]


def best_window(windows: VideoWindows, query: np.ndarray) -> tuple[float, float] | None:
    """(start, end) seconds of the window with the highest inner product with ``query`` [D];
    equal scores go to the earliest window. None for a video without windows."""
    if not len(windows.rows):
        return None
    scores = np.asarray(windows.rows, dtype=np.float32) @ np.asarray(query, dtype=np.float32)
    scores = np.where(np.isnan(scores), -np.inf, scores)
    i = int(np.argmax(scores))  # the first maximum: windows are in time order
    return float(windows.start[i]), float(windows.end[i])


def empty_windows(videos: int, dim: int, dtype: str) -> WindowRows:
    """No window for any of ``videos`` videos (a video too short to sample, say)."""
    return WindowRows(np.zeros((0, dim), dtype), np.zeros(videos + 1, np.int64), np.zeros(0), np.zeros(0), np.zeros(0, np.uint8))
