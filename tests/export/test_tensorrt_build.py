"""Building TensorRT engines from a bundle: against the faithful fake here, against the real thing on a GPU.

The fakes (``tests/fakes``) stand in for ``tensorrt``/``pycuda`` only inside the ``gpu`` fixture;
tests marked ``tensorrt`` use the real libraries when they are importable (scripts/gpu_check.sh).
"""

from __future__ import annotations

import hashlib
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from support.fake_gpu import harness as load_harness

pytest.importorskip("torch")  # the test bundle's graph is exported from a torch model

import jemc_infer.engines.tensorrt as trt_engine  # noqa: E402
from jemc_infer.errors import BackendUnavailableError, BundleError, InputError  # noqa: E402
from jemc_infer.export import tensorrt as trt_export  # noqa: E402
from jemc_infer.export.specs import ShapeLimits  # noqa: E402
from jemc_infer.export.tensorrt import build_engine, engine_key  # noqa: E402
from jemc_infer.manifest import graph_entry, read_manifest, update_manifest  # noqa: E402

harness = load_harness()

TRT_INSTALL = "pip install --extra-index-url https://pypi.nvidia.com tensorrt-cu13"


@pytest.fixture()
def bundle(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    return harness.copy_bundle(harness.template_bundle(tmp_path_factory), tmp_path / "bundle")


@pytest.fixture()
def gpu(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    with harness.fake_gpu() as fake:
        monkeypatch.setattr(trt_engine, "_load_libcuda", lambda: fake.libcuda)
        yield fake


def calibration_batches(n: int = 3, batch: int = 16):  # noqa: ANN201
    calls = []

    def source() -> list[dict[str, np.ndarray]]:
        calls.append(1)
        return [harness.text_batch(batch, seed=i) for i in range(n)]

    return source, calls


# --- building -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("precision,flags", [("fp32", []), ("fp16", ["FP16"])])
def test_build_records_what_the_engine_is_bound_to(gpu, bundle: Path, precision: str, flags: list[str]) -> None:
    entry = build_engine(bundle, "text", precision)
    graph = read_manifest(bundle)["graphs"]["text"]
    onnx_sha = graph_entry(bundle, "text").sha256
    assert onnx_sha == graph["files"]["onnx/text.onnx"]
    key = engine_key(onnx_sha, "10.13.0.35", "NVIDIA H100 80GB HBM3", "9.0", precision, entry["profiles"])
    assert read_manifest(bundle)["engines"] == {key: entry}
    assert entry["file"] == f"engines/{key}.plan" and len(key) == 16
    assert entry["sha256"] == hashlib.sha256((bundle / entry["file"]).read_bytes()).hexdigest()
    assert (entry["graph"], entry["onnx_sha256"], entry["precision"], entry["flags"]) == ("text", onnx_sha, precision, flags)
    assert (entry["tensorrt"], entry["gpu"], entry["compute_capability"]) == ("10.13.0.35", "NVIDIA H100 80GB HBM3", "9.0")
    assert entry["spec"] == graph["spec"] and entry["limits"]["max_batch"] == 64 and "calibration" not in entry
    assert entry["built"].endswith("+00:00")
    build = gpu.trt.BUILDS[-1]
    assert build["ok"] and build["flags"] == flags and build["workspace"] == 4 << 30


def test_one_profile_covers_every_dynamic_axis_from_the_limits(gpu, bundle: Path) -> None:
    entry = build_engine(bundle, "text", "fp16")
    assert entry["profiles"] == [{"ids": {"min": [1, 1], "opt": [16, 16], "max": [64, 64]},
                                  "lengths": {"min": [1], "opt": [16], "max": [64]}}]
    assert gpu.trt.BUILDS[-1]["profiles"] == [{"ids": ((1, 1), (16, 16), (64, 64)), "lengths": ((1,), (16,), (64,))}]
    small = build_engine(bundle, "text", "fp16", limits=ShapeLimits(max_batch=8, max_seq=12, opt_batch=4, opt_seq=6))
    assert small["profiles"][0]["ids"] == {"min": [1, 1], "opt": [4, 6], "max": [8, 12]}
    assert small["file"] != entry["file"] and len(read_manifest(bundle)["engines"]) == 2


def test_inconsistent_limits_are_refused_before_tensorrt(gpu, bundle: Path) -> None:
    with pytest.raises(InputError, match=r"ShapeLimits \| text axis 'seq': min 1, opt 16, max 4 \| expected 1 <= min <= opt <= max"):
        build_engine(bundle, "text", "fp16", limits=ShapeLimits(max_seq=4))
    assert gpu.trt.BUILDS == []


def test_timing_cache_is_saved_and_reloaded(gpu, bundle: Path) -> None:
    first = build_engine(bundle, "text", "fp16")
    cache = bundle / "engines" / "timing.cache"
    assert cache.is_file() and first["timing_cache"] == {"file": "engines/timing.cache", "loaded": False}
    timed = gpu.trt.BUILDS[-1]["timing_cache_new"]
    assert timed > 0 and gpu.trt.BUILDS[-1]["timing_cache_hits"] == 0
    second = build_engine(bundle, "text", "fp16")
    assert second["timing_cache"]["loaded"] is True
    assert (gpu.trt.BUILDS[-1]["timing_cache_hits"], gpu.trt.BUILDS[-1]["timing_cache_new"]) == (timed, 0)


def test_a_timing_cache_from_another_gpu_is_replaced(gpu, bundle: Path) -> None:
    build_engine(bundle, "text", "fp16")
    gpu.cuda.MACHINE.devices[0] = ("NVIDIA A100-SXM4-80GB", (8, 0), 80 << 30)
    entry = build_engine(bundle, "text", "fp16")
    assert entry["timing_cache"]["loaded"] is False and entry["compute_capability"] == "8.0"
    assert "NVIDIA A100-SXM4-80GB" in (bundle / "engines" / "timing.cache").read_text()


def test_int8_calibrates_writes_the_cache_and_reuses_it(gpu, bundle: Path) -> None:
    source, calls = calibration_batches(n=3)
    info = {"data": "msrvtt val captions", "count": 48}
    first = build_engine(bundle, "text", "int8", calibration=source, calibration_info=info)
    rec = first["calibration"]
    assert first["flags"] == ["FP16", "INT8"] and len(calls) == 1
    assert rec["file"] == first["file"].replace(".plan", ".calib") and rec["batches"] == 3 and rec["info"] == info
    assert rec["shapes"] == {"ids": [16, 10], "lengths": [16]} and rec["reused"] is False
    calib = bundle / rec["file"]
    assert rec["sha256"] == hashlib.sha256(calib.read_bytes()).hexdigest()
    assert calib.read_text().startswith("TRT-101300-EntropyCalibration2\n")
    assert gpu.trt.BUILDS[-1]["calibrator_calls"] == ["get_algorithm", "read_calibration_cache", "get_batch_size",
                                                      "get_batch", "get_batch", "get_batch", "get_batch", "write_calibration_cache"]

    second = build_engine(bundle, "text", "int8", calibration=source, calibration_info=info)
    assert len(calls) == 1, "a vouched-for calibration cache is reused without calling calibration()"
    assert gpu.trt.BUILDS[-1].get("calibration_cache_used") and "get_batch" not in gpu.trt.BUILDS[-1]["calibrator_calls"]
    assert second["calibration"] == {**rec, "reused": True}

    third = build_engine(bundle, "text", "int8", calibration=source, calibration_info={"data": "other"})
    assert len(calls) == 2 and third["calibration"]["reused"] is False  # other data: calibrate again


def test_a_calibration_cache_the_manifest_does_not_vouch_for_is_not_read(gpu, bundle: Path) -> None:
    source, calls = calibration_batches(n=2)
    rec = build_engine(bundle, "text", "int8", calibration=source)["calibration"]
    (bundle / rec["file"]).write_text("TRT-101300-EntropyCalibration2\ntext_object: 3f800000\ntext_activity: 3f800000\n")
    again = build_engine(bundle, "text", "int8", calibration=source)
    assert len(calls) == 2 and again["calibration"]["batches"] == 2 and again["calibration"]["sha256"] == rec["sha256"]


def test_int8_without_calibration_is_refused(gpu, bundle: Path) -> None:
    with pytest.raises(InputError, match=r"int8 engine \| no calibration data \| expected calibration="):
        build_engine(bundle, "text", "int8")


@pytest.mark.parametrize("bad,match", [
    (lambda b: {**b, "ids": b["ids"][:, :5]}, r"calibration batch 1 \| ids: shape \[16, 5\] \| expected \[16, 10\], the first batch's"),
    (lambda b: {"ids": b["ids"]}, r"calibration batch 1 \| \['ids'\] \| expected a dict with exactly the inputs \['ids', 'lengths'\]"),
    (lambda b: {**b, "lengths": b["lengths"].astype(np.int32)}, r"calibration batch 1 \| lengths: int32 \| expected a int64 array"),
])
def test_malformed_calibration_batches_stop_with_a_clear_error(gpu, bundle: Path, bad, match: str) -> None:
    good = harness.text_batch(16)
    # The error happens inside TensorRT's get_batch callback: it must come out as our error, not escape into "C++".
    with pytest.raises(InputError, match=match):
        build_engine(bundle, "text", "int8", calibration=lambda: [good, bad(good)])
    assert read_manifest(bundle)["engines"] == {}


def test_unknown_precision_is_refused(bundle: Path) -> None:
    with pytest.raises(InputError, match=r"precision \| 'bf16' \| expected one of \['fp32', 'fp16', 'int8'\]"):
        build_engine(bundle, "text", "bf16")


# --- refusing bad inputs ----------------------------------------------------------------------------------------


def test_a_modified_onnx_graph_is_never_built(gpu, bundle: Path) -> None:
    onnx_file = bundle / "onnx" / "text.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:-10])
    with pytest.raises(BundleError, match=r"text\.onnx \| sha256 .* modified or truncated"):
        build_engine(bundle, "text", "fp16")
    assert gpu.trt.BUILDS == []


def test_parser_errors_name_each_failing_node(gpu, bundle: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["ids"], ["x"], name="keep"),
         helper.make_node("FancyOp", ["x"], ["text_object"], name="custom_1", domain="com.example")],
        "bad", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("text_object", TensorProto.INT64, ["batch", "seq"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    data = model.SerializeToString()
    (bundle / "onnx" / "bad.onnx").write_bytes(data)
    spec = {"name": "bad", "inputs": [{"name": "ids", "dtype": "int64", "shape": ["batch", "seq"]}],
            "outputs": [{"name": "text_object", "dtype": "int64", "shape": ["batch", "seq"]}]}
    update_manifest(bundle, lambda m: m["graphs"].__setitem__(
        "bad", {"files": {"onnx/bad.onnx": hashlib.sha256(data).hexdigest()}, "precision": "fp32", "spec": spec}))
    assert onnx.load_from_string(data).graph.node[1].domain == "com.example"
    with pytest.raises(BundleError, match=r"bad\.onnx \| TensorRT 10\.13\.0\.35's ONNX parser failed: node 1 \(FancyOp 'custom_1'\): "
                                          r"No importer registered for op: FancyOp \| expected a graph it can parse"):
        build_engine(bundle, "bad", "fp16")


def test_a_missing_graph_says_how_to_export_it(gpu, bundle: Path) -> None:
    with pytest.raises(BundleError, match=r"no exported 'video' graph \(has: text\)"):
        build_engine(bundle, "video", "fp16")


def test_engine_host_code_is_never_allowed(gpu, bundle: Path) -> None:
    entry = build_engine(bundle, "text", "fp16")
    with trt_engine.TensorrtEngine.from_bundle(bundle, "text", "fp16") as engine:
        engine.run(harness.text_batch(3))
    assert gpu.trt.HOST_CODE_REQUESTS == [] and entry["sha256"]


def test_find_engine_is_reexported() -> None:
    assert trt_export.find_engine is trt_engine.find_engine


# --- missing libraries -------------------------------------------------------------------------------------------


def test_missing_tensorrt_is_one_line_saying_how_to_get_it(monkeypatch: pytest.MonkeyPatch, bundle: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError
    with pytest.raises(BackendUnavailableError) as info:
        build_engine(bundle, "text", "fp16")
    assert "\n" not in str(info.value) and str(info.value).startswith("tensorrt | not importable") and TRT_INSTALL in str(info.value)
    assert isinstance(info.value, ImportError)


def test_type_stubs_alone_are_not_tensorrt(monkeypatch: pytest.MonkeyPatch, bundle: Path) -> None:
    stubs_only = types.ModuleType("tensorrt")  # what tensorrt-stubs' .pyi folder imports as: an empty namespace
    monkeypatch.setitem(sys.modules, "tensorrt", stubs_only)
    with pytest.raises(BackendUnavailableError, match=r"^tensorrt \| only type stubs \(tensorrt-stubs\) are installed, not TensorRT \| expected TensorRT 10: pip install"):
        build_engine(bundle, "text", "fp16")


def test_missing_pycuda_is_one_line(gpu, bundle: Path) -> None:
    # Plain edits, not monkeypatch: the gpu fixture removes every pycuda* entry when it ends, and
    # monkeypatch's undo would put the fake pycuda.driver back into sys.modules after that.
    for name in [n for n in sys.modules if n == "pycuda" or n.startswith("pycuda.")]:
        del sys.modules[name]
    sys.modules["pycuda"] = None  # type: ignore[assignment]  # `import pycuda.driver` raises ImportError
    with pytest.raises(BackendUnavailableError) as info:
        build_engine(bundle, "text", "fp16")
    assert "\n" not in str(info.value) and "pycuda | not importable" in str(info.value) and "[gpu]" in str(info.value)


# --- the real TensorRT (GPU machines: pytest -m tensorrt) ----------------------------------------------------------


def _real_gpu() -> None:
    trt = pytest.importorskip("tensorrt")
    if not hasattr(trt, "Builder"):
        pytest.skip("only tensorrt-stubs is installed, not TensorRT")
    pytest.importorskip("pycuda.driver")


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_real_tensorrt_build_matches_onnxruntime(bundle: Path, precision: str) -> None:
    _real_gpu()
    import onnxruntime as ort

    source, _ = calibration_batches(n=4)
    entry = build_engine(bundle, "text", precision, limits=ShapeLimits(max_batch=16, max_seq=16, opt_batch=8, opt_seq=10),
                         calibration=source if precision == "int8" else None, workspace_gb=1.0)
    assert (bundle / "engines" / "timing.cache").is_file() and json.dumps(entry)
    session = ort.InferenceSession(str(bundle / "onnx" / "text.onnx"), providers=["CPUExecutionProvider"])
    atol = {"fp32": 1e-4, "fp16": 1e-2, "int8": 5e-2}[precision]
    with trt_engine.TensorrtEngine.from_bundle(bundle, "text", precision) as engine:
        assert engine.provider.startswith("TensorRT ") and f"({precision})" in engine.provider
        for n in (1, 7):
            batch = harness.text_batch(n)
            got = engine.run(batch)
            want = dict(zip([o.name for o in session.get_outputs()], session.run(None, batch), strict=True))
            for name in want:
                np.testing.assert_allclose(got[name], want[name], atol=atol)


# --- every graph of a bundle ----------------------------------------------------------------------------------


def test_engine_precision_keeps_int8_where_there_is_calibration_data() -> None:
    assert [trt_export.engine_precision(g, "int8") for g in ("text", "video", "resnet", "i3d", "audio")] == \
        ["int8", "int8", "fp16", "fp16", "fp16"]
    assert trt_export.engine_precision("resnet", "fp32") == "fp32" and trt_export.engine_precision("text", "fp16") == "fp16"


def test_build_engines_builds_every_exported_graph(gpu, bundle: Path, tmp_path: Path) -> None:
    from jemc_infer.train.synthetic import synthesize

    with pytest.raises(InputError, match=r"int8 engines \| no calibration data \| expected a feature dataset"):
        trt_export.build_engines(bundle, "int8")
    data = synthesize(tmp_path / "data", n_train=40, n_val=2, n_test=2, captions_per_video=3,
                      feature_dims={"resnet": 12, "i3d": 6, "audio": 4}, seed=3)
    built = []
    records = trt_export.build_engines(bundle, "int8", ShapeLimits(max_batch=16, max_seq=24), calibration_data=data.path,
                                       calibration_count=3, on_built=lambda g, r: built.append((g, r["precision"])))
    assert built == [("text", "int8")] and set(records) == {"text"}
    calib = records["text"]["calibration"]
    assert calib["batches"] == 3 and calib["shapes"] == {"ids": [16, 24], "lengths": [16]} and calib["info"]["split"] == "train"
    with pytest.raises(BundleError, match=r"no exported ONNX graph \| expected the graphs exported first"):
        trt_export.build_engines(tmp_path / "data", "fp16")
