"""Native TensorRT engine (installed as ``jemc_infer.engines.tensorrt``): a serialized plan run with pycuda.

A plan is executable code built by one TensorRT release for one GPU architecture. It is loaded only
from a bundle's manifest, after the plan's sha256, the TensorRT version, the GPU and its compute
capability all match this machine (:func:`find_engine`), and this module never sets
``Runtime.engine_host_code_allowed``.

``tensorrt`` and ``pycuda`` are imported inside functions only, so this module imports anywhere and
says what is missing (one line) when one is needed. CUDA work runs in the primary context, shared
with torch and onnxruntime (``pycuda.autoprimaryctx``), on a stream of this engine's own.

CUDA graphs: pycuda (2026.1) wraps no graph API, so capture and replay call the CUDA driver library
through ctypes, on pycuda's ``Stream.handle``.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jemc_infer.bundle import sha256_file
from jemc_infer.engines.base import Engine
from jemc_infer.errors import INSTALL, BackendUnavailableError, BundleError, EngineMismatchError, InputShapeError, JemcError
from jemc_infer.manifest import graph_entry, read_manifest
from jemc_infer.specs import GraphSpec

if TYPE_CHECKING:
    import tensorrt as trt

_log = logging.getLogger(__name__)

MACHINE_FIELDS = ("tensorrt", "gpu", "compute_capability")  # what a plan is bound to
_CAPTURE_MODE_THREAD_LOCAL = 1  # CU_STREAM_CAPTURE_MODE_THREAD_LOCAL: other threads may keep calling CUDA


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def require_tensorrt() -> None:
    """Check that TensorRT's Python API can be imported.

    Raises:
        BackendUnavailableError: One line: what is missing and how to install it.
    """
    try:
        import tensorrt
    except (ImportError, OSError) as err:  # OSError: a bindings wheel without its shared libraries
        raise BackendUnavailableError(f"tensorrt | not importable ({_first_line(err)}) | expected TensorRT 10: {INSTALL['tensorrt']}") from None
    if not hasattr(tensorrt, "Builder"):
        # tensorrt-stubs alone leaves a tensorrt/ folder of .pyi files: an importable, empty namespace package
        raise BackendUnavailableError(f"tensorrt | only type stubs (tensorrt-stubs) are installed, not TensorRT | expected TensorRT 10: "
                                      f"{INSTALL['tensorrt']}")


def require_cuda() -> None:
    """Import pycuda and make the primary CUDA context current (never a second context).

    Raises:
        BackendUnavailableError: One line, if pycuda is missing or no GPU is usable.
    """
    try:
        import pycuda.driver  # noqa: F401
    except ImportError as err:
        raise BackendUnavailableError(f"pycuda | not importable ({_first_line(err)}) | expected {INSTALL['pycuda']}, and an NVIDIA driver") from None
    try:
        # Not pycuda.autoinit: that creates a second context beside the one torch/onnxruntime use.
        import pycuda.autoprimaryctx  # noqa: F401
    except Exception as err:  # pycuda raises its own error types, e.g. "no CUDA-capable device is detected"
        raise BackendUnavailableError(f"CUDA | no usable GPU ({_first_line(err)}) | expected an NVIDIA GPU and its driver") from None


def this_machine() -> dict[str, str]:
    """What a plan built here is bound to.

    Returns:
        ``{"tensorrt": "10.13.0.35", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}``.

    Raises:
        BackendUnavailableError: If TensorRT, pycuda or a GPU is missing.
    """
    require_tensorrt()
    require_cuda()
    import pycuda.driver as cuda
    import tensorrt as trt

    device = cuda.Context.get_device()  # the current context's device: the one TensorRT builds for
    major, minor = device.compute_capability()
    return {"tensorrt": trt.__version__, "gpu": str(device.name()), "compute_capability": f"{major}.{minor}"}


def make_logger() -> tuple[trt.ILogger, list[str]]:
    """A TensorRT logger that keeps error messages (for our exceptions) and forwards the rest to logging.

    Returns:
        The logger, and the list it appends TensorRT's error messages to.
    """
    import tensorrt as trt

    errors: list[str] = []

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)  # a pybind11 trampoline: TensorRT rejects it without the base __init__

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                errors.append(msg)
            elif severity == trt.ILogger.Severity.WARNING:
                _log.warning("TensorRT: %s", msg)
            else:
                _log.debug("TensorRT: %s", msg)

    return _Logger(), errors


def errors_text(errors: list[str]) -> str:
    """TensorRT's last error messages, on one line."""
    return " / ".join(" ".join(e.split()) for e in errors[-3:]) or "no message from TensorRT"


def _dims(d: trt.Dims) -> tuple[int, ...]:
    return tuple(int(d[i]) for i in range(len(d)))


def _describe(entry: dict[str, Any]) -> str:
    return f"TensorRT {entry.get('tensorrt')} on {entry.get('gpu')} ({entry.get('compute_capability')})"


def find_engine(bundle: Path, graph: str, precision: str) -> tuple[Path, dict[str, Any]]:
    """The bundle's TensorRT plan for ``graph`` at ``precision`` built for this machine, verified.

    Args:
        bundle: The model bundle directory.
        graph: The exported graph's name, e.g. ``"text"``.
        precision: ``"fp32"``, ``"fp16"`` or ``"int8"``.

    Returns:
        The plan's path (its sha256 checked against the manifest) and its manifest entry.

    Raises:
        BackendUnavailableError: If TensorRT, pycuda or a GPU is missing.
        EngineMismatchError: If no engine was built for this graph and precision on a machine like
            this one (TensorRT version, GPU, compute capability) from the bundle's current ONNX
            graph; the message says what differs. Callers fall back to onnxruntime.
        BundleError: If the plan file is missing or its sha256 differs from the manifest's.
    """
    bundle = Path(bundle)
    here = this_machine()
    engines = read_manifest(bundle)["engines"]
    candidates = {k: e for k, e in engines.items() if e.get("graph") == graph and e.get("precision") == precision}
    if not candidates:
        have = ", ".join(sorted(f"{e.get('graph')} ({e.get('precision')})" for e in engines.values())) or "none"
        raise EngineMismatchError(f"{bundle} | no TensorRT engine for the {graph!r} graph at {precision} (engines: {have}) | "
                                  "expected one built on this machine with jemc_infer.export.tensorrt.build_engine")
    onnx_sha = graph_entry(bundle, graph).sha256
    reasons, matches = [], []
    for key, e in candidates.items():
        differs = [f for f in MACHINE_FIELDS if str(e.get(f)) != here[f]]
        if differs:
            reasons.append(f"engine {key} built for {_describe(e)}, this machine has {_describe(here)}")
        elif e.get("onnx_sha256") != onnx_sha:
            reasons.append(f"engine {key} built from ONNX {str(e.get('onnx_sha256'))[:12]}…, the bundle's {graph!r} graph is now {onnx_sha[:12]}…")
        else:
            matches.append(e)
    if not matches:
        raise EngineMismatchError(f"{bundle} | {'; '.join(reasons)} | expected an engine built here from this graph: "
                                  "rebuild with jemc_infer.export.tensorrt.build_engine on this machine, or use onnxruntime")
    entry = max(matches, key=lambda e: str(e.get("built", "")))
    path = bundle / entry["file"]
    if not path.is_file():
        raise BundleError(f"{path} | missing | expected the TensorRT plan the manifest lists; rebuild it with build_engine")
    got = sha256_file(path)
    if got != entry["sha256"]:
        raise BundleError(f"{path} | sha256 {got[:12]}… | expected {entry['sha256'][:12]}… as the manifest records: modified or "
                          "truncated, and a plan is executable code, so it is refused; rebuild it with build_engine")
    return path, entry


# --- CUDA graphs through the driver API ------------------------------------------------------------------


def _load_libcuda() -> Any:
    """``ctypes.CDLL`` of the CUDA driver (the library pycuda itself links). Tests substitute a fake."""
    try:
        return ctypes.CDLL("libcuda.so.1")
    except OSError as err:
        raise BackendUnavailableError(f"libcuda.so.1 | not loadable ({_first_line(err)}) | expected an NVIDIA driver") from None


def _libcuda() -> Any:
    lib = _load_libcuda()
    vp, pvp = ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)
    # Declared signatures (cuda.h): without them ctypes passes handles as 32-bit ints.
    for name, args in (("cuStreamBeginCapture_v2", [vp, ctypes.c_int]), ("cuStreamEndCapture", [vp, pvp]),
                       ("cuGraphInstantiateWithFlags", [pvp, vp, ctypes.c_ulonglong]), ("cuGraphLaunch", [vp, vp]),
                       ("cuGraphExecDestroy", [vp]), ("cuGraphDestroy", [vp]),
                       ("cuGetErrorName", [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)])):
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, ctypes.c_int
    return lib


def _cuda_check(lib: Any, rc: int, what: str) -> None:
    if rc != 0:
        name = ctypes.c_char_p()
        lib.cuGetErrorName(rc, ctypes.byref(name))
        code = name.value.decode() if name.value else str(rc)
        raise JemcError(f"CUDA graph | {what} failed: {code} | expected a capturable engine; construct it with use_cuda_graph=False")


class _CudaGraph:
    """One captured ``execute_async_v3``: fixed shapes and fixed device addresses, replayed by launch."""

    def __init__(self, lib: Any, graph: ctypes.c_void_p, graph_exec: ctypes.c_void_p) -> None:
        self._lib, self._graph, self._exec = lib, graph, graph_exec

    @classmethod
    def capture(cls, lib: Any, stream_handle: int, work: Callable[[], None]) -> _CudaGraph:
        stream = ctypes.c_void_p(stream_handle)
        _cuda_check(lib, lib.cuStreamBeginCapture_v2(stream, _CAPTURE_MODE_THREAD_LOCAL), "cuStreamBeginCapture")
        graph = ctypes.c_void_p()
        try:
            work()
        except BaseException:
            # End the capture whatever happened: a stream left capturing rejects all later work.
            if lib.cuStreamEndCapture(stream, ctypes.byref(graph)) == 0 and graph.value:
                lib.cuGraphDestroy(graph)
            raise
        _cuda_check(lib, lib.cuStreamEndCapture(stream, ctypes.byref(graph)), "cuStreamEndCapture")
        graph_exec = ctypes.c_void_p()
        rc = lib.cuGraphInstantiateWithFlags(ctypes.byref(graph_exec), graph, 0)
        if rc != 0:
            lib.cuGraphDestroy(graph)
        _cuda_check(lib, rc, "cuGraphInstantiate")
        return cls(lib, graph, graph_exec)

    def launch(self, stream_handle: int) -> None:
        _cuda_check(self._lib, self._lib.cuGraphLaunch(self._exec, ctypes.c_void_p(stream_handle)), "cuGraphLaunch")

    def destroy(self) -> None:
        if self._exec.value:
            self._lib.cuGraphExecDestroy(self._exec)
            self._lib.cuGraphDestroy(self._graph)
            self._exec, self._graph = ctypes.c_void_p(), ctypes.c_void_p()


# --- the engine ----------------------------------------------------------------------------------------------


class TensorrtEngine(Engine):
    """Runs a TensorRT plan: device buffers that grow on demand, pinned output buffers, one stream.

    Args:
        plan: The plan file (``BUNDLE/engines/<key>.plan``).
        spec: The graph's inputs and outputs; the engine's IO tensors must match it.
        sha256: The plan's expected sha256 (the manifest's): the bytes read are checked before
            TensorRT sees them.
        precision: Shown in ``provider`` (``"fp16"``...). Defaults to not shown.
        use_cuda_graph: Capture each new set of input shapes as a CUDA graph on its first call and
            replay it afterwards (fixed shapes: fewer launches). Defaults to False.

    Raises:
        BackendUnavailableError: If TensorRT, pycuda or a GPU is missing.
        BundleError: If the plan's bytes do not have ``sha256``.
        EngineMismatchError: If TensorRT cannot deserialize it here, or its tensors differ from ``spec``.
    """

    backend = "tensorrt"

    def __init__(self, plan: Path | str, spec: GraphSpec, sha256: str, precision: str | None = None,
                 use_cuda_graph: bool = False) -> None:
        self._closed = True  # until construction completes: close() has nothing to free
        require_tensorrt()
        require_cuda()
        import pycuda.driver as cuda
        import tensorrt as trt

        plan = Path(plan)
        try:
            data = plan.read_bytes()  # hashed and deserialized from the same bytes: no swap in between
        except OSError as err:
            raise BundleError(f"{plan} | unreadable ({err.strerror}) | expected a TensorRT plan; rebuild it with build_engine") from None
        got = hashlib.sha256(data).hexdigest()
        if got != sha256:
            raise BundleError(f"{plan} | sha256 {got[:12]}… | expected {sha256[:12]}…: a plan is executable code and is "
                              "loaded only with the hash its manifest records; rebuild it")
        self._logger, self._errors = make_logger()
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise EngineMismatchError(f"{plan} | TensorRT {trt.__version__} cannot load it ({errors_text(self._errors)}) | "
                                      "expected a plan built by this TensorRT version for this GPU; rebuild it here")
        self._engine: trt.ICudaEngine = engine
        self._profile = _check_io(engine, spec, plan)
        context = engine.create_execution_context()
        if context is None:
            raise JemcError(f"{plan} | TensorRT could not create an execution context ({errors_text(self._errors)}) | "
                            "expected enough free GPU memory")
        self._context: trt.IExecutionContext = context
        self._stream = cuda.Stream()
        self._device: dict[str, tuple[Any, int]] = {}  # tensor -> (DeviceAllocation, bytes)
        self._host: dict[str, np.ndarray] = {}  # output -> page-locked buffer (dtoh copies stay asynchronous)
        self._graphs: dict[tuple[tuple[int, ...], ...], _CudaGraph] = {}
        self._lib: Any = None
        self.use_cuda_graph = use_cuda_graph
        self._closed = False
        gpu = cuda.Context.get_device().name()
        super().__init__(spec, f"TensorRT {trt.__version__}{f' ({precision})' if precision else ''} on {gpu}")

    @classmethod
    def from_bundle(cls, bundle: Path | str, graph: str, precision: str = "fp16", use_cuda_graph: bool = False) -> TensorrtEngine:
        """The engine :func:`find_engine` picks for this machine, opened.

        Args:
            bundle: The model bundle directory.
            graph: The exported graph's name, e.g. ``"text"``.
            precision: The engine's precision. Defaults to ``"fp16"``.
            use_cuda_graph: As the constructor's. Defaults to False.

        Returns:
            The engine (a context manager: use it in ``with`` so its GPU memory is freed).

        Raises:
            BackendUnavailableError: If TensorRT, pycuda or a GPU is missing.
            EngineMismatchError: If no engine in the bundle was built for this machine (see :func:`find_engine`).
            BundleError: If the plan is missing or modified.
        """
        path, entry = find_engine(Path(bundle), graph, precision)
        spec = GraphSpec.from_json(entry["spec"]) if "spec" in entry else graph_entry(Path(bundle), graph).spec
        return cls(path, spec, entry["sha256"], precision=precision, use_cuda_graph=use_cuda_graph)

    def _run_impl(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._closed:
            raise JemcError(f"{self!r} | closed | expected an open engine (use it inside its `with` block)")
        import pycuda.driver as cuda

        self._errors.clear()
        shapes = {name: tuple(int(d) for d in x.shape) for name, x in inputs.items()}
        for name, shape in shapes.items():
            lo, hi = self._profile[name]
            if not all(a <= d <= b for a, d, b in zip(lo, shape, hi, strict=True)) or not self._context.set_input_shape(name, shape):
                raise InputShapeError(f"{self.spec.name}.{name} | shape {list(shape)} | expected within the engine's optimisation "
                                      f"profile, min {list(lo)} max {list(hi)} (split the batch, or rebuild the engine with larger "
                                      f"ShapeLimits){'; TensorRT: ' + errors_text(self._errors) if self._errors else ''}")
        out_shapes = {n: _dims(self._context.get_tensor_shape(n)) for n in self.output_names}
        sizes = {n: int(np.prod(s)) * np.dtype(t.dtype).itemsize for n, s, t in
                 [(t.name, shapes[t.name], t) for t in self.spec.inputs] + [(t.name, out_shapes[t.name], t) for t in self.spec.outputs]}
        grown = [self._ensure_device(name, nbytes) for name, nbytes in sizes.items()]  # every one, no short-circuit
        if any(grown):
            self._drop_graphs()  # captured graphs hold the old addresses
        for name, x in inputs.items():
            cuda.memcpy_htod_async(self._device[name][0], x, self._stream)
        for name, (alloc, _) in self._device.items():
            if not self._context.set_tensor_address(name, int(alloc)):
                raise JemcError(f"{self.spec.name}.{name} | TensorRT refused its address ({errors_text(self._errors)}) | expected an IO tensor")
        if self.use_cuda_graph:
            self._run_graph(tuple(shapes[n] for n in self.input_names))
        else:
            self._execute()
        outputs = {}
        for t in self.spec.outputs:
            count = int(np.prod(out_shapes[t.name]))
            host = self._pinned(t.name, count, np.dtype(t.dtype))[:count].reshape(out_shapes[t.name])
            cuda.memcpy_dtoh_async(host, self._device[t.name][0], self._stream)
            outputs[t.name] = host
        self._stream.synchronize()
        return {name: host.copy() for name, host in outputs.items()}  # the pinned buffers are reused next call

    def _execute(self) -> None:
        if not self._context.execute_async_v3(self._stream.handle):
            raise JemcError(f"{self.spec.name} | TensorRT execute_async_v3 failed ({errors_text(self._errors)}) | "
                            "expected every tensor address and input shape set")

    def _run_graph(self, key: tuple[tuple[int, ...], ...]) -> None:
        graph = self._graphs.get(key)
        if graph is not None:
            graph.launch(self._stream.handle)
            return
        # The first enqueue after a shape change does host-side setup that a capture cannot record:
        # run this call eagerly (its outputs are this call's), wait, then capture the same enqueue.
        self._execute()
        self._stream.synchronize()
        if self._lib is None:
            self._lib = _libcuda()
        self._graphs[key] = _CudaGraph.capture(self._lib, self._stream.handle, self._execute)

    def _drop_graphs(self) -> None:
        for graph in self._graphs.values():
            graph.destroy()
        self._graphs.clear()

    def _ensure_device(self, name: str, nbytes: int) -> bool:
        """Make ``name``'s device buffer hold ``nbytes``; True if it was (re)allocated (a new address)."""
        import pycuda.driver as cuda

        have = self._device.get(name)
        if have is not None and have[1] >= nbytes:
            return False
        if have is not None:
            self._stream.synchronize()  # queued work may still read the old buffer
            have[0].free()
        size = max(256, 1 << (max(nbytes, 1) - 1).bit_length())  # powers of two: few regrowths
        self._device[name] = (cuda.mem_alloc(size), size)
        return True

    def _pinned(self, name: str, count: int, dtype: np.dtype) -> np.ndarray:
        import pycuda.driver as cuda

        buf = self._host.get(name)
        if buf is None or buf.size < count:
            buf = cuda.pagelocked_empty(max(16, 1 << (max(count, 1) - 1).bit_length()), dtype)
            self._host[name] = buf
        return buf

    def close(self) -> None:
        """Free the device buffers, graphs, context and engine. Idempotent."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        try:
            self._drop_graphs()
            self._stream.synchronize()  # nothing queued may touch memory freed below
        finally:
            for alloc, _ in self._device.values():
                alloc.free()
            self._device.clear()
            self._host.clear()
            del self._context  # the context before its engine, as TensorRT requires
            del self._engine


def _check_io(engine: trt.ICudaEngine, spec: GraphSpec, plan: Path) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Check the engine's tensors against the spec; return each input's profile (min, max)."""
    import tensorrt as trt

    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = sorted(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
    outputs = sorted(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
    want_in, want_out = sorted(t.name for t in spec.inputs), sorted(t.name for t in spec.outputs)
    if (inputs, outputs) != (want_in, want_out):
        raise EngineMismatchError(f"{plan} | engine inputs {inputs}, outputs {outputs} | expected the {spec.name!r} graph's inputs "
                                  f"{want_in}, outputs {want_out}; rebuild the engine from this bundle")
    for t in spec.inputs + spec.outputs:
        got = np.dtype(trt.nptype(engine.get_tensor_dtype(t.name)))
        if got != np.dtype(t.dtype):
            raise EngineMismatchError(f"{plan} | tensor {t.name} is {got} | expected {t.dtype} as the graph's spec says; rebuild the engine")
    profile = {}
    for n in inputs:
        lo, _, hi = engine.get_tensor_profile_shape(n, 0)
        profile[n] = (_dims(lo), _dims(hi))
    return profile
