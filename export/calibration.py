"""Int8 calibration batches for TensorRT engines, from a feature dataset (``jemc_infer.export.calibration``).

TensorRT sets each int8 tensor's scale from the values it sees on real inputs: for the text graph
those are tokenised captions, for the video graph pooled features (and the paired features'
masks), drawn at random from a dataset's ``train`` split. The backbone graphs' inputs are frames,
clips and waveforms, which a feature dataset does not keep: they have no calibration data here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from jemc_infer.bundle import Bundle
from jemc_infer.errors import InputError

CALIBRATED_GRAPHS = ("text", "video")  # the graphs a feature dataset can calibrate
Batch = dict[str, np.ndarray]


def calibration_batches(data: Path, graph: str, bundle: Bundle, batches: int = 16, batch_size: int = 32, max_seq: int = 64,
                        seed: int = 0) -> tuple[Callable[[], Iterator[Batch]], dict[str, Any]]:
    """Calibration batches for the ``text`` or ``video`` graph from a feature dataset's train split.

    Args:
        data: The feature dataset (``jemc_infer.train.data.open_dataset``).
        graph: ``"text"`` or ``"video"``.
        bundle: The model bundle: its vocabulary tokenises captions, its config names the features.
        batches: How many batches. Defaults to 16.
        batch_size: Rows per batch (fewer if the split is smaller). Defaults to 32.
        max_seq: text: every batch's ``ids`` are ``max_seq`` tokens wide (captions truncated to it,
            padded to it), as one calibration shape requires. Defaults to 64.
        seed: Seeds the random choice of rows; each call of the returned callable starts afresh.

    Returns:
        ``(make, info)``: ``make()`` yields ``{input name: array}`` batches, every one at the same
        shape (TensorRT calibrates at one shape); ``info`` says how they were made (kept in the
        manifest: a calibration cache made from other ``info`` is not reused).

    Raises:
        InputError: If ``graph`` has no calibration data here, or the dataset cannot be read.
    """
    if graph not in CALIBRATED_GRAPHS:
        raise InputError(f"int8 calibration | the {graph!r} graph | expected one of {', '.join(CALIBRATED_GRAPHS)}: "
                         "a feature dataset holds captions and features, not the backbones' inputs")
    from jemc_infer.train.data import open_dataset

    ds = open_dataset(data)
    split = ds.split("train")
    paired = sorted({f for s in bundle.config.spaces for f in s.paired})

    def make() -> Iterator[Batch]:
        rng = np.random.default_rng(seed)
        for _ in range(batches):
            if graph == "text":
                rows = rng.choice(len(split.captions), size=min(batch_size, len(split.captions)), replace=False)
                ids, lengths = bundle.vocab.encode_batch([split.captions[i] for i in rows], max_len=max_seq)
                yield {"ids": np.pad(ids, ((0, 0), (0, max_seq - ids.shape[1]))), "lengths": lengths}
            else:
                videos = rng.choice(split.videos, size=min(batch_size, len(split.videos)), replace=False)
                feats, masks = ds.gather(videos, bundle.config.features)
                yield {**feats, **{f"{f}_mask": masks[f] for f in paired}}

    info = {"data": str(ds.path), "split": "train", "batches": batches, "batch_size": batch_size, "max_seq": max_seq, "seed": seed,
            "sampling": "random rows of the split (captions for text, videos for video)"}
    return make, info
