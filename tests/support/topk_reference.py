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
