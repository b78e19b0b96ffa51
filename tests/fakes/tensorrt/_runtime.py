"""The fake TensorRT's run side: Runtime, ICudaEngine, IExecutionContext.

The "kernels" run the ONNX graph the plan embeds with onnxruntime (CPU), reading inputs from and
writing outputs to the fake pycuda's device memory, as stream work: they run when the stream does.
"""

from __future__ import annotations

import json
import struct
import sys
from typing import Any

import numpy as np

from . import _core
from ._builder import PLAN_MAGIC
from ._core import BuilderFlag, DataType, Dims, ILogger, Strict, TensorIOMode, buffer_bytes, check_trampoline, log


def _unpack_plan(data: bytes) -> tuple[dict[str, Any], bytes] | None:
    if not data.startswith(PLAN_MAGIC) or len(data) < len(PLAN_MAGIC) + 8:
        return None
    (n,) = struct.unpack("<Q", data[len(PLAN_MAGIC):len(PLAN_MAGIC) + 8])
    start = len(PLAN_MAGIC) + 8
    try:
        header = json.loads(data[start:start + n])
    except ValueError:
        return None
    return header, data[start + n:]


class Runtime(Strict):
    _ATTRS = frozenset({"engine_host_code_allowed", "max_threads"})

    def __init__(self, logger: ILogger) -> None:
        check_trampoline(logger, ILogger, "Runtime()")
        self._logger = logger
        self._host_code = False
        self.max_threads = 1

    @property
    def engine_host_code_allowed(self) -> bool:
        return self._host_code

    @engine_host_code_allowed.setter
    def engine_host_code_allowed(self, value: bool) -> None:
        _core.HOST_CODE_REQUESTS.append(bool(value))  # recorded: the code under test must never ask
        self._host_code = bool(value)

    def deserialize_cuda_engine(self, serialized_engine: Any) -> ICudaEngine | None:
        data = buffer_bytes(serialized_engine, "deserialize_cuda_engine")
        unpacked = _unpack_plan(data)
        if unpacked is None:
            log(self._logger, ILogger.ERROR, "Error Code 1: Serialization (Serialization assertion magicTagRead == kMAGIC_TAG failed."
                "Magic tag does not match)")
            return None
        header, onnx_bytes = unpacked
        if header["tensorrt"] != _core.__version__:
            log(self._logger, ILogger.ERROR, "Error Code 6: API Usage Error (The engine plan file is not compatible with this version "
                f"of TensorRT, expecting library version {_core.__version__} got {header['tensorrt']}, please rebuild.)")
            return None
        name, cc = _core.current_device()
        if tuple(header["cc"]) != cc:
            log(self._logger, ILogger.ERROR, "Error Code 6: API Usage Error (The engine plan file is generated on an incompatible "
                f"device, expecting compute {cc[0]}.{cc[1]} got compute {header['cc'][0]}.{header['cc'][1]}, please rebuild.)")
            return None
        if header["device"] != name:
            log(self._logger, ILogger.WARNING, f"Using an engine plan file across different models of devices is not recommended "
                f"(built on {header['device']}, running on {name})")
        return ICudaEngine(header, onnx_bytes, self._logger)


class ICudaEngine(Strict):
    def __init__(self, header: dict[str, Any], onnx_bytes: bytes, logger: ILogger) -> None:
        self._h, self._onnx, self._logger = header, onnx_bytes, logger
        self._io = {n: (TensorIOMode.INPUT, DataType(dt), tuple(s)) for n, dt, s in header["inputs"]}
        self._io |= {n: (TensorIOMode.OUTPUT, DataType(dt), tuple(s)) for n, dt, s in header["outputs"]}
        self._names = list(self._io)

    num_io_tensors = property(lambda self: len(self._names))
    num_optimization_profiles = property(lambda self: len(self._h["profiles"]))
    device_memory_size = property(lambda self: 1 << 20)
    has_implicit_batch_dimension = property(lambda self: False)

    def get_tensor_name(self, index: int) -> str:
        if not 0 <= index < len(self._names):
            raise IndexError(f"tensor index {index} out of range [0, {len(self._names)})")
        return self._names[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return self._io[name][0] if name in self._io else TensorIOMode.NONE

    def get_tensor_dtype(self, name: str) -> DataType:
        if name not in self._io:
            log(self._logger, ILogger.ERROR, f"Error Code 3: API Usage Error (no tensor named {name})")
            return DataType.FLOAT
        return self._io[name][1]

    def get_tensor_shape(self, name: str) -> Dims:
        return Dims(self._io[name][2]) if name in self._io else Dims()

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[Dims]:
        if self.get_tensor_mode(name) != TensorIOMode.INPUT or not 0 <= profile_index < self.num_optimization_profiles:
            log(self._logger, ILogger.ERROR, f"Error Code 3: API Usage Error (no profile shape for {name} in profile {profile_index})")
            return []
        shapes = self._h["profiles"][profile_index].get(name)
        return [Dims(s) for s in shapes] if shapes else [Dims(self._io[name][2])] * 3

    def create_execution_context(self, *args: Any) -> IExecutionContext:
        return IExecutionContext(self)


class IExecutionContext(Strict):
    _ATTRS = frozenset({"name", "debug_sync"})

    def __init__(self, engine: ICudaEngine) -> None:
        self._engine = engine
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._addresses: dict[str, int] = {}
        self._changed_since_enqueue = True  # the first enqueue after a shape change does host-side setup
        self.name = ""
        self.debug_sync = False

    engine = property(lambda self: self._engine)

    def _error(self, msg: str) -> None:
        log(self._engine._logger, ILogger.ERROR, msg)

    def set_input_shape(self, name: str, shape: Any) -> bool:
        dims = _core.as_dims(shape, "set_input_shape")
        eng = self._engine
        if eng.get_tensor_mode(name) != TensorIOMode.INPUT:
            self._error(f"IExecutionContext::setInputShape: Error Code 3: API Usage Error ({name} is not an input tensor)")
            return False
        static = eng._io[name][2]
        if len(dims) != len(static) or any(s >= 0 and s != d for s, d in zip(static, dims, strict=False)):
            self._error(f"IExecutionContext::setInputShape: Error Code 3: API Usage Error (Static dimension mismatch while setting "
                        f"input shape for {name}. Set dimensions are {list(dims)}. Expected dimensions are {list(static)}.)")
            return False
        lo, _, hi = (tuple(d) for d in eng.get_tensor_profile_shape(name, 0))
        for i, (a, d, b) in enumerate(zip(lo, dims, hi, strict=True)):
            if not a <= d <= b:
                self._error(f"IExecutionContext::setInputShape: Error Code 3: API Usage Error (Parameter check failed, condition: "
                            f"satisfyProfile Runtime dimension does not satisfy any optimization profile. Supplied binding dimension "
                            f"{list(dims)} for bindings[{name}] exceed min ~ max range at index {i}, maximum dimension in profile is "
                            f"{b}, minimum dimension in profile is {a}, but supplied dimension is {d}.)")
                return False
        if self._shapes.get(name) != dims:
            self._changed_since_enqueue = True
        self._shapes[name] = dims
        return True

    @property
    def all_binding_shapes_specified(self) -> bool:
        return all(n in self._shapes for n, (mode, _, _) in self._engine._io.items() if mode == TensorIOMode.INPUT)

    def get_tensor_shape(self, name: str) -> Dims:
        eng = self._engine
        mode = eng.get_tensor_mode(name)
        if mode == TensorIOMode.INPUT:
            return Dims(self._shapes.get(name, eng._io[name][2]))
        if mode != TensorIOMode.OUTPUT:
            self._error(f"Error Code 3: API Usage Error (no tensor named {name})")
            return Dims()
        if not self.all_binding_shapes_specified:
            return Dims(eng._io[name][2])
        return Dims(self._output_shape(name))

    def _output_shape(self, name: str) -> tuple[int, ...]:
        params = self._engine._h["input_params"]
        out = []
        for d in self._engine._h["output_dims"][name]:
            if isinstance(d, int):
                out.append(d)
            elif d in params:
                src, axis = params[d]
                out.append(self._shapes[src][axis])
            else:  # not named after an input axis: infer it by running the graph on zeros
                return self._run(self._zeros())[name].shape
        return tuple(out)

    def _zeros(self) -> dict[str, np.ndarray]:
        return {n: np.zeros(self._shapes[n], _core.nptype(dt)) for n, (m, dt, _) in self._engine._io.items() if m == TensorIOMode.INPUT}

    def set_tensor_address(self, name: str, memory: int) -> bool:
        if not isinstance(memory, int):
            raise TypeError(f"set_tensor_address(): incompatible function arguments: memory must be an int pointer, got {type(memory).__name__}")
        if self._engine.get_tensor_mode(name) == TensorIOMode.NONE:
            self._error(f"IExecutionContext::setTensorAddress: Error Code 3: API Usage Error (Given invalid tensor name: {name})")
            return False
        self._addresses[name] = memory
        return True

    def get_tensor_address(self, name: str) -> int:
        return self._addresses.get(name, 0)

    def execute_async_v3(self, stream_handle: int) -> bool:
        if not isinstance(stream_handle, int):
            raise TypeError(f"execute_async_v3(): incompatible function arguments: stream_handle must be an int (a CUstream), got "
                            f"{type(stream_handle).__name__}")
        eng = self._engine
        if not self.all_binding_shapes_specified:
            missing = [n for n, (m, _, _) in eng._io.items() if m == TensorIOMode.INPUT and n not in self._shapes]
            self._error(f"IExecutionContext::enqueueV3: Error Code 3: API Usage Error (input shapes not specified: {missing})")
            return False
        for name, (mode, _, _) in eng._io.items():
            if not self._addresses.get(name):
                kind = "input" if mode == TensorIOMode.INPUT else "output"
                self._error("IExecutionContext::enqueueV3: Error Code 3: API Usage Error (Parameter check failed, condition: "
                            f"mContext.profileObliviousBindings.at(profileObliviousIndex) || getPtrOrNull(mOutputAllocators, "
                            f"profileObliviousIndex). Neither address or allocator is set for {kind} tensor {name}. Call "
                            "setOutputTensorAddress, setTensorAddress or setOutputAllocator before enqueue/execute.)")
                return False
        cuda = sys.modules["pycuda.driver"]
        stream = cuda.stream_from_handle(stream_handle)
        if stream is not None and stream._capture is not None and self._changed_since_enqueue:
            stream._capture.invalidated = "enqueueV3 after a shape change"
            self._error("IExecutionContext::enqueueV3: Error Code 1: Cuda Runtime (operation not permitted when stream is capturing: "
                        "the first enqueue after an input shape change cannot be captured; enqueue once before capturing)")
            return False
        shapes = dict(self._shapes)
        out_shapes = {n: self._output_shape(n) for n, (m, _, _) in eng._io.items() if m == TensorIOMode.OUTPUT}
        addresses = dict(self._addresses)  # TensorRT binds the addresses at enqueue time

        def kernels() -> None:
            feeds = {}
            for n, shape in shapes.items():
                dt = np.dtype(_core.nptype(eng._io[n][1]))
                feeds[n] = np.frombuffer(cuda.device_read(addresses[n], _core.volume(shape) * dt.itemsize, f"enqueueV3 input {n}"), dt).reshape(shape)
            for n, value in self._precision(self._run(feeds)).items():
                value = np.ascontiguousarray(value, dtype=_core.nptype(eng._io[n][1]))
                if value.shape != out_shapes[n]:
                    raise cuda.LogicError(f"output {n} has shape {value.shape}, not {out_shapes[n]}")
                cuda.device_write(addresses[n], value.tobytes(), f"enqueueV3 output {n}")

        try:
            cuda.enqueue(stream_handle, "execute_async_v3", kernels)
        except cuda.LogicError as err:
            self._error(f"IExecutionContext::enqueueV3: Error Code 1: Cuda Runtime ({err})")
            return False
        self._changed_since_enqueue = False
        return True

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return _core.run_onnx(self._engine._onnx, feeds)

    def _precision(self, outs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Reduced precision, roughly as the flags make it: fp16 rounding; int8 steps of the calibrated scale."""
        flags = self._engine._h["flags"]
        scales = self._engine._h.get("int8_scales") or {}
        result = {}
        for n, v in outs.items():
            if v.dtype.kind == "f" and flags >> BuilderFlag.INT8 & 1 and n in scales and scales[n] > 0:
                v = (np.clip(np.round(v / scales[n]), -127, 127) * scales[n]).astype(v.dtype)
            elif v.dtype.kind == "f" and flags >> BuilderFlag.FP16 & 1:
                v = v.astype(np.float16).astype(v.dtype)
            result[n] = v
        return result
