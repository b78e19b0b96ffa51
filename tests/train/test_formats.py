"""Loaders for MSR-VTT and MSVD annotations and the official JEMC feature files, on small real-format files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jemc_infer.errors import InputError
from jemc_infer.train.formats import (
    Annotations,
    FeatureFolder,
    import_dataset,
    load_captions_jsonl,
    load_msrvtt,
    load_msvd,
    load_official_features,
)


def _msrvtt_file(path: Path, split_of: dict[int, str]) -> Path:
    data = {
        "info": {"contributor": "test", "year": "2016"},
        "videos": [{"category": 9, "url": "https://www.youtube.com/watch?v=x", "video_id": f"video{i}",
                    "start time": 137.72, "end time": 149.44, "split": s, "id": i} for i, s in split_of.items()],
        "sentences": [{"caption": f"caption {k} of video {i}", "video_id": f"video{i}", "sen_id": 20 * i + k}
                      for i in split_of for k in range(3)],
    }
    path.write_text(json.dumps(data))
    return path


def test_msrvtt_two_files_standard_splits(tmp_path: Path) -> None:
    tv = _msrvtt_file(tmp_path / "train_val_videodatainfo.json", {0: "train", 1: "train", 10: "validate", 2: "train"})
    test = _msrvtt_file(tmp_path / "test_videodatainfo.json", {11: "test", 12: "test"})
    ann = load_msrvtt(tv, test)
    assert ann.videos == ["video0", "video1", "video2", "video10", "video11", "video12"]  # natural order
    assert ann.splits == {"train": ["video0", "video1", "video2"], "val": ["video10"], "test": ["video11", "video12"]}
    assert len(ann.captions) == 18 and ann.captions[0] == ("video0", "caption 0 of video 0")


def test_msrvtt_refusals(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="missing"):
        load_msrvtt(tmp_path / "absent.json")
    (tmp_path / "wrong.json").write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(InputError, match="expected 'videos' and 'sentences'"):
        load_msrvtt(tmp_path / "wrong.json")
    (tmp_path / "badsplit.json").write_text(json.dumps({"videos": [{"video_id": "video0", "split": "dev"}], "sentences": []}))
    with pytest.raises(InputError, match=r"videos\[0\]"):
        load_msrvtt(tmp_path / "badsplit.json")


def test_msvd_caption_list_with_mapping(tmp_path: Path) -> None:
    caps = tmp_path / "AllVideoDescriptions.txt"
    caps.write_text("# MSVD descriptions\n#\n-4wsuPCjDBc_5_15 a squirrel is eating a peanut in it's shell.\n"
                    "-4wsuPCjDBc_5_15 A chipmunk is eating.\nabc_1_2 a man plays guitar\n\nxyz_3_4 a cat sleeps\n")
    mapping = tmp_path / "youtube_mapping.txt"
    mapping.write_text("xyz_3_4 vid10\n-4wsuPCjDBc_5_15 vid1\nabc_1_2 vid2\n")
    ann = load_msvd(caps, mapping, split_sizes=(1, 1, 1))
    assert ann.videos == ["vid1", "vid2", "vid10"]
    assert ann.splits == {"train": ["vid1"], "val": ["vid2"], "test": ["vid10"]}
    assert ann.captions[1] == ("vid1", "A chipmunk is eating.")
    assert ann.aliases["-4wsuPCjDBc_5_15"] == "vid1"  # file stems (clip ids) → video ids
    plain = load_msvd(caps, split_sizes=(2, 0, 1))
    assert plain.videos == ["-4wsuPCjDBc_5_15", "abc_1_2", "xyz_3_4"]


def test_msvd_refusals(tmp_path: Path) -> None:
    caps = tmp_path / "c.txt"
    caps.write_text("a_1_2 a dog\nb_1_2 a cat\n")
    with pytest.raises(InputError, match=r"2 videos \| expected 1970"):
        load_msvd(caps)
    caps.write_text("a_1_2 a dog\nb_1_2\n")
    with pytest.raises(InputError, match=r"c\.txt:2"):
        load_msvd(caps, split_sizes=(1, 0, 1))
    (tmp_path / "m.txt").write_text("a_1_2 vid1\n")
    caps.write_text("a_1_2 a dog\nb_1_2 a cat\n")
    with pytest.raises(InputError, match="not in"):
        load_msvd(caps, tmp_path / "m.txt", split_sizes=(1, 0, 1))
    for sizes in ((1, 1), (1, -1, 2)):
        with pytest.raises(InputError, match=r"MSVD split sizes \| \[.*\] \| expected three counts >= 0"):
            load_msvd(caps, split_sizes=sizes)


def test_import_dataset_reports_videos_without_files(tmp_path: Path) -> None:
    ann = Annotations(videos=["video0", "video1", "video2"], captions=[(f"video{i}", f"a thing {i}") for i in range(3)],
                      splits={"train": ["video0"], "val": ["video1"], "test": ["video2"]})
    (tmp_path / "r").mkdir()
    for i in (0, 2):
        np.save(tmp_path / "r" / f"video{i}.npy", np.full((4, 6), float(i)))
    result = import_dataset(tmp_path / "d", ann, {"resnet": FeatureFolder(tmp_path / "r")}, "msrvtt")
    ds = result.dataset
    assert result.missing == {"resnet": ["video1"]}
    assert ds.name == "msrvtt" and ds.masks["resnet"].tolist() == [True, False, True]
    assert ds.source == {"format": "official-jemc", "folders": {"resnet": str(tmp_path / "r")}}
    with pytest.raises(InputError, match=r"feature folders \| none given \| expected at least one of resnet, i3d, audio"):
        import_dataset(tmp_path / "d2", ann, {}, "msrvtt")
    assert not (tmp_path / "d2").exists()


def test_official_npy_features_prefixed_names_time_pooling_and_missing(tmp_path: Path) -> None:
    resnet, i3d = tmp_path / "resnet", tmp_path / "i3d"
    resnet.mkdir(), i3d.mkdir()
    rng = np.random.default_rng(0)
    r0, r1 = rng.random((5, 8)), rng.random((3, 8))
    np.save(resnet / "video0.npy", r0)
    np.save(resnet / "video1.npy", r1)
    np.save(i3d / "msr_vtt-I3D-RGBFeatures-video0.npy", np.ones((2, 4)))
    np.save(i3d / "msr_vtt-I3D-RGBFeatures-video10.npy", np.full((1, 4), 3.0))
    feats, mask, missing = load_official_features(["video0", "video1"], resnet)
    assert np.allclose(feats, [r0.mean(0), r1.mean(0)]) and mask.all() and missing == []
    feats, mask, missing = load_official_features(["video0", "video1", "video10"], i3d)
    assert mask.tolist() == [True, False, True] and missing == ["video1"]
    assert feats[1].tolist() == [0, 0, 0, 0] and feats[2].tolist() == [3, 3, 3, 3]


def test_official_soundnet_h5(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    audio = tmp_path / "audio"
    audio.mkdir()
    arr = np.arange(12, dtype=np.float32).reshape(4, 3)  # [dim, T] as the official layer24
    with h5py.File(audio / "video0.mp3.soundnet.h5", "w") as f:
        f["layer24"] = arr
    with h5py.File(audio / "video2.mp3.soundnet.h5", "w") as f:
        f["layer18"] = arr
    feats, mask, missing = load_official_features(["video0", "video1"], audio, kind="soundnet")
    assert feats[0].tolist() == arr.mean(1).tolist() and mask.tolist() == [True, False] and missing == ["video1"]
    with pytest.raises(InputError, match=r"video2\.mp3\.soundnet\.h5 \| datasets \['layer18'\] \| expected 'layer24'"):
        load_official_features(["video2"], audio, kind="soundnet")


def test_official_feature_refusals(tmp_path: Path) -> None:
    d = tmp_path / "f"
    d.mkdir()
    with pytest.raises(InputError, match="no feature file for any"):
        load_official_features(["video0"], d)
    np.save(d / "video0.npy", np.ones((2, 8)))
    np.save(d / "video1.npy", np.ones((2, 6)))
    with pytest.raises(InputError, match=r"video1\.npy \| shape \[6\] \| expected \[8\]"):
        load_official_features(["video0", "video1"], d)
    bad = np.ones((2, 8))
    bad[1, 3] = np.nan
    np.save(d / "video1.npy", bad)
    with pytest.raises(InputError, match="non-finite"):
        load_official_features(["video0", "video1"], d)
    (d / "video1.npy").write_bytes(b"\x00garbage")
    with pytest.raises(InputError, match="unreadable"):
        load_official_features(["video0", "video1"], d)
    with pytest.raises(InputError, match="not a directory"):
        load_official_features(["video0"], tmp_path / "absent")


def test_custom_collection_jsonl(tmp_path: Path) -> None:
    p = tmp_path / "c.jsonl"
    p.write_text('{"video": "a", "text": "a dog", "split": "train"}\n{"video": "b", "text": "a cat", "split": "test"}\n'
                 '{"video": "a", "text": "a puppy", "split": "train"}\n')
    ann = load_captions_jsonl(p)
    assert ann.videos == ["a", "b"] and ann.splits == {"train": ["a"], "test": ["b"]} and len(ann.captions) == 3
    p.write_text('{"video": "a", "text": "x", "split": "train"}\n{"video": "a", "text": "y", "split": "test"}\n')
    with pytest.raises(InputError, match="one split per video"):
        load_captions_jsonl(p)
    p.write_text('{"video": "a", "caption": "x"}\n')
    with pytest.raises(InputError, match=r"c\.jsonl:1"):
        load_captions_jsonl(p)
