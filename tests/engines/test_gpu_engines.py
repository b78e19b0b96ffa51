"""CUDA paths of the engines (marker gpu; run by scripts/gpu_check.sh on a lent GPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _text_inputs() -> dict[str, np.ndarray]:
    ids = np.array([[1, 5, 6, 7, 2], [1, 8, 2, 0, 0]], dtype=np.int64)
    return {"ids": ids, "lengths": np.array([5, 3], dtype=np.int64)}


def test_torch_engine_on_cuda_matches_cpu(exported_bundle: Path) -> None:
    from jemc_infer.engines.torch import TorchEngine

    with TorchEngine.from_bundle(exported_bundle, "text", "cuda") as gpu, TorchEngine.from_bundle(exported_bundle, "text", "cpu") as cpu:
        assert "cuda" in gpu.provider
        a, b = gpu.run(_text_inputs()), cpu.run(_text_inputs())
        assert all(np.abs(a[k] - b[k]).max() < 1e-4 for k in a)


def test_onnxruntime_cuda_provider_really_runs_on_the_gpu(exported_bundle: Path) -> None:
    from jemc_infer.engines.onnxruntime import OnnxruntimeEngine, available_providers

    if "CUDAExecutionProvider" not in available_providers():
        pytest.skip("onnxruntime-gpu is not installed here")
    with OnnxruntimeEngine.from_bundle(exported_bundle, "text", "fp16", "cuda") as e:
        assert e.provider == "CUDAExecutionProvider"
        out = e.run(_text_inputs())
        assert all(np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-2) for v in out.values())


def test_auto_prefers_a_gpu(exported_bundle: Path) -> None:
    from jemc_infer.engines import open_engine

    engine, why = open_engine(exported_bundle, "text", backend="auto", device="cuda")
    assert engine.backend in ("tensorrt", "onnxruntime", "torch") and ("cuda" in engine.provider.lower() or "TensorRT" in engine.provider), why
