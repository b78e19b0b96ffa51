"""Exact search over a compact int8 copy of the rows: scan 4x fewer bytes, rescore the few that can win.

A *segment* is the compact copy of a run of shards: each row ``x`` stored as ``r = round(x / s)``
with one scale ``s = max|x| / 127`` per row (int8 [n, D], rows in order); the 7-bit residual codes
``r2`` of what that leaves out (``x ~ s r + s2 r2``, [n, D], read only for candidates); and per
row ``(s, err, norm, s2, err2)``: bounds ``err >= ||x - s r||``, ``err2 >= ||x - s r - s2 r2||``
and ``norm >= max(||x||, ||s r||)`` (:func:`quantise`).

The query ``q`` is split in two 7-bit parts, ``q = t1 a1 + t2 a2 + e`` (``a1, a2`` integers in
[-63, 63], ``t2 = t1 / 64``, one product with both), which leaves its own error ``||e|| <= rho
||q||`` negligible. Then for every row, by Cauchy-Schwarz twice,

    |q . x - approx|  <=  ||q|| (err + rho norm)      with ``approx = s q^ . r`` exact in integers,

and ``err`` is widened at write time for every float rounding the search adds (of ``approx`` and
of the rescoring). The true top k are among the rows whose upper bound reaches the k-th best
lower bound; those are narrowed with their residual codes (the same bound with ``err2``, ~60x
tighter), and the few left are rescored from the full rows in float64 and ranked by (score desc,
id asc): the brute-force oracle's ids, scores rounded from float64 — always, not usually.

The integer products are NumKong's (``numkong.dots_packed``: SIMD int8 dot products summed in
int32, the codes of up to 16 queries packed once per search): the codes are read in place, once
per 16 queries, and the module imports in ~1 ms, so a one-shot ``query`` pays nothing to load it
(onnxruntime's ``MatMulInteger`` packed every block of codes before it multiplied: 1.7-1.9x slower
at one query; numba's loop was a little faster but cost ~0.23 s to load: benchmarks/RESULTS.md).
The product checks itself on extreme operands when first used: where it is missing or not exact,
the full scan runs instead. The scan, the residual narrowing and the rescoring run in threads
(NumKong and BLAS release the GIL); the last two read rows at random (2 kB, 8 kB), bound by memory
latency, so even one query's candidates are cut in pieces across the threads. Rows with a
non-finite or huge value are not quantised: they are always rescored.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jemc_infer.errors import IndexCorruptError
from jemc_infer.index.npyfile import npy_writer
from jemc_infer.index.source import Shard

_GROUP_SCORES = 1 << 20
# Threads of the int8 scan: it is bound by memory bandwidth, which more cores share (measured on 2).
SCAN_THREADS = max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))
BLOCK = 1024  # rows per unit of the scan's work and of quantising (a product call takes up to 16)
_QUERY_BATCH = 16  # queries per pass over a group of codes: beyond, NumKong's packed product slows (RESULTS.md)
_QUERY_LEVELS = 63  # |a| <= 63: the two 7-bit halves of a query's codes
_HUGE = 1e15  # rows (or queries) with larger values are rescored (or searched) in full
_U32 = 2.0**-24  # float32 unit roundoff
_PIECE = 256  # candidate rows at least per thread's piece of one query's narrowing or rescoring


@dataclass(frozen=True)
class Segment:
    """The int8 copy of a run of shards.

    ``codes``: int8 [n, D], row i the 8-bit codes of segment row i. ``residual``: int8 [n, D], the
    7-bit codes of what the first leaves out (read only for the rows the first pass cannot rule
    out). ``meta``: float32 [n, 5] = (scale, err, norm, scale2, err2) per row (:func:`quantise`);
    scale NaN marks a row that is always rescored. ``keys`` and ``counts``: the shards it copies
    and their row counts, in order (segment row i is row i of their concatenation); a key the
    source does not yield is a shard whose rows are all dead.
    """

    codes: np.ndarray
    residual: np.ndarray
    meta: np.ndarray
    keys: tuple[int, ...]
    counts: tuple[int, ...]

    @property
    def rows(self) -> int:
        return int(self.meta.shape[0])


def quantise(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The compact copy of ``rows`` [n, D]: int8 codes [n, D], the 7-bit residual codes [n, D] and
    meta [n, 5] = (scale, err, norm, scale2, err2).

    ``x ~ scale r`` (8 bits) and ``x ~ scale r + scale2 r2`` (15 bits); ``err`` and ``err2`` bound
    the norms of what each leaves out, computed in float64 with the float32 scales the search uses,
    widened by the float32 rounding the search may add (the approximate scores' and the rescoring's,
    both <= (D + 8) u ||q|| ||x||), rounded up to float32. Non-finite or huge rows get scale NaN.
    """
    n, dim = rows.shape
    x = np.asarray(rows, dtype=np.float64)
    peak = np.max(np.abs(x), axis=1) if dim else np.zeros(n)
    special = ~np.isfinite(peak) | (peak > _HUGE)
    x = np.where(special[:, None], 0.0, x)
    r, scale = _levels(x, 127)
    res = x - r * scale[:, None]
    r2, scale2 = _levels(res, 63)
    res2 = res - r2 * scale2[:, None]
    norm = np.maximum(np.linalg.norm(x, axis=1), np.linalg.norm(x - res, axis=1))
    slack = (dim + 8) * 2 * _U32 * norm
    meta = np.empty((n, 5), np.float32)
    meta[:, 0] = np.where(special, np.nan, scale)
    meta[:, 1] = _round_up(np.linalg.norm(res, axis=1) * (1 + 1e-9) + slack)
    meta[:, 2] = _round_up(norm * (1 + 1e-9))
    meta[:, 3] = np.where(special, np.nan, scale2)
    meta[:, 4] = _round_up(np.linalg.norm(res2, axis=1) * (1 + 1e-9) + slack)
    return r.astype(np.int8), r2.astype(np.int8), meta


def _levels(x: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer levels in [-top, top] and the per-row float32 scale (as float64) they are scaled by."""
    scale = (np.max(np.abs(x), axis=1) / top).astype(np.float32).astype(np.float64) if x.shape[1] else np.zeros(len(x))
    safe = np.where(scale > 0, scale, 1.0)
    return np.clip(np.rint(x / safe[:, None]), -top, top) * (scale > 0)[:, None], scale


def _round_up(v: np.ndarray) -> np.ndarray:
    f = v.astype(np.float32)
    return np.where(f.astype(np.float64) < v, np.nextafter(f, np.float32(np.inf)), f)


# score(codes int8 [r, D], upper float32 [nq, r]): upper[q] = 64 a1_q . codes + a2_q . codes (see _scorer)
Scorer = Callable[[np.ndarray, np.ndarray], None]


@functools.cache
def _numkong() -> Any | None:
    """NumKong's module once its products passed :func:`_self_check` in this process, else None
    (not installed, or not exact on this machine: the search scans the full rows instead)."""
    try:
        import numkong
    except ImportError:
        return None
    return numkong if _self_check(numkong) else None


def _scrambled(count: int) -> np.ndarray:
    """``count`` well-mixed uint32 values, Knuth's multiplicative hash of 0, 1, … (high bits the
    best mixed; not numpy.random: its import costs a query's cold start ~6 ms): the self-check's operands."""
    return np.arange(count, dtype=np.uint32) * np.uint32(2654435761)


_CHECK_DIM = 4 * BLOCK + 3  # odd, and long enough that extreme sums (> 2**24) expose a float32 accumulator
_CHECK_ROWS = 11


def _self_check(nk: Any) -> bool:
    """NumKong's product on extreme and scrambled codes (odd sizes; the narrowing's two query rows
    and a full batch of the scan's) against numpy's exact product."""
    dim, rows = _CHECK_DIM, _CHECK_ROWS
    mix = _scrambled(dim * (rows + 2 * _QUERY_BATCH))
    codes = (mix[: rows * dim] >> 24).astype(np.uint8).view(np.int8).reshape(rows, dim)
    codes[0], codes[1], codes[2] = 127, -127, -128
    for m in (2, 2 * _QUERY_BATCH):
        a = (np.minimum(mix[rows * dim : (rows + m) * dim] >> 25, 126).astype(np.int8) - 63).reshape(m, dim)
        a[0], a[1] = _QUERY_LEVELS, -_QUERY_LEVELS
        got = np.asarray(nk.dots_packed(codes, nk.dots_pack(a)))
        if not np.array_equal(got, codes.astype(np.float64) @ a.T.astype(np.float64)):  # BLAS, exact: integers < 2**53
            return False
    return True


def unavailable() -> str | None:
    """Why the compact scan cannot run on this machine (searches then read the full rows), or None."""
    if _numkong() is not None:
        return None
    try:
        import numkong  # noqa: F401 - only to tell a missing module from a failed self-check
    except ImportError as err:
        return f"numkong is not installed ({err}): reinstall jemc-infer"
    return "numkong's int8 product is not exact on this machine (its self-check failed)"


def usable(queries: np.ndarray) -> bool:
    """Whether the compact scan can answer these queries exactly here."""
    return bool(np.abs(queries).max(initial=0.0) <= _HUGE) and _numkong() is not None


def _split_queries(q: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(a int8 [2 nq, D]: the halves a1 then a2, scale [nq] float32, rho): ``q . (s r) = qn * scale
    * s * (64 a1.r + a2.r)`` up to the query's own error ``e``, and ``||e|| <= rho * ||q||`` for
    every query. Scores are kept divided by each query's norm ``qn`` (1 for a zero query): the
    order within a query is the same, and the bound becomes one number per row for all queries:
    ``err + rho * norm``."""
    x = q.astype(np.float64)
    t1 = np.max(np.abs(x), axis=1) / _QUERY_LEVELS
    t1 = np.where(t1 > 0, t1, 1.0).astype(np.float32).astype(np.float64)
    t2 = t1 / 64  # exact: a power of two
    a1 = np.clip(np.rint(x / t1[:, None]), -_QUERY_LEVELS, _QUERY_LEVELS)
    a2 = np.clip(np.rint((x - a1 * t1[:, None]) / t2[:, None]), -_QUERY_LEVELS, _QUERY_LEVELS)
    e = x - a1 * t1[:, None] - a2 * t2[:, None]
    a = np.concatenate([a1, a2]).astype(np.int8)
    qn = np.linalg.norm(x, axis=1)
    qn = np.where(qn > 0, qn, 1.0)
    # the float32 rounding of the approximate score (~4 u of its size) is in each row's err already
    rho = float(np.max(np.linalg.norm(e, axis=1) / qn, initial=0.0)) * (1 + 1e-6) + 1e-12
    return a, (t2 / qn).astype(np.float32), rho


def _scorer(nk: Any, a: np.ndarray) -> Scorer:
    """The scan's product for query codes ``a`` (:func:`_split_queries`): the codes of up to
    :data:`_QUERY_BATCH` queries (both halves) packed once, each batch one pass over the rows."""
    nq, dim = a.shape[0] // 2, a.shape[1]
    batches = [(lo, min(nq, lo + _QUERY_BATCH)) for lo in range(0, nq, _QUERY_BATCH)]
    packed = [nk.dots_pack(np.concatenate([a[lo:hi], a[nq + lo : nq + hi]])) for lo, hi in batches]

    def score(codes: np.ndarray, upper: np.ndarray) -> None:
        for (lo, hi), b in zip(batches, packed, strict=True):
            y = np.asarray(nk.dots_packed(codes, b))  # int32 [r, 2 (hi - lo)]: a1 parts, then a2 parts
            y1, y2 = y[:, : hi - lo], y[:, hi - lo :]
            if dim <= 4096:  # 64 |a1.r| + |a2.r| < 2**31: combine in integers
                np.multiply(y1, 64, out=y1)
                np.add(y1, y2, out=y1)
                np.copyto(upper[lo:hi], y1.T, casting="unsafe")  # one pass: transpose + convert
            else:
                np.copyto(upper[lo:hi], y1.T, casting="unsafe")
                upper[lo:hi] *= 64
                upper[lo:hi] += y2.T

    return score


class _Bounds:
    """Per query, the rows that may still be in the top k: every row whose upper bound reaches the
    threshold, the k-th best lower bound seen (rows below it can never enter: k rows beat them).
    Bounds are kept as (upper, half-width): lower = upper - 2 * half."""

    def __init__(self, nq: int, k: int) -> None:
        self.k = k
        self.cap = max(4 * k, 1024)
        self.thr = np.full(nq, -np.inf, np.float32)
        self.parts: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in range(nq)]  # (lower, upper, pos)
        self.count = np.zeros(nq, np.int64)

    def add(self, upper: np.ndarray, half: np.ndarray, pos: np.ndarray) -> None:
        """Fold in a group of rows: ``upper`` float32 [nq, w] (NaN: a dead row, +inf: a row to
        rescore always), ``half`` [w] the bound's half-width, ``pos`` int64 [w] their positions."""
        w = upper.shape[1]
        fresh = np.flatnonzero(self.thr == -np.inf)
        if fresh.size and w > self.k:  # no threshold yet: this group's k-th best lower bound is one
            lower = _lower(upper[fresh], half)
            np.maximum.at(self.thr, fresh, np.partition(lower, w - self.k, axis=1)[:, w - self.k])
        mask = upper >= self._floor()[:, None]
        flat = np.flatnonzero(mask)
        if not flat.size:
            return
        per_query = np.bincount(flat // w, minlength=len(self.thr))
        up, at = upper.reshape(-1)[flat], pos[flat % w]
        lo = _lower(up, half[flat % w])
        ends = np.cumsum(per_query)
        for q in np.flatnonzero(per_query):
            a, b = ends[q] - per_query[q], ends[q]
            self.parts[q].append((lo[a:b], up[a:b], at[a:b]))
            self.count[q] += b - a
            if self.count[q] > self.cap:
                self._compact(q)

    @classmethod
    def merged(cls, found: list[_Bounds], nq: int, k: int) -> _Bounds:
        """One set of bounds from several scans' (of disjoint rows): the best threshold, every candidate."""
        out = cls(nq, k)
        for b in found:
            np.maximum(out.thr, b.thr, out=out.thr)
            for q in range(nq):
                out.parts[q] += b.parts[q]
            out.count += b.count
        return out

    def _compact(self, q: int) -> np.ndarray:
        parts = self.parts[q]
        lo = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, np.float32)
        up = np.concatenate([p[1] for p in parts]) if parts else np.empty(0, np.float32)
        at = np.concatenate([p[2] for p in parts]) if parts else np.empty(0, np.int64)
        if len(lo) >= self.k:
            self.thr[q] = max(self.thr[q], np.partition(lo, len(lo) - self.k)[len(lo) - self.k])
        keep = up >= self._floor()[q]
        lo, up, at = lo[keep], up[keep], at[keep]
        self.parts[q], self.count[q] = [(lo, up, at)], len(lo)
        self.cap = max(self.cap, 2 * len(lo))  # many rows within the bounds: compact less often
        return at

    def _floor(self) -> np.ndarray:
        """The threshold less 4 ulps: a row just below it cannot round to a tie with the k-th."""
        return self.thr - np.abs(self.thr) * np.float32(4 * _U32)

    def survivors(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Each query's candidates, final: (lower, upper, positions)."""
        out = []
        for q in range(len(self.thr)):
            self._compact(q)
            out.append(self.parts[q][0])
        return out


def _lower(upper: np.ndarray, half: np.ndarray) -> np.ndarray:
    """upper - 2 half, -inf for rows rescored always (infinite half) and dead rows."""
    with np.errstate(invalid="ignore"):
        lower = upper - 2 * half
    return np.where(np.isnan(lower), np.float32(-np.inf), lower)


def compact_search(shards: Sequence[Shard], segments: Sequence[Segment], q: np.ndarray, k: int,
                   dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of float32 queries ``q`` [nq, D] over ``shards`` through their ``segments``
    (every shard with a live row is in one; see :func:`covers`). Same contract as ``search``.

    The int8 scan runs in up to :data:`SCAN_THREADS` threads, each over a contiguous run of the
    rows with bounds of its own (merged after): each thread streams its own part of the codes, and
    its bound bookkeeping overlaps the others' products."""
    nk = _numkong()
    assert nk is not None, "compact_search without an exact product: check usable() first"
    nq = q.shape[0]
    a, tn, rho = _split_queries(q)
    score = _scorer(nk, a)
    by_key = {s.key: s for s in shards}
    step = BLOCK * max(1, min(16, _GROUP_SCORES // (nq * BLOCK)))  # rows per product call: ~1M scores at most
    # A global position per segment row: segment offset + row; the rescoring maps it back.
    spans: list[tuple[int, Segment, list[tuple[Shard | None, int]], list[int]]] = []
    work: list[tuple[int, int, int]] = []  # (span, first row, rows) per product call
    base = 0
    live = 0
    for seg in segments:
        parts = []
        for key, n in zip(seg.keys, seg.counts, strict=True):
            shard = by_key.get(key)
            if shard is not None and len(shard.ids) != n:
                raise IndexCorruptError(f"compact segment | shard {key} with {len(shard.ids)} rows | expected {n}")
            parts.append((shard, n))
            live += int(np.count_nonzero(shard.ids >= 0)) if shard is not None else 0
        if sum(seg.counts) != seg.rows or seg.codes.shape != (seg.rows, dim):
            raise IndexCorruptError(f"compact segment | {seg.rows} rows, codes {list(seg.codes.shape)} | expected "
                                    f"{sum(seg.counts)} rows (its shards') and codes [{sum(seg.counts)}, {dim}]")
        offsets = np.concatenate([[0], np.cumsum(seg.counts)[:-1]]).astype(int).tolist() if parts else []
        work += [(len(spans), start, min(step, seg.rows - start)) for start in range(0, seg.rows, step)]
        spans.append((base, seg, parts, offsets))
        base += seg.rows
    threads = max(1, min(SCAN_THREADS, len(work)))
    # contiguous runs of about equal rows, one per thread (each streams its own part of the codes)
    ends = np.cumsum([w[2] for w in work])
    cuts = np.searchsorted(ends, ends[-1] * np.arange(1, threads) / threads, side="right") if work else []
    runs = np.split(np.arange(len(work)), cuts)

    def scan(run: np.ndarray) -> _Bounds:
        bounds = _Bounds(nq, k)
        for i in run:
            at, start, rows = work[i]
            _scan_group(score, tn, rho, spans[at], start, rows, bounds)
        return bounds

    bounds = _Bounds.merged(_in_threads(scan, [(run,) for run in runs]), nq, k)
    starts = np.array([sp[0] for sp in spans] + [math.inf])
    found = [_by_position(*s) for s in bounds.survivors()]
    # Narrow the queries with more than k candidates: random reads of 2 kB rows, bound by memory
    # latency, so they are split across the threads (one query's too, in runs of positions).
    many = [qi for qi in range(nq) if len(found[qi][2]) > k]
    first = {qi: np.empty(len(found[qi][2]), np.float32) for qi in many}
    second = {qi: np.empty(len(found[qi][2]), np.float32) for qi in many}

    def refine(pieces: list[tuple[int, slice]]) -> None:
        for qi, at in pieces:
            _narrow(nk, nk.dots_pack(a[[qi, nq + qi]]), *(x[at] for x in found[qi]), spans, starts, tn[qi], rho,
                    first[qi][at], second[qi][at])

    groups = _pieces({qi: len(found[qi][2]) for qi in many}, SCAN_THREADS)
    if groups:
        _in_threads(refine, [(g,) for g in groups])
    refined = [found[qi][2] if qi not in first else _kept(found[qi][2], first[qi], second[qi], k, bounds.thr[qi])
               for qi in range(nq)]
    return _rescore(refined, spans, q, k, live)


def _in_threads(fn: Callable, calls: list[tuple]) -> list:
    """``fn(*args)`` for each of ``calls``: the first in this thread, each other in a thread of its
    own (plain threads: ``concurrent.futures`` and the ``logging`` it imports cost a query's cold
    start ~3 ms); the values in order, or the first exception once every call has ended."""
    out: list = [None] * len(calls)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            out[i] = fn(*calls[i])
        except BaseException as e:  # noqa: BLE001 - raised below, in the caller's thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,), name="jemc-compact", daemon=True) for i in range(1, len(calls))]
    for t in threads:
        t.start()
    work(0)
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out


def _scan_group(score: Scorer, tn: np.ndarray, rho: float, span: tuple, start: int, rows: int, bounds: _Bounds) -> None:
    """Score the segment rows [start, start + rows) of ``span`` in one product and fold their bounds in."""
    base, seg, parts, offsets = span
    scale, err, norm = seg.meta[:, 0], seg.meta[:, 1], seg.meta[:, 2]
    stop = start + rows
    upper = np.empty((len(tn), rows), np.float32)
    score(np.asarray(seg.codes[start:stop]), upper)
    s = scale[start:stop]
    special = np.isnan(s)
    upper *= tn[:, None]
    upper *= np.where(special, 0, s)
    half = err[start:stop] + np.float32(rho) * norm[start:stop]
    upper += half
    if special.any():
        upper[:, special], half = np.inf, np.where(special, np.float32(np.inf), half)
    dead = _dead(parts, offsets, start, stop)
    if dead.any():
        upper[:, dead] = np.nan  # NaN >= anything is False: never a candidate
    bounds.add(upper, half, np.arange(base + start, base + stop, dtype=np.int64))


def _by_position(lower: np.ndarray, upper: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A query's candidates in the order of their positions (reads in file order)."""
    order = np.argsort(pos, kind="stable")
    return lower[order], upper[order], pos[order]


def _pieces(sizes: dict[int, int], threads: int) -> list[list[tuple[int, slice]]]:
    """Work for up to ``threads`` threads over each query's candidates (``sizes``: their count by
    query): where there are fewer queries than threads a query's run is cut in contiguous pieces
    of at least :data:`_PIECE` rows; pieces are dealt round-robin. Empty groups are left out."""
    per = -(-threads // max(len(sizes), 1))
    pieces = [(qi, slice(lo, hi)) for qi, n in sizes.items()
              for lo, hi in itertools.pairwise(np.linspace(0, n, max(1, min(per, n // _PIECE)) + 1).astype(int).tolist())]
    return [g for g in (pieces[t::threads] for t in range(threads)) if g]


def _narrow(nk: Any, pair: Any, lower: np.ndarray, upper: np.ndarray, pos: np.ndarray, spans: list, starts: np.ndarray,
            tn: float, rho: float, first: np.ndarray, second: np.ndarray) -> None:
    """Narrow candidates (sorted by position) with their residual codes, read for these rows only:
    bounds ~60x tighter, written into ``first`` (lower) and ``second`` (upper). ``pair``: the
    query's two halves of codes, packed (``nk.dots_pack``)."""
    which = np.searchsorted(starts, pos, side="right") - 1
    cuts = np.flatnonzero(np.diff(which)) + 1
    for chunk in np.split(np.arange(len(pos)), cuts):
        base, seg = spans[which[chunk[0]]][:2]
        local = pos[chunk] - base
        meta = np.asarray(seg.meta[local])
        y = np.asarray(nk.dots_packed(np.asarray(seg.residual[local]), pair))  # int32 [m, 2]
        scale2, err, norm, err2 = meta[:, 3], meta[:, 1], meta[:, 2], meta[:, 4]
        approx = upper[chunk] - (err + np.float32(rho) * norm)
        approx += np.float32(tn) * np.where(np.isnan(scale2), 0, scale2) * (64 * y[:, 0] + y[:, 1]).astype(np.float32)
        half2 = err2 + np.float32(rho) * norm
        special = np.isnan(scale2)
        first[chunk] = np.where(special, -np.inf, np.maximum(lower[chunk], approx - half2))
        second[chunk] = np.where(special, np.inf, np.minimum(upper[chunk], approx + half2))


def _kept(pos: np.ndarray, first: np.ndarray, second: np.ndarray, k: int, thr: float) -> np.ndarray:
    """The positions whose narrowed upper bound (``second``) still reaches the k-th best narrowed
    lower bound (``first``; or ``thr``, the scan's, if higher): those left to rescore."""
    if len(first) >= k:
        thr = max(thr, float(np.partition(first, len(first) - k)[len(first) - k]))
    return pos[second >= np.float32(thr) - abs(np.float32(thr)) * np.float32(4 * _U32)]


def _dead(parts: list[tuple[Shard | None, int]], offsets: list[int], start: int, stop: int) -> np.ndarray:
    """Whether each segment row in [start, stop) is dead (its id -1, or its shard all dead);
    ``offsets``: each part's first row."""
    out = np.empty(stop - start, np.bool_)
    first = bisect.bisect_right(offsets, start) - 1
    for (shard, n), offset in zip(parts[first:], offsets[first:], strict=True):
        lo, hi = max(start, offset), min(stop, offset + n)
        if lo < hi:
            out[lo - start : hi - start] = True if shard is None else shard.ids[lo - offset : hi - offset] < 0
        if offset + n >= stop:
            break
    return out


def _rescore(survivors: list[np.ndarray], spans: list, q: np.ndarray, k: int, live: int) -> tuple[np.ndarray, np.ndarray]:
    """Each query's best k candidates by (score desc, id asc), the score being the inner product in
    float64 rounded to float32, from the full rows: random reads, split across threads as the
    narrowing's are, each gathering a few hundred rows at a time into buffers of its own reused
    across its pieces (fresh pages cost more than the reads here)."""
    nq, dim = len(survivors), q.shape[1]
    width = min(k, live)
    out_scores = np.full((nq, width), -np.inf, np.float32)
    out_ids = np.full((nq, width), -1, np.int64)
    starts = np.array([s[0] for s in spans] + [math.inf])
    survivors = [np.sort(pos) for pos in survivors]
    scored: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(nq)]

    def score(pieces: list[tuple[int, slice]]) -> None:
        step = max(1, (1 << 17) // max(dim, 1))  # 512 kB of float32 rows, 1 MB widened: both stay in the L2 cache
        rows32, rows64 = np.empty((step, dim), np.float32), np.empty((step, dim), np.float64)
        for qi, at in pieces:
            pos, q64 = survivors[qi][at], q[qi].astype(np.float64)
            scores, ids = np.empty(len(pos), np.float32), np.empty(len(pos), np.int64)
            filled = 0
            for lo in range(0, len(pos), step):
                got = _gather(pos[lo : lo + step], starts, spans, rows32, ids[filled:])
                np.copyto(rows64[:got], rows32[:got])
                with np.errstate(invalid="ignore", over="ignore"):
                    scores[filled : filled + got] = rows64[:got] @ q64
                filled += got
            scored[qi].append((scores[:filled], ids[:filled]))

    groups = _pieces({qi: len(pos) for qi, pos in enumerate(survivors) if len(pos)}, SCAN_THREADS) if width else []
    if groups:
        _in_threads(score, [(g,) for g in groups])
    for qi, parts in enumerate(scored):
        if not parts:
            continue
        scores, ids = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        keep = ~np.isnan(scores) & (ids >= 0)
        scores, ids = scores[keep], ids[keep]
        order = np.lexsort((ids, -scores))[:width]
        out_scores[qi, : len(order)], out_ids[qi, : len(order)] = scores[order], ids[order]
    return out_scores, out_ids


def _gather(pos: np.ndarray, starts: np.ndarray, spans: list, rows: np.ndarray, ids: np.ndarray) -> int:
    """The full rows (as float32, into ``rows``) and ids (into ``ids``) of sorted global positions
    (at most ``len(rows)``); rows of all-dead shards are skipped. Returns how many were written."""
    filled = 0
    which = np.searchsorted(starts, pos, side="right") - 1
    for chunk in np.split(np.arange(len(pos)), np.flatnonzero(np.diff(which)) + 1):
        base, _, parts, offsets = spans[which[chunk[0]]]
        local = pos[chunk] - base
        part_of = np.searchsorted(offsets, local, side="right") - 1
        for sub in np.split(np.arange(len(local)), np.flatnonzero(np.diff(part_of)) + 1):
            shard = parts[part_of[sub[0]]][0]
            if shard is None:
                continue
            sel = local[sub] - offsets[part_of[sub[0]]]
            end = filled + len(sel)
            if shard.rows.dtype == np.float32:
                np.take(shard.rows, sel, axis=0, out=rows[filled:end])
            else:
                rows[filled:end] = shard.rows[sel]
            ids[filled:end] = shard.ids[sel]
            filled = end
    return filled


def rows_in_blocks(shards: Sequence[Shard]) -> Iterator[np.ndarray]:
    """The rows of ``shards`` (concatenated) in consecutive blocks of :data:`BLOCK` rows [w, D]."""
    pending: list[np.ndarray] = []
    have = 0
    for shard in shards:
        rows, at = shard.rows, 0
        while at < len(rows):
            take = min(BLOCK - have, len(rows) - at)
            pending.append(rows[at : at + take])
            have, at = have + take, at + take
            if have == BLOCK:
                yield np.concatenate(pending) if len(pending) > 1 else pending[0]
                pending, have = [], 0
    if have:
        yield np.concatenate(pending) if len(pending) > 1 else pending[0]


def segment_of(shards: Sequence[Shard]) -> Segment:
    """A segment in memory (tests, benchmarks; an index writes its segments with :func:`write_segment`)."""
    dim = int(shards[0].rows.shape[1]) if shards else 0
    parts = [quantise(rows) for rows in rows_in_blocks(shards)]
    codes, residual, meta = ((np.concatenate([p[i] for p in parts]) if parts else np.empty((0, w), t))
                             for i, w, t in ((0, dim, np.int8), (1, dim, np.int8), (2, 5, np.float32)))
    return Segment(codes, residual, meta, tuple(s.key for s in shards), tuple(len(s.ids) for s in shards))


def write_segment(shards: Sequence[Shard], dim: int, codes: Path, residual: Path, meta: Path) -> None:
    """Quantise the rows of ``shards`` (concatenated) block by block into a segment's three
    ``.npy`` files, each written front to back in large writes and fsynced (:mod:`npyfile`: the
    page cache then holds them in large folios, which a new process maps cheaply)."""
    n = sum(len(s.rows) for s in shards)
    with (npy_writer(codes, (n, dim), np.int8) as out_codes, npy_writer(residual, (n, dim), np.int8) as out_residual,
          npy_writer(meta, (n, 5), np.float32) as out_meta):
        for rows in rows_in_blocks(shards):
            c, r, m = quantise(rows)
            out_codes.write(c)
            out_residual.write(r)
            out_meta.write(m)


def covers(shards: Sequence[Shard], segments: Sequence[Segment]) -> bool:
    """Whether every shard with a live row is copied by exactly one segment."""
    seen: dict[int, int] = {}
    for seg in segments:
        for key in seg.keys:
            seen[key] = seen.get(key, 0) + 1
    return all(seen.get(s.key, 0) == 1 for s in shards if (s.ids >= 0).any())
