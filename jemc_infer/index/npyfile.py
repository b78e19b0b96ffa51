"""``.npy`` files written front to back in large aligned writes, for the index's memory maps.

How a file is written decides how the page cache holds it, and so what its first read through a
fresh memory map costs. Written through a memory map (``np.lib.format.open_memmap``), a file sits
in the cache as 4 kB pages, and every new process that maps it pays a page fault per few pages:
15–30 ms for the first scan of a 100k-row index's 200 MB of int8 codes here, a tenth of a cold
``query``. Written with whole :data:`CHUNK` writes at chunk-aligned offsets, it sits there in
large folios (2 MB ones on ext4 since Linux 6.16, XFS since 5.18), which a map faults in 2 MB at a
time: 1–8 ms for the same scan (benchmarks/RESULTS.md). Older kernels and other file systems
read it as before.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

CHUNK = 8 << 20  # bytes per write, at offsets that are multiples of it (a multiple of 2 MB)


class NpyWriter:
    """The rows of an ``.npy`` array, appended in order (:func:`npy_writer`)."""

    def __init__(self, file: io.BufferedWriter, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self._file, self._dtype = file, dtype
        self._left = int(np.prod(shape)) * dtype.itemsize
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                      "fortran_order": False, "shape": shape})
        self._pending = bytearray(header.getvalue())

    def write(self, rows: np.ndarray) -> None:
        """Append rows (any shape: their values in C order, converted to the file's dtype)."""
        data = np.ascontiguousarray(rows, dtype=self._dtype)
        if data.nbytes > self._left:
            raise ValueError(f"{data.nbytes} more bytes than the array's shape leaves ({self._left})")
        self._left -= data.nbytes
        self._pending += data.reshape(-1).view(np.uint8).data
        whole = len(self._pending) - len(self._pending) % CHUNK
        if whole:
            with memoryview(self._pending) as view:  # larger than the file's buffer: written directly, at once
                self._file.write(view[:whole])
            del self._pending[:whole]

    def _finish(self) -> None:
        if self._left:
            raise ValueError(f"{self._left} bytes short of the array's shape")
        self._file.write(self._pending)
        self._file.flush()
        os.fsync(self._file.fileno())


@contextlib.contextmanager
def npy_writer(path: Path, shape: tuple[int, ...], dtype: np.dtype | type) -> Iterator[NpyWriter]:
    """Write ``path`` as an ``.npy`` array of ``shape`` and ``dtype``, its rows appended in order
    (``writer.write(block)``); flushed and fsynced on a clean exit, which checks every value came.

    Raises:
        ValueError: More or fewer values than ``shape`` holds.
    """
    with open(path, "wb") as file:
        writer = NpyWriter(file, tuple(int(n) for n in shape), np.dtype(dtype))
        yield writer
        writer._finish()
