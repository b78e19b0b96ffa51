"""Training and evaluation on a CUDA device (run by scripts/gpu_check.sh on a lent GPU)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_cuda_training_learns_and_its_bundle_matches_on_cpu(tiny_data: Path, tmp_path: Path, tiny_train_config) -> None:
    from jemc_infer.bundle import read_bundle
    from jemc_infer.nn import model_from_bundle
    from jemc_infer.train.data import open_dataset
    from jemc_infer.train.evaluate import evaluate_split
    from jemc_infer.train.loop import load_log, train

    config = dataclasses.replace(tiny_train_config, epochs=4, device="cuda")
    result = train(tiny_data, "jemc", tmp_path / "m", config, progress=False, echo=lambda s: None)
    rsums = [r["val"]["rsum"] for r in load_log(result.log)]
    assert rsums[-1] > rsums[0]
    bundle, ds = read_bundle(result.bundle), open_dataset(tiny_data)
    on_gpu = evaluate_split(model_from_bundle(bundle, "cuda"), bundle.vocab, ds, "val")
    on_cpu = evaluate_split(model_from_bundle(bundle, "cpu"), bundle.vocab, ds, "val")
    assert on_gpu["rsum"] == pytest.approx(result.best_rsum, abs=1.0)
    assert on_cpu["rsum"] == pytest.approx(on_gpu["rsum"], abs=1.0)  # float noise may flip a near-tie


def test_cuda_resume_continues(tiny_data: Path, tmp_path: Path, tiny_train_config) -> None:
    from jemc_infer.train.loop import train

    config = dataclasses.replace(tiny_train_config, epochs=1, device="cuda")
    train(tiny_data, "i3d", tmp_path / "m", config, progress=False, echo=lambda s: None)
    more = train(tiny_data, "i3d", tmp_path / "m", dataclasses.replace(config, epochs=2), progress=False, echo=lambda s: None)
    assert more.epochs_run == 1
