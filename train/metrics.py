"""The paper's retrieval metrics (numpy only): R@1/5/10, MedR, MeanR in both directions.

text→video ranks each caption's video among all videos; video→text ranks each video by its
best-ranked own caption among all captions (any number of captions per video).

Ties: the official code ranks with ``argsort``, which in practice puts the positive first among
equal scores. ``ties`` makes the policy explicit:

- ``optimistic``: only strictly higher-scoring candidates rank above the positive;
- ``pessimistic``: every other candidate with an equal score ranks above it too;
- ``average``: tied candidates in random order — recalls are the probability of a hit and ranks
  the expected rank (exact, also when several own captions share the top score).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from jemc_infer.errors import InputShapeError

Ties = Literal["optimistic", "pessimistic", "average"]
RECALL_AT = (1, 5, 10)
CURVE_KMAX = 50  # recall curves run K = 1…50


def _p_first_own_at_least(x: np.ndarray, others: np.ndarray, own: np.ndarray) -> np.ndarray:
    """P(X >= x) where X counts the non-own items before the first own one in a random order of
    ``others`` non-own and ``own`` own items: ``Π_{i<x} (others - i) / (others + own - i)``."""
    p = np.ones(x.shape, dtype=np.float64)
    for i in range(int(x.max(initial=0))):
        active = x > i
        num = np.clip(others - i, 0, None)
        p = np.where(active, p * num / np.maximum(others + own - i, 1), p)
    return np.where(x <= 0, 1.0, p)


@dataclass(frozen=True)
class RankCounts:
    """Per-query counts behind every metric, for one direction: candidates scoring strictly above
    the positive, other candidates tied with it, and own (ground-truth) candidates tied at the
    positive's score (>= 1; text→video always 1). int64 [n_queries] each."""

    greater: np.ndarray
    tied_others: np.ndarray
    tied_own: np.ndarray

    def ranks(self, ties: Ties) -> np.ndarray:
        """0-based rank of each query's positive (the expected rank under ``average``), float64 [n_queries]."""
        g = self.greater.astype(np.float64)
        if ties == "optimistic":
            return g
        if ties == "pessimistic":
            return g + self.tied_others
        return g + self.tied_others / (self.tied_own + 1.0)  # expected number of tied others before it

    def recall_at(self, k: int, ties: Ties) -> float:
        """Percent of queries whose positive ranks within the top ``k`` (under ``average``: the
        expected percent over random orders of the tied candidates)."""
        hit: np.ndarray  # bool, or the probability of a hit under average
        if ties == "average":
            hit = 1.0 - _p_first_own_at_least(k - self.greater, self.tied_others, self.tied_own)
        else:
            hit = self.ranks(ties) < k
        return float(100.0 * np.mean(hit))


@dataclass(frozen=True)
class Ranks:
    """Both directions' :class:`RankCounts` of one similarity matrix (:func:`rank_counts`)."""

    t2v: RankCounts  # one query per caption
    v2t: RankCounts  # one query per video that has a caption


def retrieval_metrics(sims: np.ndarray, caption_video: np.ndarray, ties: Ties = "optimistic", chunk: int = 4096) -> dict:
    """Evaluate a similarity matrix with the paper's protocol.

    Args:
        sims: float [n_captions, n_videos], the fused similarity of every caption and video.
        caption_video: int [n_captions], the video (column) of each caption.
        ties: Tie policy (module docstring). Defaults to ``"optimistic"``, the official code's.
        chunk: Caption rows processed at once (bounds memory for large test sets).

    Returns:
        ``{"t2v": {...}, "v2t": {...}, "rsum": float}``; each direction has ``r1 r5 r10``
        (percent), ``medr`` (floor(median 0-based rank) + 1), ``meanr`` (mean rank + 1) and ``n``
        (queries). Videos with no caption are left out of video→text.

    Raises:
        InputShapeError: If the shapes disagree, an id is out of range, or a score is not finite.
        ValueError: If ``ties`` is unknown.
    """
    _check_ties(ties)
    return metrics_from_ranks(rank_counts(sims, caption_video, chunk), ties)


def recall_curve(sims: np.ndarray, caption_video: np.ndarray, ties: Ties = "optimistic", kmax: int = CURVE_KMAX,
                 chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Recall@K for K = 1…kmax in both directions, ranked as :func:`retrieval_metrics` ranks.

    Args:
        sims: float [n_captions, n_videos], as :func:`retrieval_metrics`.
        caption_video: int [n_captions], the video (column) of each caption.
        ties: Tie policy (module docstring). Defaults to ``"optimistic"``.
        kmax: The largest K. Defaults to 50.
        chunk: Caption rows processed at once.

    Returns:
        ``(t2v, v2t)``: float64 [kmax] each, percent; element ``K - 1`` equals
        ``retrieval_metrics(...)[direction][f"r{K}"]`` exactly for K in 1, 5, 10. Non-decreasing.

    Raises:
        InputShapeError: As :func:`retrieval_metrics`.
        ValueError: If ``ties`` is unknown or ``kmax`` < 1.
    """
    _check_ties(ties)
    return curve_from_ranks(rank_counts(sims, caption_video, chunk), ties, kmax)


def rank_counts(sims: np.ndarray, caption_video: np.ndarray, chunk: int = 4096) -> Ranks:
    """Count, for every query of both directions, the candidates above and tied with its positive.

    Args:
        sims: float [n_captions, n_videos], the fused similarity of every caption and video.
        caption_video: int [n_captions], the video (column) of each caption.
        chunk: Caption rows processed at once (bounds memory for large test sets).

    Returns:
        The counts every metric is computed from (:func:`metrics_from_ranks`, :func:`curve_from_ranks`).

    Raises:
        InputShapeError: If the shapes disagree, an id is out of range, or a score is not finite.
    """
    sims = np.asarray(sims)
    cv = np.asarray(caption_video)
    if sims.ndim != 2 or cv.shape != (sims.shape[0],) or sims.shape[0] == 0:
        raise InputShapeError(f"retrieval_metrics | sims {list(sims.shape)}, caption_video {list(cv.shape)} | expected [C, V] and [C], C > 0")
    n_cap, n_vid = sims.shape
    if not np.issubdtype(cv.dtype, np.integer) or cv.min() < 0 or cv.max() >= n_vid:
        raise InputShapeError(f"retrieval_metrics | caption_video dtype {cv.dtype}, range [{cv.min()}, {cv.max()}] | expected integers in [0, {n_vid})")
    rows = np.arange(n_cap)
    positives = sims[rows, cv]
    if not np.isfinite(positives).all():
        bad = int(np.argwhere(~np.isfinite(positives))[0][0])
        raise InputShapeError(f"retrieval_metrics | non-finite similarity in row {bad} | expected finite scores")

    # video→text: each video's best own caption score
    best = np.full(n_vid, -np.inf)
    np.maximum.at(best, cv, positives)
    has_caption = np.isfinite(best)

    t2v = np.zeros((3, n_cap), dtype=np.int64)  # greater, tied others, tied own
    v2t = np.zeros((3, n_vid), dtype=np.int64)
    cols = np.arange(n_vid)
    for start in range(0, n_cap, chunk):
        s = np.asarray(sims[start:start + chunk], dtype=np.float64)
        if not np.isfinite(s).all():
            raise InputShapeError(f"retrieval_metrics | non-finite similarity in rows {start}..{start + len(s) - 1} | expected finite scores")
        pos = positives[start:start + chunk, None]
        t2v[0, start:start + len(s)] = (s > pos).sum(1)
        t2v[1, start:start + len(s)] = (s == pos).sum(1) - 1
        own = cv[start:start + chunk, None] == cols[None, :]
        eq = s == best[None, :]
        v2t[0] += (s > best[None, :]).sum(0)  # own captions never exceed the best own one
        v2t[1] += (eq & ~own).sum(0)
        v2t[2] += (eq & own).sum(0)
    t2v[2] = 1
    return Ranks(RankCounts(*t2v), RankCounts(*(c[has_caption] for c in v2t)))


def metrics_from_ranks(ranks: Ranks, ties: Ties = "optimistic") -> dict:
    """:func:`retrieval_metrics` from counts already made by :func:`rank_counts` (one pass over
    the similarities serves both the metrics and :func:`curve_from_ranks`).

    Raises:
        ValueError: If ``ties`` is unknown.
    """
    _check_ties(ties)
    result: dict[str, Any] = {"t2v": _summarise(ranks.t2v, ties), "v2t": _summarise(ranks.v2t, ties)}
    result["rsum"] = float(sum(result[d][f"r{k}"] for d in ("t2v", "v2t") for k in RECALL_AT))
    return result


def curve_from_ranks(ranks: Ranks, ties: Ties = "optimistic", kmax: int = CURVE_KMAX) -> tuple[np.ndarray, np.ndarray]:
    """:func:`recall_curve` from counts already made by :func:`rank_counts`.

    Raises:
        ValueError: If ``ties`` is unknown or ``kmax`` < 1.
    """
    _check_ties(ties)
    if kmax < 1:
        raise ValueError(f"kmax | {kmax} | expected an integer >= 1")
    # the same recall_at as the printed R@K, so the curve passes exactly through R@1, R@5, R@10
    ks = range(1, kmax + 1)
    return (np.array([ranks.t2v.recall_at(k, ties) for k in ks]), np.array([ranks.v2t.recall_at(k, ties) for k in ks]))


def _summarise(counts: RankCounts, ties: Ties) -> dict[str, float]:
    """R@1/5/10, MedR, MeanR and n of one direction."""
    ranks = counts.ranks(ties)
    out: dict[str, float] = {f"r{k}": counts.recall_at(k, ties) for k in RECALL_AT}
    out["medr"] = float(np.floor(np.median(ranks)) + 1)
    out["meanr"] = float(ranks.mean() + 1)
    out["n"] = int(len(ranks))
    return out


def _check_ties(ties: str) -> None:
    if ties not in ("optimistic", "pessimistic", "average"):
        raise ValueError(f"ties | {ties!r} | expected one of optimistic, pessimistic, average")
