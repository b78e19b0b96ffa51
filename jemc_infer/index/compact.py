"""Exact search over a compact int8 copy of the rows: scan 4x fewer bytes, rescore the few that can win.

A *segment* is an int8 copy of a run of shards: each row ``x`` stored as ``r = round(x / s)`` with
one scale ``s = max|x| / 127`` per row, beside three float32 numbers per row: ``s``, a bound
``err >= ||x - s r||`` and a bound ``norm >= max(||x||, ||s r||)``. Rows are kept in blocks of
:data:`BLOCK` rows, each block transposed (``[D, w]``, int8), so that one integer matrix product
scores a block against every query.

The query ``q`` is split in two 7-bit parts, ``q = t1 a1 + t2 a2 + e`` (``a1, a2`` integers in
[-63, 63], ``t2 = t1 / 64``): a second pass over the same bytes in the same product, which makes
the query's own error ``e`` negligible. Then for every row

    |q . x - approx|  <=  ||q|| err + ||e|| norm          (Cauchy-Schwarz, twice)

with ``approx = s (t1 a1.r + t2 a2.r)`` from exact integer dot products. That interval also
covers the float rounding of ``approx`` and of the final float32 rescoring (the per-row ``err``
is widened by both when the segment is written, see :func:`quantise`). So the true top k are
among the rows whose upper bound reaches the k-th best lower bound: those are rescored from the
full rows (random reads from the shards' memory maps, float32 as the full scan scores) and
ranked by (score desc, id asc) — the same ids and scores as the full scan, always, not usually.

The integer product is onnxruntime's ``MatMulInteger`` (MLAS's u8 x s8 kernels; the query side
is kept to 7 bits so AVX2's 16-bit pair sums cannot saturate). It checks itself on extreme
values when first used: a build where it is not exact is not used (the full scan runs instead).
Rows with a non-finite or huge value are not quantised: they are always rescored.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from jemc_infer.errors import IndexCorruptError
from jemc_infer.index.source import Shard

_GROUP_SCORES = 1 << 20
BLOCK = 1024  # rows per transposed block: the product's operand stays in the L2 cache (measured, RESULTS.md)
_QUERY_LEVELS = 63  # |a| <= 63: u8 (a + 64) <= 127, so u8 x s8 pairs sum within int16
_ZERO_POINT = 64
_HUGE = 1e15  # rows (or queries) with larger values are rescored (or searched) in full
_U32 = 2.0**-24  # float32 unit roundoff
# MatMulInteger(A uint8 [m, D], B int8 [b, D, n], a_zero_point 64) -> int32 [b, m, n]: 157 bytes of ONNX
# (tests/index/test_compact.py rebuilds it with onnx.helper and compares).
_PRODUCT_ONNX = (
    b'\x08\x07\x12\njemc-infer:\x86\x01\n\x1c\n\x01A\n\x01B\n\x02zp\x12\x01Y"\rMatMulInteger\x12\x0cint8_product*\t'
    b'\x10\x02*\x01@B\x02zpZ\x15\n\x01A\x12\x10\n\x0e\x08\x02\x12\n\n\x03\x12\x01m\n\x03\x12\x01DZ\x1a\n\x01B\x12'
    b'\x15\n\x13\x08\x03\x12\x0f\n\x03\x12\x01b\n\x03\x12\x01D\n\x03\x12\x01nb\x1a\n\x01Y\x12\x15\n\x13\x08\x06\x12'
    b'\x0f\n\x03\x12\x01b\n\x03\x12\x01m\n\x03\x12\x01nB\x04\n\x00\x10\n')


@dataclass(frozen=True)
class Segment:
    """The int8 copy of a run of shards.

    ``codes``: int8, flat [n * D]; block ``b`` (rows ``b*BLOCK`` up to ``b*BLOCK + w``) is the
    ``[D, w]`` array at offset ``b*BLOCK*D``. ``meta``: float32 [n, 3] = (scale, err, norm) per row;
    scale NaN marks a row that is always rescored. ``keys`` and ``counts``: the shards it copies
    and their row counts, in order (segment row i is row i of their concatenation); a key the
    source does not yield is a shard whose rows are all dead.
    """

    codes: np.ndarray
    meta: np.ndarray
    keys: tuple[int, ...]
    counts: tuple[int, ...]

    @property
    def rows(self) -> int:
        return int(self.meta.shape[0])

    def blocks(self, start: int, count: int, dim: int) -> np.ndarray:
        """Up to ``count`` transposed int8 blocks [b, D, w] from row ``start`` (a multiple of
        BLOCK): all full ones, or the last, partial one alone."""
        w = min(BLOCK, self.rows - start)
        b = 1 if w < BLOCK else max(1, min(count, (self.rows - start) // BLOCK))
        return np.asarray(self.codes[start * dim : (start + b * w) * dim]).reshape(b, dim, w)


def quantise(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 codes (transposed, [D, n] flattened) and meta [n, 3] of ``rows`` [n, D], n <= BLOCK.

    ``err`` is ``||x - s r||`` computed in float64, widened by the float32 rounding the search may
    add on top (the approximate score's and the rescoring's, both <= (D + 8) u ||q|| ||x||), then
    rounded up to float32. Non-finite or huge rows get scale NaN and codes 0.
    """
    n, dim = rows.shape
    x = np.asarray(rows, dtype=np.float64)
    peak = np.max(np.abs(x), axis=1) if dim else np.zeros(n)
    special = ~np.isfinite(peak) | (peak > _HUGE)
    peak = np.where(special, 0.0, peak)
    scale = peak / 127.0
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(scale[:, None] > 0, np.rint(x / np.where(scale > 0, scale, 1.0)[:, None]), 0.0)
    r[special] = 0.0
    r = np.clip(r, -127, 127)
    deq = r * scale[:, None]
    x_safe = np.where(special[:, None], 0.0, x)
    err = np.linalg.norm(x_safe - deq, axis=1)
    norm = np.maximum(np.linalg.norm(x_safe, axis=1), np.linalg.norm(deq, axis=1))
    err = err * (1 + 1e-9) + (dim + 8) * 2 * _U32 * norm  # float64 rounding of err itself, and float32's
    meta = np.empty((n, 3), np.float32)
    meta[:, 0] = np.where(special, np.nan, scale)
    meta[:, 1] = _round_up(err)
    meta[:, 2] = _round_up(norm * (1 + 1e-9))
    return np.ascontiguousarray(r.astype(np.int8).T).reshape(-1), meta


def _round_up(v: np.ndarray) -> np.ndarray:
    f = v.astype(np.float32)
    return np.where(f.astype(np.float64) < v, np.nextafter(f, np.float32(np.inf)), f)


class _Product:
    """onnxruntime's exact int8 product, opened once per process."""

    _lock = threading.Lock()
    _session: object | None = None
    _exact: bool | None = None

    @classmethod
    def get(cls) -> object | None:
        """The session, or None where the product is not exact on this machine."""
        with cls._lock:
            if cls._exact is None:
                import onnxruntime as ort

                opts = ort.SessionOptions()
                opts.log_severity_level = 3
                session = ort.InferenceSession(_PRODUCT_ONNX, opts, providers=["CPUExecutionProvider"])
                cls._session, cls._exact = session, _self_check(session)
            return cls._session if cls._exact else None


def _self_check(session: object) -> bool:
    """Extreme and random operands against numpy's int64 product."""
    rng = np.random.default_rng(0)
    dim = 2 * BLOCK + 3
    a = np.concatenate([np.full((1, dim), 127, np.uint8), np.ones((1, dim), np.uint8),
                        rng.integers(1, 128, (3, dim), dtype=np.uint8)])
    b = np.concatenate([np.full((dim, 1), 127, np.int8), np.full((dim, 1), -127, np.int8),
                        rng.integers(-127, 128, (dim, 37), dtype=np.int8)], axis=1)
    b = np.stack([b, -b])
    got = session.run(None, {"A": a, "B": b})[0]  # type: ignore[attr-defined]
    return bool(np.array_equal(got, (a.astype(np.int64) - _ZERO_POINT) @ b.astype(np.int64)))


def usable(queries: np.ndarray) -> bool:
    """Whether the compact scan can answer these queries exactly here."""
    return bool(np.abs(queries).max(initial=0.0) <= _HUGE) and _Product.get() is not None


def _split_queries(q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(A uint8 [2 nq, D], t [2 nq] float32, ||q|| [nq], ||e|| [nq]), norms rounded up."""
    x = q.astype(np.float64)
    t1 = np.max(np.abs(x), axis=1) / _QUERY_LEVELS
    t1 = np.where(t1 > 0, t1, 1.0).astype(np.float32).astype(np.float64)
    t2 = t1 / 64  # exact: a power of two
    a1 = np.clip(np.rint(x / t1[:, None]), -_QUERY_LEVELS, _QUERY_LEVELS)
    a2 = np.clip(np.rint((x - a1 * t1[:, None]) / t2[:, None]), -_QUERY_LEVELS, _QUERY_LEVELS)
    e = x - a1 * t1[:, None] - a2 * t2[:, None]
    a = (np.concatenate([a1, a2]) + _ZERO_POINT).astype(np.uint8)
    qn = np.linalg.norm(x, axis=1) * (1 + 1e-9)
    en = np.linalg.norm(e, axis=1) * (1 + 1e-9) + qn * 8 * _U32  # float32 rounding of approx's combination
    return a, np.concatenate([t1, t2]).astype(np.float32), qn.astype(np.float32), _round_up(en)


class _Bounds:
    """Per query, the rows that may still be in the top k: every row whose upper bound reaches the
    threshold, the k-th best lower bound seen (rows below it can never enter: k rows beat them)."""

    def __init__(self, nq: int, k: int) -> None:
        self.k = k
        self.cap = max(4 * k, 1024)
        self.thr = np.full(nq, -np.inf, np.float32)
        self.parts: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in range(nq)]  # (lower, upper, pos)
        self.count = np.zeros(nq, np.int64)

    def add(self, lower: np.ndarray, upper: np.ndarray, pos: np.ndarray) -> None:
        """Fold in one block: ``lower``/``upper`` float32 [nq, w], ``pos`` int64 [w] (row positions)."""
        w = lower.shape[1]
        if w > self.k:  # the block's own k-th best lower bound
            kth = np.partition(lower, w - self.k, axis=1)[:, w - self.k]
            np.maximum(self.thr, kth, out=self.thr)
        mask = upper >= self._floor()[:, None]
        flat = np.flatnonzero(mask)
        if not flat.size:
            return
        per_query = np.bincount(flat // w, minlength=len(self.thr))
        lo, up, at = lower.reshape(-1)[flat], upper.reshape(-1)[flat], pos[flat % w]
        ends = np.cumsum(per_query)
        for q in np.flatnonzero(per_query):
            a, b = ends[q] - per_query[q], ends[q]
            self.parts[q].append((lo[a:b], up[a:b], at[a:b]))
            self.count[q] += b - a
            if self.count[q] > self.cap:
                self._compact(q)

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

    def survivors(self) -> list[np.ndarray]:
        """Each query's candidate positions, final."""
        return [self._compact(q) for q in range(len(self.thr))]


def compact_search(shards: Sequence[Shard], segments: Sequence[Segment], q: np.ndarray, k: int,
                   dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of float32 queries ``q`` [nq, D] over ``shards`` through their ``segments``
    (every shard with a live row is in one; see :func:`covers`). Same contract as ``search``."""
    session = _Product.get()
    assert session is not None, "compact_search without an exact product: check usable() first"
    nq = q.shape[0]
    a, t, qn, en = _split_queries(q)
    by_key = {s.key: s for s in shards}
    bounds = _Bounds(nq, k)
    group = max(1, min(16, _GROUP_SCORES // (nq * BLOCK)))  # blocks per product call: ~1M scores at most
    # A global position per segment row: segment offset + row; the rescoring maps it back.
    spans: list[tuple[int, Segment, list[tuple[Shard | None, int]], list[int]]] = []
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
        if sum(seg.counts) != seg.rows or seg.codes.size != seg.rows * dim:
            raise IndexCorruptError(f"compact segment | {seg.rows} rows, {seg.codes.size} codes | expected "
                                    f"{sum(seg.counts)} rows (its shards') and {sum(seg.counts) * dim} codes")
        offsets = np.concatenate([[0], np.cumsum(seg.counts)[:-1]]).astype(int).tolist() if parts else []
        spans.append((base, seg, parts, offsets))
        scale, err, norm = seg.meta[:, 0], seg.meta[:, 1], seg.meta[:, 2]
        start = 0
        while start < seg.rows:
            codes = seg.blocks(start, group, dim)
            y = session.run(None, {"A": a, "B": codes})[0]  # type: ignore[attr-defined]  # [b, 2 nq, w]
            stop = start + codes.shape[0] * codes.shape[2]
            y = y.transpose(1, 0, 2).reshape(2 * nq, stop - start)
            approx = y[:nq].astype(np.float32)
            approx *= t[:nq, None]
            approx += y[nq:].astype(np.float32) * t[nq:, None]
            s = scale[start:stop]
            special = np.isnan(s)
            approx *= np.where(special, 0, s)
            bound = qn[:, None] * err[start:stop] + en[:, None] * norm[start:stop]
            upper = approx + bound
            approx -= bound
            lower = approx
            if special.any():
                lower[:, special], upper[:, special] = -np.inf, np.inf
            dead = _dead(parts, offsets, start, stop)
            if dead.any():
                lower[:, dead], upper[:, dead] = -np.inf, np.nan  # NaN >= anything is False: never a candidate
            bounds.add(lower, upper, np.arange(base + start, base + stop, dtype=np.int64))
            start = stop
        base += seg.rows
    return _rescore(bounds.survivors(), spans, q, k, live)


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
    float64 rounded to float32. Candidates are scored in float32 first (one BLAS call on the
    gathered rows); only those within float32's error of the k-th are recomputed in float64."""
    nq = len(survivors)
    width = min(k, live)
    out_scores = np.full((nq, width), -np.inf, np.float32)
    out_ids = np.full((nq, width), -1, np.int64)
    starts = np.array([s[0] for s in spans] + [math.inf])
    for qi, pos in enumerate(survivors):
        if not pos.size or not width:
            continue
        rows, ids, norms = _gather(np.sort(pos), starts, spans)
        fast = rows @ q[qi]
        qn = float(np.linalg.norm(q[qi].astype(np.float64)))
        # |fast - exact| <= (D + 2) u ||q|| ||x||; rows that are special (norm NaN) or not finite: always exact
        slack = (q.shape[1] + 2) * _U32 * qn * np.where(np.isnan(norms), np.inf, norms)
        finite = np.isfinite(fast)
        if finite.sum() > width:
            kth = np.partition(fast[finite], finite.sum() - width)[finite.sum() - width]
            margin = 2 * np.max(slack[finite], initial=0.0) + 4 * _U32 * abs(float(kth))
            near = ~finite | ~np.isfinite(slack) | (fast >= kth - margin)
            rows, ids = rows[near], ids[near]
        exact = (rows.astype(np.float64) @ q[qi].astype(np.float64)).astype(np.float32)
        keep = ~np.isnan(exact) & (ids >= 0)
        exact, ids = exact[keep], ids[keep]
        order = np.lexsort((ids, -exact))[:width]
        out_scores[qi, : len(order)], out_ids[qi, : len(order)] = exact[order], ids[order]
    return out_scores, out_ids


def _gather(pos: np.ndarray, starts: np.ndarray, spans: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The full rows (float32), ids and norm bounds (NaN: special) of sorted global positions."""
    dim = spans[0][1].codes.size // max(spans[0][1].rows, 1) if spans else 0
    rows = np.empty((len(pos), dim), np.float32)
    ids = np.empty(len(pos), np.int64)
    norms = np.empty(len(pos), np.float32)
    filled = 0
    which = np.searchsorted(starts, pos, side="right") - 1
    cuts = np.flatnonzero(np.diff(which)) + 1
    for chunk in np.split(np.arange(len(pos)), cuts):
        base, seg, parts, offsets = spans[which[chunk[0]]]
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
            meta = seg.meta[local[sub]]
            norms[filled:end] = np.where(np.isnan(meta[:, 0]), np.nan, meta[:, 2])
            filled = end
    return rows[:filled], ids[:filled], norms[:filled]


def rows_in_blocks(shards: Sequence[Shard]):
    """(start, rows [w, D]) for consecutive blocks of :data:`BLOCK` rows across ``shards``."""
    pending: list[np.ndarray] = []
    have = start = 0
    for shard in shards:
        rows, at = shard.rows, 0
        while at < len(rows):
            take = min(BLOCK - have, len(rows) - at)
            pending.append(rows[at : at + take])
            have, at = have + take, at + take
            if have == BLOCK:
                yield start, np.concatenate(pending) if len(pending) > 1 else pending[0]
                start, pending, have = start + BLOCK, [], 0
    if have:
        yield start, np.concatenate(pending) if len(pending) > 1 else pending[0]


def fill(shards: Sequence[Shard], codes: np.ndarray, meta: np.ndarray) -> None:
    """Quantise the rows of ``shards`` (concatenated) into ``codes`` int8 [n * D] and ``meta``
    float32 [n, 3] (preallocated: arrays or writable memory maps), a block at a time."""
    for start, rows in rows_in_blocks(shards):
        dim = rows.shape[1]
        c, m = quantise(rows)
        codes[start * dim : (start + len(rows)) * dim] = c
        meta[start : start + len(rows)] = m


def segment_of(shards: Sequence[Shard]) -> Segment:
    """A segment in memory (tests, benchmarks; an index writes its segments to files)."""
    n = sum(len(s.ids) for s in shards)
    dim = int(shards[0].rows.shape[1]) if shards else 0
    codes, meta = np.empty(n * dim, np.int8), np.empty((n, 3), np.float32)
    fill(shards, codes, meta)
    return Segment(codes, meta, tuple(s.key for s in shards), tuple(len(s.ids) for s in shards))


def covers(shards: Sequence[Shard], segments: Sequence[Segment]) -> bool:
    """Whether every shard with a live row is copied by exactly one segment."""
    seen: dict[int, int] = {}
    for seg in segments:
        for key in seg.keys:
            seen[key] = seen.get(key, 0) + 1
    return all(seen.get(s.key, 0) == 1 for s in shards if (s.ids >= 0).any())
