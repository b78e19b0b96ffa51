"""Exact top-k inner-product search over the index shards, chunk by chunk (numpy only).

``scores, ids = search(source, queries, k)`` reads each shard in chunks of rows, scores a chunk
with one BLAS call (matrix-vector for one query, matrix-matrix for many) and folds it into a
running top-k per query. Memory is bounded by the chunk, never by the index: the [nq, N] score
matrix is never built, and fp32 shards (read-only memory maps) are scored in place.

Order: by score, highest first; equal scores by the lower id. The running top-k keeps every
candidate that ties with the current k-th score, so a tie at the boundary cannot lose the lower
id the way ``argpartition`` alone would.
"""

from __future__ import annotations

import numpy as np

from jemc_infer.errors import InputError, InputShapeError
from jemc_infer.index.source import InMemory, Shard, ShardSource

# Bytes of fp32 rows per chunk. OpenBLAS's matrix-vector product reaches the machine's memory
# bandwidth (and splits itself over the cores) from ~32 MB up; the matrix-matrix product is as
# fast chunked as whole from ~1,000 rows of 2,048. Measured on 2 cores, benchmarks/RESULTS.md.
_CHUNK_BYTES = 64 << 20
# fp16 chunks are widened into a scratch buffer of this size: small enough to stay in the L3
# cache between the conversion and the product that reads it back.
_HALF_CHUNK_BYTES = 8 << 20
# Largest nq * max(k, 50) the compact copy is used for by default (measured: RESULTS.md).
_COMPACT_WORK = 64 * 1000
# Bound on a chunk's [nq, rows] score block, so that memory stays flat for small D or many queries.
_SCORE_BYTES = 8 << 20


def search(
    source: ShardSource,
    queries: np.ndarray,
    k: int,
    *,
    chunk_rows: int | None = None,
    device: str = "cpu",
    compact: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows with the highest inner product with each query, exactly.

    Args:
        source: the shards to search (an open index, or :class:`~jemc_infer.index.source.InMemory`).
        queries: [nq, D] float32 (float16 and float64 are converted; any strides). Rows are stored
            L2-normalised per space and the fusion weights are already in the query, so the score
            is the plain inner product. A 1-D query is refused: pass ``q[None, :]``.
        k: how many results per query, >= 1. More than the live rows returns them all.
        chunk_rows: rows scored per BLAS call. Defaults to 64 MB of fp32 rows for fp32 shards
            (8,192 rows at D = 2,048), 8 MB once widened for fp16 shards (1,024 rows), and at
            most 8 MB of scores (2,048 rows for 1,024 queries).
        device: ``"cpu"``, or ``"cuda"``: the fused CUDA kernel (:mod:`jemc_infer.index.gpu`; rows
            resident on the card after the first call, scores accumulated in fp32 in another order
            than BLAS, so a score may differ in its last bits and an exact near-tie may order differently).
        compact: scan the int8 compact copy first and rescore the few rows that can win from the
            full rows (:mod:`jemc_infer.index.compact`; the same ids, a quarter of the bytes, scores
            rounded from float64). None: where the source has a copy of every shard (``embed``
            writes it; ``jemc-infer index compact`` adds it to an older index), ``chunk_rows`` is
            not set and nq * max(k, 50) <= 64,000 (measured up to 64 queries at k = 1000; beyond, the
            candidates' rescoring grows with nq * k and the full scan's BLAS is used: benchmarks/RESULTS.md);
            False: never; True: required.

    Returns:
        ``(scores, ids)``: float32 and int64, both [nq, min(k, live rows)], best first; equal
        scores in ascending id order. Dead rows (id -1) never appear. A row whose score is NaN
        (non-finite values in the row) is never returned; should that leave a query short, its
        last places are padded with score -inf and id -1, as faiss does.

    Raises:
        InputShapeError: if ``queries`` is not a finite float array [nq, D] with the index's D,
            if ``k`` or ``chunk_rows`` is not an integer >= 1, or if a shard is malformed.
        InputError: ``compact=True`` where a shard has no compact copy.
    """
    dim = source.dim
    q = check_queries(queries, dim)
    k = check_k(k)
    if chunk_rows is not None and (isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1):
        raise InputShapeError(f"chunk_rows | {chunk_rows!r} | expected an integer >= 1, or None for the default")
    if device == "cuda":
        from jemc_infer.index.gpu import gpu_search

        return gpu_search(source, q, int(k))
    if device != "cpu":
        raise InputShapeError(f"device | {device!r} | expected 'cpu' or 'cuda'")
    if compact or (compact is None and chunk_rows is None and q.shape[0] * max(int(k), 50) <= _COMPACT_WORK):
        shards = [_checked(s, dim) for s in source.shards()]
        segments = source.segments()
        from jemc_infer.index import compact as c8

        if segments and c8.covers(shards, segments) and c8.usable(q):
            return c8.compact_search(shards, segments, q, int(k), dim)
        if compact:
            raise InputError("compact | a shard without a compact copy (or an int8 product that is not exact here) | "
                             "expected a compact copy of every shard: jemc-infer index compact --index INDEX")
        source = InMemory(tuple(shards))
    nq = q.shape[0]
    top = _TopK(nq, int(k))
    # Buffers reused chunk after chunk: fresh large allocations cost a page fault per 4 kB page.
    flat = np.empty(0, np.float32)
    mask = np.empty(0, np.bool_)
    for shard in source.shards():
        rows, ids = _check_shard(shard.rows, shard.ids, dim)
        half = rows.dtype == np.float16
        step = chunk_rows or max(1, min((_HALF_CHUNK_BYTES if half else _CHUNK_BYTES) // (4 * max(dim, 1)),
                                        _SCORE_BYTES // (4 * nq)))
        step = min(step, len(rows)) or 1
        if flat.size < nq * step:
            flat, mask = np.empty(nq * step, np.float32), np.empty(nq * step, np.bool_)
        if half:
            scratch = np.empty((step, dim), np.float32)
        for start in range(0, len(rows), step):
            block = rows[start : start + step]
            if half:
                block = _widen(block, scratch[: len(block)])
            scores = flat[: nq * len(block)].reshape(nq, len(block))
            np.matmul(q, block.T, out=scores)
            top.add(scores, ids[start : start + step], mask[: scores.size].reshape(scores.shape))
    return top.result()


class _TopK:
    """The running top-k of every query: a pool of candidates per query, compacted now and then.

    Invariants, per query: every live row outside the pool is beaten, in (score desc, id asc)
    order, by k rows inside it; and the pool holds at least k rows scoring >= ``thr[q]`` (or
    ``thr[q]`` is -inf), so a row scoring below it can be dropped on sight. Rows that tie with
    ``thr[q]`` are kept: their ids decide.
    """

    def __init__(self, nq: int, k: int) -> None:
        self.k, self.live = k, 0
        self.cap = max(2 * k, 256)  # compact a query's pool past this many candidates
        self.thr = np.full(nq, -np.inf, np.float32)
        self.scores: list[list[np.ndarray]] = [[] for _ in range(nq)]
        self.ids: list[list[np.ndarray]] = [[] for _ in range(nq)]
        self.count = np.zeros(nq, np.int64)

    def add(self, scores: np.ndarray, ids: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Fold in one chunk: ``scores`` float32 [nq, c] (overwritten), ``ids`` [c]; ``mask``: a
        bool scratch buffer of the same shape, or None."""
        dead = ids < 0
        n_dead = int(np.count_nonzero(dead))
        self.live += len(ids) - n_dead
        if n_dead:
            scores[:, dead] = np.nan  # NaN compares false: never a candidate
        width = scores.shape[1]
        fresh = np.flatnonzero(self.thr == -np.inf)
        if fresh.size and width > self.k:  # no threshold yet: this chunk's k-th best is one
            self._tighten(scores, fresh)
        mask = np.greater_equal(scores, self.thr[:, None], out=mask)
        # flat positions, not np.nonzero(mask): the 2-D form is ~20x slower on a sparse mask
        flat = np.flatnonzero(mask)
        per_query = np.bincount(flat // width, minlength=len(self.thr))
        over = np.flatnonzero(per_query > self.k)
        if over.size:
            # This chunk alone holds more than k candidates for these queries (the first chunk,
            # or scores rising along the index): its own k-th best is a tighter threshold.
            self._tighten(scores, over)
            mask[over] = scores[over] >= self.thr[over, None]
            flat = np.flatnonzero(mask)
            per_query = np.bincount(flat // width, minlength=len(self.thr))
        if not flat.size:
            return
        found_scores, found_ids = scores.reshape(-1)[flat], ids[flat % width].astype(np.int64)
        ends = np.cumsum(per_query)
        for q in np.flatnonzero(per_query):
            a, b = ends[q] - per_query[q], ends[q]
            self.scores[q].append(found_scores[a:b])
            self.ids[q].append(found_ids[a:b])
            self.count[q] += b - a
            if self.count[q] > self.cap:
                self._compact(q)

    def _tighten(self, scores: np.ndarray, queries: np.ndarray) -> None:
        """Raise the thresholds of ``queries`` to their k-th best score in this chunk (which has
        more than k rows): at least k rows score that much, so nothing below it can be in the top k."""
        sub = scores[queries]
        sub[np.isnan(sub)] = -np.inf  # partition orders NaN last, as if it were the largest
        kth = np.partition(sub, sub.shape[1] - self.k, axis=1)[:, sub.shape[1] - self.k]
        self.thr[queries] = np.maximum(self.thr[queries], kth)

    def _compact(self, q: int) -> tuple[np.ndarray, np.ndarray]:
        """Keep query ``q``'s best k candidates (unordered) and raise its threshold to the k-th."""
        scores = np.concatenate(self.scores[q]) if self.scores[q] else np.empty(0, np.float32)
        ids = np.concatenate(self.ids[q]) if self.ids[q] else np.empty(0, np.int64)
        if len(scores) > self.k:
            kth = np.partition(scores, len(scores) - self.k)[len(scores) - self.k]
            above, tied = np.flatnonzero(scores > kth), np.flatnonzero(scores == kth)
            need = self.k - len(above)  # >= 1: the k-th best itself ties with kth
            if len(tied) > need:  # argpartition alone would pick arbitrary ones: take the lowest ids
                tied = tied[np.argpartition(ids[tied], need - 1)[:need]]
            keep = np.concatenate([above, tied])
            scores, ids = scores[keep], ids[keep]
            self.thr[q] = max(self.thr[q], kth)
        self.scores[q], self.ids[q], self.count[q] = [scores], [ids], len(scores)
        return scores, ids

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)`` [nq, min(k, live)], best first."""
        width = min(self.k, self.live)
        out_scores = np.full((len(self.thr), width), -np.inf, np.float32)
        out_ids = np.full((len(self.thr), width), -1, np.int64)
        for q in range(len(self.thr)):
            scores, ids = self._compact(q)
            order = np.lexsort((ids, -scores))[:width]
            out_scores[q, : len(order)], out_ids[q, : len(order)] = scores[order], ids[order]
        return out_scores, out_ids


# fp16 -> fp32 by bit manipulation: numpy's own cast converts one value at a time (~2 ns per
# value here); these four vectorised passes take ~0.5 ns and give the same bits for every finite
# value (subnormals and signed zeros included).
_KEEP_SIGN_AND_LOW_28 = np.int32(-0x70000001)  # 0x8FFFFFFF
_REBIAS = np.float32(2.0**112)  # exponent bias 15 -> 127


def _widen(half: np.ndarray, out: np.ndarray) -> np.ndarray:
    """fp16 rows ``half`` as fp32, written into ``out`` (same shape) and returned."""
    signed, unsigned = half.view(np.int16), half.view(np.uint16)
    if signed.max() >= 0x7C00 or unsigned.max() >= 0xFC00:
        np.copyto(out, half)  # +-Inf or NaN somewhere: numpy's exact cast keeps them non-finite
        return out
    bits = out.view(np.int32)
    np.copyto(bits, signed)  # sign-extends: bits 31..15 all repeat the sign
    np.left_shift(bits, 13, out=bits)  # exponent and mantissa to their fp32 places
    np.bitwise_and(bits, _KEEP_SIGN_AND_LOW_28, out=bits)  # sign at bit 31, exponent e at 27..23
    np.multiply(out, _REBIAS, out=out)  # 2**(e-127) * 2**112 = 2**(e-15), exact
    return out


def check_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    """``queries`` as C-contiguous float32 [nq, dim] (``dim`` 0: any width).

    Raises:
        InputShapeError: Not a finite float array [nq, dim] with nq >= 1.
    """
    arr = np.asarray(queries)
    if arr.ndim != 2 or arr.dtype not in (np.float16, np.float32, np.float64):
        hint = " (one query: pass q[None, :])" if arr.ndim == 1 else ""
        raise InputShapeError(f"queries | {arr.dtype} {list(arr.shape)} | expected float32 [nq, D]{hint}")
    if dim and arr.shape[1] != dim:
        raise InputShapeError(f"queries | width {arr.shape[1]} | expected the index's width D = {dim}")
    if not arr.shape[0]:
        raise InputShapeError(f"queries | {arr.dtype} {list(arr.shape)}: none | expected at least one query")
    q = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(q).all():
        raise InputShapeError("queries | non-finite values (NaN or inf) | expected finite scores to rank by")
    return q


def _checked(shard: Shard, dim: int) -> Shard:
    _check_shard(shard.rows, shard.ids, dim)
    return shard


def check_k(k: object) -> int:
    """Raises InputShapeError unless ``k`` is an integer >= 1; returns it as an int."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InputShapeError(f"k | {k!r} | expected an integer >= 1 (results per query)")
    return int(k)


def _check_shard(rows: np.ndarray, ids: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    if rows.ndim != 2 or rows.shape[1] != dim or rows.dtype not in (np.float16, np.float32):
        raise InputShapeError(f"shard rows | {rows.dtype} {list(rows.shape)} | expected float16 or float32 [n, {dim}]")
    if ids.shape != (rows.shape[0],) or ids.dtype.kind not in "iu":
        raise InputShapeError(f"shard ids | {ids.dtype} {list(ids.shape)} | expected int64 [{rows.shape[0]}], one per row")
    return rows, ids
