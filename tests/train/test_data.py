"""The feature dataset layout: round trip, splits, masks, and every refusal."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from jemc_infer.errors import InputError
from jemc_infer.train.data import open_dataset, write_dataset


def _small(path: Path, **overrides):  # noqa: ANN202
    args = dict(
        videos=["v1", "v2", "v3"],
        features={"resnet": np.arange(12, dtype=np.float32).reshape(3, 4), "audio": np.ones((3, 2))},
        captions=[("v1", "a dog"), ("v1", "a puppy"), ("v2", "a cat"), ("v3", "a car")],
        splits={"train": ["v1", "v2"], "test": ["v3"]},
        masks={"audio": np.array([True, False, True])},
        name="small",
    )
    args.update(overrides)
    return write_dataset(path, **args)


def test_round_trip_and_split(tmp_path: Path) -> None:
    ds = _small(tmp_path / "d")
    again = open_dataset(tmp_path / "d")
    assert again.videos == ["v1", "v2", "v3"] and again.feature_dims == {"resnet": 4, "audio": 2}
    assert again.masks["audio"].tolist() == [True, False, True] and again.masks["resnet"].all()
    train = again.split("train")
    assert train.videos.tolist() == [0, 1] and train.captions == ("a dog", "a puppy", "a cat")
    assert train.caption_video.tolist() == [0, 0, 1]
    feats, masks = again.gather(train.videos, ["resnet", "audio"])
    assert feats["resnet"].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]] and masks["audio"].tolist() == [True, False]
    assert ds.has_feature("audio")
    assert not list(tmp_path.glob(".*")), "no temporary directories left behind"


def test_no_pickle_in_the_layout(tmp_path: Path) -> None:
    _small(tmp_path / "d")
    for npy in (tmp_path / "d").glob("*.npy"):
        np.load(npy, allow_pickle=False)  # raises if an object array had been written
    meta = json.loads((tmp_path / "d" / "dataset.json").read_text())
    assert meta["format"] == "jemc-features/1"


def test_missing_dataset_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"dataset\.json \| missing") as missing:
        open_dataset(tmp_path)
    assert "data synth" in str(missing.value) and "data msrvtt" in str(missing.value) and "data import" not in str(missing.value)
    with pytest.raises(InputError, match="not a directory"):
        open_dataset(tmp_path / "nope")


def test_caption_file_in_the_wrong_shape(tmp_path: Path) -> None:
    _small(tmp_path / "d")
    (tmp_path / "d" / "captions.jsonl").write_text('{"video": "v1", "text": "ok"}\n["v2", "a list"]\n')
    with pytest.raises(InputError, match=r"captions\.jsonl:2 \|.*expected \{\"video\": id"):
        open_dataset(tmp_path / "d")
    (tmp_path / "d" / "captions.jsonl").write_text('{"video": "v9", "text": "who"}\n')
    with pytest.raises(InputError, match="unknown video 'v9'"):
        open_dataset(tmp_path / "d")


def test_nan_features_name_file_and_row(tmp_path: Path) -> None:
    _small(tmp_path / "d")
    arr = np.load(tmp_path / "d" / "resnet.npy")
    arr[2, 1] = np.nan
    np.save(tmp_path / "d" / "resnet.npy", arr)
    with pytest.raises(InputError, match=r"resnet\.npy \| non-finite value \(NaN/inf\) in row 2"):
        open_dataset(tmp_path / "d")


def test_wrong_feature_shape(tmp_path: Path) -> None:
    _small(tmp_path / "d")
    np.save(tmp_path / "d" / "resnet.npy", np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(InputError, match=r"resnet\.npy \| float32 \[2, 4\] \| expected float \[3, 4\]"):
        open_dataset(tmp_path / "d")


def test_failed_write_leaves_nothing_half_written(tmp_path: Path) -> None:
    _small(tmp_path / "d")
    before = sorted(p.name for p in (tmp_path / "d").iterdir())
    bad = {"resnet": np.full((3, 4), np.nan, dtype=np.float32)}
    with pytest.raises(InputError, match="non-finite"):
        _small(tmp_path / "d", features=bad)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == before
    assert open_dataset(tmp_path / "d").feature_dims == {"resnet": 4, "audio": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_refuses_to_replace_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "precious.txt").write_text("keep me")
    with pytest.raises(InputError, match="non-empty directory"):
        _small(tmp_path / "home")
    assert (tmp_path / "home" / "precious.txt").read_text() == "keep me"


def test_unknown_split(tmp_path: Path) -> None:
    ds = _small(tmp_path / "d")
    with pytest.raises(InputError, match=r"no split 'val' \| expected one of \['test', 'train'\]"):
        ds.split("val")


def test_synthetic_dataset_has_the_promised_structure(tiny_data: Path, tmp_path: Path, tiny_synth_args: dict) -> None:
    ds = open_dataset(tiny_data)
    assert set(ds.features) == {"resnet", "i3d", "audio"}
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 320, "val": 40, "test": 40}
    assert 0 < (~ds.masks["audio"]).sum() < 80  # some videos have no audio track (10%)
    assert np.all(np.asarray(ds.features["audio"])[~ds.masks["audio"]] == 0)
    assert ds.source["synthetic"] is True
    copy = tmp_path / "copy"
    shutil.copytree(tiny_data, copy)
    from jemc_infer.train.synthetic import synthesize

    again = synthesize(copy, **tiny_synth_args)
    assert np.array_equal(np.asarray(again.features["resnet"]), np.asarray(ds.features["resnet"]))


def test_synthetic_settings_out_of_range_are_listed_at_once(tmp_path: Path) -> None:
    from jemc_infer.train.synthetic import synthesize

    with pytest.raises(InputError, match=r"synthetic dataset \| n_train=0 \(expected >= 1\); feature_dims\['i3d'\]=0 "
                                         r"\(expected >= 1\); missing_audio=2 \(expected 0 to 1\) \| expected valid settings"):
        synthesize(tmp_path / "d", n_train=0, feature_dims={"i3d": 0}, missing_audio=2)
    assert not (tmp_path / "d").exists()
