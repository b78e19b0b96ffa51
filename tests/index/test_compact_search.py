"""Exact search through the int8 compact copy, against a brute-force oracle, on adversarial data.

The oracle: every live row's inner product in float64, rounded to float32, sorted by (score desc,
id asc). The compact search must return exactly that — ids and scores, bit for bit — on random
rows, integer rows full of ties, near-ties at the k-th place, rows whose error bounds straddle the
threshold, NaN / inf / huge / zero rows, dead rows, and k beyond the live rows.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from support import child_env

from jemc_infer.errors import InputError
from jemc_infer.index import compact as c8
from jemc_infer.index.search import search
from jemc_infer.index.source import InMemory, Shard
from jemc_infer.index.store import Index, VideoRecord


def oracle(source: InMemory, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    rows = np.concatenate([b.rows.astype(np.float64) for b in source.blocks])
    ids = np.concatenate([b.ids.astype(np.int64) for b in source.blocks])
    rows, ids = rows[ids >= 0], ids[ids >= 0]
    with np.errstate(invalid="ignore", over="ignore"):
        scores = (np.asarray(queries, np.float64) @ rows.T).astype(np.float32)
    out_s, out_i = [], []
    width = min(k, len(ids))
    for s in scores:
        ok = ~np.isnan(s)
        order = np.lexsort((ids[ok], -s[ok]))[:width]
        pad = width - len(order)
        out_s.append(np.concatenate([s[ok][order], np.full(pad, -np.inf, np.float32)]))
        out_i.append(np.concatenate([ids[ok][order], np.full(pad, -1, np.int64)]))
    return np.array(out_s, np.float32).reshape(len(queries), width), np.array(out_i, np.int64).reshape(len(queries), width)


def check(source: InMemory, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    compact = source.with_compact()
    scores, ids = search(compact, queries, k, compact=True)
    want_scores, want_ids = oracle(source, queries, k)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(scores, want_scores)
    return scores, ids


def unit_shards(rng: np.random.Generator, sizes: list[int], dim: int, dead: float = 0.1) -> InMemory:
    blocks, at = [], 0
    for i, n in enumerate(sizes):
        x = rng.standard_normal((n, dim)).astype(np.float32)
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        ids = np.arange(at, at + n, dtype=np.int64)[rng.permutation(n)]
        ids[rng.random(n) < dead] = -1
        blocks.append(Shard(x.astype(np.float16) if i % 2 else x, ids))
        at += n
    return InMemory(tuple(blocks))


def test_the_product_is_numkongs_and_exact_here() -> None:
    """The scan's product equals numpy's int64 one on odd shapes, extreme codes, more queries than
    one packed batch, and D beyond 4096 (the halves combined in float32 there)."""
    nk = c8._numkong()
    assert nk is not None and nk.__name__ == "numkong"  # installed with the package, and its self-check passed
    rng = np.random.default_rng(0)
    for nq, d, r in ((1, 5, 3), (2, 2048, 1024), (3, 7, 1), (c8._QUERY_BATCH + 3, 96, 17), (1, 4100, 9), (40, 33, 0)):
        a = rng.integers(-63, 64, (2 * nq, d), dtype=np.int8)
        a[0] = -63
        codes = rng.integers(-127, 128, (r, d), dtype=np.int8)
        codes[:1] = -127
        upper = np.empty((nq, r), np.float32)
        c8._scorer(nk, a)(codes, upper)
        wide = codes.astype(np.int64) @ a.T.astype(np.int64)  # [r, 2 nq]
        np.testing.assert_array_equal(upper, (64 * wide[:, :nq] + wide[:, nq:]).T.astype(np.float32))


def test_without_an_exact_product_the_full_scan_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """NumKong missing, or a build whose sums saturate (as 16-bit pair sums would): the self-check
    turns the compact scan off, `auto` reads the full rows and answers the same, and a search that
    requires the copy is refused."""
    import numkong

    class Saturating:
        __name__ = "saturating"
        dots_pack = staticmethod(numkong.dots_pack)

        @staticmethod
        def dots_packed(a, b):  # noqa: ANN001, ANN205
            return np.asarray(numkong.dots_packed(a, b)).clip(-32768, 32767)

    assert not c8._self_check(Saturating)
    rng = np.random.default_rng(5)
    source = unit_shards(rng, [300], dim=8).with_compact()
    q = rng.standard_normal((2, 8)).astype(np.float32)
    want = oracle(source, q, 5)[1]
    try:
        for module in (None, Saturating):
            monkeypatch.setitem(sys.modules, "numkong", module)
            c8._numkong.cache_clear()
            assert c8._numkong() is None and not c8.usable(q)
            np.testing.assert_array_equal(search(source, q, 5)[1], want)
            with pytest.raises(InputError, match="compact"):
                search(source, q, 5, compact=True)
    finally:
        monkeypatch.undo()
        c8._numkong.cache_clear()
    assert c8._numkong() is not None


@pytest.mark.parametrize("n", [1, 7, 4097, 10003])
@pytest.mark.parametrize("k", [1, 10, 2048, 4096])
def test_random_rows_match_the_oracle(n: int, k: int) -> None:
    rng = np.random.default_rng(n * 7 + k)
    source = unit_shards(rng, [n // 3, n - n // 3 - n // 5, n // 5] if n > 5 else [n], dim=96)
    for nq in (1, 3, 64):
        check(source, rng.standard_normal((nq, 96)).astype(np.float32), k)


def test_integer_rows_all_ties_keep_the_lowest_ids() -> None:
    rng = np.random.default_rng(1)
    blocks = []
    for n, at in ((1500, 0), (900, 5000)):
        ids = np.arange(at, at + n, dtype=np.int64)[rng.permutation(n)]
        ids[rng.random(n) < 0.2] = -1
        blocks.append(Shard(rng.integers(-2, 3, (n, 8)).astype(np.float32), ids))
    source = InMemory(tuple(blocks))
    for k in (1, 5, 100, 3000):
        check(source, rng.integers(-2, 3, (5, 8)).astype(np.float32), k)
    same = InMemory((Shard(np.ones((3000, 8), np.float32), np.arange(3000)[::-1].copy()),))
    _, ids = check(same, np.ones((2, 8), np.float32), 10)
    assert ids.tolist() == [list(range(10))] * 2


def test_near_ties_and_straddling_bounds_at_the_kth_place() -> None:
    """Rows equal but for a last-bit nudge, a thousand of them around the k-th score: every
    bound straddles the threshold, only the rescoring can order them."""
    rng = np.random.default_rng(2)
    dim = 64
    base = rng.standard_normal(dim).astype(np.float32)
    base /= np.linalg.norm(base)
    n = 3000
    rows = np.repeat(base[None], n, axis=0)
    nudge = rng.integers(-3, 4, (n, dim)).astype(np.float32) * np.float32(2**-23)
    rows = rows + rows * nudge  # a few ulps per value
    rows[::3] = base  # exact duplicates too: ties broken by id
    noise = rng.standard_normal((2000, dim)).astype(np.float32) * 0.3
    source = InMemory((Shard(rows.astype(np.float32), rng.permutation(n).astype(np.int64)),
                       Shard(noise, np.arange(n, n + 2000, dtype=np.int64))))
    queries = np.stack([base, base + rng.standard_normal(dim).astype(np.float32) * 1e-3])
    for k in (1, 10, 999, 1000, 1001, 2500):
        check(source, queries, k)


@pytest.mark.parametrize("threads", [1, 2, 3, 5])
def test_the_scan_split_across_threads_answers_as_one(threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """One block per product call, runs of blocks per thread: each thread's bounds see only its
    rows (its own threshold, its own candidates) and the merge must still give the oracle's answer,
    near-ties split between threads included. The narrowing and the rescoring cut one query's
    candidates in pieces across the threads (fewer queries than threads): the same answer."""
    monkeypatch.setattr(c8, "SCAN_THREADS", threads)
    monkeypatch.setattr(c8, "_GROUP_SCORES", c8.BLOCK)  # one block per call: many calls to split
    dealt: list[list[list[tuple[int, slice]]]] = []
    pieces = c8._pieces
    monkeypatch.setattr(c8, "_pieces", lambda sizes, n: dealt.append(pieces(sizes, n)) or dealt[-1])
    rng = np.random.default_rng(threads)
    base = rng.standard_normal(32).astype(np.float32)
    base /= np.linalg.norm(base)
    ties = np.repeat(base[None], 2500, axis=0) * (1 + rng.integers(-2, 3, (2500, 32)).astype(np.float32) * np.float32(2**-23))
    order = rng.permutation(6000)  # the near-ties spread over every block, so over every thread
    rows = np.concatenate([ties, rng.standard_normal((3500, 32)).astype(np.float32) * 0.3])[order]
    ids = np.arange(6000, dtype=np.int64)
    ids[rng.random(6000) < 0.1] = -1
    source = InMemory((Shard(rows[:3700].astype(np.float32), ids[:3700]), Shard(rows[3700:].astype(np.float32), ids[3700:])))
    queries = np.stack([base, rng.standard_normal(32).astype(np.float32)])
    for k in (1, 10, 1000, 2400, 6000):
        check(source, queries, k)
        check(source, queries[:1], k)
    cut = [groups for groups in dealt if len([qi for g in groups for qi, _ in g]) > len({qi for g in groups for qi, _ in g})]
    assert bool(cut) == (threads > 1)  # one query's candidates in several pieces, on as many threads
    assert all(len(groups) == min(threads, len([p for g in groups for p in g])) for groups in cut)


def test_special_rows_nan_inf_huge_zero_and_dead() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2100, 16)).astype(np.float32)
    x[5, 3] = np.nan  # never returned
    x[6] = 0.0  # scale 0
    x[7, 0] = np.inf  # +inf or -inf or NaN by the query's sign: returned as the full scan would
    x[8] = 1e30  # huge: rescored always
    x[9, :] = 1e-30  # tiny
    ids = np.arange(2100, dtype=np.int64)
    ids[10:1200] = -1
    source = InMemory((Shard(x, ids),))
    for q in (np.ones((1, 16), np.float32), -np.ones((1, 16), np.float32), rng.standard_normal((4, 16)).astype(np.float32)):
        for k in (1, 3, 900, 950):
            check(source, q, k)


def test_k_beyond_the_live_rows_and_all_dead() -> None:
    rng = np.random.default_rng(4)
    source = unit_shards(rng, [40, 30], dim=8, dead=0.5)
    scores, ids = check(source, rng.standard_normal((2, 8)).astype(np.float32), 500)
    assert ids.shape[1] == sum(int((b.ids >= 0).sum()) for b in source.blocks)
    dead = InMemory((Shard(np.ones((5, 8), np.float32), np.full(5, -1, np.int64)),))
    scores, ids = search(dead.with_compact(), np.ones((1, 8), np.float32), 3, compact=True)
    assert ids.shape == (1, 0) and scores.shape == (1, 0)


def test_compact_required_but_missing_is_refused_and_auto_falls_back() -> None:
    rng = np.random.default_rng(5)
    source = unit_shards(rng, [50], dim=8)
    q = rng.standard_normal((1, 8)).astype(np.float32)
    with pytest.raises(InputError, match="jemc-infer index compact --index INDEX"):
        search(source, q, 3, compact=True)
    want = oracle(source, q, 3)[1]
    np.testing.assert_array_equal(search(source, q, 3)[1], want)  # no copy: the full scan
    partial = source.with_compact()
    extra = InMemory(partial.blocks + (Shard(np.ones((2, 8), np.float32), np.array([900, 901]), 7),), partial.compact)
    assert not c8.covers(list(extra.blocks), extra.compact)
    np.testing.assert_array_equal(search(extra, q, 3)[1], search(InMemory(extra.blocks), q, 3, compact=False)[1])


def test_peak_memory_is_flat_in_n(monkeypatch: pytest.MonkeyPatch) -> None:
    """One scanning thread: the same peak for 4x the rows. Several: each holds one product call's
    buffers at most (how many overlap depends on timing, so each run's peak varies)."""
    def peak(n: int) -> int:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, 64)).astype(np.float32)
        source = InMemory((Shard(x, np.arange(n, dtype=np.int64)),)).with_compact()
        q = rng.standard_normal((8, 64)).astype(np.float32)
        search(source, q, 50)
        peaks = []
        for _ in range(3):
            tracemalloc.start()
            search(source, q, 50)
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        return max(peaks)

    monkeypatch.setattr(c8, "SCAN_THREADS", 1)
    small, large = peak(50_000), peak(200_000)
    assert large < 1.3 * small + 100_000, (small, large)
    monkeypatch.setattr(c8, "SCAN_THREADS", 4)
    assert peak(200_000) < 4 * (1.3 * small + 100_000), small


# -- the index: embed writes it, `index compact` adds it, segments merge, crashes leave no trace --

SETTINGS = {"model": "abc", "layout": [["object", 24], ["activity", 24]], "sampling": {"frame_rate": 1.0},
            "backbones": {"object": "f00"}, "dtype": "float32"}


def _add(ix: Index, n: int, seed: int, prefix: str) -> None:
    rows = np.random.default_rng(seed).standard_normal((n, 48)).astype(np.float32)
    ix.add_shard(rows, [VideoRecord(f"{prefix}{i}.mp4", 1, 1, "h", 1.0, "ok", None) for i in range(n)])


def test_index_segments_merge_and_answer_as_the_full_scan(tmp_path: Path) -> None:
    q = np.random.default_rng(9).standard_normal((3, 48)).astype(np.float32)
    with Index.open(tmp_path / "ix", SETTINGS, writer=True) as ix:
        _add(ix, 700, 1, "a")
        _add(ix, 600, 2, "b")
        assert ix.segments() == []
        assert ix.compact() == (1300, 1)
        _add(ix, 50, 3, "c")
        _add(ix, 60, 3, "a")  # re-embeds a0..a59: their old rows are dead
        assert ix.compact() == (110, 2)  # 110 new rows: far smaller than 1300, kept apart
        _add(ix, 1400, 4, "d")
        written, segments = ix.compact()
        assert (written, segments) == (2810, 1)  # 1400 >= 110 / 2, then 1510 >= 1300 / 2: one segment, written once
        files = sorted(p.name for p in (tmp_path / "ix" / "compact").iterdir())
        assert files == ["000003.i8.npy", "000003.meta.npy", "000003.r8.npy"]
        counts = ix.counts()
        assert counts["compact_shards"] == counts["shards"] == 5 and counts["segments"] == 1
        shards, segments = list(ix.shards()), ix.segments()
        full = search(InMemory(tuple(shards)), q, 20, compact=False)
        got = search(ix, q, 20, compact=True)
        np.testing.assert_array_equal(got[1], full[1])
        np.testing.assert_allclose(got[0], full[0], rtol=1e-5, atol=1e-6)
        assert c8.covers(shards, segments)


def test_cli_index_compact_upgrades_an_old_index(tmp_path: Path) -> None:
    with Index.open(tmp_path / "ix", SETTINGS, writer=True) as ix:
        _add(ix, 30, 1, "a")
    env = child_env()
    status = subprocess.run([sys.executable, "-m", "jemc_infer", "index", "status", "--index", str(tmp_path / "ix")],
                            capture_output=True, text=True, env=env, check=True).stdout
    assert "1 shard(s) without one" in status and "jemc-infer index compact" in status
    out = subprocess.run([sys.executable, "-m", "jemc_infer", "index", "compact", "--index", str(tmp_path / "ix")],
                         capture_output=True, text=True, env=env, check=True).stdout
    assert "30 rows written to the compact copy, 1 segment(s)" in out
    status = subprocess.run([sys.executable, "-m", "jemc_infer", "index", "status", "--index", str(tmp_path / "ix")],
                            capture_output=True, text=True, env=env, check=True).stdout
    assert "compact copy: 1 segment(s), every shard" in status


def test_a_crash_while_writing_the_copy_leaves_the_index_as_it_was(tmp_path: Path) -> None:
    with Index.open(tmp_path / "ix", SETTINGS, writer=True) as ix:
        _add(ix, 40, 1, "a")
    code = ("import sys; from jemc_infer.index.store import Index\n"
            "with Index.open(sys.argv[1], writer=True) as ix: ix.compact()\n")
    env = {**child_env(), "JEMC_CRASH_AT": "compact-written:1"}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "ix")], env=env, capture_output=True)
    assert proc.returncode == -9
    assert any(p.name.startswith(".") for p in (tmp_path / "ix" / "compact").iterdir())  # the temporary files
    with Index.open(tmp_path / "ix", writer=True) as ix:
        assert ix.messages[-1] == "removed 3 file(s) left by an interrupted run"
        assert ix.segments() == []
        assert ix.compact() == (40, 1)
    assert sorted(os.listdir(tmp_path / "ix" / "compact")) == ["000001.i8.npy", "000001.meta.npy", "000001.r8.npy"]


def test_a_copy_in_the_first_layout_is_not_read_and_compact_rewrites_it(tmp_path: Path) -> None:
    """Codes written flat in transposed blocks (before rows were kept in order): search reads the
    full rows instead (the same answer), status says the shard lacks a copy, compact() rewrites it."""
    q = np.random.default_rng(9).standard_normal((2, 48)).astype(np.float32)
    with Index.open(tmp_path / "ix", SETTINGS, writer=True) as ix:
        _add(ix, 300, 1, "a")
        ix.compact()
        want = search(ix, q, 7, compact=True)
    codes = tmp_path / "ix" / "compact" / "000001.i8.npy"
    np.save(codes, np.load(codes).reshape(-1))  # the first layout kept the codes flat
    with Index.open(tmp_path / "ix", writer=True) as ix:
        assert ix.segments() == [] and ix.counts()["compact_shards"] == 0
        np.testing.assert_array_equal(search(ix, q, 7)[1], want[1])
        assert ix.compact() == (300, 1)
        assert ix.counts()["compact_shards"] == 1
        np.testing.assert_array_equal(search(ix, q, 7, compact=True)[1], want[1])
    assert sorted(os.listdir(tmp_path / "ix" / "compact")) == ["000002.i8.npy", "000002.meta.npy", "000002.r8.npy"]


def test_the_self_check_catches_a_float32_accumulator() -> None:
    """Sums beyond 2**24 (extreme codes over the check's length) lose their last bits in float32."""
    import numkong

    class Float32:
        __name__ = "float32"
        dots_pack = staticmethod(numkong.dots_pack)

        @staticmethod
        def dots_packed(a, b):  # noqa: ANN001, ANN205
            exact = np.asarray(numkong.dots_packed(a, b))
            return exact.astype(np.float32).astype(np.int64)  # what float32 partial sums would round to, at best

    assert c8._self_check(numkong) and not c8._self_check(Float32)


def test_unavailable_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    assert c8.unavailable() is None
    try:
        monkeypatch.setitem(sys.modules, "numkong", None)
        c8._numkong.cache_clear()
        assert "numkong is not installed" in (c8.unavailable() or "")
    finally:
        monkeypatch.undo()
        c8._numkong.cache_clear()
