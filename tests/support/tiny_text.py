"""A tiny two-space JEMC model and a batch of padded captions, for the text-encoder settings'
tests (``text_confidence``, ``text_pooling``). Import after ``pytest.importorskip("torch")``."""

from __future__ import annotations

import numpy as np
import torch

from jemc_infer.config import ModelConfig, SpaceConfig
from jemc_infer.nn import JEMC

FEATURES = {"resnet": 12, "i3d": 8, "audio": 6}


def tiny_jemc(confidence: float = 0.0, pooling: str = "last") -> JEMC:
    """The same weights for every setting (seed 0): vocabulary 30, words 8-d, spaces 16-d."""
    torch.manual_seed(0)
    config = ModelConfig(spaces=(SpaceConfig("object", ("resnet",)), SpaceConfig("activity", ("i3d", "audio"))),
                         vocab_size=30, feature_dims=FEATURES, word_dim=8, embed_dim=16, text_confidence=confidence,
                         text_pooling=pooling)
    return JEMC(config).eval()


def caption_batch(lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids [len(lengths), 7] (word ids 4-29, padding positions too) and the lengths."""
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.integers(4, 30, size=(len(lengths), 7))), torch.tensor(lengths)
