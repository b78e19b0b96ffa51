"""``ModelConfig.text_confidence`` γ: each space's cosine weighed by the norm of its text state to the
power γ — in the torch model, in the exported and the int8 text graph's MatMul form, and through
the bundle's config file."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from support.tiny_text import FEATURES, caption_batch, tiny_jemc  # noqa: E402

from jemc_infer.config import ModelConfig  # noqa: E402


def test_the_setting_survives_the_config_file_and_defaults_to_the_paper() -> None:
    config = tiny_jemc(2.0).config
    assert ModelConfig.from_json(config.to_json()).text_confidence == 2.0
    legacy = config.to_json()
    del legacy["text_confidence"]  # a bundle written before the setting existed
    assert ModelConfig.from_json(legacy).text_confidence == 0.0
    legacy["text_confidence"] = True  # a bundle written when it was a yes/no setting
    assert ModelConfig.from_json(legacy).text_confidence == 1.0


@pytest.mark.parametrize("bad", [-1.0, float("nan"), 9.0])
def test_a_bad_power_is_refused(bad: float) -> None:
    from jemc_infer.errors import InputError

    with pytest.raises(InputError, match="text_confidence"):
        tiny_jemc(bad)


@pytest.mark.parametrize("gamma", [1.0, 2.0, 0.5])
def test_each_space_counts_by_its_text_state_norm_to_the_power(gamma: float) -> None:
    plain, raw_state, weighed = tiny_jemc(0.0), tiny_jemc(1.0), tiny_jemc(gamma)
    raw_state.load_state_dict(plain.state_dict())
    weighed.load_state_dict(plain.state_dict())
    ids, lengths = caption_batch([7, 1, 3, 5, 2])
    feats = {k: torch.randn(4, d) for k, d in FEATURES.items()}
    with torch.no_grad():
        unit, raw, text = plain.encode_text(ids, lengths), raw_state.encode_text(ids, lengths), weighed.encode_text(ids, lengths)
        video = plain.encode_video(feats)
    for name in unit:
        norms = raw[name].norm(dim=1)
        assert torch.allclose(unit[name].norm(dim=1), torch.ones(5), atol=1e-6)
        assert norms.std() > 0  # not all the same: they weigh queries differently
        torch.testing.assert_close(raw[name], unit[name] * norms[:, None], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(text[name], unit[name] * norms[:, None] ** gamma, rtol=1e-5, atol=1e-6)
    want = sum(raw[s].norm(dim=1, keepdim=True) ** gamma * (unit[s] @ video[s].T) for s in unit)
    torch.testing.assert_close(weighed.similarity(text, video), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pooling", ["last", "max"])
@pytest.mark.parametrize("confidence", [0.0, 1.0, 2.0])
def test_the_matmul_text_graph_follows_the_setting(confidence: float, pooling: str) -> None:
    """The int8 graph's fp32 MatMul form gives the torch model's embeddings, with either
    ``text_pooling`` (``tests/nn/test_text_pooling.py`` has the rest of that setting)."""
    import onnxruntime as ort

    from jemc_infer.export.text_int8 import gru_weights, text_loop_model
    from jemc_infer.specs import text_spec

    model = tiny_jemc(confidence, pooling)
    graph = text_loop_model(gru_weights(model), text_spec(model.config), confidence=confidence, pooling=pooling)
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    ids, lengths = caption_batch([7, 1, 3, 5, 2])
    got = session.run(None, {"ids": ids.numpy(), "lengths": lengths.numpy()})
    with torch.no_grad():
        want = model.encode_text(ids, lengths)
    for g, name in zip(got, [s.name for s in model.config.spaces], strict=True):
        np.testing.assert_allclose(g, want[name].numpy(), rtol=1e-4, atol=1e-5)


def test_the_exported_text_graph_carries_the_power(tiny_bundle, tmp_path, small_limits) -> None:  # noqa: ANN001
    """The ONNX text graph of a bundle with γ = 2 gives the torch model's embeddings, norms included."""
    import json
    import shutil

    import onnxruntime as ort

    from jemc_infer.export import onnx as onnx_export
    from jemc_infer.manifest import graph_entry
    from jemc_infer.nn.io import model_from_bundle

    out = tmp_path / "model"
    shutil.copytree(tiny_bundle, out)
    record = json.loads((out / "config.json").read_text(encoding="utf-8"))
    record["model"]["text_confidence"] = 2.0
    (out / "config.json").write_text(json.dumps(record), encoding="utf-8")
    onnx_export.export_bundle(out, small_limits, only=("text",), echo=lambda s: None)
    model = model_from_bundle(out)
    assert model.config.text_confidence == 2.0
    session = ort.InferenceSession(str(out / graph_entry(out, "text").path), providers=["CPUExecutionProvider"])
    ids, lengths = caption_batch([7, 1, 3, 5, 2])
    got = session.run(None, {"ids": ids.numpy(), "lengths": lengths.numpy()})
    with torch.no_grad():
        want = model.encode_text(ids, lengths)
        state = {name: sp.text(ids, lengths, normalize=False) for name, sp in model.spaces.items()}
    for g, name in zip(got, [s.name for s in model.config.spaces], strict=True):
        np.testing.assert_allclose(g, want[name].numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(g, axis=1), state[name].norm(dim=1).numpy() ** 2, rtol=1e-4)
