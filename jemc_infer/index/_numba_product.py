"""The numba kernel of :mod:`jemc_infer.index.jit` (imported by it only: importing this imports numba)."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, boundscheck=False, cache=True)
def pairs(a: np.ndarray, blocks: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """``out[b, i, j] = sum_d (a[i, d] - 64) * blocks[b, d, j]`` in int32 (exact: |a - 64| <= 64,
    |code| <= 128, D <= 2**17), two rows of ``a`` per pass over a block, so that each block is read
    from memory once for one query's two 7-bit halves."""
    nb, dim, w = blocks.shape
    rows = a.shape[0]
    acc0 = np.empty(w, np.int32)
    acc1 = np.empty(w, np.int32)
    for b in range(nb):
        for i in range(0, rows, 2):
            i1 = min(i + 1, rows - 1)
            acc0[:] = 0
            acc1[:] = 0
            for d in range(dim):
                x = np.int32(a[i, d]) - 64
                y = np.int32(a[i1, d]) - 64
                for j in range(w):
                    c = np.int32(blocks[b, d, j])
                    acc0[j] += x * c
                    acc1[j] += y * c
            out[b, i] = acc0
            out[b, i1] = acc1


@numba.njit(nogil=True, boundscheck=False, cache=True)
def rows_pairs(codes: np.ndarray, rows: np.ndarray, q: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """``out[r, j] = sum_d codes[rows[r], d] * q[j, d]`` for j = 0, 1 in int32: the rows read where
    they lie (a memory map's pages), not gathered into a copy first."""
    dim = codes.shape[1]
    for r in range(rows.shape[0]):
        x = codes[rows[r]]
        s0 = np.int32(0)
        s1 = np.int32(0)
        for d in range(dim):
            c = np.int32(x[d])
            s0 += np.int32(q[0, d]) * c
            s1 += np.int32(q[1, d]) * c
        out[r, 0] = s0
        out[r, 1] = s1
