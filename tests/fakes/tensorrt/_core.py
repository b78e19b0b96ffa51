"""Shared pieces of the fake TensorRT: enums, Dims, loggers, IHostMemory, strict objects, ONNX runs."""

from __future__ import annotations

import enum
import hashlib
import sys
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

__version__ = "10.13.0.35"

# What tests read after a run: one record per build_serialized_network call, and every attempt to
# set Runtime.engine_host_code_allowed (the code under test must never make one).
BUILDS: list[dict[str, Any]] = []
HOST_CODE_REQUESTS: list[bool] = []


class _Terminate(BaseException):  # noqa: N818 - what the process would do: std::terminate
    """A Python exception escaped a TensorRT callback (noexcept in C++): the real process aborts."""


# --- enums (pybind11 enums in the real module; IntEnum here, type-checked at every call) ----------


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8
    INT4 = 9

    @property
    def itemsize(self) -> int:
        return np.dtype(nptype(self)).itemsize


class BuilderFlag(enum.IntEnum):
    FP16 = 0
    INT8 = 1
    DEBUG = 2
    GPU_FALLBACK = 3
    REFIT = 5
    DISABLE_TIMING_CACHE = 6
    TF32 = 7
    SPARSE_WEIGHTS = 8
    SAFETY_SCOPE = 9
    OBEY_PRECISION_CONSTRAINTS = 10
    PREFER_PRECISION_CONSTRAINTS = 11
    DIRECT_IO = 12
    REJECT_EMPTY_ALGORITHMS = 13
    VERSION_COMPATIBLE = 14
    EXCLUDE_LEAN_RUNTIME = 15
    FP8 = 16
    BF16 = 19


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0
    DLA_MANAGED_SRAM = 1
    DLA_LOCAL_DRAM = 2
    DLA_GLOBAL_DRAM = 3
    TACTIC_DRAM = 4
    TACTIC_SHARED_MEMORY = 5


class NetworkDefinitionCreationFlag(enum.IntEnum):
    EXPLICIT_BATCH = 0  # deprecated and ignored in TensorRT 10: networks are always explicit batch
    STRONGLY_TYPED = 1
    PREFER_JIT_PYTHON_PLUGINS = 2
    PREFER_AOT_PYTHON_PLUGINS = 3


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class CalibrationAlgoType(enum.IntEnum):
    LEGACY_CALIBRATION = 0
    ENTROPY_CALIBRATION = 1
    ENTROPY_CALIBRATION_2 = 2
    MINMAX_CALIBRATION = 3


class ErrorCode(enum.IntEnum):
    SUCCESS = 0
    INTERNAL_ERROR = 1
    MEM_ALLOC_FAILED = 2
    MODEL_DESERIALIZE_FAILED = 3
    INVALID_VALUE = 4
    INVALID_GRAPH = 5
    INVALID_NODE = 6
    UNSUPPORTED_GRAPH = 7
    UNSUPPORTED_NODE = 8


_NP = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8, DataType.INT32: np.int32,
       DataType.BOOL: np.bool_, DataType.UINT8: np.uint8, DataType.INT64: np.int64}


def nptype(trt_type: DataType) -> type:
    """The numpy type of a TensorRT DataType (``tensorrt.nptype``)."""
    if trt_type not in _NP:
        raise TypeError(f"Could not resolve TensorRT datatype to an equivalent numpy datatype. ({trt_type!r})")
    return _NP[trt_type]


def volume(iterable: Iterable[int]) -> int:
    out = 1
    for d in iterable:
        out *= int(d)
    return out


def check_enum(value: Any, kind: type, what: str) -> None:
    """pybind11 rejects a plain int (or another enum) where an enum is declared."""
    if not isinstance(value, kind):
        raise TypeError(f"{what}(): incompatible function arguments. The following argument types are supported: "
                        f"tensorrt.{kind.__name__}; invoked with: {value!r}")


class Dims:
    """``tensorrt.Dims``: a sequence of ints; -1 marks a dimension known only at run time."""

    def __init__(self, shape: Iterable[int] = ()) -> None:
        self._d = tuple(int(d) for d in shape)

    def __len__(self) -> int:
        return len(self._d)

    def __getitem__(self, i: Any) -> Any:
        return self._d[i]

    def __iter__(self) -> Any:
        return iter(self._d)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Dims):
            return self._d == other._d
        if isinstance(other, (tuple, list)):
            return self._d == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._d)

    def __repr__(self) -> str:
        return f"({', '.join(map(str, self._d))})"


def as_dims(value: Any, what: str) -> tuple[int, ...]:
    """What pybind11 converts to Dims: Dims, tuple or list of ints."""
    if isinstance(value, Dims):
        return tuple(value)
    if isinstance(value, (tuple, list)) and all(isinstance(d, (int, np.integer)) for d in value):
        return tuple(int(d) for d in value)
    raise TypeError(f"{what}(): incompatible function arguments: expected tensorrt.Dims (or a tuple/list of int), got {value!r}")


# --- loggers and trampolines ---------------------------------------------------------------------


class ILogger:
    """Base of Python loggers. A subclass must call ``ILogger.__init__(self)`` (pybind11 trampoline)."""

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    INTERNAL_ERROR = Severity.INTERNAL_ERROR
    ERROR = Severity.ERROR
    WARNING = Severity.WARNING
    INFO = Severity.INFO
    VERBOSE = Severity.VERBOSE

    def __init__(self) -> None:
        self._trt_base_init = True

    def log(self, severity: ILogger.Severity, msg: str) -> None:
        raise RuntimeError('Tried to call pure virtual function "ILogger::log"')


class Logger(ILogger):
    """TensorRT's own logger: prints messages at or above ``min_severity`` to stderr."""

    def __init__(self, min_severity: ILogger.Severity = ILogger.Severity.WARNING) -> None:
        super().__init__()
        self.min_severity = min_severity

    def log(self, severity: ILogger.Severity, msg: str) -> None:
        if severity <= self.min_severity:
            print(f"[TRT] [{severity.name[0]}] {msg}", file=sys.stderr)


def check_trampoline(obj: Any, base: type, what: str) -> None:
    if not isinstance(obj, base):
        raise TypeError(f"{what}: incompatible function arguments: expected tensorrt.{base.__name__}, got {type(obj).__name__}")
    if not getattr(obj, "_trt_base_init", False):
        raise TypeError(f"{type(obj).__name__}.__init__() must be called when overriding __init__")


def callback(fn: Callable[..., Any], *args: Any) -> Any:
    """Call into Python from "C++": an exception escaping a noexcept virtual terminates the process."""
    try:
        return fn(*args)
    except Exception as err:
        raise _Terminate(f"terminate called after a Python exception escaped {getattr(fn, '__qualname__', fn)}: {err!r}") from err


def log(logger: ILogger, severity: ILogger.Severity, msg: str) -> None:
    callback(logger.log, severity, msg)


# --- objects -------------------------------------------------------------------------------------


class Strict:
    """pybind11 objects have no ``__dict__``: assigning an attribute the class lacks fails."""

    _ATTRS: frozenset[str] = frozenset()

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_") and name not in self._ATTRS:
            raise AttributeError(f"'tensorrt.{type(self).__name__}' object has no attribute '{name}'")
        object.__setattr__(self, name, value)


class IHostMemory(bytes):
    """Memory TensorRT owns: usable through the buffer protocol (``memoryview``, ``bytes()``), nothing else."""

    @property
    def nbytes(self) -> int:
        return bytes.__len__(self)

    @property
    def dtype(self) -> DataType:
        return DataType.UINT8

    def __len__(self) -> int:
        raise TypeError("object of type 'tensorrt.IHostMemory' has no len()")

    def __getitem__(self, item: Any) -> Any:
        raise TypeError("'tensorrt.IHostMemory' object is not subscriptable")

    def __iter__(self) -> Any:
        raise TypeError("'tensorrt.IHostMemory' object is not iterable")


def buffer_bytes(obj: Any, what: str) -> bytes:
    try:
        return memoryview(obj).tobytes()
    except TypeError:
        raise TypeError(f"{what}(): incompatible function arguments: expected a buffer, got {type(obj).__name__}") from None


# --- running the embedded ONNX graph (what the "kernels" compute) ------------------------------------

_SESSIONS: dict[str, Any] = {}


def run_onnx(onnx_bytes: bytes, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    key = hashlib.sha256(onnx_bytes).hexdigest()
    if key not in _SESSIONS:
        _SESSIONS[key] = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    sess = _SESSIONS[key]
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds), strict=True))


def current_device() -> tuple[str, tuple[int, int]]:
    """The device of the fake pycuda machine (TensorRT works on the current CUDA device)."""
    cuda = sys.modules.get("pycuda.driver")
    if cuda is None:
        raise RuntimeError("the fake tensorrt needs the fake pycuda.driver installed beside it")
    name, cc, _ = cuda.MACHINE.devices[0]
    return name, cc
