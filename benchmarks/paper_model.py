"""The model the CPU benchmarks measure: a JEMC bundle at the paper's sizes (vocabulary 10,000,
word dim 300, GRU/joint size 1024; an object space and an activity space over I3D + audio), with
random weights (seed 0). Imported by the benchmark scripts run from this folder."""

from __future__ import annotations

from pathlib import Path

import torch

from jemc_infer.config import ModelConfig, SpaceConfig
from jemc_infer.nn import JEMC, save_model
from jemc_infer.text import SPECIALS, Vocabulary


def paper_model(bundle: Path) -> tuple[JEMC, Vocabulary]:
    """Build the model, save it as a bundle at ``bundle``, and return it with its vocabulary."""
    vocab = Vocabulary(words=SPECIALS + tuple(f"w{i}" for i in range(10_000 - 4)))
    config = ModelConfig(spaces=(SpaceConfig("object", ("resnet",)), SpaceConfig("activity", ("i3d", "audio"))),
                         vocab_size=len(vocab))
    torch.manual_seed(0)
    model = JEMC(config)
    save_model(model, vocab, bundle)
    return model, vocab
