"""The compact world backbones: shapes, and weights saved here load back through --weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from jemc_infer.nn.backbones import AudioBackbone, load_backbones  # noqa: E402
from jemc_infer.nn.compact import CompactC3D, CompactVGG  # noqa: E402
from jemc_infer.nn.soundnet import SMALLFLYINGPIG_LAYOUT  # noqa: E402
from jemc_infer.nn.weights import read_weights, save_weights, to_checkpoint  # noqa: E402


def test_compact_networks_take_the_full_size_inputs() -> None:
    torch.manual_seed(0)
    assert CompactVGG()(torch.randn(2, 3, 224, 224)).shape == (2, 128)
    assert CompactC3D()(torch.rand(2, 3, 16, 224, 224) * 2 - 1).shape == (2, 128)


def test_weights_written_here_load_through_the_weights_path(tmp_path: Path) -> None:
    from jemc_infer.nn.backbones import COMPACT_LAYOUT

    torch.manual_seed(1)
    vgg, c3d, sound = CompactVGG(), CompactC3D(), AudioBackbone().net
    save_weights(tmp_path / "vgg_compact.safetensors", to_checkpoint(vgg, COMPACT_LAYOUT))
    save_weights(tmp_path / "c3d_compact.safetensors", to_checkpoint(c3d, COMPACT_LAYOUT))
    digest = save_weights(tmp_path / "sound8.safetensors", to_checkpoint(sound, SMALLFLYINGPIG_LAYOUT))
    tensors, sha = read_weights(tmp_path / "sound8.safetensors")
    assert sha == digest and tuple(tensors["conv1.0.weight"].shape) == (16, 1, 64, 1)  # sound8.pth's own layout
    nets = load_backbones(tmp_path, object="vgg-compact", activity="c3d-compact")
    assert nets.provenance["object"]["backbone"] == "vgg-compact" and nets.provenance["audio"]["sha256"] == digest
    frames = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    with torch.no_grad():
        want = vgg.eval()(torch.from_numpy((frames / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]))
                          .permute(0, 3, 1, 2).float()).numpy()
    np.testing.assert_allclose(nets.encode_frames(frames), want, rtol=1e-4, atol=1e-4)
    wave = np.random.default_rng(1).uniform(-0.5, 0.5, 30_000).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(nets.encode_audio(wave), sound.eval()(torch.from_numpy(wave)[None])[0].numpy(), rtol=1e-4, atol=1e-4)


def test_a_missing_compact_file_says_how_to_make_it(tmp_path: Path) -> None:
    from jemc_infer.errors import InputError

    with pytest.raises(InputError, match="world backbones"):
        load_backbones(tmp_path, object="vgg-compact", activity="c3d-compact")
