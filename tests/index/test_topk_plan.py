"""The GPU top-k's plan (filter by a proven threshold, select the survivors, rescan on overflow),
run against a NumPy model of the kernel, equals the exact reference on random and adversarial data."""

from __future__ import annotations

import numpy as np
import pytest
from support.topk_reference import reference

from jemc_infer.index.topk_plan import Candidates, NumpyScan, select, topk


def _check(rows: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int, order: str = "random", **kw) -> NumpyScan:
    scan = NumpyScan(rows, ids, order=order, **kw)
    got = topk(scan, queries, k)
    want = reference(rows, ids, queries, k)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])
    return scan


@pytest.mark.parametrize("n", [1, 7, 4097, 100_003])
@pytest.mark.parametrize("k", [1, 10, 2048, 4096])
@pytest.mark.parametrize("nq", [1, 3])
def test_random_rows(n: int, k: int, nq: int) -> None:
    rng = np.random.default_rng(n * 31 + k + nq)
    d = 16
    rows = rng.standard_normal((n, d)).astype(np.float32)
    ids = np.arange(n, dtype=np.int64) * 3 + 5  # ids are not row numbers
    _check(rows, ids, rng.standard_normal((nq, d)).astype(np.float32), k)


def test_many_queries() -> None:
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((20_000, 8)).astype(np.float32)
    _check(rows, np.arange(20_000, dtype=np.int64), rng.standard_normal((64, 8)).astype(np.float32), 10)


@pytest.mark.parametrize("k", [1, 10, 2048, 4096])
@pytest.mark.parametrize("order", ["rows", "reverse", "random"])
def test_all_equal_scores_keep_the_lowest_ids(k: int, order: str) -> None:
    n = 100_003
    rows = np.ones((n, 4), np.float32)
    ids = np.random.default_rng(1).permutation(n).astype(np.int64)
    scan = _check(rows, ids, np.ones((2, 4), np.float32), k, order=order)
    assert scan.passes < 40


@pytest.mark.parametrize("order", ["rows", "reverse", "random"])
def test_sorted_rows_make_the_first_survivors_the_worst(order: str) -> None:
    """Scores rising with the row number: the sample and the first survivors are the weakest
    possible; the overflow rounds must still converge, and to the exact answer."""
    n, k = 100_003, 2048
    rows = np.linspace(-1, 1, n, dtype=np.float32)[:, None].repeat(2, axis=1)
    scan = _check(rows, np.arange(n, dtype=np.int64), np.array([[1.0, 1.0], [-1.0, -1.0]], np.float32), k, order=order)
    assert scan.passes >= 2  # a sample, then the filter


@pytest.mark.parametrize("k", [10, 100, 1000, 4096])
def test_a_search_reads_the_rows_about_once(k: int) -> None:
    """The point of the plan: samples of a few percent, then one full pass (the cost is the bytes
    of the index), for every query of a batch (one query needing a second pass costs a whole one)."""
    rng = np.random.default_rng(k)
    n = 300_007
    rows = rng.standard_normal((n, 8)).astype(np.float32)
    scan = _check(rows, np.arange(n, dtype=np.int64), rng.standard_normal((64, 8)).astype(np.float32), k)
    assert scan.rows_read <= 1.05 * n, scan.rows_read / n


class _Skewed(NumpyScan):
    """A kernel whose samples are skewed, yet still sets of real rows at least as good as the
    threshold (so every threshold they prove holds): ``"top"`` adds the index's best rows to each
    sample (every guess ranked too high), ``"bottom"`` keeps only each sample's lower half (too low)."""

    def __init__(self, rows: np.ndarray, ids: np.ndarray, keep: str) -> None:
        super().__init__(rows, ids, order="rows")
        self.keep, self.full = keep, 0

    def scan(self, queries: np.ndarray, thr_scores: np.ndarray, thr_ids: np.ndarray, step: int, cap: int) -> Candidates:
        c = super().scan(queries, thr_scores, thr_ids, step, cap)
        if step == 1:
            self.full += 1
            return c
        for q in range(len(queries)):
            kept = int(min(c.counts[q], cap))
            s, i = c.scores[q, :kept], c.ids[q, :kept]
            if self.keep == "top":
                best = reference(self.rows, self.ids, queries[q:q + 1], 500)
                ok = (best[0][0] > thr_scores[q]) | ((best[0][0] == thr_scores[q]) & (best[1][0] <= thr_ids[q]))
                s, i = np.concatenate([s, best[0][0][ok]]), np.concatenate([i, best[1][0][ok]])
                i, first = np.unique(i, return_index=True)
                s = s[first][: cap]
                i = i[: cap]
            else:
                ok = s <= np.median(s)
                s, i = s[ok], i[ok]
            c.scores[q, : len(s)], c.ids[q, : len(s)], c.counts[q] = s, i, len(s)
        return c


@pytest.mark.parametrize("keep", ["top", "bottom"])
@pytest.mark.parametrize("k", [10, 2048])
def test_wrong_guesses_are_mended_exactly(keep: str, k: int) -> None:
    """Samples of the top half rank every guess too high (too few survivors: the guess is lowered);
    of the bottom half, too low (the buffer overflows: a better proven threshold, sampled again)."""
    rng = np.random.default_rng(7)
    n = 100_003
    rows = rng.standard_normal((n, 4)).astype(np.float32)
    ids = np.arange(n, dtype=np.int64)
    queries = rng.standard_normal((3, 4)).astype(np.float32)
    scan = _Skewed(rows, ids, keep)
    got = topk(scan, queries, k)
    want = reference(rows, ids, queries, k)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])
    assert 1 < scan.full <= 3  # the first full pass did not finish them; mending costs a pass or two, not more


class _TwoWays(NumpyScan):
    """A faulty kernel: samples score every row far higher than full passes do, so what a
    sample proves does not hold in the pass."""

    def scan(self, queries: np.ndarray, thr_scores: np.ndarray, thr_ids: np.ndarray, step: int, cap: int) -> Candidates:
        if step == 1:
            return super().scan(queries, thr_scores, thr_ids, step, cap)
        c = super().scan(queries, thr_scores - np.float32(100), thr_ids, step, cap)
        c.scores += np.float32(100)
        keep = (c.scores > thr_scores[:, None]) | ((c.scores == thr_scores[:, None]) & (c.ids <= thr_ids[:, None]))
        for q in range(len(queries)):
            kept = int(min(c.counts[q], cap))
            ok = keep[q, :kept]
            c.scores[q, : ok.sum()], c.ids[q, : ok.sum()], c.counts[q] = c.scores[q, :kept][ok], c.ids[q, :kept][ok], ok.sum()
        return c


def test_a_threshold_that_does_not_hold_is_not_believed() -> None:
    """Too few survivors of a proven threshold can only mean a kernel that scores rows two ways
    (the GPU search runs one kernel per search so it never does): the plan starts that query
    again from no threshold instead of returning a short answer."""
    rng = np.random.default_rng(11)
    n, k = 100_003, 100
    rows = rng.standard_normal((n, 4)).astype(np.float32)
    ids = np.arange(n, dtype=np.int64)
    queries = rng.standard_normal((2, 4)).astype(np.float32)
    got = topk(_TwoWays(rows, ids), queries, k)
    np.testing.assert_array_equal(got[1], reference(rows, ids, queries, k)[1])


def test_an_overflowing_buffer_is_rescanned_until_exact() -> None:
    """Scores in three values, ~33k rows each, k large and the samples ranking too low: the
    buffer overflows on ties that only the ids can break, and the rounds still end exact."""
    n, k = 100_003, 4096
    rows = np.zeros((n, 2), np.float32)
    rows[:, 0] = np.random.default_rng(3).integers(0, 3, n)
    scan = _Skewed(rows, np.arange(n, dtype=np.int64), "bottom")
    got = topk(scan, np.array([[1.0, 0.0]], np.float32), k)
    want = reference(rows, np.arange(n, dtype=np.int64), np.array([[1.0, 0.0]], np.float32), k)
    np.testing.assert_array_equal(got[1], want[1])
    assert scan.full == 2  # one overflow, then a proven threshold from what it kept


def test_dead_rows_and_nan_rows_never_come_back() -> None:
    rng = np.random.default_rng(2)
    n, k = 4097, 2048
    rows = rng.standard_normal((n, 8)).astype(np.float32)
    ids = np.arange(n, dtype=np.int64)
    ids[rng.choice(n, 1500, replace=False)] = -1
    rows[rng.choice(n, 700, replace=False), 3] = np.nan
    _check(rows, ids, rng.standard_normal((3, 8)).astype(np.float32), k)
    q = rng.standard_normal((1, 8)).astype(np.float32)
    scores, got = topk(NumpyScan(rows, ids), q, 4096)
    live = int(((ids >= 0) & ~np.isnan(rows).any(axis=1)).sum())
    assert (got[0, :live] >= 0).all() and (got[0, live:] == -1).all() and np.isneginf(scores[0, live:]).all()


def test_near_ties_at_the_kth_place() -> None:
    """Scores that differ in the last bit around the k-th place, many exact ties on it."""
    n, k = 50_000, 100
    base = np.float32(0.5)
    vals = np.full(n, base, np.float32)
    vals[::7] = np.nextafter(base, np.float32(1))
    vals[::11] = np.nextafter(base, np.float32(0))
    rows = np.stack([vals, np.zeros(n, np.float32)], axis=1)
    _check(rows, np.arange(n, dtype=np.int64)[::-1].copy(), np.array([[1.0, 0.0]], np.float32), k)


def test_k_beyond_the_rows_returns_them_all() -> None:
    rows = np.eye(3, dtype=np.float32)
    s, i = topk(NumpyScan(rows, np.arange(3, dtype=np.int64)), np.ones((1, 3), np.float32), 10)
    assert s.shape == (1, 3) and sorted(i[0].tolist()) == [0, 1, 2]


def test_select_orders_by_score_then_id_and_pads() -> None:
    s, i = select(np.array([1, 2, 2, 0], np.float32), np.array([9, 5, 3, 1], np.int64), 6)
    assert i.tolist() == [3, 5, 9, 1, -1, -1] and np.isneginf(s[-2:]).all()
