"""Sharded search on Ray answers exactly as the local ``search()``: the same ids and the same scores,
bit for bit, with exact ties, dead rows, fp16 shards, NaN rows and more actors than shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jemc_infer.cluster import Cluster
from jemc_infer.cluster.search import ShardedSearch, _file_of, merge
from jemc_infer.errors import InputShapeError
from jemc_infer.index.search import search
from jemc_infer.index.source import InMemory, Shard
from jemc_infer.index.store import Index, VideoRecord

D = 16


def _source(seed: int, sizes: tuple[int, ...], dtype: str = "float32") -> InMemory:
    """Shards of small integer rows (many exact ties), a fifth of the rows dead, ids interleaved
    across shards (so a tie's lower id may sit in any shard)."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(sum(sizes)).astype(np.int64)
    blocks, at = [], 0
    for n in sizes:
        part = ids[at:at + n].copy()
        part[rng.random(n) < 0.2] = -1
        blocks.append(Shard(rng.integers(-2, 3, (n, D)).astype(dtype), part))
        at += n
    return InMemory(tuple(blocks))


@pytest.fixture(scope="module")
def sharded(ray_cluster) -> ShardedSearch:
    with ShardedSearch(Cluster(actors=3)) as s:
        yield s


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_equals_the_local_search_with_ties_and_dead_rows(sharded: ShardedSearch, dtype: str) -> None:
    source = _source(1, (50, 7, 120, 33, 64), dtype)
    sharded.load(source)
    rng = np.random.default_rng(2)
    for nq in (1, 9):
        queries = rng.integers(-1, 2, (nq, D)).astype(np.float32)
        for k in (1, 3, 17, 1000):
            want, got = search(source, queries, k), sharded.search(queries, k)
            assert got[0].dtype == np.float32 and got[1].dtype == np.int64
            assert np.array_equal(want[1], got[1]) and np.array_equal(want[0], got[0]), (nq, k)
    assert len(set(want[0][0])) < len(want[0][0])  # there were ties to break


def test_nan_rows_pad_as_locally_and_more_actors_than_shards(sharded: ShardedSearch) -> None:
    rows = np.ones((4, D), np.float32)
    rows[1:] = np.nan  # rows whose score is NaN are never returned: the result is padded
    source = InMemory((Shard(rows, np.array([5, 6, 7, 8])),))
    q = np.ones((2, D), np.float32)
    want, got = search(source, q, 3), sharded.search(q, 3, source=source)  # 1 shard, 3 actors
    assert np.array_equal(want[1], got[1]) and np.array_equal(want[0], got[0])
    assert got[1].tolist() == [[5, -1, -1]] * 2


def test_an_index_is_searched_from_its_shard_files(sharded: ShardedSearch, tmp_path: Path) -> None:
    settings = {"model": "m", "layout": [["object", 8], ["activity", 8]], "sampling": {}, "backbones": {}, "dtype": "float32"}
    rng = np.random.default_rng(3)
    with Index.open(tmp_path / "ix", settings, writer=True) as ix:
        for s in range(4):
            rows = rng.integers(-2, 3, (6, D)).astype(np.float32)
            ix.add_shard(rows, [VideoRecord(f"v{s}-{i}.mp4", 1, 1, "h", 1.0, "ok") for i in range(6)])
        ix.add_shard(rng.integers(-2, 3, (2, D)).astype(np.float32),  # two videos re-embedded: their old rows are dead
                     [VideoRecord("v0-1.mp4", 2, 2, "h", 1.0, "ok"), VideoRecord("v2-3.mp4", 2, 2, "h", 1.0, "ok")])
    with Index.open(tmp_path / "ix") as ix:
        shards = list(ix.shards())
        assert all(_file_of(s.rows) for s in shards) and _file_of(shards[0].rows[:3]) is None  # views travel as data
        q = rng.integers(-1, 2, (5, D)).astype(np.float32)
        want = search(ix, q, 10)
        got = sharded.search(q, 10, source=ix)
    assert np.array_equal(want[1], got[1]) and np.array_equal(want[0], got[0])


def test_bad_queries_are_refused_as_locally(sharded: ShardedSearch) -> None:
    sharded.load(_source(4, (10,)))
    with pytest.raises(InputShapeError, match=r"queries \| float32 \[16\] \| expected float32 \[nq, D\] \(one query"):
        sharded.search(np.zeros(D, np.float32), 3)
    with pytest.raises(InputShapeError, match=r"k \| 0 \| expected an integer >= 1"):
        sharded.search(np.zeros((1, D), np.float32), 0)


def test_merge_orders_by_score_then_id_and_pads() -> None:
    a = (np.array([[3.0, 1.0]], np.float32), np.array([[9, 4]]))
    b = (np.array([[3.0, -np.inf]], np.float32), np.array([[2, -1]]))
    scores, ids = merge([a, b], k=5, live=3, nq=1)
    assert ids.tolist() == [[2, 9, 4]] and scores.tolist() == [[3.0, 3.0, 1.0]]
    scores, ids = merge([a, b], k=4, live=4, nq=1)  # a live row with a NaN score was not returned: padded
    assert ids.tolist() == [[2, 9, 4, -1]] and scores[0, 3] == -np.inf


def test_large_batches_score_bit_for_bit_as_locally(sharded: ShardedSearch) -> None:
    # big enough for OpenBLAS to thread its matrix-matrix product: with the thread count Ray gives
    # an actor (1) it would sum in another order than this process (scores off in the last bits)
    rng = np.random.default_rng(5)
    source = InMemory(tuple(Shard(rng.standard_normal((6000, 512), dtype=np.float32), np.arange(j * 6000, (j + 1) * 6000))
                            for j in range(4)))
    q = rng.standard_normal((16, 512), dtype=np.float32)
    want, got = search(source, q, 10), sharded.search(q, 10, source=source)
    assert np.array_equal(want[1], got[1]) and np.array_equal(want[0], got[0])
