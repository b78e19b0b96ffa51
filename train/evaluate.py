"""Embedding a split with a torch model and scoring it with the paper's protocol."""

from __future__ import annotations

import numpy as np
import torch

from jemc_infer.config import ModelConfig
from jemc_infer.errors import InputError
from jemc_infer.nn import JEMC
from jemc_infer.text import Vocabulary
from jemc_infer.train.data import DATASET_FILE, FeatureDataset, Split
from jemc_infer.train.metrics import Ranks, Ties, metrics_from_ranks, rank_counts


def check_compatible(config: ModelConfig, ds: FeatureDataset) -> None:
    """Raise :class:`InputError` if the dataset lacks a feature the model reads or its width differs."""
    for f in config.features:
        if f not in ds.features:
            raise InputError(f"{ds.path / DATASET_FILE} | no feature {f!r} (has {sorted(ds.features)}) | expected every feature the model reads: {list(config.features)}")
        if ds.feature_dims[f] != config.feature_dims[f]:
            raise InputError(f"{ds.path / DATASET_FILE} | feature {f!r} has {ds.feature_dims[f]} dims | expected {config.feature_dims[f]} as the model was trained")


@torch.no_grad()
def embed_split(model: JEMC, vocab: Vocabulary, ds: FeatureDataset, split: Split,
                batch_size: int = 512) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Embed a split's captions and videos.

    Returns:
        ``(text, video)``: space name → float32 [n_captions, E] and [n_videos, E].
    """
    model.eval()
    device = next(model.parameters()).device
    feats, masks = ds.gather(split.videos, model.config.features)
    video: dict[str, list[np.ndarray]] = {s.name: [] for s in model.config.spaces}
    for start in range(0, len(split.videos), batch_size):
        f = {k: torch.from_numpy(v[start:start + batch_size]).to(device) for k, v in feats.items()}
        m = {k: torch.from_numpy(v[start:start + batch_size]).to(device) for k, v in masks.items()}
        for name, emb in model.encode_video(f, m).items():
            video[name].append(emb.cpu().numpy())
    text: dict[str, list[np.ndarray]] = {s.name: [] for s in model.config.spaces}
    # sort by length so each batch pads little; restore the order afterwards
    order = np.argsort([len(c) for c in split.captions], kind="stable")
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        ids, lengths = vocab.encode_batch([split.captions[i] for i in rows])
        for name, emb in model.encode_text(torch.from_numpy(ids).to(device), torch.from_numpy(lengths).to(device)).items():
            text[name].append(emb.cpu().numpy())
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return ({k: np.concatenate(v)[inverse] for k, v in text.items()},
            {k: np.concatenate(v) for k, v in video.items()})


def fused_similarity(config: ModelConfig, text: dict[str, np.ndarray], video: dict[str, np.ndarray]) -> np.ndarray:
    """``Σ_s w_s · text_s @ video_s.T`` as float32 [n_captions, n_videos]."""
    sims = np.zeros((len(next(iter(text.values()))), len(next(iter(video.values())))), dtype=np.float32)
    for s in config.spaces:
        sims += np.float32(s.weight) * (text[s.name] @ video[s.name].T)
    return sims


def split_ranks(model: JEMC, vocab: Vocabulary, ds: FeatureDataset, split: str) -> Ranks:
    """Embed a split of ``ds`` with ``model`` and count each query's rank (:func:`rank_counts`):
    what both the metrics (:func:`metrics_from_ranks`) and the recall curves
    (:func:`jemc_infer.train.metrics.curve_from_ranks`) are computed from.

    Raises:
        InputError: If the dataset does not provide the model's features or has no such split.
    """
    check_compatible(model.config, ds)
    sp = ds.split(split)
    if not sp.captions:
        raise InputError(f"{ds.path / DATASET_FILE} | split {split!r} has no captions | expected captions to evaluate")
    text, video = embed_split(model, vocab, ds, sp)
    return rank_counts(fused_similarity(model.config, text, video), sp.caption_video)


def evaluate_split(model: JEMC, vocab: Vocabulary, ds: FeatureDataset, split: str, ties: Ties = "optimistic") -> dict:
    """The paper's metrics (:func:`jemc_infer.train.metrics.retrieval_metrics`) of ``model`` on a split of ``ds``.

    Raises:
        InputError: If the dataset does not provide the model's features or has no such split.
    """
    return metrics_from_ranks(split_ranks(model, vocab, ds, split), ties)
