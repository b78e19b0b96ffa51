"""Cheap numpy backbones for pipeline tests (the real ones are tested in tests/nn): per-channel means."""

from __future__ import annotations

import time

import numpy as np

from jemc_infer.video.sampling import i3d_input, resnet_input


class Stub:
    """A :class:`jemc_infer.video.pipeline.FeatureEncoder` whose outputs depend on the pixels and the sound."""

    provenance = {"resnet": {"backbone": "stub"}}

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    def encode_frames(self, x: np.ndarray) -> np.ndarray:
        time.sleep(self.delay)
        return resnet_input(x).mean(axis=(2, 3))

    def encode_clips(self, x: np.ndarray) -> np.ndarray:
        return i3d_input(x).mean(axis=(2, 3, 4))

    def encode_audio(self, wave: np.ndarray) -> np.ndarray:
        return np.abs(wave).mean(keepdims=True)[None]
