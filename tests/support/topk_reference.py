"""The brute-force top-k every search is checked against."""

from __future__ import annotations

import numpy as np


def reference(rows: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: every live, non-NaN row scored, sorted by (score desc, id asc)."""
    with np.errstate(invalid="ignore"):
        scores = (queries.astype(np.float64) @ rows.astype(np.float64).T).astype(np.float32)
    width = min(k, len(rows))
    out_s = np.full((len(queries), width), -np.inf, np.float32)
    out_i = np.full((len(queries), width), -1, np.int64)
    for q, s in enumerate(scores):
        ok = (ids >= 0) & ~np.isnan(s)
        order = np.lexsort((ids[ok], -s[ok].astype(np.float64)))[:width]
        out_s[q, :len(order)], out_i[q, :len(order)] = s[ok][order], ids[ok][order]
    return out_s, out_i


def assert_same(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray], rtol: float) -> None:
    """Ids equal where the reference's scores are not within rounding of each other; scores close."""
    np.testing.assert_allclose(got[0], want[0], rtol=rtol, atol=rtol)
    gap = np.abs(np.diff(want[0], axis=1, append=-np.inf))
    clear = (gap > 4 * rtol) & np.concatenate([np.ones_like(gap[:, :1], bool), gap[:, :-1] > 4 * rtol], axis=1)
    np.testing.assert_array_equal(got[1][clear], want[1][clear])
