"""A fake of the CUDA driver library's graph calls, as ``ctypes.CDLL("libcuda.so.1")`` exposes them.

pycuda 2026.1 wraps no CUDA graph API (no stream capture, no ``Graph``), so the TensorRT engine
calls the driver API through ctypes on pycuda's ``Stream.handle``. This fake stands in for that
library on top of the fake ``pycuda.driver`` (its streams and device memory) and enforces what the
real calls require:

- ``argtypes`` must be declared before a call: without them ctypes passes Python ints as C ``int``
  and a 64-bit handle does not fit (``ctypes.ArgumentError``, as with the real library);
- capture only on a non-default stream that is not already capturing; ``cuStreamEndCapture`` on a
  capture invalidated by a forbidden call (synchronize, pageable copy, ...) returns
  ``CUDA_ERROR_STREAM_CAPTURE_INVALIDATED`` and a NULL graph;
- instantiated graphs replay the captured work on the launch stream; destroyed graphs cannot be
  launched; every handle must be a live one.

Signatures from cuda.h (CUDA 12/13 driver API): ``cuStreamBeginCapture_v2(CUstream, CUstreamCaptureMode)``,
``cuStreamEndCapture(CUstream, CUgraph*)``, ``cuGraphInstantiateWithFlags(CUgraphExec*, CUgraph,
unsigned long long)``, ``cuGraphLaunch(CUgraphExec, CUstream)``, ``cuGraphExecDestroy(CUgraphExec)``,
``cuGraphDestroy(CUgraph)``, ``cuGetErrorName(CUresult, const char**)``.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from typing import Any

_NAMES = {0: b"CUDA_SUCCESS", 1: b"CUDA_ERROR_INVALID_VALUE", 400: b"CUDA_ERROR_INVALID_HANDLE",
          401: b"CUDA_ERROR_ILLEGAL_STATE", 900: b"CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED",
          901: b"CUDA_ERROR_STREAM_CAPTURE_INVALIDATED"}


def _value(x: Any) -> int:
    """The integer a ctypes argument carries (c_void_p(None) is NULL)."""
    v = x.value if hasattr(x, "value") else x
    return 0 if v is None else int(v)


def _out(x: Any) -> Any:
    """The ctypes object behind ``ctypes.byref(obj)`` (or ``ctypes.pointer(obj)``)."""
    return x._obj if hasattr(x, "_obj") else x.contents


class _Function:
    """One exported symbol: checks that ``argtypes``/``restype`` were declared, like real code must."""

    def __init__(self, name: str, impl: Callable[..., int]) -> None:
        self.__name__ = name
        self._impl = impl
        self.argtypes: list[Any] | None = None
        self.restype: Any = ctypes.c_int

    def __call__(self, *args: Any) -> int:
        if self.argtypes is None:
            for i, a in enumerate(args, 1):
                if isinstance(a, int) and not -(2**31) <= a < 2**31:
                    raise ctypes.ArgumentError(f"argument {i}: OverflowError: int too long to convert")
        elif len(args) != len(self.argtypes):
            raise TypeError(f"this function takes {len(self.argtypes)} arguments ({len(args)} given)")
        return self._impl(*args)


class FakeLibcuda:
    """Stands in for ``ctypes.CDLL("libcuda.so.1")`` (graph calls only)."""

    def __init__(self) -> None:
        self._graphs: dict[int, list[tuple[str, Callable[[], None]]]] = {}
        self._execs: dict[int, list[tuple[str, Callable[[], None]]]] = {}
        self._next = 0x6600_0000_0000
        self.launches = 0
        self.captures = 0
        for name in ("cuStreamBeginCapture_v2", "cuStreamEndCapture", "cuGraphInstantiateWithFlags", "cuGraphLaunch",
                     "cuGraphExecDestroy", "cuGraphDestroy", "cuGetErrorName"):
            setattr(self, name, _Function(name, getattr(self, "_" + name)))

    @staticmethod
    def _driver() -> Any:
        return sys.modules["pycuda.driver"]

    def _new_handle(self) -> int:
        self._next += 0x40
        return self._next

    def _cuStreamBeginCapture_v2(self, stream: Any, mode: Any) -> int:
        cuda = self._driver()
        handle = _value(stream)
        s = cuda.stream_from_handle(handle)
        if handle == 0:
            return cuda.CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED  # the legacy stream cannot be captured
        if s is None:
            return cuda.CUDA_ERROR_INVALID_HANDLE
        if s._capture is not None:
            return cuda.CUDA_ERROR_ILLEGAL_STATE
        s._capture = cuda._Capture(_value(mode))
        self.captures += 1
        return cuda.CUDA_SUCCESS

    def _cuStreamEndCapture(self, stream: Any, graph_out: Any) -> int:
        cuda = self._driver()
        s = cuda.stream_from_handle(_value(stream))
        if s is None:
            return cuda.CUDA_ERROR_INVALID_HANDLE
        if s._capture is None:
            return cuda.CUDA_ERROR_ILLEGAL_STATE
        capture, s._capture = s._capture, None
        if capture.invalidated:
            _out(graph_out).value = None
            return cuda.CUDA_ERROR_STREAM_CAPTURE_INVALIDATED
        handle = self._new_handle()
        self._graphs[handle] = list(capture.ops)
        _out(graph_out).value = handle
        return cuda.CUDA_SUCCESS

    def _cuGraphInstantiateWithFlags(self, exec_out: Any, graph: Any, flags: Any) -> int:
        ops = self._graphs.get(_value(graph))
        if ops is None:
            return self._driver().CUDA_ERROR_INVALID_VALUE
        handle = self._new_handle()
        self._execs[handle] = list(ops)
        _out(exec_out).value = handle
        return 0

    def _cuGraphLaunch(self, graph_exec: Any, stream: Any) -> int:
        cuda = self._driver()
        ops = self._execs.get(_value(graph_exec))
        s = cuda.stream_from_handle(_value(stream))
        if ops is None or s is None:
            return cuda.CUDA_ERROR_INVALID_HANDLE
        if s._capture is not None:
            return cuda.CUDA_ERROR_ILLEGAL_STATE
        s._queue.extend((f"graph:{label}", op) for label, op in ops)
        self.launches += 1
        return 0

    def _cuGraphExecDestroy(self, graph_exec: Any) -> int:
        return 0 if self._execs.pop(_value(graph_exec), None) is not None else 400

    def _cuGraphDestroy(self, graph: Any) -> int:
        return 0 if self._graphs.pop(_value(graph), None) is not None else 400

    def _cuGetErrorName(self, code: Any, out: Any) -> int:
        name = _NAMES.get(_value(code))
        if name is None:
            return 1
        _out(out).value = name
        return 0

    @property
    def live(self) -> tuple[int, int]:
        """(graphs, executable graphs) not yet destroyed."""
        return len(self._graphs), len(self._execs)
