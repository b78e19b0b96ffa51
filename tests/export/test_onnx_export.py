"""ONNX export: graphs, dynamic axes, the parity gate and its refusals, fp16 and retrieval parity."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from jemc_infer import manifest  # noqa: E402
from jemc_infer.errors import BundleError, InputError  # noqa: E402
from jemc_infer.export import onnx as onnx_export  # noqa: E402
from jemc_infer.manifest import graph_entry, read_manifest, verified_file  # noqa: E402


def test_manifest_records_graphs_parity_and_sources(exported_bundle: Path) -> None:
    m = read_manifest(exported_bundle)
    assert set(m["graphs"]) == {"text", "text.fp16", "video", "video.fp16"}
    text = m["graphs"]["text"]
    assert text["precision"] == "fp32" and text["opset"] >= 17 and text["parity"]["passed"]
    assert text["parity"]["max_abs_diff"] <= 1e-4 and text["parity"]["tolerance"] == 1e-4
    shapes = [c["shapes"]["ids"] for c in text["parity"]["cases"]]
    assert [1, 1] in shapes and [9, 12] in shapes and [7, 12] in shapes  # batch 1, 7, max; seq 1 and max
    cfg = json.loads((exported_bundle / "config.json").read_text())
    assert text["source"]["weights_sha256"] == cfg["weights"]["sha256"]
    assert m["graphs"]["video.fp16"]["parity"]["tolerance"] == onnx_export.FP16_TOLERANCE
    rp = m["graphs"]["text.fp16"]["retrieval_parity"]
    # a held-out set the model really retrieves on (chance rsum for 1000 videos is ~3)
    assert rp["max_move_points"] <= 0.5 and rp["fp32"]["rsum"] > 30 and rp["videos"] == 1000


def test_graphs_are_checker_clean_with_named_dynamic_axes(exported_bundle: Path) -> None:
    for graph in ("text", "video"):
        entry = graph_entry(exported_bundle, graph)
        path = verified_file(exported_bundle, entry)
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        spec = entry.spec
        for inp, t in zip(model.graph.input, spec.inputs, strict=True):
            dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
            assert inp.name == t.name and dims[0] and isinstance(dims[0], str)  # batch is symbolic
            if t.name == "ids":
                assert isinstance(dims[1], str)  # and so is seq
    names = [i.name for i in onnx.load(str(verified_file(exported_bundle, graph_entry(exported_bundle, "video")))).graph.input]
    assert names == ["resnet", "i3d", "audio", "audio_mask"]


def test_gate_refuses_and_writes_nothing(tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_limits) -> None:
    bundle = tmp_path / "model"
    shutil.copytree(tiny_bundle, bundle)
    monkeypatch.setattr(onnx_export, "FP32_TOLERANCE", 0.0)  # nothing can pass: the gate must refuse
    with pytest.raises(onnx_export.ParityError, match=r"text graph \| max \|torch - onnxruntime\| = .* \| expected <= 0") as refused:
        onnx_export.export_bundle(bundle, small_limits, only=("text",), echo=lambda s: None)
    assert refused.value.details  # what torch's exporter said, kept for the error (it often says why)
    assert not (bundle / "manifest.json").exists() and not (bundle / "onnx").exists()
    assert not [p for p in bundle.iterdir() if p.name.startswith(".export")]


def test_fp16_needs_held_out_data(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "model"
    shutil.copytree(tiny_bundle, bundle)
    with pytest.raises(InputError, match=r"no held-out data \| expected eval_data"):
        onnx_export.export_bundle(bundle, fp16=True, echo=lambda s: None)


def test_tampered_graph_is_refused(exported_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = tmp_path / "model"
    shutil.copytree(exported_bundle, bundle)
    path = verified_file(bundle, graph_entry(bundle, "text"))
    assert (bundle / ".verified.json").exists()  # hashed once: not again while the file is untouched
    with monkeypatch.context() as m:
        m.setattr(manifest, "sha256_file", lambda p: pytest.fail("re-hashed an unchanged file"))
        assert verified_file(bundle, graph_entry(bundle, "text")) == path
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: the changed ctime still tells
    with pytest.raises(BundleError, match=r"text\.onnx \| sha256 .* modified or truncated"):
        verified_file(bundle, graph_entry(bundle, "text"))
    with pytest.raises(BundleError, match=r"no exported 'resnet' graph .*run `jemc-infer export"):
        graph_entry(bundle, "resnet")


def test_audio_backbone_export(tiny_bundle: Path, tmp_path: Path, small_limits) -> None:
    from jemc_infer.nn.backbones import load_backbones

    bundle = tmp_path / "model"
    shutil.copytree(tiny_bundle, bundle)
    records = onnx_export.export_bundle(bundle, small_limits, backbones=load_backbones(random_init=True),
                                        only=("audio",), echo=lambda s: None)
    entry = records["audio"]
    assert entry.parity["passed"] and entry.parity["relative"]
    assert entry.backbone["file"] == "random-init" and entry == graph_entry(bundle, "audio")
    assert entry.spec.inputs[0].shape == ("batch", "samples")


@pytest.mark.slow
def test_all_backbones_export(tiny_bundle: Path, tmp_path: Path, small_limits) -> None:
    from jemc_infer.nn.backbones import load_backbones

    bundle = tmp_path / "model"
    shutil.copytree(tiny_bundle, bundle)
    records = onnx_export.export_bundle(bundle, small_limits, backbones=load_backbones(random_init=True),
                                        only=("resnet", "i3d", "audio"), echo=lambda s: None)
    assert set(records) == {"resnet", "i3d", "audio"} and all(r.parity["passed"] for r in records.values())


def test_random_inputs_follow_the_spec() -> None:
    from jemc_infer.config import ModelConfig, SpaceConfig
    from jemc_infer.specs import text_spec

    spec = text_spec(ModelConfig(spaces=(SpaceConfig("o", ("resnet",)),), vocab_size=10))
    x = onnx_export.random_inputs(spec, 5, np.random.default_rng(0), seq=7, vocab_size=10)
    assert x["ids"].shape == (5, 7) and x["ids"].max() < 10 and x["lengths"].max() == 7 and x["lengths"].min() >= 1


def test_the_text_graph_stays_dynamic_when_exported_twice_in_one_process(tiny_bundle: Path, tmp_path: Path, small_limits) -> None:
    """A second export in one process used to fix the sequence axis at the example's length (a
    stale torch dispatch cache unrolled the GRU); the parity gate then refused it."""
    import onnx

    for i in range(2):
        shutil.copytree(tiny_bundle, tmp_path / f"m{i}")
        onnx_export.export_bundle(tmp_path / f"m{i}", small_limits, only=("text",), echo=lambda s: None)
        graph = onnx.load(str(tmp_path / f"m{i}" / graph_entry(tmp_path / f"m{i}", "text").path))
        ids = next(t for t in graph.graph.input if t.name == "ids")
        assert [d.dim_param for d in ids.type.tensor_type.shape.dim] == ["batch", "seq"], i
