"""Retrieval metrics: hand-computed cases, ties, variable captions per video, and a brute-force oracle."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from jemc_infer.errors import InputShapeError
from jemc_infer.train.metrics import curve_from_ranks, metrics_from_ranks, rank_counts, recall_curve, retrieval_metrics

SIMS = np.array([[0.9, 0.1, 0.2],
                 [0.3, 0.5, 0.1],
                 [0.2, 0.4, 0.8],
                 [0.1, 0.6, 0.7]])
CAPTION_VIDEO = np.array([0, 0, 1, 2])  # video 0 has two captions, the others one


def test_hand_computed_variable_captions() -> None:
    m = retrieval_metrics(SIMS, CAPTION_VIDEO)
    # t2v ranks (0-based): [0, 1, 1, 0]
    assert m["t2v"] == {"r1": 50.0, "r5": 100.0, "r10": 100.0, "medr": 1.0, "meanr": 1.5, "n": 4}
    # v2t: video0 best own caption .9 → 0; video1 own .4 beaten by .5, .6 → 2; video2 own .7 beaten by .8 → 1
    assert m["v2t"]["r1"] == pytest.approx(100 / 3)
    assert (m["v2t"]["medr"], m["v2t"]["meanr"], m["v2t"]["n"]) == (2.0, 2.0, 3)
    assert m["rsum"] == pytest.approx(50 + 100 + 100 + 100 / 3 + 100 + 100)


def test_ties_three_policies() -> None:
    sims = np.array([[0.5, 0.5, 0.5]])
    cv = np.array([0])
    opt, pes, avg = (retrieval_metrics(sims, cv, ties=t)["t2v"] for t in ("optimistic", "pessimistic", "average"))
    assert (opt["r1"], opt["medr"], opt["meanr"]) == (100.0, 1.0, 1.0)
    assert (pes["r1"], pes["r5"], pes["medr"], pes["meanr"]) == (0.0, 100.0, 3.0, 3.0)
    assert avg["r1"] == pytest.approx(100 / 3) and avg["meanr"] == pytest.approx(2.0) and avg["medr"] == 2.0


def test_ties_with_several_own_captions() -> None:
    # video 0: own captions 0 and 1 and caption 2 (of video 1) all score .7 → 1 tied other, 2 tied own
    sims = np.array([[0.7, 0.1], [0.7, 0.1], [0.7, 0.9]])
    cv = np.array([0, 0, 1])
    opt = retrieval_metrics(sims, cv, ties="optimistic")["v2t"]
    pes = retrieval_metrics(sims, cv, ties="pessimistic")["v2t"]
    avg = retrieval_metrics(sims, cv, ties="average")["v2t"]
    assert opt["r1"] == 100.0 and pes["r1"] == 50.0
    assert avg["r1"] == pytest.approx((2 / 3 + 1) / 2 * 100)  # P(an own caption first) = 2/3
    assert avg["meanr"] == pytest.approx(1 + (1 / 3) / 2)


def test_videos_without_captions_are_left_out_of_v2t() -> None:
    m = retrieval_metrics(np.array([[0.9, 0.1, 0.5]]), np.array([0]))
    assert m["v2t"]["n"] == 1 and m["t2v"]["n"] == 1


def _oracle(sims: np.ndarray, cv: np.ndarray, ties: str, ks: tuple[int, ...] = (1, 5, 10)) -> dict:
    """Rank by enumerating every ordering of the positive's tie group (exact, tiny inputs only)."""
    def rank_stats(scores: np.ndarray, own: np.ndarray) -> list[float]:
        top = scores[own].max()
        g = int((scores > top).sum())
        group = [bool(o) for s, o in zip(scores, own, strict=True) if s == top]
        firsts = [next(i for i, o in enumerate(p) if o) for p in itertools.permutations(group)]
        if ties == "optimistic":
            return [g]
        if ties == "pessimistic":
            return [g + len(group) - int(sum(group))]
        return [g + f for f in firsts]

    def summarise(per_query: list[list[float]]) -> dict:
        out = {f"r{k}": 100 * np.mean([np.mean([r < k for r in q]) for q in per_query]) for k in ks}
        ranks = np.array([np.mean(q) for q in per_query])
        out.update(medr=np.floor(np.median(ranks)) + 1, meanr=ranks.mean() + 1)
        return out

    t2v = [rank_stats(sims[i], np.arange(sims.shape[1]) == cv[i]) for i in range(len(cv))]
    v2t = [rank_stats(sims[:, v], cv == v) for v in range(sims.shape[1]) if (cv == v).any()]
    return {"t2v": summarise(t2v), "v2t": summarise(v2t)}


@pytest.mark.parametrize("ties", ["optimistic", "pessimistic", "average"])
@pytest.mark.parametrize("seed", range(8))
def test_matches_brute_force_oracle(ties: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_vid = int(rng.integers(2, 5))
    cv = rng.integers(0, n_vid, size=int(rng.integers(3, 7)))
    sims = rng.integers(0, 3, size=(len(cv), n_vid)).astype(np.float32)  # many ties
    got = retrieval_metrics(sims, cv, ties=ties, chunk=2)
    want = _oracle(sims, cv, ties)
    for d in ("t2v", "v2t"):
        for k, v in want[d].items():
            assert got[d][k] == pytest.approx(v), (d, k)


def test_chunking_does_not_change_results() -> None:
    rng = np.random.default_rng(3)
    sims = rng.standard_normal((50, 12)).astype(np.float32)
    cv = rng.integers(0, 12, size=50)
    assert retrieval_metrics(sims, cv, chunk=7) == retrieval_metrics(sims, cv, chunk=4096)


def test_official_protocol_20_captions_per_video() -> None:
    """The official i2t/t2i loops (argsort, 20 captions per video) on random data."""
    rng = np.random.default_rng(0)
    n = 15
    cap = rng.standard_normal((20 * n, 8))
    vid = rng.standard_normal((n, 8))
    d = cap @ vid.T
    t2i = np.array([np.where(np.argsort(d[i])[::-1] == i // 20)[0][0] for i in range(20 * n)])
    i2t = np.array([min(np.where(np.argsort(d[:, v])[::-1] == c)[0][0] for c in range(20 * v, 20 * v + 20)) for v in range(n)])
    m = retrieval_metrics(d, np.repeat(np.arange(n), 20))
    assert m["t2v"]["r1"] == pytest.approx(100 * np.mean(t2i < 1))
    assert m["t2v"]["medr"] == np.floor(np.median(t2i)) + 1 and m["t2v"]["meanr"] == pytest.approx(t2i.mean() + 1)
    assert m["v2t"]["r5"] == pytest.approx(100 * np.mean(i2t < 5)) and m["v2t"]["meanr"] == pytest.approx(i2t.mean() + 1)


def test_refuses_bad_input() -> None:
    with pytest.raises(InputShapeError, match=r"\[C, V\]"):
        retrieval_metrics(np.zeros((3, 2)), np.zeros(2, dtype=int))
    with pytest.raises(InputShapeError, match="integers in"):
        retrieval_metrics(np.zeros((2, 2)), np.array([0, 5]))
    with pytest.raises(InputShapeError, match="non-finite"):
        retrieval_metrics(np.array([[np.nan, 0.0]]), np.array([0]))
    with pytest.raises(ValueError, match="ties"):
        retrieval_metrics(np.zeros((1, 1)), np.array([0]), ties="random")


def test_recall_curve_hand_computed() -> None:
    """SIMS: t2v ranks [0, 1, 1, 0]; v2t ranks [0, 2, 1] (test_hand_computed_variable_captions)."""
    t2v, v2t = recall_curve(SIMS, CAPTION_VIDEO, kmax=5)
    np.testing.assert_array_equal(t2v, [50.0, 100.0, 100.0, 100.0, 100.0])
    np.testing.assert_allclose(v2t, [100 / 3, 200 / 3, 100.0, 100.0, 100.0])
    assert t2v.dtype == np.float64 and t2v.shape == v2t.shape == (5,)


def test_recall_curve_ties() -> None:
    # one caption, its video tied with two others: rank 0, 2 or 1 + 1/3·... (expected) by policy
    sims, cv = np.array([[0.5, 0.5, 0.5, 0.1]]), np.array([0])
    curves = {t: recall_curve(sims, cv, ties=t, kmax=4)[0] for t in ("optimistic", "pessimistic", "average")}
    np.testing.assert_array_equal(curves["optimistic"], [100, 100, 100, 100])
    np.testing.assert_array_equal(curves["pessimistic"], [0, 0, 100, 100])
    np.testing.assert_allclose(curves["average"], [100 / 3, 200 / 3, 100, 100])


@pytest.mark.parametrize("ties", ["optimistic", "pessimistic", "average"])
@pytest.mark.parametrize("seed", range(4))
def test_recall_curve_passes_through_the_printed_recalls(ties: str, seed: int) -> None:
    """Element K-1 is R@K of retrieval_metrics, bit for bit; the curve never falls and ends at 100
    once K covers every candidate."""
    rng = np.random.default_rng(seed)
    n_vid = 30
    cv = rng.integers(0, n_vid, size=70)
    sims = rng.integers(0, 6, size=(70, n_vid)).astype(np.float32)  # coarse scores: many ties
    m = retrieval_metrics(sims, cv, ties=ties)
    curve = dict(zip(("t2v", "v2t"), recall_curve(sims, cv, ties=ties, kmax=70, chunk=16), strict=True))
    for d in ("t2v", "v2t"):
        assert curve[d].shape == (70,)
        for k in (1, 5, 10):
            assert curve[d][k - 1] == m[d][f"r{k}"], (d, k)
        assert (np.diff(curve[d]) >= 0).all()
    assert curve["t2v"][n_vid - 1] == pytest.approx(100.0) and curve["v2t"][-1] == pytest.approx(100.0)  # K = every candidate


@pytest.mark.parametrize("ties", ["optimistic", "pessimistic", "average"])
def test_recall_curve_matches_brute_force_oracle_at_every_k(ties: str) -> None:
    rng = np.random.default_rng(11)
    cv = rng.integers(0, 4, size=6)
    sims = rng.integers(0, 3, size=(6, 4)).astype(np.float32)
    want = _oracle(sims, cv, ties, ks=tuple(range(1, 8)))
    for d, got in zip(("t2v", "v2t"), recall_curve(sims, cv, ties=ties, kmax=7), strict=True):
        np.testing.assert_allclose(got, [want[d][f"r{k}"] for k in range(1, 8)], err_msg=d)


def test_one_pass_serves_metrics_and_curve() -> None:
    rng = np.random.default_rng(5)
    sims, cv = rng.standard_normal((40, 9)), rng.integers(0, 9, size=40)
    ranks = rank_counts(sims, cv)
    assert metrics_from_ranks(ranks, "average") == retrieval_metrics(sims, cv, ties="average")
    for got, want in zip(curve_from_ranks(ranks, "pessimistic", kmax=9), recall_curve(sims, cv, ties="pessimistic", kmax=9), strict=True):
        np.testing.assert_array_equal(got, want)


def test_recall_curve_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="kmax"):
        recall_curve(SIMS, CAPTION_VIDEO, kmax=0)
    with pytest.raises(ValueError, match="ties"):
        recall_curve(SIMS, CAPTION_VIDEO, ties="random")  # type: ignore[arg-type]
    with pytest.raises(InputShapeError, match=r"\[C, V\]"):
        recall_curve(np.zeros((3, 2)), np.zeros(2, dtype=int))
