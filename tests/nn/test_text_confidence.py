"""``ModelConfig.text_confidence``: each space's cosine weighed by the norm of its text state — in
the torch model, in the int8 text graph's MatMul form, and through the bundle's config file."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from jemc_infer.config import ModelConfig, SpaceConfig  # noqa: E402
from jemc_infer.nn import JEMC  # noqa: E402

FEATURES = {"resnet": 12, "i3d": 8, "audio": 6}


def _model(confidence: bool) -> JEMC:
    torch.manual_seed(0)
    config = ModelConfig(spaces=(SpaceConfig("object", ("resnet",)), SpaceConfig("activity", ("i3d", "audio"))),
                         vocab_size=30, feature_dims=FEATURES, word_dim=8, embed_dim=16, text_confidence=confidence)
    return JEMC(config).eval()


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.integers(4, 30, size=(5, 7))), torch.tensor([7, 1, 3, 5, 2])


def test_the_setting_survives_the_config_file_and_defaults_to_the_paper() -> None:
    config = _model(True).config
    assert ModelConfig.from_json(config.to_json()).text_confidence is True
    legacy = config.to_json()
    del legacy["text_confidence"]  # a bundle written before the setting existed
    assert ModelConfig.from_json(legacy).text_confidence is False


def test_each_space_counts_by_its_text_state_norm() -> None:
    plain, weighed = _model(False), _model(True)
    weighed.load_state_dict(plain.state_dict())
    ids, lengths = _inputs()
    feats = {k: torch.randn(4, d) for k, d in FEATURES.items()}
    with torch.no_grad():
        unit, raw = plain.encode_text(ids, lengths), weighed.encode_text(ids, lengths)
        video = plain.encode_video(feats)
    for name in unit:
        norms = raw[name].norm(dim=1)
        assert torch.allclose(unit[name].norm(dim=1), torch.ones(5), atol=1e-6)
        assert norms.std() > 0  # not all the same: they weigh queries differently
        torch.testing.assert_close(raw[name], unit[name] * norms[:, None], rtol=1e-5, atol=1e-6)
    want = sum(raw[s].norm(dim=1, keepdim=True) * (unit[s] @ video[s].T) for s in unit)
    torch.testing.assert_close(weighed.similarity(raw, video), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("confidence", [False, True])
def test_the_matmul_text_graph_follows_the_setting(confidence: bool) -> None:
    import onnxruntime as ort

    from jemc_infer.export.text_int8 import gru_weights, text_loop_model
    from jemc_infer.specs import text_spec

    model = _model(confidence)
    graph = text_loop_model(gru_weights(model), text_spec(model.config), normalize=not confidence)
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    ids, lengths = _inputs()
    got = session.run(None, {"ids": ids.numpy(), "lengths": lengths.numpy()})
    with torch.no_grad():
        want = model.encode_text(ids, lengths)
    for g, name in zip(got, [s.name for s in model.config.spaces], strict=True):
        np.testing.assert_allclose(g, want[name].numpy(), rtol=1e-4, atol=1e-5)
