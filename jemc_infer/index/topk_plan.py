"""Exact top-k by filter-then-select: the algorithm the CUDA kernel runs, and a NumPy model of it.

The GPU search (:mod:`jemc_infer.index.gpu`) reads each index row once per pass, scores it against
a batch of queries and keeps only the rows that beat a per-query threshold, in a fixed-size
candidate buffer; the exact top-k is then selected from the survivors. This module holds the
host-side plan shared by the real kernel and by :class:`NumpyScan`, a model of the kernel that
runs anywhere, so the plan is tested on every machine:

1. **Sample.** Scan every ``step``-th row with no threshold (all of them fit the buffer). For a
   query with at least k sampled rows, the k-th best sampled (score, id) pair is a valid threshold:
   the k-th best of all rows is at least as good, because the sample is a subset.
2. **Filter.** Scan every row; a row survives for a query when its (score, id) pair is at least
   the threshold in the search order (score descending, then id ascending). Every row of the true
   top-k survives. A query whose survivors fit the buffer is done: select its top k exactly.
3. **Overflow.** A query with more survivors than the buffer holds kept an arbitrary subset of
   them (whichever the kernel wrote first). The k-th best pair of that subset is again a valid
   threshold and strictly better than the last one (the buffer holds at least 2k distinct rows
   that all reach it), so the query is scanned again with a denser sample first; this repeats
   until the survivors fit.

The order and the rules are those of the CPU :func:`jemc_infer.index.search.search`: ties by
the lower id, dead rows (id -1) and rows scoring NaN never returned, short answers padded with
score -inf and id -1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

ID_MAX = np.iinfo(np.int64).max  # a threshold id that lets every row with the threshold score pass
MIN_CAPACITY = 4096
MAX_ROUNDS = 64  # each round strictly raises every overflowing query's threshold; far more than enough


def capacity_for(k: int) -> int:
    """Candidate slots per query: room for two k (so an overflow always teaches a new threshold)."""
    return max(MIN_CAPACITY, 4 * k)


@dataclass
class Candidates:
    """What one scan left per query: ``count`` survivors seen, the first ``min(count, cap)`` kept."""

    scores: np.ndarray  # float32 [nq, cap]
    ids: np.ndarray  # int64 [nq, cap]
    counts: np.ndarray  # int64 [nq]: survivors seen (may exceed cap: then the buffer overflowed)


class Scan(Protocol):
    """One pass of the kernel over the resident rows."""

    n_rows: int

    def scan(self, queries: np.ndarray, thr_scores: np.ndarray, thr_ids: np.ndarray, step: int, cap: int) -> Candidates:
        """Score rows ``0, step, 2·step, …`` against ``queries`` [nq, D] float32 and keep, per query,
        those whose (score, id) is at least ``(thr_scores[q], thr_ids[q])`` in the search order."""
        ...


def select(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` (score, id) pairs, score descending then id ascending; padded with (-inf, -1)."""
    order = np.lexsort((ids, -scores.astype(np.float64)))[:k]
    out_s = np.full(k, -np.inf, np.float32)
    out_i = np.full(k, -1, np.int64)
    out_s[: len(order)], out_i[: len(order)] = scores[order], ids[order]
    return out_s, out_i


def _kth(c: Candidates, q: int, k: int) -> tuple[float, int] | None:
    kept = int(min(c.counts[q], c.scores.shape[1]))
    if kept < k:
        return None
    s, i = select(c.scores[q, :kept], c.ids[q, :kept], k)
    return float(s[-1]), int(i[-1])


def topk(scan: Scan, queries: np.ndarray, k: int, cap: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of ``queries`` [nq, D] over the rows behind ``scan``.

    Returns:
        ``(scores, ids)``: float32 and int64 [nq, min(k, n_rows)], as :func:`jemc_infer.index.search.search`.

    Raises:
        RuntimeError: If a query still overflows after :data:`MAX_ROUNDS` rounds (cannot happen
            with a correct kernel: each round strictly raises the threshold).
    """
    nq, n = len(queries), scan.n_rows
    width = min(k, n)
    cap = cap or capacity_for(k)
    out_s = np.full((nq, width), -np.inf, np.float32)
    out_i = np.full((nq, width), -1, np.int64)
    if nq == 0 or width == 0:
        return out_s, out_i
    thr_s = np.full(nq, -np.inf, np.float32)
    thr_i = np.full(nq, ID_MAX, np.int64)
    todo = np.arange(nq)
    step = max(1, -(-n // (cap // 2)))  # a sample of at most cap/2 rows: it never overflows
    for _ in range(MAX_ROUNDS):
        if step > 1:  # a sample teaches a threshold; it cannot finish a query
            c = scan.scan(queries[todo], thr_s[todo], thr_i[todo], step, cap)
            for j, q in enumerate(todo):
                t = _kth(c, j, width)
                if t is not None and (t[0] > thr_s[q] or (t[0] == thr_s[q] and t[1] < thr_i[q])):
                    thr_s[q], thr_i[q] = t
        c = scan.scan(queries[todo], thr_s[todo], thr_i[todo], 1, cap)
        left = []
        for j, q in enumerate(todo):
            if c.counts[j] <= cap:
                kept = int(c.counts[j])
                s, i = select(c.scores[j, :kept], c.ids[j, :kept], width)
                out_s[q], out_i[q] = s, i
            else:
                t = _kth(c, j, width)
                assert t is not None  # an overflowing buffer holds cap >= 2k rows
                thr_s[q], thr_i[q] = t
                left.append(q)
        if not left:
            return out_s, out_i
        todo = np.array(left)
        step = max(1, step // 4)  # a denser sample next round
    raise RuntimeError(f"GPU top-k | {len(todo)} queries still overflow after {MAX_ROUNDS} rounds | expected convergence")


class NumpyScan:
    """The kernel's pass in NumPy: rows in blocks, survivors appended in an order the caller sets.

    The CUDA kernel appends survivors with an atomic counter, so which ones land in an overflowing
    buffer depends on scheduling. ``order`` models that: ``"rows"`` (block by block, as a GPU that
    runs blocks in order would), ``"reverse"``, or ``"random"`` (seeded).
    """

    def __init__(self, rows: np.ndarray, ids: np.ndarray, block_rows: int = 1024, order: str = "random", seed: int = 0) -> None:
        self.rows, self.ids, self.n_rows = rows, ids, len(rows)
        self.block_rows, self.order = block_rows, order
        self.rng = np.random.default_rng(seed)
        self.passes = 0  # how many scans ran (a figure of the bytes read)

    def scan(self, queries: np.ndarray, thr_scores: np.ndarray, thr_ids: np.ndarray, step: int, cap: int) -> Candidates:
        self.passes += 1
        nq = len(queries)
        out = Candidates(np.zeros((nq, cap), np.float32), np.zeros((nq, cap), np.int64), np.zeros(nq, np.int64))
        visit = np.arange(0, self.n_rows, step)
        blocks = [visit[b:b + self.block_rows] for b in range(0, len(visit), self.block_rows)]
        if self.order == "reverse":
            blocks = blocks[::-1]
        elif self.order == "random":
            blocks = [blocks[i] for i in self.rng.permutation(len(blocks))]
        with np.errstate(invalid="ignore"):
            for rows in blocks:
                ids = self.ids[rows]
                live = ids >= 0
                rows, ids = rows[live], ids[live]
                # float64 products rounded once: the same scores whatever the blocking (the kernel's own
                # rounding differs again; the GPU tests compare ids, and scores to a tolerance)
                scores = (queries.astype(np.float64) @ self.rows[rows].astype(np.float64).T).astype(np.float32)
                for q in range(nq):
                    s = scores[q]
                    ok = (s > thr_scores[q]) | ((s == thr_scores[q]) & (ids <= thr_ids[q]))  # NaN: never
                    take_s, take_i = s[ok], ids[ok]
                    if self.order == "random":  # threads within a block race too
                        p = self.rng.permutation(len(take_s))
                        take_s, take_i = take_s[p], take_i[p]
                    start = int(out.counts[q])
                    room = max(0, min(len(take_s), cap - start))
                    out.scores[q, start:start + room], out.ids[q, start:start + room] = take_s[:room], take_i[:room]
                    out.counts[q] += len(take_s)
        return out
