"""Build TensorRT engines from a bundle's ONNX graphs (installed as ``jemc_infer.export.tensorrt``).

On a GPU machine: the fp32 ONNX graph (checked against the manifest) → a TensorRT network (ONNX
parser) → one optimisation profile over every dynamic axis (:class:`ShapeLimits`) → FP16 / INT8
flags and int8 calibration → a serialized plan, ``BUNDLE/engines/<key>.plan``, recorded in the
manifest with what it was built from and for. A plan runs only under the TensorRT release and on
the GPU architecture that built it: the key and the record say which, and
:func:`find_engine` (from ``jemc_infer.engines.tensorrt``, re-exported here) picks the one built
for the machine it runs on.

The builder's tactic timings persist in ``BUNDLE/engines/timing.cache`` and make later builds on
the same machine faster. ``tensorrt`` and ``pycuda`` are imported inside functions only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jemc_infer.atomic import write_file
from jemc_infer.bundle import read_bundle
from jemc_infer.engines.tensorrt import errors_text, find_engine, make_logger, require_cuda, require_tensorrt, this_machine
from jemc_infer.errors import BundleError, InputError, JemcError
from jemc_infer.export.calibration import CALIBRATED_GRAPHS, calibration_batches
from jemc_infer.export.specs import ShapeLimits
from jemc_infer.manifest import graph_entries, graph_entry, read_manifest, update_manifest, verified_file
from jemc_infer.specs import GraphSpec

if TYPE_CHECKING:
    import tensorrt as trt
    from typing_extensions import Buffer

__all__ = ["ENGINES_DIR", "PRECISIONS", "TIMING_CACHE", "build_engine", "build_engines", "engine_key", "engine_precision", "find_engine"]

_log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
ENGINES_DIR = "engines"
TIMING_CACHE = f"{ENGINES_DIR}/timing.cache"
Batch = dict[str, np.ndarray]
Shape = tuple[int, ...]


def engine_key(onnx_sha256: str, trt_version: str, gpu_name: str, compute_capability: str, precision: str,
               profiles: list[dict[str, dict[str, list[int]]]]) -> str:
    """A short, stable name for an engine: 16 hex digits of the sha256 of everything it is bound to.

    Args:
        onnx_sha256: The source ONNX graph's sha256.
        trt_version: ``tensorrt.__version__``.
        gpu_name: The GPU's name, e.g. ``"NVIDIA H100 80GB HBM3"``.
        compute_capability: e.g. ``"9.0"``.
        precision: ``"fp32"``, ``"fp16"`` or ``"int8"``.
        profiles: ``[{input: {"min": [...], "opt": [...], "max": [...]}}]``.

    Returns:
        The key (sorted-key JSON of the arguments, hashed), e.g. ``"3f9c0a1b2d4e5f60"``.
    """
    blob = json.dumps({"onnx_sha256": onnx_sha256, "tensorrt": trt_version, "gpu": gpu_name, "compute_capability": compute_capability,
                       "precision": precision, "profiles": profiles}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_engine(bundle: Path, graph: str, precision: str = "fp16", limits: ShapeLimits = ShapeLimits(),
                 calibration: Callable[[], Iterable[Batch]] | None = None, calibration_info: dict[str, Any] | None = None,
                 workspace_gb: float = 4.0) -> dict[str, Any]:
    """Build a TensorRT engine for one of the bundle's exported graphs, on this machine's GPU.

    The steps: read the verified ONNX graph, parse it into a network, derive the optimisation
    profile from ``limits``, configure the builder (precision flags, timing cache, int8
    calibration), build, and record the plan in the manifest.

    Args:
        bundle: The model bundle; its manifest must list the fp32 ONNX graph ``graph``.
        graph: The graph's name, e.g. ``"text"``.
        precision: ``"fp32"``, ``"fp16"`` (default) or ``"int8"`` (INT8 with FP16 for layers that
            have no INT8 kernel).
        limits: The shapes the engine must serve; each dynamic axis gets ``limits.axis_range``.
        calibration: int8 only, required: returns batches ``{input name: array}``, every batch at
            one shape (TensorRT calibrates at a single shape). Called only when no matching
            calibration cache exists (:func:`jemc_infer.export.calibration.calibration_batches`
            makes them from a feature dataset).
        calibration_info: int8: what the batches are (dataset, split, count...), kept in the
            manifest; a cache made from other ``calibration_info`` is not reused.
        workspace_gb: The builder's workspace memory limit in GiB. Defaults to 4.

    Returns:
        The manifest entry written under ``engines[<key>]``: graph, file, sha256, onnx_sha256,
        tensorrt, gpu, compute_capability, precision, flags, profiles, limits, spec, built,
        timing_cache, and for int8 calibration.

    Raises:
        InputError: If ``precision`` is unknown, ``limits`` give an axis min > opt > max, int8 has no
            ``calibration``, or a calibration batch is malformed.
        BundleError: If the graph is missing or modified, TensorRT cannot parse it, or its inputs
            differ from its spec.
        BackendUnavailableError: If TensorRT, pycuda or a GPU is missing.
        JemcError: If TensorRT fails to build (its messages included).
    """
    bundle = Path(bundle)
    _check_request(precision, calibration, workspace_gb)
    require_tensorrt()
    require_cuda()
    import tensorrt as trt

    source = _read_source(bundle, graph)
    here = this_machine()
    started = time.monotonic()
    logger, errors = make_logger()
    builder = trt.Builder(logger)
    network, parser = _parse(builder, logger, errors, source)  # the parser owns the weights: keep it until the build is done
    shapes = _profile_shapes(network, source.spec, graph, limits, source.path)
    profiles = [{name: {"min": list(lo), "opt": list(opt), "max": list(hi)} for name, (lo, opt, hi) in shapes.items()}]
    key = engine_key(source.sha256, here["tensorrt"], here["gpu"], here["compute_capability"], precision, profiles)
    (bundle / ENGINES_DIR).mkdir(exist_ok=True)
    config, flags = _builder_config(builder, graph, precision, shapes, workspace_gb, errors)
    timing_loaded = _attach_timing_cache(config, bundle / TIMING_CACHE)
    errors.clear()  # a rejected timing cache is not this build's failure
    calibration_run = None
    if calibration is not None and precision == "int8":
        calibration_run = _Calibration(bundle, key, source.spec, shapes, calibration, calibration_info or {})
        calibration_run.attach(builder, config)
    plan = _build_plan(builder, network, config, calibration_run, errors, graph, precision)
    del parser
    _save_timing_cache(config, bundle / TIMING_CACHE)
    record: dict[str, Any] = {
        "graph": graph, "file": f"{ENGINES_DIR}/{key}.plan", "sha256": hashlib.sha256(plan).hexdigest(), "onnx_sha256": source.sha256,
        **here, "precision": precision, "flags": flags, "profiles": profiles, "limits": dataclasses.asdict(limits),
        "workspace_gb": workspace_gb, "spec": source.spec.to_json(), "built": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_seconds": round(time.monotonic() - started, 3), "timing_cache": {"file": TIMING_CACHE, "loaded": timing_loaded},
    }
    if calibration_run is not None:
        record["calibration"] = calibration_run.record()
    _save_plan(bundle, key, plan, record)
    return record


def engine_precision(graph: str, precision: str) -> str:
    """The precision ``graph``'s engine is built at when ``precision`` is asked for: int8 only where
    calibration data exists (:data:`~jemc_infer.export.calibration.CALIBRATED_GRAPHS`: text and
    video); the backbone graphs then build fp16."""
    return "fp16" if precision == "int8" and graph not in CALIBRATED_GRAPHS else precision


def build_engines(bundle: Path, precision: str = "fp16", limits: ShapeLimits = ShapeLimits(),
                  calibration_data: Path | None = None, calibration_count: int = 16, workspace_gb: float = 4.0,
                  on_built: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, dict[str, Any]]:
    """Build an engine for every fp32 graph the bundle exported (:func:`build_engine` for each).

    Args:
        bundle: The model bundle.
        precision: ``"fp32"``, ``"fp16"`` (default) or ``"int8"`` (each graph at
            :func:`engine_precision`: int8 for text and video, fp16 for the backbones).
        limits: The shapes the engines must serve.
        calibration_data: int8, required: a feature dataset whose train split calibrates the text
            and video graphs (:func:`~jemc_infer.export.calibration.calibration_batches`).
        calibration_count: int8: how many batches (of ``min(32, limits.max_batch)`` rows). Defaults to 16.
        workspace_gb: The builder's workspace memory limit in GiB. Defaults to 4.
        on_built: Called with each graph's name and record as soon as it is built.

    Returns:
        The manifest records written, by graph name.

    Raises:
        BundleError: If the bundle exported no graph yet (or as :func:`build_engine`).
        InputError: If int8 is asked for without ``calibration_data`` (or as :func:`build_engine`).
        BackendUnavailableError, JemcError: As :func:`build_engine`.
    """
    bundle = Path(bundle)
    graphs = [key for key, entry in graph_entries(bundle).items() if entry.precision == "fp32"]
    if not graphs:
        raise BundleError(f"{bundle} | no exported ONNX graph | expected the graphs exported first: run `jemc-infer export {bundle}`")
    if precision == "int8" and calibration_data is None:
        raise InputError("int8 engines | no calibration data | expected a feature dataset whose train split calibrates "
                         "the text and video graphs")
    records = {}
    for graph in graphs:
        p = engine_precision(graph, precision)
        calibration, info = None, None
        if p == "int8" and calibration_data is not None:  # not None: checked above
            calibration, info = calibration_batches(Path(calibration_data), graph, read_bundle(bundle),
                                                    batches=calibration_count, batch_size=min(32, limits.max_batch),
                                                    max_seq=limits.max_seq)
        records[graph] = build_engine(bundle, graph, p, limits, calibration=calibration, calibration_info=info,
                                      workspace_gb=workspace_gb)
        if on_built is not None:
            on_built(graph, records[graph])
    return records


def _check_request(precision: str, calibration: Callable[[], Iterable[Batch]] | None, workspace_gb: float) -> None:
    if precision not in PRECISIONS:
        raise InputError(f"precision | {precision!r} | expected one of {list(PRECISIONS)}")
    if precision == "int8" and calibration is None:
        raise InputError("int8 engine | no calibration data | expected calibration=<callable returning batches {input: array}>: "
                         "TensorRT sets int8 scales from real inputs (or build fp16)")
    if not workspace_gb > 0:
        raise InputError(f"workspace_gb | {workspace_gb} | expected > 0")


@dataclass(frozen=True)
class _Source:
    """The ONNX graph an engine is built from, read once and checked against the manifest."""

    path: Path
    data: bytes
    sha256: str
    spec: GraphSpec


def _read_source(bundle: Path, graph: str) -> _Source:
    entry = graph_entry(bundle, graph)
    path = verified_file(bundle, entry)
    data = path.read_bytes()  # parsed from these bytes: check them, not the file again
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        raise BundleError(f"{path} | changed while being read | expected the file the manifest records; retry")
    return _Source(path, data, digest, entry.spec)


def _parse(builder: trt.Builder, logger: trt.ILogger, errors: list[str],
           source: _Source) -> tuple[trt.INetworkDefinition, trt.OnnxParser]:
    """The network TensorRT's ONNX parser makes of the graph, and the parser (it owns the network's weights)."""
    import tensorrt as trt

    network = builder.create_network(0)  # TensorRT 10 networks are always explicit-batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(source.data, str(source.path)):
        found = [parser.get_error(i) for i in range(parser.num_errors)]
        problems = "; ".join(f"node {e.node()} ({e.node_operator()} {e.node_name()!r}): {e.desc()}" if e.node() >= 0 else e.desc()
                             for e in found) or errors_text(errors)
        raise BundleError(f"{source.path} | TensorRT {trt.__version__}'s ONNX parser failed: {problems} | expected a graph it can "
                          "parse: re-export with supported ops, or serve this graph with onnxruntime")
    return network, parser


def _builder_config(builder: trt.Builder, graph: str, precision: str, shapes: dict[str, tuple[Shape, Shape, Shape]],
                    workspace_gb: float, errors: list[str]) -> tuple[trt.IBuilderConfig, list[str]]:
    """The builder's configuration: workspace, the one optimisation profile, precision flags."""
    import tensorrt as trt

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, trt.Dims(list(lo)), trt.Dims(list(opt)), trt.Dims(list(hi)))
    if config.add_optimization_profile(profile) < 0:
        shown = {name: {"min": list(lo), "opt": list(opt), "max": list(hi)} for name, (lo, opt, hi) in shapes.items()}
        raise JemcError(f"{graph} | TensorRT rejected the optimisation profile {shown} ({errors_text(errors)}) | expected a valid one")
    flags = []
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
        flags.append("FP16")
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        flags.append("INT8")
    return config, flags


def _build_plan(builder: trt.Builder, network: trt.INetworkDefinition, config: trt.IBuilderConfig,
                calibration_run: _Calibration | None, errors: list[str], graph: str, precision: str) -> memoryview:
    """Run the build (calibrating first, for int8); the serialized plan."""
    import tensorrt as trt

    try:
        plan = builder.build_serialized_network(network, config)
    finally:
        if calibration_run is not None:
            calibration_run.free()
    if calibration_run is not None and calibration_run.error is not None:
        err = calibration_run.error
        raise (err if isinstance(err, JemcError) else JemcError(f"int8 calibration | {type(err).__name__}: {err} | expected "
                                                                "calibration() to yield batches {input: array}")) from err
    if plan is None:
        raise JemcError(f"{graph} ({precision}) | TensorRT {trt.__version__} could not build an engine: {errors_text(errors)} | "
                        "expected a successful build (see the messages; a larger workspace_gb may help)")
    return memoryview(plan)


def _save_plan(bundle: Path, key: str, plan: memoryview, record: dict[str, Any]) -> None:
    """Write the plan beside the bundle's other engines, then record it in the manifest."""
    write_file(bundle / record["file"], _writer(plan))
    update_manifest(bundle, lambda m: m["engines"].__setitem__(key, record))
    _log.info("built TensorRT engine %s for %s (%s) in %.1f s", key, record["graph"], record["precision"], record["build_seconds"])


def _profile_shapes(network: trt.INetworkDefinition, spec: GraphSpec, graph: str, limits: ShapeLimits,
                    onnx_path: Path) -> dict[str, tuple[Shape, Shape, Shape]]:
    """(min, opt, max) of every input: named axes from ``limits``, fixed dims as the network has them."""
    net = {t.name: t for t in (network.get_input(i) for i in range(network.num_inputs))}
    if sorted(net) != sorted(t.name for t in spec.inputs):
        raise BundleError(f"{onnx_path} | inputs {sorted(net)} | expected the spec's {sorted(t.name for t in spec.inputs)}; re-export it")
    shapes = {}
    for t in spec.inputs:
        dims = net[t.name].shape
        dims_t = tuple(int(dims[i]) for i in range(len(dims)))
        if len(dims_t) != len(t.shape):
            raise BundleError(f"{onnx_path} | input {t.name} has rank {len(dims_t)} | expected {list(t.shape)}; re-export it")
        lo, opt, hi = [], [], []
        for d, s in zip(dims_t, t.shape, strict=True):
            if d >= 0:  # fixed in the network: a profile must give exactly that
                if isinstance(s, int) and s != d:
                    raise BundleError(f"{onnx_path} | input {t.name} dims {list(dims_t)} | expected {list(t.shape)}; re-export it")
                a = b = c = d
            elif isinstance(s, str):
                a, b, c = limits.axis_range(graph, s)
                if not 1 <= a <= b <= c:
                    raise InputError(f"ShapeLimits | {graph} axis {s!r}: min {a}, opt {b}, max {c} | expected 1 <= min <= opt <= max")
            else:
                raise BundleError(f"{onnx_path} | input {t.name} is dynamic where the spec fixes {s} ({list(t.shape)}) | "
                                  "expected the spec's shape; re-export it")
            lo.append(a)
            opt.append(b)
            hi.append(c)
        shapes[t.name] = (tuple(lo), tuple(opt), tuple(hi))
    return shapes


def _attach_timing_cache(config: trt.IBuilderConfig, path: Path) -> bool:
    """Give the builder the saved tactic timings (if they were made here); True if they were loaded."""
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data) if data else None
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return True
    if data:  # corrupt, or made with another GPU / TensorRT: start afresh (this build's timings replace it)
        _log.warning("%s: timing cache not usable here; starting a new one", path)
    config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    return False


def _writer(data: Buffer) -> Callable[[Path], None]:
    """What :func:`write_file` calls: write ``data`` to the temporary path."""

    def write(tmp: Path) -> None:
        tmp.write_bytes(data)

    return write


def _save_timing_cache(config: trt.IBuilderConfig, path: Path) -> None:
    cache = config.get_timing_cache()
    if cache is not None:
        write_file(path, _writer(memoryview(cache.serialize())))


@dataclass
class _Calibration:
    """One int8 calibration: reuse ``<key>.calib`` if the manifest vouches for it, else feed batches."""

    bundle: Path
    key: str
    spec: GraphSpec
    limits: dict[str, tuple[Shape, Shape, Shape]]
    source: Callable[[], Iterable[Batch]]
    info: dict[str, Any]
    batches: int = 0
    error: BaseException | None = None
    written: bytes | None = None
    cache: bytes | None = None
    shapes: dict[str, Shape] = field(default_factory=dict)
    previous: dict[str, Any] | None = None
    _iter: Iterator[Batch] | None = None
    _device: dict[str, Any] = field(default_factory=dict)

    @property
    def rel(self) -> str:
        return f"{ENGINES_DIR}/{self.key}.calib"

    def attach(self, builder: trt.Builder, config: trt.IBuilderConfig) -> None:
        """Set the calibrator and the calibration profile (one shape: the batches')."""
        import tensorrt as trt

        prev = read_manifest(self.bundle)["engines"].get(self.key, {}).get("calibration")
        path = self.bundle / self.rel
        if prev and prev.get("info") == self.info and path.is_file():
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() == prev.get("sha256"):
                self.cache, self.previous = data, prev
                self.shapes = {k: tuple(v) for k, v in prev["shapes"].items()}
        if self.cache is None:  # calibrate: the first batch fixes the shape
            self._iter = iter(self.source())
            first = next(self._iter, None)
            if first is None:
                raise InputError("int8 calibration | calibration() yielded no batches | expected at least one batch {input: array}")
            self.shapes = {t.name: tuple(np.shape(first[t.name])) for t in self.spec.inputs if t.name in first}
            self._check(first, 0)
            self._iter = itertools.chain([first], self._iter)
        calib_profile = builder.create_optimization_profile()
        for name, shape in self.shapes.items():
            calib_profile.set_shape(name, trt.Dims(list(shape)), trt.Dims(list(shape)), trt.Dims(list(shape)))
        if not config.set_calibration_profile(calib_profile):
            raise JemcError(f"int8 calibration | TensorRT rejected the calibration shapes {self.shapes} | expected valid shapes")
        config.int8_calibrator = _make_calibrator(self)

    def _check(self, batch: Any, index: int) -> None:
        names = sorted(t.name for t in self.spec.inputs)
        if not isinstance(batch, dict) or sorted(batch) != names:
            got = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
            raise InputError(f"calibration batch {index} | {got} | expected a dict with exactly the inputs {names}")
        for t in self.spec.inputs:
            x = batch[t.name]
            lo, _, hi = self.limits[t.name]
            if not isinstance(x, np.ndarray) or x.dtype != np.dtype(t.dtype):
                raise InputError(f"calibration batch {index} | {t.name}: {getattr(x, 'dtype', type(x).__name__)} | expected a {t.dtype} array")
            if x.shape != self.shapes.get(t.name):
                raise InputError(f"calibration batch {index} | {t.name}: shape {list(x.shape)} | expected {list(self.shapes[t.name])}, "
                                 "the first batch's: TensorRT calibrates at one shape (pad or regroup the batches)")
            if not all(a <= d <= b for a, d, b in zip(lo, x.shape, hi, strict=True)):
                raise InputError(f"calibration batch {index} | {t.name}: shape {list(x.shape)} | expected within the engine's "
                                 f"profile, min {list(lo)} max {list(hi)}")

    def next_pointers(self, names: list[str]) -> list[int]:
        """The next batch copied to device memory, as pointers in ``names`` order; [] when done."""
        import pycuda.driver as cuda

        if self._iter is None:  # the cache was rejected by TensorRT after all: calibrate from the source
            self._iter = iter(self.source())
        batch = next(self._iter, None)
        if batch is None:
            return []
        self._check(batch, self.batches)
        ptrs = []
        for name in names:
            x = np.ascontiguousarray(batch[name])
            if name not in self._device:
                self._device[name] = cuda.mem_alloc(x.nbytes)
            cuda.memcpy_htod(self._device[name], x)  # synchronous: TensorRT reads it once get_batch returns
            ptrs.append(int(self._device[name]))
        self.batches += 1
        return ptrs

    def free(self) -> None:
        for alloc in self._device.values():
            alloc.free()
        self._device.clear()

    def record(self) -> dict[str, Any]:
        """The manifest's record of the calibration cache (writing the cache file if TensorRT made one)."""
        path = self.bundle / self.rel
        if self.written is not None and (self.batches or self.written != self.cache):
            data = self.written
            write_file(path, _writer(data))
            return {"file": self.rel, "sha256": hashlib.sha256(data).hexdigest(), "batches": self.batches,
                    "shapes": {k: list(v) for k, v in self.shapes.items()}, "info": self.info,
                    "algorithm": "entropy_calibration_2", "reused": False, "created": datetime.now(UTC).isoformat(timespec="seconds")}
        if self.previous is not None:
            return {**self.previous, "reused": True}
        raise JemcError(f"int8 calibration | TensorRT wrote no calibration cache ({self.batches} batches) | expected one")


def _make_calibrator(run: _Calibration) -> trt.IInt8EntropyCalibrator2:
    import tensorrt as trt

    class _Calibrator(trt.IInt8EntropyCalibrator2):
        """Feeds ``run``'s batches. TensorRT calls these from C++ (noexcept): no exception may escape,
        so an error is kept on ``run`` and calibration stops; ``build_engine`` raises it afterwards."""

        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # a pybind11 trampoline: the base __init__ must run

        def get_batch_size(self) -> int:
            return 1  # explicit-batch networks: the batch dimension comes from the calibration profile

        def get_batch(self, names: list[str]) -> list[int]:
            try:
                return run.next_pointers(list(names))
            except Exception as err:
                run.error = err
                return []

        def read_calibration_cache(self) -> bytes | None:  # type: ignore[override]  # None means "no cache" (the stub says Buffer)
            return run.cache

        def write_calibration_cache(self, cache: Buffer) -> None:
            try:
                run.written = bytes(memoryview(cache))
            except Exception as err:
                run.error = err

    return _Calibrator()
