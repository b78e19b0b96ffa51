"""Exact top-k search against a brute-force oracle: ties, dead rows, fp16, chunking, memory maps."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from jemc_infer.errors import InputShapeError
from jemc_infer.index.search import _widen, search
from jemc_infer.index.source import InMemory, Shard


def oracle(source: InMemory, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Full matmul over the live rows, then a sort by (score desc, id asc)."""
    blocks = source.blocks
    rows = np.concatenate([b.rows.astype(np.float32) for b in blocks]) if blocks else np.zeros((0, source.dim), np.float32)
    ids = np.concatenate([b.ids.astype(np.int64) for b in blocks]) if blocks else np.zeros(0, np.int64)
    rows, ids = rows[ids >= 0], ids[ids >= 0]
    scores = np.asarray(queries, np.float32) @ rows.T
    width = min(k, len(ids))
    order = np.stack([np.lexsort((ids, -s))[:width] for s in scores]) if len(queries) else np.zeros((0, width), int)
    return np.take_along_axis(scores, order, axis=1), ids[order]


def tied_source(rng: np.random.Generator, sizes: list[int], dim: int, dead: float = 0.2,
                dtypes: tuple = (np.float32, np.float16)) -> InMemory:
    """Integer-valued rows in {-2..2}: every score is exact in fp32 and ties are everywhere.
    Ids are unique, shuffled across shards (so id order differs from row order); some are dead."""
    ids = rng.permutation(10 * sum(sizes) + 1)[: sum(sizes)].astype(np.int64)
    blocks, at = [], 0
    for i, n in enumerate(sizes):
        rows = rng.integers(-2, 3, size=(n, dim)).astype(dtypes[i % len(dtypes)])
        shard_ids = ids[at : at + n].copy()
        shard_ids[rng.random(n) < dead] = -1
        blocks.append(Shard(rows, shard_ids))
        at += n
    return InMemory(tuple(blocks))


def check(source: InMemory, queries: np.ndarray, k: int, **kw: object) -> tuple[np.ndarray, np.ndarray]:
    scores, ids = search(source, queries, k, **kw)
    want_scores, want_ids = oracle(source, queries, k)
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    assert scores.shape == ids.shape == want_scores.shape
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(scores, want_scores)
    return scores, ids


@pytest.mark.parametrize("nq", [1, 3, 64])
@pytest.mark.parametrize("k", [1, 5, 10_000])
@pytest.mark.parametrize("chunk_rows", [None, 7, 64])
def test_matches_oracle_with_ties_dead_rows_and_mixed_dtypes(nq: int, k: int, chunk_rows: int | None) -> None:
    rng = np.random.default_rng(nq * 1000 + k + (chunk_rows or 0))
    source = tied_source(rng, [50, 3, 0, 301, 97], dim=6)
    queries = rng.integers(-2, 3, size=(nq, 6)).astype(np.float32)
    scores, ids = check(source, queries, k, chunk_rows=chunk_rows)
    live = sum(int((b.ids >= 0).sum()) for b in source.blocks)
    assert scores.shape == (nq, min(k, live))
    assert (ids >= 0).all()


def test_boundary_ties_keep_the_lowest_ids_across_chunks_and_shards() -> None:
    # every row scores the same: the answer is the k lowest ids, wherever they sit
    ids = np.array([90, 80, 70, 60, 50, 40, 30, 20, 10, 0], np.int64)
    rows = np.ones((10, 4), np.float32)
    source = InMemory((Shard(rows[:6], ids[:6]), Shard(rows[6:], ids[6:])))
    for chunk_rows in (1, 3, 4, None):
        scores, got = search(source, np.ones((2, 4), np.float32), 3, chunk_rows=chunk_rows)
        np.testing.assert_array_equal(got, [[0, 10, 20]] * 2)
        np.testing.assert_array_equal(scores, np.full((2, 3), 4.0, np.float32))
    # one strictly better row, then ties at the k-th place resolved by id
    rows = np.array([[1.0], [3.0], [3.0], [5.0], [3.0], [3.0]], np.float32)
    source = InMemory((Shard(rows, np.array([1, 9, 7, 100, 2, 8], np.int64)),))
    for chunk_rows in (1, 2, 4, None):
        scores, got = search(source, np.ones((1, 1), np.float32), 3, chunk_rows=chunk_rows)
        np.testing.assert_array_equal(got, [[100, 2, 7]])
        np.testing.assert_array_equal(scores, [[5.0, 3.0, 3.0]])


def test_many_ties_force_compaction() -> None:
    # more candidates than the per-query pool holds: compaction must keep the lowest tied ids
    rng = np.random.default_rng(3)
    source = tied_source(rng, [4000, 2500], dim=2, dead=0.1)
    queries = rng.integers(-2, 3, size=(5, 2)).astype(np.float32)
    for k in (1, 10, 300):
        check(source, queries, k, chunk_rows=333)


def test_float_data_matches_oracle() -> None:
    rng = np.random.default_rng(4)
    rows = rng.standard_normal((3000, 32)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    source = InMemory((Shard(rows[:1000], np.arange(1000)), Shard(rows[1000:], np.arange(1000, 3000))))
    queries = rng.standard_normal((8, 32)).astype(np.float32)
    scores, ids = search(source, queries, 20, chunk_rows=300)
    want_scores, want_ids = oracle(source, queries, 20)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("view", ["strided rows", "strided columns", "fortran", "float16", "float64"])
def test_query_layouts_and_dtypes(view: str) -> None:
    rng = np.random.default_rng(5)
    source = tied_source(rng, [200, 150], dim=8)
    base = rng.integers(-2, 3, size=(12, 16)).astype(np.float32)
    queries = {"strided rows": base[::3, :8], "strided columns": base[:4, ::2], "fortran": np.asfortranarray(base[:4, :8]),
               "float16": base[:4, :8].astype(np.float16), "float64": base[:4, :8].astype(np.float64)}[view]
    before = queries.copy()
    check(source, queries, 7, chunk_rows=33)
    np.testing.assert_array_equal(queries, before)  # the caller's array is not touched


def test_memory_mapped_shards(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    blocks = []
    for i, (n, dtype) in enumerate([(500, np.float32), (333, np.float16), (1, np.float32)]):
        np.save(tmp_path / f"rows{i}.npy", rng.integers(-3, 4, size=(n, 16)).astype(dtype))
        ids = rng.choice(100_000, size=n, replace=False).astype(np.int64) + 100_000 * i
        ids[::7] = -1
        np.save(tmp_path / f"ids{i}.npy", ids)
        blocks.append(Shard(np.load(tmp_path / f"rows{i}.npy", mmap_mode="r", allow_pickle=False),
                            np.load(tmp_path / f"ids{i}.npy", mmap_mode="r", allow_pickle=False)))
    source = InMemory(tuple(blocks))
    queries = rng.integers(-3, 4, size=(3, 16)).astype(np.float32)
    check(source, queries, 10)
    check(source, queries, 10, chunk_rows=100)
    assert not blocks[0].rows.flags.writeable  # read-only maps are scored in place


def test_empty_and_all_dead() -> None:
    q = np.ones((3, 4), np.float32)
    for source in (InMemory(()), InMemory((Shard(np.ones((5, 4), np.float32), np.full(5, -1, np.int64)),)),
                   InMemory((Shard(np.zeros((0, 4), np.float16), np.zeros(0, np.int64)),))):
        scores, ids = search(source, q, 5)
        assert scores.shape == ids.shape == (3, 0)
        assert scores.dtype == np.float32 and ids.dtype == np.int64


def test_k_larger_than_live_returns_every_live_row() -> None:
    rows = np.arange(12, dtype=np.float32).reshape(6, 2)
    source = InMemory((Shard(rows, np.array([5, -1, 3, -1, 1, 0], np.int64)),))
    scores, ids = search(source, np.ones((2, 2), np.float32), 100)
    np.testing.assert_array_equal(ids, [[0, 1, 3, 5]] * 2)
    np.testing.assert_array_equal(scores, [[21.0, 17.0, 9.0, 1.0]] * 2)


def test_int32_ids_come_back_as_int64() -> None:
    source = InMemory((Shard(np.eye(3, dtype=np.float32), np.array([7, 8, 9], np.int32)),))
    scores, ids = search(source, np.eye(3, dtype=np.float32), 1)
    assert ids.dtype == np.int64
    np.testing.assert_array_equal(ids[:, 0], [7, 8, 9])


def test_nan_rows_are_never_returned_and_short_queries_are_padded() -> None:
    rows = np.array([[1.0, 0.0], [np.nan, 0.0], [0.0, 1.0]], np.float16)
    source = InMemory((Shard(rows, np.array([0, 1, 2], np.int64)),))
    scores, ids = search(source, np.array([[1.0, 1.0]], np.float32), 3)
    np.testing.assert_array_equal(ids, [[0, 2, -1]])
    np.testing.assert_array_equal(scores, [[1.0, 1.0, -np.inf]])


def test_widen_is_exact_for_every_half() -> None:
    halves = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).reshape(256, 256)
    want = halves.astype(np.float32)
    finite = np.isfinite(halves).all(axis=1)  # rows without inf/NaN take the bit-manipulation path
    got = _widen(halves[finite], np.empty((finite.sum(), 256), np.float32))
    np.testing.assert_array_equal(got.view(np.uint32), want[finite].view(np.uint32))  # signed zeros, subnormals
    got = _widen(halves, np.empty_like(want))  # inf/NaN present: numpy's own cast
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize(
    ("queries", "k", "match"),
    [
        (np.ones(4, np.float32), 1, r"queries \| float32 \[4\] \| expected float32 \[nq, D\] \(one query: pass q\[None, :\]\)"),
        (np.ones((1, 2, 4), np.float32), 1, r"queries \| float32 \[1, 2, 4\]"),
        (np.ones((2, 4), np.int64), 1, r"queries \| int64 \[2, 4\]"),
        (np.ones((2, 5), np.float32), 1, r"queries \| width 5 \| expected the index's width D = 4"),
        (np.full((2, 4), np.nan, np.float32), 1, r"queries \| non-finite values"),
        (np.ones((0, 4), np.float32), 1, r"queries \| float32 \[0, 4\]: none \| expected at least one query"),
        (np.ones((2, 4), np.float32), 0, r"k \| 0 \| expected an integer >= 1"),
        (np.ones((2, 4), np.float32), -3, r"k \| -3 \|"),
        (np.ones((2, 4), np.float32), 2.5, r"k \| 2.5 \|"),
        (np.ones((2, 4), np.float32), True, r"k \| True \|"),
    ],
)
def test_bad_queries_and_k(queries: np.ndarray, k: object, match: str) -> None:
    source = InMemory((Shard(np.ones((3, 4), np.float32), np.arange(3)),))
    with pytest.raises(InputShapeError, match=match):
        search(source, queries, k)  # type: ignore[arg-type]


def test_bad_chunk_rows() -> None:
    source = InMemory((Shard(np.ones((3, 4), np.float32), np.arange(3)),))
    with pytest.raises(InputShapeError, match=r"chunk_rows \| 0 \| expected an integer >= 1"):
        search(source, np.ones((1, 4), np.float32), 1, chunk_rows=0)


@pytest.mark.parametrize(
    ("rows", "ids", "match"),
    [
        (np.ones((3, 5), np.float32), np.arange(3), r"shard rows \| float32 \[3, 5\] \| expected float16 or float32 \[n, 4\]"),
        (np.ones((3, 4), np.float64), np.arange(3), r"shard rows \| float64 \[3, 4\]"),
        (np.ones((3, 4), np.float32), np.arange(2), r"shard ids \| int64 \[2\] \| expected int64 \[3\], one per row"),
        (np.ones((3, 4), np.float32), np.arange(3.0), r"shard ids \| float64 \[3\]"),
    ],
)
def test_malformed_shards(rows: np.ndarray, ids: np.ndarray, match: str) -> None:
    good = Shard(np.ones((2, 4), np.float32), np.arange(2))
    with pytest.raises(InputShapeError, match=match):
        search(InMemory((good, Shard(rows, ids))), np.ones((1, 4), np.float32), 1)


def _peak_bytes(n: int) -> int:
    rng = np.random.default_rng(n)
    rows = rng.standard_normal((n, 16), dtype=np.float32)
    source = InMemory(tuple(Shard(part, np.arange(i, i + len(part))) for i, part in
                            zip(range(0, n, n // 4), np.array_split(rows, 4), strict=True)))
    queries = rng.standard_normal((8, 16), dtype=np.float32)
    search(source, queries, 50, chunk_rows=4096)  # warm-up: lazy imports, caches
    tracemalloc.start()
    search(source, queries, 50, chunk_rows=4096)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_peak_memory_does_not_grow_with_n() -> None:
    small, large = _peak_bytes(100_000), _peak_bytes(400_000)
    # per chunk: 8 x 4096 scores + mask + candidates, well under 1 MB; the rows are 25.6 MB at 400k
    assert large < 1.3 * small + 64_000, (small, large)
    assert large < 2_000_000, large
