"""Exact top-k by filter-then-select: the algorithm the CUDA kernel runs, and a NumPy model of it.

The GPU search (:mod:`jemc_infer.index.gpu`) reads each index row once per pass, scores it against
a batch of queries and keeps only the rows that reach a per-query threshold, in a fixed-size
candidate buffer (``cap`` slots; every survivor is counted, the first ``cap`` kept); the exact
top-k is then selected from the survivors. The aim is one full pass per search: its cost is the
bytes of the index. This module holds the host-side plan shared by the real kernel and by
:class:`NumpyScan`, a model of the kernel that runs anywhere, so the plan is tested on every
machine. Pairs are ordered as the CPU search orders them (score descending, then id ascending);
"a threshold" is such a pair, and a row survives when its pair is at least as good.

1. **Samples.** Scan every ``step``-th row, at first with no threshold (``cap/2`` rows: they
   all fit). A query's k-th best sampled pair is a *proven* threshold: the sample is a subset of
   the rows, so at least k rows reach it. With it, a denser sample still fits the buffer; the
   samples go denser until one is fine enough (``fine`` step) to rank the whole index: the rows
   above the sample's r-th best number about ``r · step``.
2. **A guess.** The full pass is run with the pair a fine sample ranks at about
   ``sqrt(k · cap)`` rows (its r-th best, ``r · step`` about that): far fewer survivors than the
   proven threshold lets through, and nearly always between k and ``cap``.
3. **Full pass.** A query with k to ``cap`` survivors is done: it holds every row of the true
   top-k (at least k rows reach the threshold, so the k-th best does too), selected exactly.
   Fewer than k (the guess was too high, a rare draw): the guess is lowered (4× the rank, until
   the proven threshold) and the pass repeated for that query. More than ``cap`` (an overflow):
   the kept survivors' k-th best is a new proven threshold, strictly better than the last, and
   the query is sampled again from a step its survivors fit, then passed again.

The rules are those of the CPU :func:`jemc_infer.index.search.search`: ties by the lower id, dead
rows (id -1) and rows scoring NaN never returned, short answers padded with score -inf and id -1.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

ID_MAX = np.iinfo(np.int64).max  # a threshold id that lets every row with the threshold score pass
MIN_CAPACITY = 8192
MAX_ROUNDS = 64  # each round lowers a guess or strictly raises a proven threshold; far more than enough


def capacity_for(k: int) -> int:
    """Candidate slots per query: eight k (a guess aims about sqrt(8)·k deep, between k and the cap;
    an overflowing buffer keeps more than k rows, so it always proves a better threshold)."""
    return max(MIN_CAPACITY, 8 * k)


def _rank_for(width: int, cap: int) -> int:
    """The sample rank a guess rests on. The rows above a sample's r-th best number about
    ``r · step``, spread by about ``1/sqrt(r)`` on a log scale; the guess aims at the middle of
    ``[width, cap]`` (``ln(cap/width)`` wide there), and this r puts each edge four spreads away."""
    return max(2, math.ceil((12 / math.log(cap / width)) ** 2))


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


def _order(scores: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The indices that sort pairs best first (score descending, then id ascending)."""
    order = np.argsort(-scores)
    s = scores[order]
    if len(s) > 1 and (s[1:] == s[:-1]).any():  # ties (rare on real scores): order them by id
        order = np.lexsort((ids, -scores.astype(np.float64)))
    return order


def select(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` (score, id) pairs, score descending then id ascending; padded with (-inf, -1)."""
    if len(scores) > k:  # narrow to the k best scores and every pair tied with the k-th
        kth = -np.partition(-scores, k - 1)[k - 1]
        keep = scores >= kth
        scores, ids = scores[keep], ids[keep]
    order = _order(scores, ids)[:k]
    out_s = np.full(k, -np.inf, np.float32)
    out_i = np.full(k, -1, np.int64)
    out_s[: len(order)], out_i[: len(order)] = scores[order], ids[order]
    return out_s, out_i


def _kth(c: Candidates, q: int, rank: int) -> tuple[float, int] | None:
    """The ``rank``-th best kept pair of query ``q``; None where fewer are kept."""
    kept = int(min(c.counts[q], c.scores.shape[1]))
    return _kth_of(c.scores[q, :kept], c.ids[q, :kept], rank)


def _kth_of(s: np.ndarray, i: np.ndarray, rank: int) -> tuple[float, int] | None:
    """The ``rank``-th best of the pairs ``(s, i)`` (a partition, no sort); None where fewer."""
    if len(s) < rank:
        return None
    v = -np.partition(-s, rank - 1)[rank - 1]
    above = int((s > v).sum())
    return float(v), int(np.sort(i[s == v])[rank - 1 - above])


def _better(a: tuple[float, int], b: tuple[float, int]) -> bool:
    return a[0] > b[0] or (a[0] == b[0] and a[1] < b[1])


def topk(scan: Scan, queries: np.ndarray, k: int, cap: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of ``queries`` [nq, D] over the rows behind ``scan``.

    Returns:
        ``(scores, ids)``: float32 and int64 [nq, min(k, n_rows)], as :func:`jemc_infer.index.search.search`.

    Raises:
        RuntimeError: If a query is still not done after :data:`MAX_ROUNDS` rounds (cannot happen
            with a correct kernel: each round lowers a guess or strictly raises a proven threshold).
    """
    nq, n = len(queries), scan.n_rows
    width = min(k, n)
    cap = cap or capacity_for(width)
    out_s = np.full((nq, width), -np.inf, np.float32)
    out_i = np.full((nq, width), -1, np.int64)
    if nq == 0 or width == 0:
        return out_s, out_i
    proven = [(-math.inf, int(ID_MAX))] * nq  # at least `width` rows reach it (or it lets every row through)
    aim = math.sqrt(width * cap)  # the survivors a guess aims at
    fine = max(1, int(aim) // _rank_for(width, cap))  # a sample this dense ranks the whole index
    ladder: list[tuple[np.ndarray, np.ndarray] | None] = [None] * nq  # a fine sample's pairs (where all were kept)
    rank = [1] * nq  # the ladder's rank a guess takes
    lower = [1] * nq  # 4 ** (guesses found too high): kept across samples, so guessing ends
    todo = np.arange(nq)
    step = max(1, -(-n // (cap // 2)))  # at most cap/2 rows: with no threshold, they all fit
    step = max(step, fine) if step > 1 else 1  # and no denser than a fine sample
    sampling = True
    for _ in range(MAX_ROUNDS):
        while step > 1:  # samples: prove thresholds, then rank the index
            c = scan.scan(queries[todo], *_pairs([proven[q] for q in todo]), step, cap)
            for j, q in enumerate(todo):
                t = _kth(c, j, width)
                if t is not None and _better(t, proven[q]):
                    proven[q] = t
                if step <= fine:
                    kept = int(c.counts[j])
                    ladder[q] = (c.scores[j, :kept].copy(), c.ids[j, :kept].copy()) if kept <= cap else None
                    rank[q] = max(1, round(aim / step)) * lower[q]
            if step <= fine:
                break
            step = max(fine, -(-2 * width * step // cap))  # its survivors of a proven threshold: about cap/2
        tried = [_guess(ladder[q], rank[q], width, proven[q]) for q in todo]
        c = scan.scan(queries[todo], *_pairs(tried), 1, cap)
        left, spill, done = [], 0, []
        for j, q in enumerate(todo):
            count = int(c.counts[j])
            guessing, trivial = tried[j] != proven[q], tried[j] == (-math.inf, ID_MAX)
            if count <= cap and (count >= width or trivial):  # every row of the top k survived
                done.append((j, q, count))
                continue
            left.append(q)
            if count < width and not guessing:  # a proven threshold cannot do this: the kernel scored rows
                proven[q], ladder[q] = (-math.inf, int(ID_MAX)), None  # two ways. Start again from none, and
                sampling = False  # believe full passes only
            elif count < width:  # the guess was too high: a lower one next
                rank[q], lower[q] = rank[q] * 4, lower[q] * 4
            else:  # an overflow: the kept survivors prove a better threshold; sample again from it
                t = _kth(c, j, width)
                assert t is not None  # an overflowing buffer keeps cap > k rows
                proven[q], ladder[q] = t, None
                spill = max(spill, count)
        _select_all(c, done, width, out_s, out_i)
        if not left:
            return out_s, out_i
        todo = np.array(left)
        step = max(1, -(-spill // (cap // 2))) if sampling else 1  # fewer rows than `spill` reach the new thresholds
    raise RuntimeError(f"GPU top-k | {len(todo)} queries not done after {MAX_ROUNDS} rounds | expected convergence")


_POOL: list[ThreadPoolExecutor] = []


def _select_all(c: Candidates, done: list[tuple[int, int, int]], width: int, out_s: np.ndarray, out_i: np.ndarray) -> None:
    """Each finished query's top ``width`` from its survivors; on threads when there are many
    (numpy sorts without the GIL): 256 queries at k = 4096 are ~0.07 s of selection on one core here."""
    def one(item: tuple[int, int, int]) -> None:
        j, q, count = item
        out_s[q], out_i[q] = select(c.scores[j, :count], c.ids[j, :count], width)

    if len(done) * width < 1 << 16 or (os.cpu_count() or 1) < 2:
        for item in done:
            one(item)
        return
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(min(8, os.cpu_count() or 1), thread_name_prefix="jemc-topk"))
    list(_POOL[0].map(one, done))


def _pairs(pairs: list[tuple[float, int]]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([p[0] for p in pairs], np.float32), np.array([p[1] for p in pairs], np.int64)


def _guess(ladder: tuple[np.ndarray, np.ndarray] | None, rank: int, width: int,
           proven: tuple[float, int]) -> tuple[float, int]:
    """The fine sample's ``rank``-th best pair where it is better than the proven threshold."""
    g = _kth_of(*ladder, rank) if ladder is not None and rank < width else None
    return g if g is not None and _better(g, proven) else proven


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
        self.passes = 0  # how many scans ran
        self.rows_read = 0  # rows visited over all scans: the figure of the bytes a search reads

    def scan(self, queries: np.ndarray, thr_scores: np.ndarray, thr_ids: np.ndarray, step: int, cap: int) -> Candidates:
        self.passes += 1
        self.rows_read += len(range(0, self.n_rows, step))
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
