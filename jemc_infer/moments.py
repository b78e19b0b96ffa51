"""Window rows: each moment of a video embedded in the index's fused space (torch-free).

A space's windows are those of its first feature's stream: the object space (ResNet frames) has
one window per sampled frame, lasting until the next; the activity space (I3D clips + SoundNet
audio) one per clip. A window's input to the space's video head is the window's own output of
that stream, and for the space's other features the mean of their windows that overlap it in
time, weighted by the overlap (the audio of a clip: SoundNet's time steps under it; the nearest
step when none overlaps). Features of the other spaces stay pooled.

The window's row is the video's pooled row with the window's space part replaced by the head's
output for the window, so ``query · window_row = score(video) + w_s · (cos_s(window) −
cos_s(video))``: comparable across windows of both spaces, and the window that holds the cue has
the highest score (``jemc_infer.index.windows``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from jemc_infer.config import ModelConfig
from jemc_infer.engines import Engine
from jemc_infer.index.windows import WindowRows
from jemc_infer.video.pipeline import Windows

_OVERLAP_BLOCK = 512  # target windows per overlap matrix: bounds memory on hour-long videos


def head_inputs(config: ModelConfig, features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The video heads' inputs for a batch of one video's windows: every model feature float32
    [n, d] (zeros for a feature the video lacks, as for its pooled row) and one bool [n] mask per
    paired feature (whether the video has it).

    Args:
        features: feature name → float32 [n, d], for the features the video has.
    """
    paired = sorted({f for s in config.spaces for f in s.paired})
    n = len(next(iter(features.values())))
    out = {f: np.asarray(features.get(f, np.zeros((n, config.feature_dims[f]))), np.float32) for f in config.features}
    return {**out, **{f"{f}_mask": np.full(n, f in features) for f in paired}}


def overlap_mean(source: Windows, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """float32 [m, d]: for each target window [start, end], the mean of ``source``'s outputs
    weighted by how long each overlaps it; the source window nearest in time (by centre) where
    none overlaps (a zero-length frame window, say)."""
    out = np.empty((len(start), source.features.shape[1]), np.float32)
    centres = (source.start + source.end) / 2
    for a in range(0, len(start), _OVERLAP_BLOCK):
        s, e = start[a:a + _OVERLAP_BLOCK, None], end[a:a + _OVERLAP_BLOCK, None]
        w = np.clip(np.minimum(e, source.end[None]) - np.maximum(s, source.start[None]), 0, None)
        total = w.sum(axis=1, keepdims=True)
        nearest = np.argmin(np.abs(centres[None] - (s + e) / 2), axis=1)
        w[total[:, 0] == 0, nearest[total[:, 0] == 0]] = 1.0
        out[a:a + len(s)] = (w / w.sum(axis=1, keepdims=True)) @ source.features
    return out


def window_rows(config: ModelConfig, heads: Engine, pooled: np.ndarray, features: list[dict[str, np.ndarray]],
                windows: list[dict[str, Windows]], batch_size: int, dtype: str = "float32") -> WindowRows:
    """The window rows of a batch of videos.

    Args:
        config: The model's architecture (spaces, features, widths).
        heads: The ``video`` graph's engine (the same one that made the pooled rows).
        pooled: float32 [n, D]: the videos' pooled rows.
        features: Per video, stream → pooled float32 [d] (no ``audio`` for a silent video).
        windows: Per video, stream → its windows (``VideoResult.windows``).
        batch_size: Windows per head call (within the engine's batch limits).
        dtype: The rows' dtype (the index's).

    Returns:
        Every video's windows, each video's sorted by start time (then space).
    """
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    spaces: list[np.ndarray] = []
    rows: list[np.ndarray] = []
    offsets = [0]
    width = config.embed_dim
    for v, (feats, wins) in enumerate(zip(features, windows, strict=True)):
        parts = []
        for si, space in enumerate(config.spaces):
            anchor = wins.get(space.features[0])
            if anchor is None or not len(anchor.start):
                continue
            m = len(anchor.start)
            inputs = head_inputs(config, {f: np.repeat(x[None], m, axis=0) for f, x in feats.items()})
            for f in space.all_features:
                if f == space.features[0]:
                    inputs[f] = anchor.features.astype(np.float32)
                elif f in wins and len(wins[f].start):
                    inputs[f] = overlap_mean(wins[f], anchor.start, anchor.end)
            own = np.concatenate([heads.run({k: x[a:a + batch_size] for k, x in inputs.items()})[f"video_{space.name}"]
                                  for a in range(0, m, batch_size)])
            fused = np.repeat(pooled[v][None], m, axis=0)
            fused[:, si * width:(si + 1) * width] = own
            parts.append((anchor.start, anchor.end, np.full(m, si, np.uint8), fused))
        if parts:
            s, e, sp, r = (np.concatenate(x) for x in zip(*parts, strict=True))
            order = np.lexsort((sp, s))
            starts.append(s[order])
            ends.append(e[order])
            spaces.append(sp[order])
            rows.append(r[order])
        offsets.append(offsets[-1] + sum(len(p[0]) for p in parts))
    dim = pooled.shape[1]
    cat = lambda xs, empty: np.concatenate(xs) if xs else empty  # noqa: E731
    return WindowRows(cat(rows, np.zeros((0, dim))).astype(dtype), np.asarray(offsets, np.int64),
                      cat(starts, np.zeros(0)).astype(np.float64), cat(ends, np.zeros(0)).astype(np.float64),
                      cat(spaces, np.zeros(0, np.uint8)))
