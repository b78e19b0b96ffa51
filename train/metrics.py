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

from typing import Literal

import numpy as np

from jemc_infer.errors import InputShapeError

Ties = Literal["optimistic", "pessimistic", "average"]
RECALL_AT = (1, 5, 10)


def _p_first_own_at_least(x: np.ndarray, others: np.ndarray, own: np.ndarray) -> np.ndarray:
    """P(X >= x) where X counts the non-own items before the first own one in a random order of
    ``others`` non-own and ``own`` own items: ``Π_{i<x} (others - i) / (others + own - i)``."""
    p = np.ones(x.shape, dtype=np.float64)
    for i in range(int(x.max(initial=0))):
        active = x > i
        num = np.clip(others - i, 0, None)
        p = np.where(active, p * num / np.maximum(others + own - i, 1), p)
    return np.where(x <= 0, 1.0, p)


def _summarise(greater: np.ndarray, tied_others: np.ndarray, tied_own: np.ndarray, ties: Ties) -> dict[str, float]:
    """Metrics from per-query counts: candidates scoring above the positive, other candidates
    tied with it, and own (ground-truth) candidates tied at the positive's score (>= 1)."""
    g = greater.astype(np.float64)
    out: dict[str, float] = {}
    if ties == "optimistic":
        ranks = g
    elif ties == "pessimistic":
        ranks = g + tied_others
    else:
        ranks = g + tied_others / (tied_own + 1.0)  # expected number of tied others before it
    for k in RECALL_AT:
        if ties == "average":
            hit = 1.0 - _p_first_own_at_least(k - greater, tied_others, tied_own)
        else:
            hit = ranks < k
        out[f"r{k}"] = float(100.0 * np.mean(hit))
    out["medr"] = float(np.floor(np.median(ranks)) + 1)
    out["meanr"] = float(ranks.mean() + 1)
    out["n"] = int(len(ranks))
    return out


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
    if ties not in ("optimistic", "pessimistic", "average"):
        raise ValueError(f"ties | {ties!r} | expected one of optimistic, pessimistic, average")
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
    result = {
        "t2v": _summarise(t2v[0], t2v[1], t2v[2], ties),
        "v2t": _summarise(v2t[0][has_caption], v2t[1][has_caption], v2t[2][has_caption], ties),
    }
    result["rsum"] = float(sum(result[d][f"r{k}"] for d in ("t2v", "v2t") for k in RECALL_AT))
    return result
