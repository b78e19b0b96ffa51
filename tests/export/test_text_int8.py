"""The int8 text encoder: written as a Loop of MatMuls, quantised, gated by graph and retrieval
parity, recorded in the manifest, left out (with one line) when a gate fails, and picked by
``query`` on the CPU only where it passed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from support.limits import small_limits_value  # noqa: E402

from jemc_infer.errors import BundleError, InputError  # noqa: E402
from jemc_infer.export import onnx as onnx_export  # noqa: E402
from jemc_infer.manifest import gated_int8, graph_entry, read_manifest, update_manifest, verified_file  # noqa: E402


@pytest.fixture(scope="module")
def int8_bundle(tiny_bundle: Path, held_out_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_bundle`` exported with its int8 text graph (read-only: copy to modify)."""
    out = tmp_path_factory.mktemp("int8") / "model"
    shutil.copytree(tiny_bundle, out)
    lines: list[str] = []
    onnx_export.export_bundle(out, small_limits_value(), eval_data=held_out_data, only=("text", "video"), text_int8=True,
                              echo=lines.append)
    assert any(line.startswith("int8 text retrieval parity") for line in lines), lines
    return out


def _copy(bundle: Path, tmp_path: Path) -> Path:
    shutil.copytree(bundle, tmp_path / "model")
    return tmp_path / "model"


def test_int8_text_graph_is_gated_and_recorded(int8_bundle: Path) -> None:
    m = read_manifest(int8_bundle)
    assert set(m["graphs"]) == {"text", "text.int8", "video"}
    e = m["graphs"]["text.int8"]
    assert e["precision"] == "int8" and e["files"] == {"onnx/text.int8.onnx": e["files"]["onnx/text.int8.onnx"]}
    parity = e["parity"]
    assert parity["passed"] and parity["tolerance"] == onnx_export.INT8_TOLERANCE
    assert 0 < parity["max_abs_diff"] <= onnx_export.INT8_TOLERANCE and parity["max_abs_diff_vs_fp32_graph"] <= onnx_export.INT8_TOLERANCE
    assert parity["min_cosine_vs_fp32_graph"] > 0.99
    shapes = [c["shapes"]["ids"] for c in parity["cases"]]
    assert [1, 1] in shapes and [9, 12] in shapes  # the same cases as the fp32 gate
    rp = e["retrieval_parity"]
    assert rp["max_move_points"] <= 0.5 and "int8" in rp and rp["fp32"]["rsum"] > 30 and rp["videos"] == 1000
    assert e["source"] == m["graphs"]["text"]["source"]
    entry, why = gated_int8(int8_bundle)
    assert entry is not None and "R@1/5/10 moved" in why


def test_int8_graph_is_a_quantised_loop_with_dynamic_axes(int8_bundle: Path) -> None:
    model = onnx.load(str(verified_file(int8_bundle, graph_entry(int8_bundle, "text", "int8"))))
    onnx.checker.check_model(model)
    ops = {n.op_type for n in model.graph.node}
    body = {n.op_type for node in model.graph.node for a in node.attribute if a.type == onnx.AttributeProto.GRAPH for n in a.g.node}
    assert "GRU" not in ops and "Loop" in ops and "MatMulInteger" in body  # the recurrent weights are int8
    assert any(i.data_type == onnx.TensorProto.INT8 for i in model.graph.initializer)
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "seq"]


def test_int8_graph_follows_torch_on_unsorted_lengths(int8_bundle: Path) -> None:
    import onnxruntime as ort
    import torch

    from jemc_infer.bundle import read_bundle
    from jemc_infer.nn.io import model_from_bundle

    model = model_from_bundle(read_bundle(int8_bundle))
    session = ort.InferenceSession(str(int8_bundle / "onnx" / "text.int8.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    ids = rng.integers(4, model.config.vocab_size, size=(5, 10))
    lengths = np.array([10, 1, 4, 0, 7])  # 0 acts as 1, as torch's gather at lengths - 1 clamped at 0
    got = session.run(None, {"ids": ids, "lengths": lengths})
    with torch.inference_mode():
        want = list(model.encode_text(torch.from_numpy(ids), torch.from_numpy(lengths)).values())
    for g, w in zip(got, want, strict=True):
        assert (g * w.numpy()).sum(1).min() > 0.99


def test_failed_graph_gate_leaves_int8_out_and_drops_a_stale_one(int8_bundle: Path, held_out_data: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = _copy(int8_bundle, tmp_path)
    monkeypatch.setattr(onnx_export, "INT8_TOLERANCE", 0.0)  # nothing can pass
    lines: list[str] = []
    records = onnx_export.export_bundle(bundle, small_limits_value(), eval_data=held_out_data, only=("text", "video"),
                                       text_int8=True, echo=lines.append)
    assert set(records) == {"text", "video"}
    left = [line for line in lines if line.startswith("text.int8: left out")]
    assert len(left) == 1 and "| expected <= 0: fp32 is used" in left[0], lines
    assert "text.int8" not in read_manifest(bundle)["graphs"]  # the earlier one went with the fp32 graph it was made from
    assert not (bundle / "onnx" / "text.int8.onnx").exists() and gated_int8(bundle)[0] is None


def test_failed_retrieval_gate_leaves_int8_out(tiny_bundle: Path, held_out_data: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = _copy(tiny_bundle, tmp_path)
    monkeypatch.setattr(onnx_export, "RETRIEVAL_LIMIT_POINTS", -1.0)  # every move is too much
    lines: list[str] = []
    records = onnx_export.export_bundle(bundle, small_limits_value(), eval_data=held_out_data, only=("text", "video"),
                                       text_int8=True, echo=lines.append)
    assert set(records) == {"text", "video"}
    left = [line for line in lines if line.startswith("text.int8: left out")]
    assert len(left) == 1 and "moved" in left[0] and "fp32 is used" in left[0], lines
    assert not [p for p in (bundle / "onnx").iterdir() if "int8" in p.name]


def test_int8_needs_held_out_data_and_the_video_graph(tiny_bundle: Path, held_out_data: Path) -> None:
    with pytest.raises(InputError, match=r"int8 text export \| no held-out data"):
        onnx_export.export_bundle(tiny_bundle, text_int8=True, echo=lambda s: None)
    with pytest.raises(InputError, match=r"int8 text export \| graphs \['text'\] \| expected text and video"):
        onnx_export.export_bundle(tiny_bundle, eval_data=held_out_data, only=("text",), text_int8=True, echo=lambda s: None)


def test_open_engine_picks_int8_on_the_cpu_and_says_so(int8_bundle: Path) -> None:
    from jemc_infer.engines import open_engine

    engine, why = open_engine(int8_bundle, "text", device="cpu")
    assert why.startswith("text: onnxruntime on CPUExecutionProvider, int8 (int8: max |diff|"), why
    engine.close()
    engine, why = open_engine(int8_bundle, "text", device="cpu", precision="fp32")
    assert why == "text: onnxruntime on CPUExecutionProvider, fp32"
    engine.close()
    with pytest.raises(InputError, match="expected onnxruntime on the cpu"):
        open_engine(int8_bundle, "text", backend="torch", precision="int8")


def test_int8_is_not_used_without_passed_gates_or_from_other_weights(int8_bundle: Path, tmp_path: Path) -> None:
    from jemc_infer.engines import open_engine

    bundle = _copy(int8_bundle, tmp_path)
    update_manifest(bundle, lambda m: m["graphs"]["text.int8"].update(source={"weights_sha256": "0" * 64}))
    engine, why = open_engine(bundle, "text", device="cpu")
    assert ", fp32 (" in why and "stale" in why
    engine.close()
    update_manifest(bundle, lambda m: m["graphs"]["text.int8"].update(source=m["graphs"]["text"]["source"], retrieval_parity=None))
    assert gated_int8(bundle)[0] is None
    with pytest.raises(BundleError, match="no passed parity gates"):
        open_engine(bundle, "text", device="cpu", precision="int8")


def test_query_uses_int8_and_finds_the_same_videos(int8_bundle: Path, held_out_data: Path, tmp_path: Path) -> None:
    """A known case: 40 held-out videos embedded by the video graph, asked with their own captions."""
    import onnxruntime as ort

    from jemc_infer.bundle import read_bundle
    from jemc_infer.embed import index_settings
    from jemc_infer.index.store import Index, VideoRecord
    from jemc_infer.query import query
    from jemc_infer.train.data import open_dataset
    from jemc_infer.video.sampling import Sampling

    bundle = read_bundle(int8_bundle)
    ds = open_dataset(held_out_data)
    sp = ds.split("test")
    videos = list(sp.videos[:40])
    feats, masks = ds.gather(videos, bundle.config.features)
    entry = graph_entry(int8_bundle, "video")
    inputs = {t.name: (masks[t.name[:-5]] if t.dtype == "bool" else feats[t.name]) for t in entry.spec.inputs}
    rows = np.concatenate(ort.InferenceSession(str(int8_bundle / entry.path), providers=["CPUExecutionProvider"]).run(None, inputs), axis=1)
    with Index.open(tmp_path / "ix", index_settings(bundle, Sampling(), "float32"), writer=True) as index:
        index.add_shard(rows.astype(np.float32), [VideoRecord(f"v{i}.mp4", 1, 0, f"{i:032x}", 10.0, "ok") for i in range(len(videos))])
    texts = [c for c, v in zip(sp.captions, sp.caption_video, strict=True) if v < 40][:20]
    said: list[str] = []
    int8_hits, _ = query(tmp_path / "ix", texts, k=5, model=int8_bundle, device="cpu", on_engine=said.append)
    fp32_hits, _ = query(tmp_path / "ix", texts, k=5, model=int8_bundle, device="cpu", precision="fp32")
    assert ", int8 (" in said[0]
    top = [[h.path for h in hits] for hits in int8_hits]
    assert [h[0] for h in top] == [hits[0].path for hits in fp32_hits]  # the same best video for every caption
    for a, b in zip(int8_hits, fp32_hits, strict=True):
        assert abs(a[0].score - b[0].score) < 0.05
    from typer.testing import CliRunner

    from jemc_infer.cli import app

    r = CliRunner().invoke(app, ["query", texts[0], "--index", str(tmp_path / "ix"), "--model", str(int8_bundle), "-k", "3",
                                 "--json", "--verbose"])
    assert r.exit_code == 0, r.output
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["path"].split("/")[-1] for x in lines] == [p.split("/")[-1] for p in top[0][:3]]
    assert all(", int8 (" in x["text_engine"] for x in lines)
    assert "text: onnxruntime on CPUExecutionProvider, int8" in r.stderr


def test_cli_export_and_query_say_int8(int8_bundle: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from jemc_infer.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["export", str(int8_bundle), "--text-int8"])
    assert r.exit_code == 1 and "--text-int8 | no held-out data | expected --eval-data DATA" in r.output
    r = runner.invoke(app, ["export", str(int8_bundle), "--to", "tensorrt", "--text-int8"])
    assert r.exit_code == 1 and "expected --to onnx" in r.output
