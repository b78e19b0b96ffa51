"""Scoring a model on a synthetic world's held-out videos, where every right answer is known.

Two kinds of questions, each asked two ways:

- **captions**: every test caption retrieves its own video (R@1/5/10, MedR: the paper's protocol);
- **attribute queries** naming one to three cues ("something red", "a large star", "something
  bouncing", "something beeping"): precision@5, a hit counting when its ground truth has every
  cue the query names (:func:`jemc_infer.train.world.matches`). Only queries with at least five
  right videos in the test split are asked, so a perfect ranking scores 100%. They are grouped by
  the stream that alone can answer them: object (colour, shape, size), activity, audio.

The two ways: from the extracted feature dataset with the torch model (:func:`feature_scores`,
what ``evaluate`` does), and through the deployed path — video files → ``embed`` (decoding,
sampling, ONNX backbones, video heads) → index → ``query`` with the ONNX text encoder
(:func:`deployed_scores`). Agreement between the two is the end-to-end check of the wiring.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jemc_infer.train import world as world_module
from jemc_infer.train.metrics import metrics_from_ranks, rank_counts

MIN_RELEVANT = 5
# The word a query uses for each sound (short forms from the captions).
SOUND_WORDS = {"low": "humming", "high": "whistling", "beeping": "beeping", "chirp": "chirping",
               "noise": "hissing", "clicks": "clicking", "silence": "silent"}
STREAMS = ("object", "activity", "audio")


@dataclass(frozen=True)
class AttributeQuery:
    """A short query, the cues it names, and the stream that carries them."""

    text: str
    attributes: dict[str, str]
    stream: str  # "object", "activity" or "audio"


def _first(words: tuple[str, ...]) -> str:
    return words[0]


def attribute_queries(videos: Sequence[world_module.VideoTruth], min_relevant: int = MIN_RELEVANT) -> list[AttributeQuery]:
    """The attribute queries with at least ``min_relevant`` right answers among ``videos``.

    Built from the captions' own words, one to three cues each: colour, shape, size+shape,
    colour+shape, colour+size+shape (object); activity (activity); sound (audio).
    """
    w = world_module
    candidates: list[AttributeQuery] = []
    for c, words in w.COLOURS.items():
        candidates.append(AttributeQuery(f"something {_first(words)}", {"colour": c}, "object"))
    for s, words in w.SHAPES.items():
        candidates.append(AttributeQuery(f"a {_first(words)}", {"shape": s}, "object"))
        for z, size_words in w.SIZES.items():
            candidates.append(AttributeQuery(f"a {_first(size_words)} {_first(words)}", {"size": z, "shape": s}, "object"))
        for c, colour_words in w.COLOURS.items():
            candidates.append(AttributeQuery(f"a {_first(colour_words)} {_first(words)}", {"colour": c, "shape": s}, "object"))
            for z, size_words in w.SIZES.items():
                candidates.append(AttributeQuery(f"a {_first(size_words)} {_first(colour_words)} {_first(words)}",
                                                 {"size": z, "colour": c, "shape": s}, "object"))
    for a, (_, gerunds) in w.ACTIVITIES.items():
        candidates.append(AttributeQuery(f"something {gerunds[0]}", {"activity": a}, "activity"))
    for sound, word in SOUND_WORDS.items():
        candidates.append(AttributeQuery(f"something {word}", {"sound": sound}, "audio"))
    return [q for q in candidates if sum(w.matches(v, q.attributes) for v in videos) >= min_relevant]


def precision_at(scores: np.ndarray, relevant: np.ndarray, k: int = 5) -> np.ndarray:
    """Per query, the share of the top ``k`` (by score; ties broken by column) that is relevant, in percent."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return 100.0 * np.take_along_axis(relevant, top, axis=1).mean(axis=1)


def score_report(caption_scores: np.ndarray, caption_video: np.ndarray, query_scores: np.ndarray,
                 queries: Sequence[AttributeQuery], videos: Sequence[world_module.VideoTruth]) -> dict[str, Any]:
    """Caption retrieval metrics and attribute precision@5 from score matrices over ``videos`` (columns)."""
    metrics = metrics_from_ranks(rank_counts(caption_scores, caption_video))
    per_stream, per_query = attribute_precision(query_scores, queries, videos)
    return {"t2v": metrics["t2v"], "v2t": metrics["v2t"], "rsum": metrics["rsum"], "p5": per_stream, "queries": per_query}


def attribute_precision(query_scores: np.ndarray, queries: Sequence[AttributeQuery],
                        videos: Sequence[world_module.VideoTruth]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Mean precision@5 per stream, and each query's, from scores [len(queries), len(videos)]."""
    relevant = np.array([[world_module.matches(v, q.attributes) for v in videos] for q in queries], dtype=bool)
    p5 = precision_at(query_scores, relevant) if len(queries) else np.zeros(0)
    per_stream = {s: float(np.mean([p for p, q in zip(p5, queries, strict=True) if q.stream == s]))
                  for s in STREAMS if any(q.stream == s for q in queries)}
    return per_stream, [{"text": q.text, "stream": q.stream, "relevant": int(r.sum()), "p5": float(p)}
                        for q, r, p in zip(queries, relevant, p5, strict=True)]


def held_out_questions(world: world_module.World, split: str = "test") -> tuple[
        list[world_module.VideoTruth], list[str], np.ndarray, list[AttributeQuery]]:
    """A split's videos, their captions with each caption's video column, and the attribute queries."""
    videos = world.split(split)
    column = {v.id: i for i, v in enumerate(videos)}
    captions = [(vid, text) for vid, text, _ in world.captions if vid in column]
    return videos, [t for _, t in captions], np.array([column[v] for v, _ in captions], dtype=np.int64), attribute_queries(videos)


def feature_scores(model: Path, data: Path, texts: Sequence[str], video_ids: Sequence[str]) -> np.ndarray:
    """Fused similarities [len(texts), len(video_ids)] of the torch model on the extracted features."""
    import torch

    from jemc_infer.bundle import read_bundle
    from jemc_infer.nn import model_from_bundle
    from jemc_infer.train.data import open_dataset
    from jemc_infer.train.evaluate import check_compatible, fused_similarity

    bundle = read_bundle(model)
    net = model_from_bundle(bundle, torch.device("cpu")).eval()
    ds = open_dataset(data)
    check_compatible(net.config, ds)
    row = {v: i for i, v in enumerate(ds.videos)}
    feats, masks = ds.gather(np.array([row[v] for v in video_ids], dtype=np.int64), net.config.features)
    with torch.no_grad():
        video = net.encode_video({k: torch.from_numpy(v) for k, v in feats.items()},
                                 {k: torch.from_numpy(v) for k, v in masks.items()})
        ids, lengths = bundle.vocab.encode_batch(list(texts))
        text = net.encode_text(torch.from_numpy(ids), torch.from_numpy(lengths))
    return fused_similarity(net.config, {k: v.numpy() for k, v in text.items()}, {k: v.numpy() for k, v in video.items()})


def deployed_scores(index: Path, model: Path, texts: Sequence[str], video_ids: Sequence[str]) -> np.ndarray:
    """The scores ``jemc-infer query`` gives (ONNX text encoder on the CPU, the index's rows),
    [len(texts), len(video_ids)], columns by file stem. A video missing from the index scores -inf."""
    from jemc_infer.query import query

    column = {v: i for i, v in enumerate(video_ids)}
    out = np.full((len(texts), len(video_ids)), -np.inf, dtype=np.float32)
    hits, _ = query(index, list(texts), k=len(video_ids), model=model, backend="onnxruntime", device="cpu")
    for q, row in enumerate(hits):
        for h in row:
            stem = Path(h.path).stem
            if stem in column:
                out[q, column[stem]] = h.score
    return out
