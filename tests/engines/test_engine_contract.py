"""One contract for every engine that runs here: same inputs → same outputs, same checks, same lifecycle."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from jemc_infer.bundle import read_bundle  # noqa: E402
from jemc_infer.engines import open_engine  # noqa: E402
from jemc_infer.engines.onnxruntime import OnnxruntimeEngine  # noqa: E402
from jemc_infer.engines.torch import TorchEngine  # noqa: E402
from jemc_infer.errors import BackendUnavailableError, BundleError, InputError, InputShapeError  # noqa: E402

ENGINES = {
    "onnxruntime-cpu": lambda b, g: OnnxruntimeEngine.from_bundle(b, g, "fp32", "cpu"),
    "onnxruntime-cpu-fp16": lambda b, g: OnnxruntimeEngine.from_bundle(b, g, "fp16", "cpu"),
    "torch-cpu": lambda b, g: TorchEngine.from_bundle(b, g, "cpu"),
    "tensorrt-fake": None,  # built per test inside the fake GPU (tests/fakes): see _tensorrt_fake
}
TOLERANCE = {"onnxruntime-cpu": 1e-4, "onnxruntime-cpu-fp16": 1e-2, "torch-cpu": 0.0, "tensorrt-fake": 1e-4}


@pytest.fixture()
def tensorrt_fake(exported_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_limits):  # noqa: ANN001, ANN201
    """A factory for TensorRT engines built from the exported graphs on the faithful fake GPU."""
    from support.fake_gpu import harness as load_harness

    harness = load_harness()
    import jemc_infer.engines.tensorrt as trt_engine
    from jemc_infer.export.tensorrt import build_engine

    bundle = tmp_path / "model"
    shutil.copytree(exported_bundle, bundle)
    with harness.fake_gpu() as fake:
        monkeypatch.setattr(trt_engine, "_load_libcuda", lambda: fake.libcuda)

        def make(_: Path, graph: str):  # noqa: ANN202
            build_engine(bundle, graph, "fp32", small_limits)
            return trt_engine.TensorrtEngine.from_bundle(bundle, graph, "fp32")

        yield make


def _inputs(bundle: Path, graph: str, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    b = read_bundle(bundle)
    if graph == "text":
        words = [w for w in b.vocab.words[4:]]
        texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 9)))) for _ in range(batch)]
        ids, lengths = b.vocab.encode_batch(texts)
        return {"ids": ids, "lengths": lengths}
    out = {f: np.abs(rng.standard_normal((batch, d))).astype(np.float32) for f, d in b.config.feature_dims.items()}
    out["audio_mask"] = rng.random(batch) < 0.6
    return out


@pytest.mark.parametrize("graph", ["text", "video"])
@pytest.mark.parametrize("name", list(ENGINES))
def test_contract(exported_bundle: Path, name: str, graph: str, request: pytest.FixtureRequest) -> None:
    rng = np.random.default_rng(0)
    reference = TorchEngine.from_bundle(exported_bundle, graph, "cpu")
    make = ENGINES[name] or request.getfixturevalue("tensorrt_fake")
    with make(exported_bundle, graph) as engine:
        assert engine.spec.name == graph and engine.backend in ("onnxruntime", "torch", "tensorrt") and engine.provider
        for batch in (1, 7):
            x = _inputs(exported_bundle, graph, batch, rng)
            out, want = engine.run(x), reference.run(x)
            assert list(out) == list(engine.output_names) == [t.name for t in engine.spec.outputs]
            for k in out:
                assert out[k].dtype == np.float32 and out[k].shape == want[k].shape
                assert np.abs(out[k] - want[k]).max() <= TOLERANCE[name]
                assert np.allclose(np.linalg.norm(out[k], axis=1), 1.0, atol=1e-2)  # L2-normalised embeddings
        # the checks every backend shares (Engine.run)
        x = _inputs(exported_bundle, graph, 2, rng)
        first = engine.input_names[0]
        with pytest.raises(InputShapeError, match=r"missing \[.*\]"):
            engine.run({k: v for k, v in x.items() if k != first})
        with pytest.raises(InputShapeError, match="dtype"):
            engine.run({**x, first: x[first].astype(np.float64 if x[first].dtype != np.float64 else np.int32)})
        with pytest.raises(InputShapeError, match="shape"):
            engine.run({**x, first: x[first][None]})
        with pytest.raises(InputShapeError, match="unexpected"):
            engine.run({**x, "extra": x[first]})
    engine.close()  # idempotent after __exit__


def test_unsorted_lengths_and_padding_do_not_matter(exported_bundle: Path) -> None:
    b = read_bundle(exported_bundle)
    with OnnxruntimeEngine.from_bundle(exported_bundle, "text") as e:
        texts = ["a red dog is running", "a cat", "someone is cooking in a kitchen"]
        ids, lengths = b.vocab.encode_batch(texts)
        together = e.run({"ids": ids, "lengths": lengths})
        for i, t in enumerate(texts):
            alone_ids, alone_len = b.vocab.encode_batch([t])
            alone = e.run({"ids": alone_ids, "lengths": alone_len})
            for k in together:
                assert np.abs(together[k][i] - alone[k][0]).max() < 1e-5


def test_open_engine_auto_says_what_and_why(exported_bundle: Path) -> None:
    engine, why = open_engine(exported_bundle, "text")
    assert engine.backend == "onnxruntime" and engine.provider == "CPUExecutionProvider"
    assert why.startswith("text: onnxruntime on CPUExecutionProvider") and "not TensorRT" in why
    engine, why = open_engine(exported_bundle, "video", backend="torch", device="cpu")
    assert engine.backend == "torch"


def test_open_engine_refusals(exported_bundle: Path, tiny_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider"):
        open_engine(exported_bundle, "text", backend="onnxruntime", device="cuda")  # no silent CPU fallback
    with pytest.raises(BackendUnavailableError, match="TensorRT"):
        open_engine(exported_bundle, "text", backend="tensorrt")
    with pytest.raises(InputError, match="expected one of auto, tensorrt, onnxruntime, torch"):
        open_engine(exported_bundle, "text", backend="openvino")
    with pytest.raises(BundleError, match="no exported 'text' graph"):
        OnnxruntimeEngine.from_bundle(tiny_bundle, "text")
    plain = tmp_path / "plain"
    shutil.copytree(tiny_bundle, plain)
    engine, why = open_engine(plain, "text", device="cpu")  # not exported: torch, and it says why
    assert engine.backend == "torch" and "no exported 'text' graph" in why
