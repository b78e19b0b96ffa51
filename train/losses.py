"""Hinge ranking losses over a batch of matching (video, text) pairs: VSE, VSE++ and JEMC's."""

from __future__ import annotations

import torch
from torch import Tensor

from jemc_infer.config import LossMode
from jemc_infer.errors import InputShapeError


def ranking_loss(video: Tensor, text: Tensor, margin: float = 0.2, mode: LossMode | str = LossMode.WEIGHTED) -> Tensor:
    """Bidirectional hinge ranking loss, summed over the batch.

    Row i of ``video`` matches row i of ``text``; every other row is a negative. With
    ``s = video @ text.T``, the video→text hinge of query i against text j is
    ``max(0, margin + s[i, j] - s[i, i])`` and the text→video hinge of query j against video i is
    ``max(0, margin + s[i, j] - s[j, j])``.

    Args:
        video: float [N, D] video embeddings (normally L2-normalised).
        text: float [N, D] text embeddings.
        margin: The hinge margin α. Defaults to 0.2.
        mode: ``"sum"`` (VSE: every negative), ``"hardest"`` (VSE++: the hardest negative per
            query), or ``"weighted"`` (JEMC: the hardest negative, each query's hinge multiplied
            by ``1 + 1/(N - r + 1)`` where r is the 1-based rank of its positive among the N
            candidates — strict ``>`` counts, so ties favour the positive; no gradient flows
            through the weight).

    Returns:
        A scalar tensor.

    Raises:
        InputShapeError: If the shapes are not both [N, D].
        ValueError: If ``mode`` is unknown.
    """
    if video.ndim != 2 or video.shape != text.shape:
        raise InputShapeError(f"ranking_loss | video {list(video.shape)}, text {list(text.shape)} | expected two [N, D] tensors")
    mode = LossMode(mode)
    n = video.shape[0]
    scores = video @ text.T
    diag = scores.diagonal()
    off = ~torch.eye(n, dtype=torch.bool, device=scores.device)
    cost_v2t = (margin + scores - diag.view(n, 1)).clamp(min=0) * off  # row i: video query i
    cost_t2v = (margin + scores - diag.view(1, n)).clamp(min=0) * off  # column j: text query j
    if mode is LossMode.SUM:
        return cost_v2t.sum() + cost_t2v.sum()
    hard_v2t = cost_v2t.max(dim=1).values
    hard_t2v = cost_t2v.max(dim=0).values
    if mode is LossMode.HARDEST:
        return hard_v2t.sum() + hard_t2v.sum()
    with torch.no_grad():
        rank_v2t = 1 + (scores > diag.view(n, 1)).sum(dim=1)  # rank of text i for video query i
        rank_t2v = 1 + (scores > diag.view(1, n)).sum(dim=0)  # rank of video j for text query j
        w_v2t = 1 + 1 / (n - rank_v2t + 1).to(scores.dtype)
        w_t2v = 1 + 1 / (n - rank_t2v + 1).to(scores.dtype)
    return (w_v2t * hard_v2t).sum() + (w_t2v * hard_t2v).sum()
