"""Shared fixtures: small synthetic datasets and tiny model sizes, so tests run in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_DIMS = {"resnet": 48, "i3d": 32, "audio": 24}
# small enough for seconds per epoch, large enough that a few epochs learn (noise 0.5: easier than the default)
TINY_SYNTH = dict(n_train=320, n_val=40, n_test=40, captions_per_video=3, feature_dims=TINY_DIMS, noise=0.5, seed=1)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 320/40/40-video synthetic dataset with small feature widths (read-only: copy to modify)."""
    from jemc_infer.train.synthetic import synthesize

    path = tmp_path_factory.mktemp("data") / "synthetic"
    synthesize(path, **TINY_SYNTH)
    return path


@pytest.fixture()
def tiny_synth_args() -> dict:
    """The arguments ``tiny_data`` was generated with."""
    return dict(TINY_SYNTH)


@pytest.fixture()
def tiny_train_config():  # noqa: ANN201 - avoids importing torch at collection
    from jemc_infer.train.loop import TrainConfig

    return TrainConfig(epochs=3, batch_size=32, lr=2e-3, embed_dim=32, word_dim=16, min_count=1, checkpoint_seconds=1e9)
