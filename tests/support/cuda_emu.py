"""topk.cu's kernels run on the CPU (tests/fakes/cuda_emu): the kernel's own source built by g++
against the CUDA toolkit's headers, with a header that emulates blocks, threads, barriers, warp
shuffles and WMMA, and launched from the fake pycuda with the arguments the host code passes."""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

HERE = Path(__file__).parents[1] / "fakes" / "cuda_emu"


def cuda_include() -> Path | None:
    """The CUDA toolkit's include directory (cuda_fp16.h, cuda_bf16.h, vector_types.h), or None."""
    roots = [os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        roots.append(str(Path(os.path.realpath(nvcc)).parents[1]))
        text = Path(nvcc).read_text(errors="ignore") if Path(nvcc).stat().st_size < 4096 else ""
        roots += [str(Path(w).parents[1]) for w in text.split() if w.endswith("/bin/nvcc")]  # a wrapper script
    for root in roots:
        if root and (Path(root) / "include" / "cuda_fp16.h").is_file():
            return Path(root) / "include"
    return None


def build(cache: Path) -> ctypes.CDLL | None:
    """The emulated kernels as a shared library (cached by source), or None without g++ or CUDA headers."""
    gxx, include = shutil.which("g++"), cuda_include()
    if gxx is None or include is None:
        return None
    kernel = Path(str(resources.files("jemc_infer.index").joinpath("topk.cu")))
    sources = [kernel, HERE / "cuda_emu.h", HERE / "mma.h", HERE / "launch.cpp"]
    key = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]
    lib = cache / f"cuda_emu-{key}.so"
    if not lib.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = lib.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run([gxx, "-O2", "-std=c++17", "-shared", "-fPIC", "-fno-strict-aliasing", "-Wall", "-Werror",
                        "-Wno-unknown-pragmas", f"-I{HERE}", f"-I{include}", "-include", "cuda_emu.h",
                        f'-DJEMC_TOPK_CU="{kernel}"', str(HERE / "launch.cpp"), "-o", str(tmp)], check=True)
        os.replace(tmp, lib)
    so = ctypes.CDLL(str(lib))
    so.emu_launch.restype = ctypes.c_int
    so.emu_launch.argtypes = [ctypes.c_char_p] + [ctypes.c_uint] * 6 + [ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p)]
    so.emu_error.restype = ctypes.c_char_p
    return so


def launcher(so: ctypes.CDLL, name: str) -> Callable[..., None]:
    """A kernel emulation for the fake pycuda's ``KERNELS``: device pointers (allocations, or raw
    pointers passed as numpy uint64) become the host addresses of the fake's device memory."""
    def run(args: tuple, grid: tuple, block: tuple, shared: int) -> None:
        import pycuda.driver as cuda  # the fake

        held: list[ctypes._SimpleCData] = []
        for a in args:
            if isinstance(a, cuda.DeviceAllocation) or (isinstance(a, np.generic) and a.dtype == np.uint64):
                alloc, offset = cuda._resolve(int(a), 1, name)
                held.append(ctypes.c_void_p(alloc.data.ctypes.data + offset))
            elif isinstance(a, np.int32):
                held.append(ctypes.c_int32(int(a)))
            elif isinstance(a, np.int64):
                held.append(ctypes.c_int64(int(a)))
            else:
                raise TypeError(f"{name}: argument {a!r} of a type the emulator does not pass")
        argv = (ctypes.c_void_p * len(held))(*[ctypes.cast(ctypes.pointer(h), ctypes.c_void_p) for h in held])
        g, b = (tuple(grid) + (1, 1))[:3], (tuple(block) + (1, 1))[:3]
        if so.emu_launch(name.encode(), *g, *b, int(shared), argv) != 0:
            raise RuntimeError(f"cuda_emu {name}: {so.emu_error().decode()}")

    return run


class CudaTensor:
    """What GpuIndex reads of a torch CUDA tensor (``is_cuda``, ``dtype``, ``shape``, ``device``,
    ``data_ptr()``, ``is_contiguous()``), its bytes in the fake's device memory."""

    is_cuda = True

    def __init__(self, cuda: Any, data: np.ndarray, dtype: str) -> None:
        cuda.init()
        ctx = cuda.Device(0).retain_primary_context()
        ctx.push()
        try:
            self.alloc = cuda.mem_alloc(data.nbytes)
            cuda.memcpy_htod(self.alloc, np.ascontiguousarray(data))
        finally:
            ctx.pop()
        self.shape, self.dtype, self.device = data.shape, dtype, SimpleNamespace(index=0)

    def data_ptr(self) -> int:
        return int(self.alloc)

    def is_contiguous(self) -> bool:
        return True
