"""The fake TensorRT's build side: Builder, network, ONNX parser, profiles, config, calibrators, timing cache.

Checked against the TensorRT 10.13 Python API (tensorrt-stubs 10.13.0.35) and NVIDIA's docs. Failures
that TensorRT reports through the logger and a ``None``/``False`` result are reported the same way here.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from typing import Any

import numpy as np

from . import _core
from ._core import (
    BuilderFlag,
    CalibrationAlgoType,
    DataType,
    Dims,
    ErrorCode,
    IHostMemory,
    ILogger,
    MemoryPoolType,
    Strict,
    as_dims,
    buffer_bytes,
    callback,
    check_enum,
    check_trampoline,
    log,
)

_ONNX_DTYPES = {1: DataType.FLOAT, 10: DataType.HALF, 3: DataType.INT8, 6: DataType.INT32, 9: DataType.BOOL,
                2: DataType.UINT8, 7: DataType.INT64, 16: DataType.BF16}
_TIMING_MAGIC = b"FAKE-TRT-TIMING-CACHE\n"


class ITensor(Strict):
    _ATTRS = frozenset({"name", "dtype", "shape"})

    def __init__(self, name: str, dtype: DataType, shape: tuple[int, ...], is_input: bool) -> None:
        self.name, self.dtype, self.shape = name, dtype, Dims(shape)
        self._is_input = is_input

    @property
    def is_network_input(self) -> bool:
        return self._is_input

    @property
    def is_network_output(self) -> bool:
        return not self._is_input


class INetworkDefinition(Strict):
    _ATTRS = frozenset({"name"})

    def __init__(self, builder: Builder, flags: int) -> None:
        self._builder, self._flags = builder, flags
        self._inputs: list[ITensor] = []
        self._outputs: list[ITensor] = []
        self._onnx: bytes | None = None
        self._output_dims: dict[str, list[int | str]] = {}  # ONNX dims: int or a dim_param name
        self._input_params: dict[str, tuple[str, int]] = {}  # dim_param -> (input, axis)
        self.name = "Unnamed Network 0"

    flags = property(lambda self: self._flags)
    num_inputs = property(lambda self: len(self._inputs))
    num_outputs = property(lambda self: len(self._outputs))
    num_layers = property(lambda self: 0 if self._onnx is None else len(_onnx_model(self._onnx).graph.node))
    has_implicit_batch_dimension = property(lambda self: False)

    def get_input(self, index: int) -> ITensor | None:
        return self._inputs[index] if 0 <= index < len(self._inputs) else None

    def get_output(self, index: int) -> ITensor | None:
        return self._outputs[index] if 0 <= index < len(self._outputs) else None


def _onnx_model(data: bytes) -> Any:
    import onnx

    return onnx.load_from_string(data)


class ParserError:
    def __init__(self, code: ErrorCode, desc: str, node: int = -1, node_name: str = "", node_operator: str = "") -> None:
        self._code, self._desc, self._node, self._name, self._op = code, desc, node, node_name, node_operator

    def code(self) -> ErrorCode:
        return self._code

    def desc(self) -> str:
        return self._desc

    def node(self) -> int:
        return self._node

    def node_name(self) -> str:
        return self._name

    def node_operator(self) -> str:
        return self._op

    def file(self) -> str:
        return "ModelImporter.cpp"

    def func(self) -> str:
        return "parseGraph"

    def line(self) -> int:
        return 0

    def __str__(self) -> str:
        return f"In node {self._node} with name: {self._name} and operator: {self._op} ({self._code.name}): {self._desc}"


class OnnxParser(Strict):
    """Reads the ONNX with the ``onnx`` package into the network: inputs/outputs, -1 for dynamic dims."""

    # ai.onnx ops this fake refuses, as TensorRT's parser does (no importer registered)
    UNSUPPORTED = frozenset({"StringNormalizer", "TfIdfVectorizer", "Multinomial", "SequenceConstruct"})

    def __init__(self, network: INetworkDefinition, logger: ILogger) -> None:
        if not isinstance(network, INetworkDefinition):
            raise TypeError("OnnxParser(): incompatible constructor arguments: network must be a tensorrt.INetworkDefinition "
                            "(create it with Builder.create_network before parsing)")
        check_trampoline(logger, ILogger, "OnnxParser()")
        self._network, self._logger = network, logger
        self._errors: list[ParserError] = []

    num_errors = property(lambda self: len(self._errors))

    def get_error(self, index: int) -> ParserError | None:
        return self._errors[index] if 0 <= index < len(self._errors) else None

    def clear_errors(self) -> None:
        self._errors.clear()

    def parse_from_file(self, model: str) -> bool:
        with open(model, "rb") as f:
            return self.parse(f.read(), model)

    def parse(self, model: Any, path: str | None = None) -> bool:
        data = buffer_bytes(model, "parse")
        if self._network._onnx is not None:
            self._errors.append(ParserError(ErrorCode.INVALID_GRAPH, "the network already holds a parsed model"))
            return False
        try:
            proto = _onnx_model(data)
        except Exception as err:
            self._errors.append(ParserError(ErrorCode.MODEL_DESERIALIZE_FAILED, f"Failed to parse ONNX model: {err}"))
            return False
        for i, node in enumerate(proto.graph.node):
            if node.domain not in ("", "ai.onnx") or node.op_type in self.UNSUPPORTED:
                self._errors.append(ParserError(ErrorCode.UNSUPPORTED_NODE, f"No importer registered for op: {node.op_type}",
                                                i, node.name, node.op_type))
        initializers = {t.name for t in proto.graph.initializer}
        inputs, outputs = [], []
        for vi, is_input in [(v, True) for v in proto.graph.input if v.name not in initializers] + [(v, False) for v in proto.graph.output]:
            tt = vi.type.tensor_type
            if tt.elem_type not in _ONNX_DTYPES:
                self._errors.append(ParserError(ErrorCode.UNSUPPORTED_GRAPH, f"{vi.name}: unsupported data type {tt.elem_type}"))
                continue
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
            (inputs if is_input else outputs).append(ITensor(vi.name, _ONNX_DTYPES[tt.elem_type], tuple(dims), is_input))
            named = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
            if is_input:
                for axis, d in enumerate(named):
                    if isinstance(d, str):
                        self._network._input_params.setdefault(d, (vi.name, axis))
            else:
                self._network._output_dims[vi.name] = named
        if self._errors:
            for e in self._errors:
                log(self._logger, ILogger.ERROR, f"ModelImporter: {e}")
            return False
        self._network._inputs, self._network._outputs, self._network._onnx = inputs, outputs, data
        return True


class IOptimizationProfile(Strict):
    def __init__(self) -> None:
        self._shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {}

    def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:  # noqa: A002 - TensorRT's names
        lo, mid, hi = as_dims(min, "set_shape"), as_dims(opt, "set_shape"), as_dims(max, "set_shape")
        # The binding raises ValueError when IOptimizationProfile::setDimensions rejects a selector.
        if any(d < 0 for d in lo):
            raise ValueError("min input provided to optimization profile is invalid")
        if len(mid) != len(lo) or any(d < 0 for d in mid):
            raise ValueError("opt input provided to optimization profile is invalid")
        if len(hi) != len(lo) or any(d < 0 for d in hi) or not all(a <= b <= c for a, b, c in zip(lo, mid, hi, strict=True)):
            raise ValueError("max input provided to optimization profile is invalid")
        self._shapes[input] = (lo, mid, hi)

    def get_shape(self, input: str) -> list[Dims]:  # noqa: A002
        return [Dims(s) for s in self._shapes[input]] if input in self._shapes else []

    def __bool__(self) -> bool:
        return bool(self._shapes)


class IInt8Calibrator:
    """Base of Python calibrators; a subclass must call the base ``__init__`` (pybind11 trampoline)."""

    def __init__(self) -> None:
        self._trt_base_init = True

    def get_algorithm(self) -> CalibrationAlgoType:
        raise RuntimeError('Tried to call pure virtual function "IInt8Calibrator::getAlgorithm"')

    def get_batch_size(self) -> int:
        raise RuntimeError('Tried to call pure virtual function "IInt8Calibrator::getBatchSize"')

    def get_batch(self, names: list[str]) -> list[int]:
        raise RuntimeError('Tried to call pure virtual function "IInt8Calibrator::getBatch"')

    def read_calibration_cache(self) -> Any:
        raise RuntimeError('Tried to call pure virtual function "IInt8Calibrator::readCalibrationCache"')

    def write_calibration_cache(self, cache: Any) -> None:
        raise RuntimeError('Tried to call pure virtual function "IInt8Calibrator::writeCalibrationCache"')


class IInt8EntropyCalibrator2(IInt8Calibrator):
    def get_algorithm(self) -> CalibrationAlgoType:
        return CalibrationAlgoType.ENTROPY_CALIBRATION_2


class ITimingCache(Strict):
    def __init__(self, owner: tuple[str, str], entries: set[str]) -> None:
        self._owner, self._entries = owner, set(entries)

    def serialize(self) -> IHostMemory:
        body = json.dumps({"tensorrt": self._owner[0], "device": self._owner[1], "entries": sorted(self._entries)})
        return IHostMemory(_TIMING_MAGIC + body.encode())

    def combine(self, input_cache: ITimingCache, ignore_mismatch: bool) -> bool:
        if input_cache._owner != self._owner and not ignore_mismatch:
            return False
        self._entries |= input_cache._entries
        return True

    def reset(self) -> bool:
        self._entries.clear()
        return True


def _owner() -> tuple[str, str]:
    name, cc = _core.current_device()
    return _core.__version__, f"{name} ({cc[0]}.{cc[1]})"


class IBuilderConfig(Strict):
    _ATTRS = frozenset({"int8_calibrator", "flags", "builder_optimization_level", "avg_timing_iterations"})

    def __init__(self, builder: Builder) -> None:
        self._builder = builder
        self._flags = 0
        self._pools: dict[MemoryPoolType, int] = {}
        self._profiles: list[IOptimizationProfile] = []
        self._calibrator: IInt8Calibrator | None = None
        self._calibration_profile: IOptimizationProfile | None = None
        self._timing: ITimingCache | None = None
        self.builder_optimization_level = 3
        self.avg_timing_iterations = 1

    @property
    def flags(self) -> int:
        return self._flags

    @flags.setter
    def flags(self, value: int) -> None:
        self._flags = int(value)

    def set_flag(self, flag: BuilderFlag) -> None:
        check_enum(flag, BuilderFlag, "set_flag")
        self._flags |= 1 << int(flag)

    def clear_flag(self, flag: BuilderFlag) -> None:
        check_enum(flag, BuilderFlag, "clear_flag")
        self._flags &= ~(1 << int(flag))

    def get_flag(self, flag: BuilderFlag) -> bool:
        check_enum(flag, BuilderFlag, "get_flag")
        return bool(self._flags >> int(flag) & 1)

    def set_memory_pool_limit(self, pool: MemoryPoolType, pool_size: int) -> None:
        check_enum(pool, MemoryPoolType, "set_memory_pool_limit")
        if not isinstance(pool_size, int) or pool_size < 0:
            raise TypeError(f"set_memory_pool_limit(): pool_size must be a non-negative int, got {pool_size!r}")
        self._pools[pool] = pool_size

    def get_memory_pool_limit(self, pool: MemoryPoolType) -> int:
        return self._pools.get(pool, 80 << 30)

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        if not isinstance(profile, IOptimizationProfile) or not profile:
            return -1
        self._profiles.append(profile)
        return len(self._profiles) - 1

    num_optimization_profiles = property(lambda self: len(self._profiles))

    @property
    def int8_calibrator(self) -> IInt8Calibrator | None:
        return self._calibrator

    @int8_calibrator.setter
    def int8_calibrator(self, calibrator: IInt8Calibrator | None) -> None:
        if calibrator is not None:
            check_trampoline(calibrator, IInt8Calibrator, "int8_calibrator")
        self._calibrator = calibrator

    def set_calibration_profile(self, profile: IOptimizationProfile) -> bool:
        if not isinstance(profile, IOptimizationProfile) or not profile:
            return False
        self._calibration_profile = profile
        return True

    def get_calibration_profile(self) -> IOptimizationProfile | None:
        return self._calibration_profile

    def create_timing_cache(self, serialized_timing_cache: Any) -> ITimingCache | None:
        data = buffer_bytes(serialized_timing_cache, "create_timing_cache")
        if not data:
            return ITimingCache(_owner(), set())
        if not data.startswith(_TIMING_MAGIC):
            log(self._builder._logger, ILogger.ERROR, "Error Code 1: Internal Error (timing cache: invalid or corrupt data)")
            return None
        body = json.loads(data[len(_TIMING_MAGIC):])
        return ITimingCache((body["tensorrt"], body["device"]), set(body["entries"]))

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        if not isinstance(cache, ITimingCache):
            raise TypeError("set_timing_cache(): incompatible function arguments: expected tensorrt.ITimingCache")
        if cache._owner != _owner() and not ignore_mismatch:
            log(self._builder._logger, ILogger.ERROR, f"Timing cache was created for {cache._owner}, not {_owner()}")
            return False
        self._timing = cache
        return True

    def get_timing_cache(self) -> ITimingCache | None:
        return self._timing


class Builder(Strict):
    def __init__(self, logger: ILogger) -> None:
        check_trampoline(logger, ILogger, "Builder()")
        self._logger = logger

    platform_has_fast_fp16 = property(lambda self: True)
    platform_has_fast_int8 = property(lambda self: True)
    logger = property(lambda self: self._logger)

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        if not isinstance(flags, int):
            raise TypeError(f"create_network(): flags must be an int bit mask, got {flags!r}")
        return INetworkDefinition(self, flags)

    def create_builder_config(self) -> IBuilderConfig:
        return IBuilderConfig(self)

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile()

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> IHostMemory | None:
        if not isinstance(network, INetworkDefinition) or not isinstance(config, IBuilderConfig):
            raise TypeError("build_serialized_network(): incompatible function arguments")
        record: dict[str, Any] = {"flags": [f.name for f in BuilderFlag if config._flags >> f & 1],
                                  "workspace": config._pools.get(MemoryPoolType.WORKSPACE), "calibrator_calls": [],
                                  "profiles": [dict(p._shapes) for p in config._profiles], "ok": False}
        _core.BUILDS.append(record)
        errors = _check_network(network, config)
        scales: dict[str, float] = {}
        if not errors and config._flags >> BuilderFlag.INT8 & 1:
            scales = _calibrate(network, config, record, errors)
        if errors:
            for e in errors:
                log(self._logger, ILogger.ERROR, e)
            return None
        record.update(_use_timing_cache(network, config), ok=True, int8_scales=scales)
        name, cc = _core.current_device()
        assert network._onnx is not None
        header = {"tensorrt": _core.__version__, "device": name, "cc": list(cc), "flags": config._flags,
                  "inputs": [[t.name, int(t.dtype), list(t.shape)] for t in network._inputs],
                  "outputs": [[t.name, int(t.dtype), list(t.shape)] for t in network._outputs],
                  "output_dims": network._output_dims, "input_params": network._input_params,
                  "profiles": [{k: [list(s) for s in v] for k, v in p._shapes.items()} for p in config._profiles],
                  "int8_scales": scales}
        return IHostMemory(pack_plan(header, network._onnx))


PLAN_MAGIC = b"FAKE-TRT-PLAN\x00"


def pack_plan(header: dict[str, Any], onnx_bytes: bytes) -> bytes:
    body = json.dumps(header).encode()
    return PLAN_MAGIC + struct.pack("<Q", len(body)) + body + onnx_bytes


def _check_network(network: INetworkDefinition, config: IBuilderConfig) -> list[str]:
    if network._onnx is None or not network._outputs:
        return ["Error Code 4: API Usage Error (Network must have at least one output)"]
    errors = []
    dynamic = [t for t in network._inputs if -1 in tuple(t.shape)]
    if dynamic and not config._profiles:
        errors.append("Error Code 4: API Usage Error (Network has dynamic or shape inputs, but no optimization profile has been defined.)")
    for k, profile in enumerate(config._profiles):
        for t in network._inputs:
            dims = tuple(t.shape)
            if t.name not in profile._shapes:
                if -1 in dims:
                    errors.append(f"Error Code 4: API Usage Error (Optimization profile {k} is missing values for input {t.name})")
                continue
            for sel, shape in zip(("kMIN", "kOPT", "kMAX"), profile._shapes[t.name], strict=True):
                if len(shape) != len(dims) or any(d >= 0 and d != s for d, s in zip(dims, shape, strict=False)):
                    errors.append(f"Error Code 4: API Usage Error (profile {k} {sel} dimensions {list(shape)} of input {t.name} "
                                  f"do not match the network's dimensions {list(dims)})")
    unknown = {name for p in config._profiles for name in p._shapes} - {t.name for t in network._inputs}
    errors += [f"Error Code 4: API Usage Error (optimization profile names {n}, which is not a network input)" for n in sorted(unknown)]
    return errors


def _use_timing_cache(network: INetworkDefinition, config: IBuilderConfig) -> dict[str, Any]:
    """Time every "layer" unless the timing cache already knows it; record hits and new entries."""
    assert network._onnx is not None
    digest = hashlib.sha256(network._onnx + str(config._flags).encode()).hexdigest()[:12]
    keys = {f"{digest}:{i}:{node.op_type}" for i, node in enumerate(_onnx_model(network._onnx).graph.node)}
    if config._timing is None:  # TensorRT makes a fresh cache local to this build
        return {"timing_cache_hits": 0, "timing_cache_new": len(keys), "timing_cache": False}
    hits = len(keys & config._timing._entries)
    config._timing._entries |= keys
    return {"timing_cache_hits": hits, "timing_cache_new": len(keys) - hits, "timing_cache": True}


def _calibrate(network: INetworkDefinition, config: IBuilderConfig, record: dict[str, Any], errors: list[str]) -> dict[str, float]:
    """What TensorRT does with an INT8 calibrator: cache first, else batches at the calibration profile's opt shape."""
    cal = config._calibrator
    calls = record["calibrator_calls"]
    if cal is None:
        errors.append("Error Code 2: Internal Error (Calibration failure occurred with no scaling factors detected. This could be "
                      "due to no int8 calibrator or insufficient custom scales for network layers.)")
        return {}
    algo = callback(cal.get_algorithm)
    calls.append("get_algorithm")
    if not isinstance(algo, CalibrationAlgoType):
        errors.append(f"get_algorithm returned {algo!r}, not a CalibrationAlgoType")
        return {}
    header = f"TRT-{_version_code()}-{algo.name.title().replace('_', '')}"
    cache = callback(cal.read_calibration_cache)
    calls.append("read_calibration_cache")
    if cache is not None and len(memoryview(cache).tobytes()):
        lines = memoryview(cache).tobytes().decode(errors="replace").splitlines()
        if lines and lines[0] == header:
            record["calibration_cache_used"] = True
            return {k: struct.unpack(">f", bytes.fromhex(v.strip()))[0] for k, v in (ln.split(":", 1) for ln in lines[1:] if ln)}
        record["calibration_cache_rejected"] = lines[0] if lines else ""
    profile = config._calibration_profile or (config._profiles[0] if config._profiles else None)
    shapes = {t.name: profile._shapes[t.name][1] if profile and t.name in profile._shapes else tuple(t.shape) for t in network._inputs}
    if any(-1 in s for s in shapes.values()):
        errors.append("Error Code 4: API Usage Error (calibration needs a calibration profile covering every dynamic input)")
        return {}
    batch_size = callback(cal.get_batch_size)
    calls.append("get_batch_size")
    if not isinstance(batch_size, int) or batch_size < 1:
        errors.append(f"get_batch_size returned {batch_size!r}, expected a positive int")
        return {}
    cuda = sys.modules["pycuda.driver"]
    names = [t.name for t in network._inputs]
    amax: dict[str, float] = {}
    batches = 0
    while True:
        ptrs = callback(cal.get_batch, list(names))
        calls.append("get_batch")
        if not ptrs:
            break
        if len(ptrs) != len(names):
            errors.append(f"get_batch returned {len(ptrs)} pointers for {len(names)} inputs {names}")
            return {}
        feeds = {}
        for t, ptr in zip(network._inputs, ptrs, strict=True):
            np_type = np.dtype(_core.nptype(t.dtype))
            nbytes = _core.volume(shapes[t.name]) * np_type.itemsize
            try:  # TensorRT reads each input at the calibration shape from the pointer it was given
                feeds[t.name] = np.frombuffer(cuda.device_read(int(ptr), nbytes, "calibration"), np_type).reshape(shapes[t.name])
            except cuda.LogicError as err:
                errors.append(f"Error Code 1: Cuda Runtime (an illegal memory access was encountered reading calibration input {t.name}: {err})")
                return {}
        for name, out in _core.run_onnx(network._onnx or b"", feeds).items():
            amax[name] = max(amax.get(name, 0.0), float(np.abs(out).max()))
        batches += 1
    record["calibration_batches"] = batches
    if not batches:
        errors.append("Error Code 2: Internal Error (Calibration failure: the calibrator provided no batches)")
        return {}
    scales = {name: a / 127.0 for name, a in amax.items()}
    text = header + "\n" + "".join(f"{k}: {struct.pack('>f', v).hex()}\n" for k, v in sorted(scales.items()))
    callback(cal.write_calibration_cache, memoryview(text.encode()))
    calls.append("write_calibration_cache")
    return scales


def _version_code() -> str:
    major, minor, patch = (int(x) for x in _core.__version__.split(".")[:3])
    return str(major * 10000 + minor * 100 + patch)
