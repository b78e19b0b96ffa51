"""The TensorRT engine: parity with onnxruntime and torch, buffers, CUDA graphs, and every refusal.

Runs against the faithful fakes (``tests/fakes``) here; the ``tensorrt``-marked tests at the end use
the real TensorRT and pycuda on a GPU machine. The "fake contract" tests show the fakes catch the
mistakes a real GPU would (a forgotten address, a missing synchronize, a freed buffer, ...).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
from support.fake_gpu import harness as load_harness

torch = pytest.importorskip("torch")  # the test bundle's graph is exported from a torch model; torch is a reference

import jemc_infer.engines.tensorrt as trt_engine  # noqa: E402
from jemc_infer.errors import BackendUnavailableError, BundleError, EngineMismatchError, InputShapeError, JemcError  # noqa: E402
from jemc_infer.export.specs import ShapeLimits  # noqa: E402
from jemc_infer.export.tensorrt import build_engine  # noqa: E402
from jemc_infer.manifest import read_manifest, update_manifest  # noqa: E402
from jemc_infer.specs import GraphSpec  # noqa: E402

TensorrtEngine = trt_engine.TensorrtEngine

harness = load_harness()

H100 = ("NVIDIA H100 80GB HBM3", (9, 0), 80 << 30)


@pytest.fixture()
def bundle(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    return harness.copy_bundle(harness.template_bundle(tmp_path_factory), tmp_path / "bundle")


@pytest.fixture()
def gpu(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    with harness.fake_gpu() as fake:
        monkeypatch.setattr(trt_engine, "_load_libcuda", lambda: fake.libcuda)
        yield fake


def onnxruntime_reference(bundle: Path, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(bundle / "onnx" / "text.onnx"), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, batch), strict=True))


def torch_reference(bundle: Path, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from jemc_infer.nn import model_from_bundle

    with torch.no_grad():
        out = model_from_bundle(bundle).encode_text(torch.from_numpy(batch["ids"]), torch.from_numpy(batch["lengths"]))
    return {f"text_{name}": v.numpy() for name, v in out.items()}


def int8_source():  # noqa: ANN201
    return lambda: [harness.text_batch(16, seed=i) for i in range(3)]


# --- results ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("precision,atol", [("fp32", 1e-6), ("fp16", 2e-3), ("int8", 1e-2)])
@pytest.mark.parametrize("n", [1, 7])
def test_results_equal_onnxruntime_and_torch(gpu, bundle: Path, precision: str, atol: float, n: int) -> None:
    build_engine(bundle, "text", precision, calibration=int8_source() if precision == "int8" else None)
    batch = harness.text_batch(n, seed=3)
    assert n == 1 or list(batch["lengths"]) != sorted(batch["lengths"], reverse=True)  # unsorted, as real batches are
    with TensorrtEngine.from_bundle(bundle, "text", precision) as engine:
        got = engine.run(batch)
    for ref in (onnxruntime_reference(bundle, batch), torch_reference(bundle, batch)):
        assert set(got) == set(ref)
        for name in ref:
            assert got[name].shape == (n, 10) and got[name].dtype == np.float32
            np.testing.assert_allclose(got[name], ref[name], atol=atol, rtol=0)


def test_provider_and_metadata(gpu, bundle: Path) -> None:
    build_engine(bundle, "text", "fp16")
    with TensorrtEngine.from_bundle(bundle, "text", "fp16") as engine:
        assert engine.backend == "tensorrt"
        assert engine.provider == "TensorRT 10.13.0.35 (fp16) on NVIDIA H100 80GB HBM3"
        assert engine.input_names == ("ids", "lengths") and engine.output_names == ("text_object", "text_activity")
    ctx = gpu.cuda.MACHINE.context_stack
    assert len(ctx) == 1 and ctx[0].primary and gpu.cuda.MACHINE.contexts_created == 0  # the primary context, no second one


def test_one_call_is_copies_execute_copies_then_synchronize_on_pinned_memory(gpu, bundle: Path) -> None:
    build_engine(bundle, "text", "fp16")
    with TensorrtEngine.from_bundle(bundle, "text", "fp16") as engine:
        engine.run(harness.text_batch(4))
        assert engine._stream.executed == ["memcpy_htod", "memcpy_htod", "execute_async_v3", "memcpy_dtoh", "memcpy_dtoh"]
    stats = gpu.cuda.MACHINE.stats
    assert stats["pageable_dtoh"] == 0 and stats["dtoh"] == 2  # outputs land in page-locked buffers, asynchronously


def test_device_buffers_grow_only_when_they_must(gpu, bundle: Path) -> None:
    build_engine(bundle, "text", "fp16")
    stats = gpu.cuda.MACHINE.stats
    with TensorrtEngine.from_bundle(bundle, "text", "fp16") as engine:
        engine.run(harness.text_batch(7))
        first = stats["mem_alloc"]
        assert first == 4  # ids, lengths, two outputs
        for n in (3, 1, 7):
            engine.run(harness.text_batch(n))
        assert stats["mem_alloc"] == first
        out = engine.run(harness.text_batch(60))
        assert stats["mem_alloc"] > first and out["text_object"].shape == (60, 10)
    assert gpu.cuda.MACHINE.allocations == {} and stats["free"] == stats["mem_alloc"]


def test_close_frees_everything_and_is_idempotent(gpu, bundle: Path) -> None:
    build_engine(bundle, "text", "fp16")
    engine = TensorrtEngine.from_bundle(bundle, "text", "fp16", use_cuda_graph=True)
    engine.run(harness.text_batch(2))
    engine.close()
    engine.close()
    assert gpu.cuda.MACHINE.allocations == {} and gpu.libcuda.live == (0, 0)
    with pytest.raises(JemcError, match=r"closed \| expected an open engine"):
        engine.run(harness.text_batch(2))


# --- CUDA graphs -------------------------------------------------------------------------------------------------


def test_cuda_graph_is_captured_once_per_shape_and_replayed(gpu, bundle: Path) -> None:
    build_engine(bundle, "text", "fp16")
    lib = gpu.libcuda
    a, b = harness.text_batch(7, seed=0), harness.text_batch(7, seed=1)
    assert a["ids"].shape == b["ids"].shape and not np.array_equal(a["ids"], b["ids"])
    with TensorrtEngine.from_bundle(bundle, "text", "fp16", use_cuda_graph=True) as graphed, \
            TensorrtEngine.from_bundle(bundle, "text", "fp16") as eager:
        out_a = graphed.run(a)
        assert (lib.captures, lib.launches) == (1, 0)  # first call: eager enqueue (its result), then capture
        out_b = graphed.run(b)
        assert (lib.captures, lib.launches) == (1, 1)
        assert graphed._stream.executed[-3:] == ["graph:execute_async_v3", "memcpy_dtoh", "memcpy_dtoh"]
        for batch, out in ((a, out_a), (b, out_b)):  # the replay computed b, not a stale a
            want = eager.run(batch)
            for name in want:
                np.testing.assert_array_equal(out[name], want[name])
        graphed.run(harness.text_batch(3))
        graphed.run(a)
        assert (lib.captures, lib.launches) == (2, 2) and lib.live == (2, 2)
        graphed.run(harness.text_batch(50))  # the buffers grow: old graphs hold stale addresses and go
        assert lib.captures == 3 and lib.live == (1, 1)
    assert lib.live == (0, 0)


# --- refusals ------------------------------------------------------------------------------------------------------


def test_shapes_outside_the_profile_are_refused_with_its_bounds(gpu, bundle: Path) -> None:
    build_engine(bundle, "text", "fp16", limits=ShapeLimits(max_batch=8, max_seq=12, opt_batch=4, opt_seq=6))
    with TensorrtEngine.from_bundle(bundle, "text", "fp16") as engine:
        with pytest.raises(InputShapeError, match=r"text\.ids \| shape \[9, 10\] \| expected within the engine's optimisation profile, "
                                                  r"min \[1, 1\] max \[8, 12\] \(split the batch, or rebuild"):
            engine.run(harness.text_batch(9))
        batch = harness.text_batch(2)
        long = {"ids": np.zeros((2, 13), np.int64), "lengths": batch["lengths"]}
        with pytest.raises(InputShapeError, match=r"text\.ids \| shape \[2, 13\] \| .* max \[8, 12\]"):
            engine.run(long)
        assert engine.run(batch)["text_object"].shape == (2, 10)  # still usable afterwards


@pytest.mark.parametrize("what", ["tensorrt", "gpu", "compute capability"])
def test_an_engine_for_another_machine_is_refused_with_the_reason(gpu, bundle: Path, what: str) -> None:
    key = build_engine(bundle, "text", "fp16")["file"].split("/")[1].removesuffix(".plan")
    built = "TensorRT 10.13.0.35 on NVIDIA H100 80GB HBM3 (9.0)"
    if what == "tensorrt":
        gpu.trt._set_version("10.14.1.48")
        here = "TensorRT 10.14.1.48 on NVIDIA H100 80GB HBM3 (9.0)"
    elif what == "gpu":
        gpu.cuda.MACHINE.devices[0] = ("NVIDIA H100 PCIe", (9, 0), 80 << 30)
        here = "TensorRT 10.13.0.35 on NVIDIA H100 PCIe (9.0)"
    else:
        gpu.cuda.MACHINE.devices[0] = ("NVIDIA A100-SXM4-80GB", (8, 0), 80 << 30)
        here = "TensorRT 10.13.0.35 on NVIDIA A100-SXM4-80GB (8.0)"
    with pytest.raises(EngineMismatchError) as info:
        TensorrtEngine.from_bundle(bundle, "text", "fp16")
    assert f"engine {key} built for {built}, this machine has {here}" in str(info.value)
    assert "rebuild with jemc_infer.export.tensorrt.build_engine on this machine, or use onnxruntime" in str(info.value)


def test_the_engine_built_for_this_machine_is_chosen(gpu, bundle: Path) -> None:
    gpu.cuda.MACHINE.devices[0] = ("NVIDIA A100-SXM4-80GB", (8, 0), 80 << 30)
    a100 = build_engine(bundle, "text", "fp16")
    gpu.cuda.MACHINE.devices[0] = H100
    h100 = build_engine(bundle, "text", "fp16")
    path, entry = trt_engine.find_engine(bundle, "text", "fp16")
    assert entry == h100 and path == bundle / h100["file"] and a100["file"] != h100["file"]


def test_no_engine_at_that_precision(gpu, bundle: Path) -> None:
    build_engine(bundle, "text", "fp16")
    with pytest.raises(EngineMismatchError, match=r"no TensorRT engine for the 'text' graph at int8 \(engines: text \(fp16\)\)"):
        TensorrtEngine.from_bundle(bundle, "text", "int8")


def test_an_engine_from_a_replaced_onnx_graph_is_stale(gpu, bundle: Path) -> None:
    build_engine(bundle, "text", "fp16")
    onnx_file = bundle / "onnx" / "text.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes() + b"\x00")  # a re-export: new bytes, manifest updated
    sha = hashlib.sha256(onnx_file.read_bytes()).hexdigest()
    update_manifest(bundle, lambda m: m["graphs"]["text"]["files"].__setitem__("onnx/text.onnx", sha))
    with pytest.raises(EngineMismatchError, match=rf"built from ONNX .*, the bundle's 'text' graph is now {sha[:12]}"):
        TensorrtEngine.from_bundle(bundle, "text", "fp16")


def test_a_tampered_plan_is_never_deserialized(gpu, bundle: Path) -> None:
    entry = build_engine(bundle, "text", "fp16")
    plan = bundle / entry["file"]
    data = bytearray(plan.read_bytes())
    data[len(data) // 2] ^= 0xFF
    plan.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"\.plan \| sha256 .* modified or truncated, and a plan is executable code, so it is refused"):
        TensorrtEngine.from_bundle(bundle, "text", "fp16")
    spec = GraphSpec.from_json(entry["spec"])
    with pytest.raises(BundleError, match=r"\.plan \| sha256 .* loaded only with the hash its manifest records"):
        TensorrtEngine(plan, spec, sha256=entry["sha256"])


def test_bytes_tensorrt_did_not_make_are_refused_even_with_a_matching_hash(gpu, bundle: Path) -> None:
    entry = build_engine(bundle, "text", "fp16")
    plan = bundle / entry["file"]
    plan.write_bytes(b"not a TensorRT plan")
    with pytest.raises(EngineMismatchError, match=r"TensorRT 10\.13\.0\.35 cannot load it \(Error Code 1: Serialization"):
        TensorrtEngine(plan, GraphSpec.from_json(entry["spec"]), sha256=hashlib.sha256(b"not a TensorRT plan").hexdigest())


def test_an_engine_whose_tensors_differ_from_the_spec_is_refused(gpu, bundle: Path) -> None:
    entry = build_engine(bundle, "text", "fp16")
    spec = GraphSpec.from_json({**entry["spec"], "outputs": entry["spec"]["outputs"][:1]})
    with pytest.raises(EngineMismatchError, match=r"engine inputs \['ids', 'lengths'\], outputs \['text_activity', 'text_object'\] \| "
                                                  r"expected the 'text' graph's inputs \['ids', 'lengths'\], outputs \['text_object'\]"):
        TensorrtEngine(bundle / entry["file"], spec, sha256=entry["sha256"])


def test_missing_tensorrt_is_one_line(monkeypatch: pytest.MonkeyPatch, bundle: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailableError) as info:
        TensorrtEngine.from_bundle(bundle, "text", "fp16")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("tensorrt | not importable")
    assert msg.endswith("expected TensorRT 10: pip install --extra-index-url https://pypi.nvidia.com tensorrt-cu13")


def test_engines_in_the_manifest_stay_json(gpu, bundle: Path) -> None:
    build_engine(bundle, "text", "int8", calibration=int8_source(), calibration_info={"n": 3})
    (entry,) = read_manifest(bundle)["engines"].values()
    assert entry["calibration"]["info"] == {"n": 3} and entry["precision"] == "int8"


# --- the fakes catch what a GPU would: each mistake below fails ---------------------------------------------------


def _manual_run(fake, plan: bytes, batch: dict[str, np.ndarray], mistake: str | None = None):  # noqa: ANN202
    """The steps the engine takes, by hand through the fake APIs, with one step optionally done wrong."""
    import pycuda.autoprimaryctx  # noqa: F401

    trt, cuda = fake.trt, fake.cuda
    errors: list[str] = []

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity, msg: str) -> None:  # noqa: ANN001
            errors.append(msg)

    engine = trt.Runtime(Logger()).deserialize_cuda_engine(plan)
    ctx = engine.create_execution_context()
    stream = cuda.Stream()
    dev, host = {}, {}
    for name, x in batch.items():
        assert ctx.set_input_shape(name, x.shape)
        dev[name] = cuda.mem_alloc(x.nbytes)
        cuda.memcpy_htod_async(dev[name], x, stream)
    for name in ("text_object", "text_activity"):
        host[name] = cuda.pagelocked_empty(tuple(ctx.get_tensor_shape(name)), np.float32)
        dev[name] = cuda.mem_alloc(host[name].nbytes)
    for name, d in dev.items():
        if not (mistake == "no address for an output" and name == "text_activity"):
            ctx.set_tensor_address(name, int(d))
    ok = ctx.execute_async_v3(stream if mistake == "stream object" else stream.handle)
    for name, h in host.items():
        cuda.memcpy_dtoh_async(h, dev[name], stream)
    if mistake == "free before synchronize":
        dev["text_object"].free()
    if mistake != "no synchronize":
        stream.synchronize()
    return ok, host, errors


def test_fake_contract_the_right_steps_give_the_right_answer(gpu, bundle: Path) -> None:
    plan = (bundle / build_engine(bundle, "text", "fp32")["file"]).read_bytes()
    batch = harness.text_batch(5)
    ok, out, errors = _manual_run(gpu, plan, batch)
    assert ok and not errors
    for name, want in onnxruntime_reference(bundle, batch).items():
        np.testing.assert_allclose(out[name], want, atol=1e-6)


def test_fake_contract_each_mistake_fails(gpu, bundle: Path) -> None:
    plan = (bundle / build_engine(bundle, "text", "fp32")["file"]).read_bytes()
    batch = harness.text_batch(5)
    ok, _, errors = _manual_run(gpu, plan, batch, "no address for an output")
    assert not ok and "Neither address or allocator is set for output tensor text_activity" in errors[-1]
    ok, out, _ = _manual_run(gpu, plan, batch, "no synchronize")
    assert ok and np.all(out["text_object"].view(np.uint32) == 0xCDCDCDCD)  # the page-locked buffer still holds garbage
    with pytest.raises(gpu.cuda.LaunchError, match="illegal memory access"):
        _manual_run(gpu, plan, batch, "free before synchronize")
    with pytest.raises(TypeError, match="stream_handle must be an int"):
        _manual_run(gpu, plan, batch, "stream object")


def test_fake_contract_tensorrt_rules(gpu, bundle: Path) -> None:
    trt = gpu.trt
    logger = trt.Logger()
    builder = trt.Builder(logger)
    config = builder.create_builder_config()
    with pytest.raises(AttributeError, match="max_workspace_size"):  # removed in TensorRT 10
        config.max_workspace_size = 1 << 30
    with pytest.raises(TypeError, match="incompatible function arguments"):
        config.set_flag(0)  # an int is not a BuilderFlag
    with pytest.raises(ValueError, match="max input provided to optimization profile is invalid"):
        builder.create_optimization_profile().set_shape("ids", (1, 1), (16, 16), (8, 64))

    class NoBaseInit(trt.ILogger):
        def __init__(self) -> None:
            pass

    with pytest.raises(TypeError, match=r"NoBaseInit\.__init__\(\) must be called when overriding __init__"):
        trt.Builder(NoBaseInit())
    network = builder.create_network(0)
    assert trt.OnnxParser(network, logger).parse((bundle / "onnx" / "text.onnx").read_bytes())
    assert tuple(network.get_input(0).shape) == (-1, -1)  # dynamic dims are -1
    assert builder.build_serialized_network(network, config) is None  # dynamic inputs and no profile
    config.set_flag(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    profile.set_shape("ids", (1, 1), (4, 4), (8, 8))
    profile.set_shape("lengths", (1,), (4,), (8,))
    config.add_optimization_profile(profile)
    assert builder.build_serialized_network(network, config) is None  # INT8 without a calibrator
    runtime = trt.Runtime(logger)
    assert runtime.deserialize_cuda_engine(b"\x00" * 64) is None
    entry = build_engine(bundle, "text", "fp16")
    context = runtime.deserialize_cuda_engine((bundle / entry["file"]).read_bytes()).create_execution_context()
    assert context.set_input_shape("ids", (64, 64)) and not context.set_input_shape("ids", (65, 3))  # outside the profile
    assert not context.set_input_shape("ids", (4,))  # wrong rank
    assert gpu.trt.HOST_CODE_REQUESTS == []
    runtime.engine_host_code_allowed = True
    assert gpu.trt.HOST_CODE_REQUESTS == [True]  # what test_engine_host_code_is_never_allowed relies on


def test_fake_contract_capture_needs_an_enqueue_after_a_shape_change(gpu, bundle: Path) -> None:
    """What the engine's warm-up enqueue is for: capturing the first enqueue after a shape change fails."""
    entry = build_engine(bundle, "text", "fp16")
    with TensorrtEngine.from_bundle(bundle, "text", "fp16") as engine:
        engine.run(harness.text_batch(2))  # every address set, shapes for batch 2
        batch = harness.text_batch(3)
        for name, x in batch.items():
            engine._context.set_input_shape(name, x.shape)
        lib = trt_engine._libcuda()
        with pytest.raises(JemcError, match="execute_async_v3 failed .*first enqueue after an input shape change"):
            trt_engine._CudaGraph.capture(lib, engine._stream.handle, engine._execute)
        assert engine._stream._capture is None and entry  # the capture was ended despite the failure


# --- the real TensorRT (GPU machines: pytest -m tensorrt) -----------------------------------------------------------


@pytest.mark.tensorrt
def test_real_tensorrt_engine_with_cuda_graph(bundle: Path) -> None:
    trt = pytest.importorskip("tensorrt")
    if not hasattr(trt, "Builder"):
        pytest.skip("only tensorrt-stubs is installed, not TensorRT")
    pytest.importorskip("pycuda.driver")
    build_engine(bundle, "text", "fp16", limits=ShapeLimits(max_batch=16, max_seq=16, opt_batch=8, opt_seq=10), workspace_gb=1.0)
    with TensorrtEngine.from_bundle(bundle, "text", "fp16", use_cuda_graph=True) as graphed, \
            TensorrtEngine.from_bundle(bundle, "text", "fp16") as eager:
        for batch in (harness.text_batch(7, seed=0), harness.text_batch(7, seed=1), harness.text_batch(1)):
            got, want = graphed.run(batch), eager.run(batch)
            ref = onnxruntime_reference(bundle, batch)
            for name in ref:
                np.testing.assert_allclose(got[name], want[name], atol=1e-3)
                np.testing.assert_allclose(got[name], ref[name], atol=1e-2)
        with pytest.raises(InputShapeError, match=r"max \[16, 16\]"):
            eager.run(harness.text_batch(17))
