"""Model bundles: torch round trip, and every refusal (tampered, mis-shaped, missing, inconsistent)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from safetensors.numpy import load_file, save_file  # noqa: E402

from jemc_infer.bundle import read_bundle, sha256_file, write_bundle  # noqa: E402
from jemc_infer.config import ModelConfig, SpaceConfig, expected_shapes  # noqa: E402
from jemc_infer.errors import BundleError, InputError  # noqa: E402
from jemc_infer.nn import JEMC, model_from_bundle, save_model  # noqa: E402
from jemc_infer.text import Vocabulary  # noqa: E402

VOCAB = Vocabulary.build(["a man is cooking", "a dog runs on the street"], min_count=1)
CONFIG = ModelConfig(
    spaces=(SpaceConfig("object", ("resnet",)), SpaceConfig("activity", ("i3d", "audio"), weight=0.5),
            SpaceConfig("shared", ("resnet",), paired=("audio",))),
    vocab_size=len(VOCAB), feature_dims={"resnet": 12, "i3d": 6, "audio": 4}, word_dim=8, embed_dim=10,
)


@pytest.fixture()
def bundle_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    save_model(JEMC(CONFIG), VOCAB, tmp_path / "b", meta={"training": {"note": "test"}})
    return tmp_path / "b"


def test_state_dict_matches_the_shape_contract() -> None:
    model = JEMC(CONFIG)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected_shapes(CONFIG)


def test_round_trip_gives_identical_outputs(bundle_dir: Path) -> None:
    torch.manual_seed(0)
    original = JEMC(CONFIG).eval()
    loaded = model_from_bundle(bundle_dir)
    ids, lengths = VOCAB.encode_batch(["a man is cooking", "a dog", "unknown words here ok"])
    feats = {k: torch.randn(5, d) for k, d in CONFIG.feature_dims.items()}
    masks = {"audio": torch.tensor([True, False, True, True, False])}
    with torch.no_grad():
        for a, b in ((original.encode_text(torch.from_numpy(ids), torch.from_numpy(lengths)),
                      loaded.encode_text(torch.from_numpy(ids), torch.from_numpy(lengths))),
                     (original.encode_video(feats, masks), loaded.encode_video(feats, masks))):
            for name in a:
                assert torch.equal(a[name], b[name])
                assert torch.allclose(a[name].norm(dim=1), torch.ones(len(a[name])), atol=1e-5)
    bundle = read_bundle(bundle_dir)
    assert bundle.config == CONFIG and bundle.vocab == VOCAB and bundle.meta["training"] == {"note": "test"}
    assert bundle.meta["versions"]["torch"] == torch.__version__ and len(bundle.fingerprint) == 16


def test_text_encoder_ignores_padding_and_row_order() -> None:
    """Gather at length-1 equals running each caption alone (what pack_padded_sequence computes)."""
    torch.manual_seed(0)
    enc = JEMC(CONFIG).spaces["object"].text.eval()
    ids, lengths = VOCAB.encode_batch(["a dog runs on the street", "a man", "cooking"])
    with torch.no_grad():
        batch = enc(torch.from_numpy(ids), torch.from_numpy(lengths))
        for i in range(3):
            alone = enc(torch.from_numpy(ids[i:i + 1, : lengths[i]]), torch.from_numpy(lengths[i:i + 1]))
            assert torch.allclose(batch[i], alone[0], atol=1e-6)
        packed = torch.nn.utils.rnn.pack_padded_sequence(enc.embed(torch.from_numpy(ids)), torch.from_numpy(lengths),
                                                         batch_first=True, enforce_sorted=False)
        _, h = enc.rnn(packed)
        assert torch.allclose(batch, torch.nn.functional.normalize(h[0], dim=1), atol=1e-6)


def test_tampered_weights_are_refused(bundle_dir: Path) -> None:
    data = bytearray((bundle_dir / "weights.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (bundle_dir / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"weights\.safetensors \| sha256 .* expected .* modified or truncated"):
        read_bundle(bundle_dir).load_weights()


def _rewrite_weights(bundle_dir: Path, tensors: dict) -> None:
    """Replace the weights and re-vouch for them in config.json (so only the shape check can fail)."""
    save_file(tensors, str(bundle_dir / "weights.safetensors"))
    cfg = json.loads((bundle_dir / "config.json").read_text())
    cfg["weights"]["sha256"] = sha256_file(bundle_dir / "weights.safetensors")
    (bundle_dir / "config.json").write_text(json.dumps(cfg))


def test_wrong_shape_missing_and_unexpected_tensors_are_named(bundle_dir: Path) -> None:
    tensors = load_file(str(bundle_dir / "weights.safetensors"))
    tensors["spaces.object.video.fc.weight"] = np.zeros((10, 13), dtype=np.float32)
    del tensors["spaces.activity.text.rnn.bias_hh_l0"]
    tensors["spaces.object.extra"] = np.zeros(1, dtype=np.float32)
    _rewrite_weights(bundle_dir, tensors)
    with pytest.raises(BundleError) as err:
        model_from_bundle(bundle_dir)
    msg = str(err.value)
    assert "spaces.object.video.fc.weight has shape [10, 13], expected [10, 12]" in msg
    assert "missing ['spaces.activity.text.rnn.bias_hh_l0']" in msg and "unexpected ['spaces.object.extra']" in msg


def test_config_and_vocab_inconsistencies(bundle_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"config\.json \| missing"):
        read_bundle(tmp_path)
    cfg = json.loads((bundle_dir / "config.json").read_text())
    Vocabulary(words=VOCAB.words[:-1]).save(bundle_dir / "vocab.json")
    with pytest.raises(BundleError, match=rf"{len(VOCAB) - 1} words \| expected {len(VOCAB)}"):
        read_bundle(bundle_dir)
    VOCAB.save(bundle_dir / "vocab.json")
    cfg["model"]["spaces"][0]["features"] = ["optical_flow"]
    (bundle_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BundleError, match="uses feature 'optical_flow'"):
        read_bundle(bundle_dir)
    (bundle_dir / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(BundleError, match="expected 'jemc-bundle/1'"):
        read_bundle(bundle_dir)
    (bundle_dir / "config.json").write_text("{not json")
    with pytest.raises(BundleError, match="invalid JSON"):
        read_bundle(bundle_dir)


def test_write_is_atomic_and_refuses_foreign_directories(bundle_dir: Path, tmp_path: Path) -> None:
    tensors = {k: np.zeros(s, dtype=np.float32) for k, s in expected_shapes(CONFIG).items()}
    bad = dict(tensors, **{"spaces.object.video.fc.bias": np.zeros(3, dtype=np.float32)})
    before = sha256_file(bundle_dir / "weights.safetensors")
    with pytest.raises(BundleError):
        write_bundle(bundle_dir, CONFIG, VOCAB, bad)
    assert sha256_file(bundle_dir / "weights.safetensors") == before  # old bundle intact
    write_bundle(bundle_dir, CONFIG, VOCAB, tensors)  # replacing an older bundle is fine
    assert read_bundle(bundle_dir).load_weights()["spaces.object.video.fc.bias"].sum() == 0
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="non-empty directory"):
        write_bundle(tmp_path / "docs", CONFIG, VOCAB, tensors)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "docs"]


def test_model_config_validation() -> None:
    with pytest.raises(InputError, match="duplicate space names"):
        ModelConfig(spaces=(SpaceConfig("a", ("resnet",)), SpaceConfig("a", ("i3d",))), vocab_size=10)
    with pytest.raises(InputError, match="has no features"):
        ModelConfig(spaces=(SpaceConfig("a", ()),), vocab_size=10)
    with pytest.raises(InputError, match="unknown fields"):
        ModelConfig.from_json({**CONFIG.to_json(), "layers": 2})
    assert ModelConfig.from_json(json.loads(json.dumps(CONFIG.to_json()))) == CONFIG
