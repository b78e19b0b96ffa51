"""A fake of TensorRT 10.13's Python API for tests on machines without a GPU: NOT shipped.

Tests install it as ``tensorrt`` (with the fake ``pycuda`` beside it, which holds the device memory
and streams both share). It implements exactly the subset ``jemc_infer.export.tensorrt`` and
``jemc_infer.engines.tensorrt`` use, with TensorRT's names, signatures and enum types (checked
against tensorrt-stubs 10.13.0.35 and NVIDIA's Python API docs), and enforces TensorRT's rules so
wrong usage fails:

- build: ``OnnxParser`` needs a network from ``Builder.create_network``; it reads the ONNX with the
  ``onnx`` package (inputs/outputs with -1 for dynamic dims; unsupported or foreign-domain nodes are
  ParserErrors naming the node); every dynamic input needs an optimisation profile with
  min <= opt <= max of the right rank and the network's fixed dims; INT8 needs a calibrator, driven
  as TensorRT drives one (get_algorithm, read_calibration_cache, get_batch_size, get_batch until
  empty, reading each input at the calibration profile's opt shape from device memory,
  write_calibration_cache in TensorRT's text format); the timing cache counts hits; failures are
  logged errors and a ``None`` result. ``build_serialized_network`` returns an ``IHostMemory``
  (buffer protocol only) holding a JSON description and the ONNX bytes.
- run: ``deserialize_cuda_engine`` refuses bytes the fake builder did not make, another TensorRT
  version, or another compute capability; ``set_input_shape`` outside the profile fails;
  ``execute_async_v3`` needs every IO tensor's address and every input shape, takes a CUstream
  handle (an int), and queues the work on that stream: outputs appear when the stream runs.
  FP16/INT8 engines round their outputs accordingly.
- pybind11 behaviour: Python subclasses (loggers, calibrators) must call the base ``__init__``;
  objects reject attributes they do not have; an exception escaping a Python callback terminates
  (``_Terminate``, a BaseException). Setting ``Runtime.engine_host_code_allowed`` is recorded in
  ``HOST_CODE_REQUESTS``; every build is recorded in ``BUILDS``.
"""

from __future__ import annotations

from . import _core
from ._builder import (
    Builder,
    IBuilderConfig,
    IInt8Calibrator,
    IInt8EntropyCalibrator2,
    INetworkDefinition,
    IOptimizationProfile,
    ITensor,
    ITimingCache,
    OnnxParser,
    ParserError,
)
from ._core import (
    BUILDS,
    HOST_CODE_REQUESTS,
    BuilderFlag,
    CalibrationAlgoType,
    DataType,
    Dims,
    ErrorCode,
    IHostMemory,
    ILogger,
    Logger,
    MemoryPoolType,
    NetworkDefinitionCreationFlag,
    TensorIOMode,
    nptype,
    volume,
)
from ._runtime import ICudaEngine, IExecutionContext, Runtime

__version__ = _core.__version__

float32, float16, int8, int32, int64 = DataType.FLOAT, DataType.HALF, DataType.INT8, DataType.INT32, DataType.INT64
bool = DataType.BOOL  # noqa: A001 - TensorRT exports its DataType.BOOL as ``tensorrt.bool``


def _set_version(version: str) -> None:
    """Tests: pretend to be another TensorRT release."""
    global __version__
    __version__ = _core.__version__ = version


__all__ = [
    "BUILDS", "HOST_CODE_REQUESTS", "Builder", "BuilderFlag", "CalibrationAlgoType", "DataType", "Dims", "ErrorCode",
    "IBuilderConfig", "ICudaEngine", "IExecutionContext", "IHostMemory", "IInt8Calibrator", "IInt8EntropyCalibrator2",
    "ILogger", "INetworkDefinition", "IOptimizationProfile", "ITensor", "ITimingCache", "Logger", "MemoryPoolType",
    "NetworkDefinitionCreationFlag", "OnnxParser", "ParserError", "Runtime", "TensorIOMode", "nptype", "volume",
]
