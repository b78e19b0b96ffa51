"""Shared fixtures: small synthetic datasets and tiny model sizes, so tests run in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.limits import small_limits_value

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


@pytest.fixture(scope="session")
def tiny_bundle(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle trained briefly on ``tiny_data``: an object space, an activity space (i3d + audio)
    and a shared space with a paired audio head (so the video graph has a mask input)."""
    from jemc_infer.config import SpaceConfig
    from jemc_infer.train.loop import TrainConfig, train
    from jemc_infer.train.presets import Preset

    preset = Preset("test-mix", "test mix", (SpaceConfig("object", ("resnet",)), SpaceConfig("activity", ("i3d", "audio")),
                                             SpaceConfig("shared", ("resnet",), paired=("audio",))))
    out = tmp_path_factory.mktemp("bundle") / "model"
    config = TrainConfig(epochs=3, batch_size=32, lr=2e-3, embed_dim=32, word_dim=16, min_count=1, checkpoint_seconds=1e9)
    train(tiny_data, preset, out, config, progress=False, echo=lambda s: None)
    return out


@pytest.fixture(scope="session")
def held_out_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1000 new videos from the distribution of ``tiny_data`` (same seed: same concepts and
    projections, drawn first), for fp16 retrieval parity: 0.5 points is 5 videos here."""
    from jemc_infer.train.synthetic import synthesize

    path = tmp_path_factory.mktemp("held-out") / "synthetic"
    synthesize(path, **{**TINY_SYNTH, "n_train": 2, "n_val": 2, "n_test": 1000})
    return path


@pytest.fixture(scope="session")
def exported_bundle(tiny_bundle: Path, held_out_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_bundle`` with its text and video graphs exported, fp32 and fp16 (read-only: copy to modify)."""
    import shutil

    from jemc_infer.export.onnx import export_bundle

    out = tmp_path_factory.mktemp("exported") / "model"
    shutil.copytree(tiny_bundle, out)
    export_bundle(out, small_limits_value(), fp16=True, eval_data=held_out_data, only=("text", "video"), echo=lambda s: None)
    return out




@pytest.fixture()
def small_limits():  # noqa: ANN201
    """ShapeLimits small enough for fast parity gates (batch 1, 7, 9; sequences up to 12 tokens)."""
    return small_limits_value()


@pytest.fixture(scope="session")
def runtime_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model trained on features of the real widths (2048 / 1024 / 1024), with every graph
    exported — text, video heads and the three backbones (random weights: nothing to download
    here) — so ``embed`` and ``query`` run as a user's would (read-only: copy to modify)."""
    from jemc_infer.export.onnx import export_bundle
    from jemc_infer.nn.backbones import load_backbones
    from jemc_infer.train.loop import TrainConfig, train
    from jemc_infer.train.synthetic import synthesize

    root = tmp_path_factory.mktemp("runtime")
    data = synthesize(root / "data", n_train=60, n_val=10, n_test=10, captions_per_video=3, seed=2)
    config = TrainConfig(epochs=1, batch_size=16, embed_dim=16, word_dim=8, min_count=1, checkpoint_seconds=1e9)
    train(data.path, "jemc", root / "model", config, progress=False, echo=lambda s: None)
    export_bundle(root / "model", small_limits_value(), backbones=load_backbones(random_init=True), echo=lambda s: None)
    return root / "model"
