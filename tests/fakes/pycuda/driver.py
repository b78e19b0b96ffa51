"""Fake ``pycuda.driver``: device memory, streams and contexts without a GPU (tests only).

What it enforces, as CUDA/pycuda do:

- ``init()`` before ``Device``; a current context (``pycuda.autoprimaryctx``) before ``mem_alloc``,
  ``Stream`` or any copy; ``make_context`` (a second context) is counted so tests can assert on it.
- Device memory: ``mem_alloc`` returns a :class:`DeviceAllocation` whose ``int()`` is a pointer into
  a numpy byte buffer filled with garbage (device memory is uninitialised). Copies check that every
  byte lies inside one live allocation; freed memory (``free()``, or the allocation object being
  garbage collected, as pycuda does) cannot be used; a double ``free()`` fails.
- Streams run their work in order on ``synchronize()``, not before. ``memcpy_dtoh_async`` into
  page-locked memory lands only when the stream is synchronised (forget it and the output is
  garbage); into pageable memory it completes before returning, as CUDA documents, and is counted
  in ``MACHINE.stats["pageable_dtoh"]``. ``memcpy_htod_async`` from page-locked memory reads
  the host buffer when the copy runs (so it must not change before then); from pageable memory it is
  staged at once.
- Stream capture (driven by the fake libcuda, ``tests/fakes/libcuda.py``: pycuda 2026.1 has no CUDA
  graph API): work on a capturing stream is recorded, not run; synchronising a capturing stream,
  a synchronous copy, a pageable-memory async copy or ``mem_alloc`` during a global-mode capture
  fail and invalidate the capture.

Exceptions carry pycuda's names (``LogicError``, ``LaunchError``; both subclass ``Error``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

# --- exceptions, named as pycuda's (pycuda._driver) ------------------------------------------------


class Error(Exception):
    """Base of every pycuda error."""


class LogicError(Error):
    """A CUDA call was used wrongly (invalid value, no context, ...)."""


class LaunchError(Error):
    """Work on the device failed (reported when the stream is synchronised)."""


class MemoryError(Error):  # noqa: A001 - pycuda's own name
    """Out of device memory."""


# CUresult codes the fake libcuda returns (cuda.h).
CUDA_SUCCESS = 0
CUDA_ERROR_INVALID_VALUE = 1
CUDA_ERROR_INVALID_HANDLE = 400
CUDA_ERROR_ILLEGAL_STATE = 401
CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED = 900
CUDA_ERROR_STREAM_CAPTURE_INVALIDATED = 901
CAPTURE_MODE_GLOBAL, CAPTURE_MODE_THREAD_LOCAL, CAPTURE_MODE_RELAXED = 0, 1, 2

_GUARD = 4096  # bytes between allocations, so an overrun never lands in a neighbour
_GARBAGE = 0xA5


class _Capture:
    def __init__(self, mode: int) -> None:
        self.mode = mode
        self.ops: list[tuple[str, Callable[[], None]]] = []
        self.invalidated: str | None = None


class _Machine:
    """The simulated GPU: one device, a context stack, allocations, pinned ranges, streams."""

    def __init__(self) -> None:
        self.initialized = False
        # (name, compute capability, memory): tests may change it to simulate another machine
        self.devices: list[tuple[str, tuple[int, int], int]] = [("NVIDIA H100 80GB HBM3", (9, 0), 80 << 30)]
        self.sms = 132  # multiprocessors per device
        self.context_stack: list[Context] = []
        self.contexts_created = 0  # make_context: a second context besides the primary one
        self.allocations: dict[int, DeviceAllocation] = {}
        self.next_ptr = 0x7F00_0000_0000
        self.pinned: list[np.ndarray] = []  # kept alive so their address ranges stay theirs
        self.streams: dict[int, Stream] = {}
        self.next_handle = 0x5555_0000_0000
        self.stats = {"pageable_htod": 0, "pageable_dtoh": 0, "htod": 0, "dtoh": 0, "syncs": 0, "mem_alloc": 0, "free": 0}

    def capturing_globally(self) -> bool:
        return any(s._capture is not None and s._capture.mode == CAPTURE_MODE_GLOBAL for s in self.streams.values())


MACHINE = _Machine()


def _require_init(api: str) -> None:
    if not MACHINE.initialized:
        raise LogicError(f"{api} failed: initialization error (cuInit has not been called)")


def _require_context(api: str) -> None:
    _require_init(api)
    if not MACHINE.context_stack:
        raise LogicError(f"{api} failed: invalid device context - no currently active context?")


def _forbid_during_global_capture(api: str) -> None:
    if MACHINE.capturing_globally():
        for s in MACHINE.streams.values():
            if s._capture is not None:
                s._capture.invalidated = f"{api} during capture"
        raise LogicError(f"{api} failed: operation not permitted when stream is capturing")


def init(flags: int = 0) -> None:
    MACHINE.initialized = True


# --- devices and contexts ---------------------------------------------------------------------------


class Device:
    """``pycuda.driver.Device(ordinal)``."""

    def __init__(self, ordinal: int) -> None:
        _require_init("cuDeviceGet")
        if not 0 <= int(ordinal) < len(MACHINE.devices):
            raise LogicError("cuDeviceGet failed: invalid device ordinal")
        self._ordinal = int(ordinal)

    @staticmethod
    def count() -> int:
        _require_init("cuDeviceGetCount")
        return len(MACHINE.devices)

    def name(self) -> str:
        return MACHINE.devices[self._ordinal][0]

    def compute_capability(self) -> tuple[int, int]:
        return MACHINE.devices[self._ordinal][1]

    def total_memory(self) -> int:
        return MACHINE.devices[self._ordinal][2]

    def get_attribute(self, attr: int) -> int:
        if attr != device_attribute.MULTIPROCESSOR_COUNT:
            raise LogicError(f"cuDeviceGetAttribute failed: invalid value (the fake knows no attribute {attr})")
        return MACHINE.sms

    def retain_primary_context(self) -> Context:
        return Context(self, primary=True)

    def make_context(self, flags: int = 0) -> Context:
        MACHINE.contexts_created += 1
        ctx = Context(self, primary=False)
        ctx.push()
        return ctx

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Device) and other._ordinal == self._ordinal

    def __hash__(self) -> int:
        return self._ordinal


class Context:
    """A CUDA context; only the calls pycuda exposes that the code under test may use."""

    def __init__(self, device: Device, primary: bool) -> None:
        self._device = device
        self.primary = primary

    def push(self) -> None:
        MACHINE.context_stack.append(self)

    @staticmethod
    def pop() -> None:
        if not MACHINE.context_stack:
            raise LogicError("cuCtxPopCurrent failed: invalid device context")
        MACHINE.context_stack.pop()

    @staticmethod
    def get_current() -> Context | None:
        return MACHINE.context_stack[-1] if MACHINE.context_stack else None

    @staticmethod
    def get_device() -> Device:
        _require_context("cuCtxGetDevice")
        return MACHINE.context_stack[-1]._device

    @staticmethod
    def synchronize() -> None:
        _require_context("cuCtxSynchronize")
        for s in list(MACHINE.streams.values()):
            s.synchronize()


# --- device memory ------------------------------------------------------------------------------------


class DeviceAllocation:
    """What ``mem_alloc`` returns; ``int(alloc)`` is the device pointer."""

    def __init__(self, ptr: int, size: int) -> None:
        self._ptr = ptr
        self.size = size
        self.data = np.full(size, _GARBAGE, dtype=np.uint8)  # device memory starts as garbage
        self.freed = False

    def __int__(self) -> int:
        return self._ptr

    def __index__(self) -> int:
        return self._ptr

    def free(self) -> None:
        if self.freed:
            raise LogicError("cuMemFree failed: invalid value (memory already freed)")
        self._release()

    def _release(self) -> None:
        self.freed = True
        MACHINE.allocations.pop(self._ptr, None)
        MACHINE.stats["free"] += 1

    def __del__(self) -> None:
        # pycuda frees an allocation when its Python object dies: a pointer kept without the
        # object is a dangling pointer, and the fake makes it one.
        if not getattr(self, "freed", True):
            self._release()


def mem_alloc(bytesize: int) -> DeviceAllocation:
    _require_context("cuMemAlloc")
    _forbid_during_global_capture("cuMemAlloc")
    if int(bytesize) <= 0:
        raise LogicError("cuMemAlloc failed: invalid argument")
    ptr = MACHINE.next_ptr
    MACHINE.next_ptr += (int(bytesize) + 511) // 512 * 512 + _GUARD
    alloc = DeviceAllocation(ptr, int(bytesize))
    MACHINE.allocations[ptr] = alloc
    MACHINE.stats["mem_alloc"] += 1
    return alloc


def _resolve(ptr: int, nbytes: int, api: str) -> tuple[DeviceAllocation, int]:
    """The live allocation holding ``[ptr, ptr + nbytes)`` and the offset into it."""
    for base, alloc in MACHINE.allocations.items():
        if base <= ptr < base + alloc.size:
            if ptr - base + nbytes > alloc.size:
                raise LogicError(f"{api} failed: invalid argument ({nbytes} bytes at {ptr:#x} overrun the "
                                 f"{alloc.size}-byte allocation at {base:#x})")
            return alloc, ptr - base
    raise LogicError(f"{api} failed: invalid argument ({ptr:#x} is not live device memory: never allocated, or freed)")


def device_read(ptr: int, nbytes: int, api: str = "kernel") -> bytes:
    """What a kernel reading ``nbytes`` at ``ptr`` sees (for the fake TensorRT)."""
    alloc, off = _resolve(int(ptr), nbytes, api)
    return alloc.data[off:off + nbytes].tobytes()


def device_write(ptr: int, data: bytes, api: str = "kernel") -> None:
    """A kernel writing ``data`` at ``ptr`` (for the fake TensorRT)."""
    alloc, off = _resolve(int(ptr), len(data), api)
    alloc.data[off:off + len(data)] = np.frombuffer(data, dtype=np.uint8)


# --- host memory ----------------------------------------------------------------------------------------


def pagelocked_empty(shape: Any, dtype: Any, order: str = "C", mem_flags: int = 0) -> np.ndarray:
    """Page-locked host memory: a numpy array (filled with garbage, as ``np.empty`` may be)."""
    _require_context("cuMemHostAlloc")
    a = np.empty(shape, dtype=dtype, order=order)
    a.reshape(-1).view(np.uint8)[:] = 0xCD
    MACHINE.pinned.append(a)
    return a


def _bytes_view(obj: Any, writable: bool, api: str) -> np.ndarray:
    try:
        mv = memoryview(obj)
    except TypeError as err:
        raise TypeError(f"{api}: expected an object with the buffer protocol, got {type(obj).__name__}") from err
    if not mv.c_contiguous:
        raise TypeError(f"{api}: buffer is not C-contiguous")
    if writable and mv.readonly:
        raise TypeError(f"{api}: buffer is read-only")
    return np.frombuffer(mv.cast("B"), dtype=np.uint8)


def _is_pinned(view: np.ndarray) -> bool:
    start = view.__array_interface__["data"][0]
    for a in MACHINE.pinned:
        lo = a.__array_interface__["data"][0]
        if lo <= start and start + view.nbytes <= lo + a.nbytes:
            return True
    return False


def _stream_of(stream: Stream | None) -> Stream | None:
    if stream is not None and not isinstance(stream, Stream):
        raise TypeError(f"stream must be a pycuda.driver.Stream or None, got {type(stream).__name__}")
    return stream


def memcpy_htod_async(dest: Any, src: Any, stream: Stream | None = None) -> None:
    _require_context("cuMemcpyHtoDAsync")
    s = _stream_of(stream)
    view = _bytes_view(src, writable=False, api="cuMemcpyHtoDAsync")
    ptr, nbytes = int(dest), view.nbytes
    _resolve(ptr, nbytes, "cuMemcpyHtoDAsync")
    pinned = _is_pinned(view)
    if not pinned:
        _refuse_pageable_in_capture(s, "cuMemcpyHtoDAsync")
        MACHINE.stats["pageable_htod"] += 1
        view = view.copy()  # pageable memory is staged by the driver before the call returns
    MACHINE.stats["htod"] += 1
    _submit(s, "memcpy_htod", lambda: device_write(ptr, view.tobytes(), "cuMemcpyHtoDAsync"))


def memcpy_dtoh_async(dest: Any, src: Any, stream: Stream | None = None) -> None:
    _require_context("cuMemcpyDtoHAsync")
    s = _stream_of(stream)
    view = _bytes_view(dest, writable=True, api="cuMemcpyDtoHAsync")
    ptr, nbytes = int(src), view.nbytes
    _resolve(ptr, nbytes, "cuMemcpyDtoHAsync")
    MACHINE.stats["dtoh"] += 1

    def copy() -> None:
        view[:] = np.frombuffer(device_read(ptr, nbytes, "cuMemcpyDtoHAsync"), dtype=np.uint8)

    if _is_pinned(view):
        _submit(s, "memcpy_dtoh", copy)
        return
    # To pageable memory CUDA returns only once the copy is done (it waits for the stream).
    _refuse_pageable_in_capture(s, "cuMemcpyDtoHAsync")
    MACHINE.stats["pageable_dtoh"] += 1
    if s is not None:
        s._run_queue()
    copy()


def memcpy_htod(dest: Any, src: Any) -> None:
    _require_context("cuMemcpyHtoD")
    _forbid_during_global_capture("cuMemcpyHtoD")
    Context.synchronize()
    view = _bytes_view(src, writable=False, api="cuMemcpyHtoD")
    device_write(int(dest), view.tobytes(), "cuMemcpyHtoD")


def memcpy_dtoh(dest: Any, src: Any) -> None:
    _require_context("cuMemcpyDtoH")
    _forbid_during_global_capture("cuMemcpyDtoH")
    Context.synchronize()
    view = _bytes_view(dest, writable=True, api="cuMemcpyDtoH")
    view[:] = np.frombuffer(device_read(int(src), view.nbytes, "cuMemcpyDtoH"), dtype=np.uint8)


def _refuse_pageable_in_capture(s: Stream | None, api: str) -> None:
    if s is not None and s._capture is not None:
        s._capture.invalidated = f"{api} with pageable host memory"
        raise LogicError(f"{api} failed: operation not permitted when stream is capturing (pageable host memory)")


# --- streams ----------------------------------------------------------------------------------------------


class Stream:
    """``pycuda.driver.Stream(flags=0)``: work queues up and runs on ``synchronize()``."""

    def __init__(self, flags: int = 0) -> None:
        _require_context("cuStreamCreate")
        self.handle = MACHINE.next_handle
        MACHINE.next_handle += 0x100
        MACHINE.streams[self.handle] = self
        self._queue: list[tuple[str, Callable[[], None]]] = []
        self._capture: _Capture | None = None
        self.executed: list[str] = []  # labels of the work run so far, in order (for tests)

    def synchronize(self) -> None:
        if self._capture is not None:
            self._capture.invalidated = "cuStreamSynchronize during capture"
            raise LogicError("cuStreamSynchronize failed: operation not permitted when stream is capturing")
        MACHINE.stats["syncs"] += 1
        self._run_queue()

    def is_done(self) -> bool:
        return not self._queue

    def _run_queue(self) -> None:
        while self._queue:
            label, op = self._queue.pop(0)
            try:
                op()
            except LogicError as err:
                self._queue.clear()
                raise LaunchError(f"cuStreamSynchronize failed: an illegal memory access was encountered ({label}: {err})") from None
            self.executed.append(label)


def _submit(stream: Stream | None, label: str, op: Callable[[], None]) -> None:
    if stream is None:  # the legacy default stream: the fake runs it at once
        op()
        return
    if stream._capture is not None:
        stream._capture.ops.append((label, op))
    else:
        stream._queue.append((label, op))


def enqueue(handle: int, label: str, op: Callable[[], None]) -> None:
    """Put work on the stream with this CUstream handle (for the fake TensorRT)."""
    if handle == 0:
        op()
        return
    if handle not in MACHINE.streams:
        raise LogicError(f"invalid resource handle: {handle:#x} is not a stream")
    _submit(MACHINE.streams[handle], label, op)


def stream_from_handle(handle: int) -> Stream | None:
    return MACHINE.streams.get(handle)


# --- modules and kernels (jemc_infer.index.gpu) ------------------------------------------------------------


class device_attribute:  # noqa: N801 - pycuda's own name
    MULTIPROCESSOR_COUNT = 16


class function_attribute:  # noqa: N801 - pycuda's own name
    MAX_DYNAMIC_SHARED_SIZE_BYTES = 8


SHARED_DEFAULT, SHARED_OPTIN = 48 << 10, 227 << 10  # bytes of dynamic shared memory (sm_90)
# Kernel name → its emulation ``(args, grid, block, shared) -> None``, reading and writing device
# memory with device_read/device_write; tests register them (the fake cannot run a cubin).
KERNELS: dict[str, Callable[..., None]] = {}


class Function:
    """A kernel: launched with ``f(*args, block=, grid=, stream=, shared=)`` as pycuda launches it."""

    def __init__(self, name: str) -> None:
        self.name, self.max_shared = name, SHARED_DEFAULT

    def set_attribute(self, attr: int, value: int) -> None:
        _require_context("cuFuncSetAttribute")
        if attr != function_attribute.MAX_DYNAMIC_SHARED_SIZE_BYTES or not 0 <= int(value) <= SHARED_OPTIN:
            raise LogicError("cuFuncSetAttribute failed: invalid value")
        self.max_shared = int(value)

    def __call__(self, *args: Any, block: tuple[int, int, int], grid: tuple[int, ...] = (1, 1), stream: Stream | None = None,
                 shared: int = 0) -> None:
        _require_context("cuLaunchKernel")
        if not 1 <= block[0] * block[1] * block[2] <= 1024:
            raise LogicError(f"cuLaunchKernel failed: invalid argument (block {block})")
        if not (1 <= grid[0] < 2**31 and all(1 <= g <= 65535 for g in grid[1:])):
            raise LogicError(f"cuLaunchKernel failed: invalid argument (grid {grid})")
        if int(shared) > self.max_shared:
            raise LogicError(f"cuLaunchKernel failed: invalid argument ({shared} bytes of shared memory, "
                             f"{self.max_shared} allowed: set MAX_DYNAMIC_SHARED_SIZE_BYTES first)")
        for i, a in enumerate(args):  # pycuda packs numpy scalars and device pointers, nothing else
            if not isinstance(a, DeviceAllocation | np.generic):
                raise TypeError(f"invalid type on parameter #{i} (0-based)")
        _submit(_stream_of(stream), self.name, lambda: KERNELS[self.name](args, tuple(grid), tuple(block), int(shared)))


class Module:
    def __init__(self, image: bytes) -> None:
        if not image.startswith(b"\x7fELF"):
            raise LogicError("cuModuleLoadData failed: device kernel image is invalid")

    def get_function(self, name: str) -> Function:
        if name not in KERNELS:
            raise LogicError(f"cuModuleGetFunction failed: named symbol not found ({name})")
        return Function(name)


def module_from_buffer(buffer: bytes, options: Any = None, message_handler: Any = None) -> Module:
    _require_context("cuModuleLoadDataEx")
    return Module(bytes(buffer))


def mem_get_info() -> tuple[int, int]:
    _require_context("cuMemGetInfo")
    total = MACHINE.devices[0][2]
    return total - sum(a.size for a in MACHINE.allocations.values()), total


def to_device(obj: Any) -> DeviceAllocation:
    view = _bytes_view(obj, writable=False, api="to_device")
    alloc = mem_alloc(max(1, view.nbytes))
    memcpy_htod(alloc, obj)
    return alloc


def pagelocked_zeros(shape: Any, dtype: Any, order: str = "C", mem_flags: int = 0) -> np.ndarray:
    a = pagelocked_empty(shape, dtype, order, mem_flags)
    a[...] = 0
    return a
