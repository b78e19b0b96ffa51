"""The export manifest: typed graph entries, and bundles and indexes written before the backbone
graphs took their features' names (``object`` → ``resnet``, ``activity`` → ``i3d``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jemc_infer.errors import BundleError, InputError
from jemc_infer.index.store import Index
from jemc_infer.manifest import GraphEntry, graph_entries, graph_entry, read_manifest, update_manifest, verified_file
from jemc_infer.specs import GraphSpec, TensorSpec, backbone_specs


def _old_entry(name: str, rel: str, sha: str, precision: str = "fp32") -> dict:
    spec = {"object": backbone_specs()["resnet"], "activity": backbone_specs()["i3d"], "audio": backbone_specs()["audio"]}[name]
    spec_json = {**spec.to_json(), "name": name}  # as the exporter wrote it then
    return {"files": {rel: sha}, "precision": precision, "spec": spec_json, "opset": 18,
            "source": {"backbone": {"backbone": "resnet152", "file": "random-init", "sha256": None, "seed": 0}}}


def _write_old_manifest(bundle: Path) -> None:
    bundle.mkdir(parents=True, exist_ok=True)
    text = {"files": {"onnx/text.onnx": "a" * 64}, "precision": "fp32", "spec": {"name": "text", "inputs": [], "outputs": []}}
    graphs = {"text": text, "object": _old_entry("object", "onnx/object.onnx", "b" * 64),
              "activity": _old_entry("activity", "onnx/activity.onnx", "c" * 64),
              "activity.fp16": _old_entry("activity", "onnx/activity.fp16.onnx", "d" * 64, "fp16"),
              "audio": _old_entry("audio", "onnx/audio.onnx", "e" * 64)}
    engines = {"0123456789abcdef": {"graph": "activity", "precision": "fp16", "file": "engines/0123456789abcdef.plan",
                                    "spec": {**backbone_specs()["i3d"].to_json(), "name": "activity"}}}
    (bundle / "manifest.json").write_text(json.dumps({"format": "jemc-export/1", "graphs": graphs, "engines": engines}))


def test_an_old_manifest_reads_under_the_feature_names(tmp_path: Path) -> None:
    _write_old_manifest(tmp_path)
    m = read_manifest(tmp_path)
    assert sorted(m["graphs"]) == ["audio", "i3d", "i3d.fp16", "resnet", "text"]
    assert m["engines"]["0123456789abcdef"]["graph"] == "i3d" and m["engines"]["0123456789abcdef"]["spec"]["name"] == "i3d"
    i3d = graph_entry(tmp_path, "i3d")
    assert i3d.spec == backbone_specs()["i3d"] and i3d.sha256 == "c" * 64 and i3d.path == "onnx/activity.onnx"
    assert graph_entry(tmp_path, "i3d", "fp16").sha256 == "d" * 64 and graph_entry(tmp_path, "resnet").spec.name == "resnet"
    assert graph_entry(tmp_path, "text").spec.name == "text" and graph_entry(tmp_path, "audio").sha256 == "e" * 64
    for old in ("object", "activity"):  # an old name is never read as a graph: "activity" is a space
        with pytest.raises(BundleError, match=rf"no exported '{old}' graph \(has: audio, i3d, i3d.fp16, resnet, text\)"):
            graph_entry(tmp_path, old)
    update_manifest(tmp_path, lambda m: None)  # the next write stores the new names
    assert sorted(json.loads((tmp_path / "manifest.json").read_text())["graphs"]) == ["audio", "i3d", "i3d.fp16", "resnet", "text"]


def test_a_graph_under_its_new_name_wins_over_an_old_one(tmp_path: Path) -> None:
    _write_old_manifest(tmp_path)
    update_manifest(tmp_path, lambda m: None)
    data = json.loads((tmp_path / "manifest.json").read_text())
    data["graphs"]["object"] = _old_entry("object", "onnx/object.onnx", "f" * 64)  # stale leftover beside the new one
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    assert graph_entry(tmp_path, "resnet").sha256 == "b" * 64 and "object" not in read_manifest(tmp_path)["graphs"]


def test_graph_entry_is_typed_and_round_trips(tmp_path: Path) -> None:
    spec = GraphSpec("video", (TensorSpec("resnet", "float32", ("batch", 12)),), (TensorSpec("video_object", "float32", ("batch", 4)),))
    big = GraphEntry(files={"onnx/video.onnx": "1" * 64, "onnx/video.onnx.data": "0" * 64}, spec=spec, opset=18,
                     source={"weights_sha256": "9" * 64})
    assert big.path == "onnx/video.onnx" and big.sha256 == "1" * 64  # the graph file's, not the smaller hash of its data
    assert big.backbone is None and GraphEntry.from_json(big.to_json()) == big
    assert "parity" not in big.to_json() and big.to_json()["spec"] == spec.to_json()
    update_manifest(tmp_path, lambda m: m["graphs"].__setitem__("video", big.to_json()))
    assert graph_entries(tmp_path) == {"video": big}
    with pytest.raises(BundleError, match=r"video\.onnx \| missing"):
        verified_file(tmp_path, big)
    update_manifest(tmp_path, lambda m: m["graphs"].__setitem__("video", {"precision": "fp32"}))
    with pytest.raises(BundleError, match=r"graph 'video' has a malformed record \(KeyError"):
        graph_entry(tmp_path, "video")


def test_an_index_made_with_old_graph_names_accepts_the_same_backbones(tmp_path: Path) -> None:
    old = {"model": "abc", "layout": [["object", 4]], "sampling": {}, "dtype": "float32",
           "backbones": {"object": "b" * 64, "activity": "c" * 64, "audio": "e" * 64}}
    with Index.open(tmp_path / "ix", old, writer=True):
        pass
    new = {**old, "backbones": {"resnet": "b" * 64, "i3d": "c" * 64, "audio": "e" * 64}}
    with Index.open(tmp_path / "ix", new, writer=True) as index:
        assert index.settings["backbones"] == new["backbones"]
    other = {**old, "backbones": {"resnet": "b" * 64, "i3d": "0" * 64, "audio": "e" * 64}}
    with pytest.raises(InputError, match="other backbones"):
        Index.open(tmp_path / "ix", other, writer=True)
