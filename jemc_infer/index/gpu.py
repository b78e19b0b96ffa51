"""Exact top-k search on an NVIDIA GPU: the fused scoring-and-filtering kernel (``topk.cu``) driven
by pycuda, with the plan of :mod:`jemc_infer.index.topk_plan`.

The index rows are uploaded once (fp32, fp16 or bf16 as stored, each row padded to a multiple of
8 elements) and stay resident; every search then reads each row once per pass — a sample of a
few thousand rows, then one full pass, more only where a query's candidate buffer overflowed —
and copies back only the survivors. Beyond the free memory of one card the rows are split in
slices, one per visible card, searched each and merged exactly.

The kernel is compiled by nvcc (on PATH, ``$CUDA_HOME/bin`` or the ``nvidia-cuda-nvcc`` wheel)
for the card's architecture at first use and cached by source hash, architecture and compiler
version (``$JEMC_CUDA_CACHE``, default ``~/.cache/jemc-infer/cuda``); the module is loaded with
``module_from_buffer`` into the device's primary context (never ``pycuda.autoinit``).

Only this module imports pycuda, and only when a GPU search is asked for.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from jemc_infer.errors import InputError, InputShapeError
from jemc_infer.index import topk_plan
from jemc_infer.index.source import ShardSource

SOURCE = "topk.cu"
KERNELS = {np.dtype(np.float32): "jemc_scan_f32", np.dtype(np.float16): "jemc_scan_f16"}  # bf16: see from_arrays
QT, THREADS = 8, 256  # as in topk.cu
ALIGN = 8  # elements: every row 16-byte aligned for any dtype
HEADROOM = 256 << 20  # bytes of a card's free memory never planned for


def kernel_source() -> str:
    return resources.files("jemc_infer.index").joinpath(SOURCE).read_text(encoding="utf-8")


def find_nvcc() -> str | None:
    """nvcc from PATH, ``$CUDA_HOME/bin``, or the ``nvidia-cuda-nvcc`` wheel; None where there is none."""
    for cand in (shutil.which("nvcc"), os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")):
        if cand and os.path.isfile(cand):
            return cand
    try:
        import nvidia.cuda_nvcc  # type: ignore[import-not-found]
    except ImportError:
        return None
    for root in getattr(nvidia.cuda_nvcc, "__path__", []):
        cand = os.path.join(root, "bin", "nvcc")
        if os.path.isfile(cand):
            return cand
    return None


def nvcc_command(nvcc: str, arch: str, out: Path, source: Path) -> list[str]:
    """The one compile command: a cubin for ``arch`` (``sm_90``), every warning an error, ptxas's report on."""
    return [nvcc, "-cubin", "-O3", "-std=c++17", f"-arch={arch}", "-Xptxas", "-v", "-Werror", "all-warnings",
            "-o", str(out), str(source)]


def compile_cubin(arch: str, cache: Path | None = None, nvcc: str | None = None) -> tuple[bytes, str]:
    """The kernel's cubin for ``arch`` and ptxas's report (empty when it came from the cache).

    Cached as ``topk-ARCH-SOURCEHASH-COMPILERHASH.cubin``; where no nvcc is found, a cached cubin of
    the same source and architecture from any compiler serves (a GPU machine without the toolkit
    runs the cubins ``scripts/gpu_wheels.sh`` built).

    Raises:
        InputError: If no nvcc is found and nothing is cached, or nvcc fails.
    """
    src = kernel_source()
    src_key = hashlib.sha256(src.encode()).hexdigest()[:16]
    cache = cache or Path(os.environ.get("JEMC_CUDA_CACHE", Path.home() / ".cache" / "jemc-infer" / "cuda"))
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        for cached in sorted(cache.glob(f"topk-{arch}-{src_key}-*.cubin")):
            return cached.read_bytes(), ""
        raise InputError(f"nvcc | not found (PATH, $CUDA_HOME/bin, the nvidia-cuda-nvcc wheel), and no cubin for {arch} in {cache} | "
                         "expected the CUDA toolkit, or pip install nvidia-cuda-nvcc nvidia-cuda-runtime nvidia-cuda-cccl")
    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    target = cache / f"topk-{arch}-{src_key}-{hashlib.sha256(version.encode()).hexdigest()[:8]}.cubin"
    if target.is_file():
        return target.read_bytes(), ""
    cache.mkdir(parents=True, exist_ok=True)
    source = cache / f"topk-{src_key}.cu"
    source.write_text(src, encoding="utf-8")
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    run = subprocess.run(nvcc_command(nvcc, arch, tmp, source), capture_output=True, text=True, check=False)
    if run.returncode != 0:
        raise InputError(f"nvcc {arch} | failed: {(run.stderr or run.stdout).strip()[-2000:]} | expected topk.cu to compile")
    os.replace(tmp, target)  # atomic: a concurrent compile of the same key writes the same bytes
    return target.read_bytes(), run.stderr


def spills(ptxas_report: str) -> list[str]:
    """The ptxas lines that report spilled registers (bytes > 0)."""
    return [line.strip() for line in ptxas_report.splitlines()
            if re.search(r"[1-9]\d* bytes spill (stores|loads)", line)]


def _driver() -> Any:
    try:
        import pycuda.driver as cuda  # type: ignore[import-not-found]
    except ImportError as exc:
        raise InputError(f"--device cuda | pycuda is not installed ({exc}) | expected pip install 'jemc-infer[gpu]' on a GPU machine") from None
    try:
        cuda.init()
        if cuda.Device.count() < 1:
            raise RuntimeError("no CUDA device")
    except Exception as exc:  # pycuda raises its own LogicError/RuntimeError without a driver
        raise InputError(f"--device cuda | no usable NVIDIA GPU ({exc}) | expected a CUDA GPU and driver, or --device cpu") from None
    return cuda


class CudaScan:
    """One slice of the rows, resident on one card: the :class:`~jemc_infer.index.topk_plan.Scan` the plan drives."""

    def __init__(self, cuda: Any, device: int, rows: np.ndarray, ids: np.ndarray) -> None:
        self.cuda, self.n_rows = cuda, len(rows)
        self.ctx = cuda.Device(device).retain_primary_context()
        self.ctx.push()
        try:
            dev = cuda.Device(device)
            major, minor = dev.compute_capability()
            cubin, _ = compile_cubin(f"sm_{major}{minor}")
            self.module = cuda.module_from_buffer(cubin)
            self.kernel = self.module.get_function(KERNELS[rows.dtype])
            self.dim = -(-rows.shape[1] // ALIGN) * ALIGN
            padded = np.zeros((len(rows), self.dim), rows.dtype)
            padded[:, : rows.shape[1]] = rows
            self.rows = cuda.to_device(padded)
            self.ids = cuda.to_device(np.ascontiguousarray(ids, np.int64))
            self.stream = cuda.Stream()
            self.sms = dev.get_attribute(cuda.device_attribute.MULTIPROCESSOR_COUNT)
            self.smem = QT * self.dim * 4
            if self.smem > 48 << 10:
                self.kernel.set_attribute(cuda.function_attribute.MAX_DYNAMIC_SHARED_SIZE_BYTES, self.smem)
        finally:
            self.ctx.pop()

    def scan(self, queries: np.ndarray, thr_scores: np.ndarray, thr_ids: np.ndarray, step: int, cap: int) -> topk_plan.Candidates:
        cuda, nq = self.cuda, len(queries)
        q = np.zeros((nq, self.dim), np.float32)
        q[:, : queries.shape[1]] = queries
        n_visit = -(-self.n_rows // step)
        blocks = max(1, min(-(-n_visit // (THREADS // 32)), self.sms * 8))
        self.ctx.push()
        try:
            out = topk_plan.Candidates(cuda.pagelocked_empty((nq, cap), np.float32), cuda.pagelocked_empty((nq, cap), np.int64),
                                       cuda.pagelocked_zeros(nq, np.uint64))
            dq, dts, dti = (cuda.to_device(np.ascontiguousarray(a)) for a in (q, thr_scores.astype(np.float32), thr_ids.astype(np.int64)))
            ds, di = cuda.mem_alloc(out.scores.nbytes), cuda.mem_alloc(out.ids.nbytes)
            dc = cuda.to_device(out.counts)
            self.kernel(self.rows, self.ids, np.int32(self.dim), np.int64(n_visit), np.int64(step), dq, np.int32(nq), dts, dti,
                        ds, di, dc, np.int32(cap), block=(THREADS, 1, 1), grid=(blocks, -(-nq // QT), 1),
                        shared=self.smem, stream=self.stream)
            for host, dev in ((out.counts, dc), (out.scores, ds), (out.ids, di)):
                cuda.memcpy_dtoh_async(host, dev, self.stream)
            self.stream.synchronize()
        finally:
            self.ctx.pop()
        out.counts = out.counts.astype(np.int64)
        return out


class GpuIndex:
    """Rows resident on the visible cards (one slice per card); exact top-k over all of them."""

    def __init__(self, rows: np.ndarray, ids: np.ndarray) -> None:
        if rows.ndim != 2 or len(rows) != len(ids):
            raise InputShapeError(f"GPU index | rows {list(rows.shape)}, ids {list(ids.shape)} | expected [N, D] and [N]")
        if rows.dtype not in KERNELS:
            rows = rows.astype(np.float32)
        cuda = _driver()
        n_dev = cuda.Device.count()
        need = rows.shape[0] * (-(-rows.shape[1] // ALIGN) * ALIGN) * rows.dtype.itemsize + 8 * len(ids)
        free = []
        for d in range(n_dev):
            ctx = cuda.Device(d).retain_primary_context()
            ctx.push()
            try:
                free.append(cuda.mem_get_info()[0] - HEADROOM)
            finally:
                ctx.pop()
        if need > sum(max(0, f) for f in free):
            raise InputError(f"GPU index | {need / 2**30:.1f} GiB of rows | expected at most the {sum(free) / 2**30:.1f} GiB "
                             f"free on {n_dev} card(s): search on the CPU")
        slices = max(1, -(-need // max(1, min(free)))) if n_dev > 1 else 1
        bounds = np.linspace(0, len(rows), min(slices, n_dev) + 1).astype(np.int64)
        self.parts = [CudaScan(cuda, d, rows[a:b], ids[a:b]) for d, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))]
        self.dim = rows.shape[1]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        results = [topk_plan.topk(p, queries, k) for p in self.parts]
        if len(results) == 1:
            return results[0]
        width = min(k, sum(r[0].shape[1] for r in results))
        scores, ids = np.hstack([r[0] for r in results]), np.hstack([r[1] for r in results])
        merged = [topk_plan.select(s[i >= 0], i[i >= 0], width) for s, i in zip(scores, ids, strict=True)]
        return np.stack([m[0] for m in merged]), np.stack([m[1] for m in merged])


# The resident index, keyed by the identity of its source and shard arrays; the entry holds them,
# so no other object can take their ids while the key is in use.
_RESIDENT: dict[tuple[Any, ...], tuple[GpuIndex, Any]] = {}


def gpu_search(source: ShardSource, queries: np.ndarray, k: int,
               load: Callable[[ShardSource], tuple[np.ndarray, np.ndarray]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`jemc_infer.index.search.search` on the GPU: the source's rows made resident on first
    use (kept while its shards are unchanged), then the kernel. Same contract and order."""
    shards = list(source.shards())
    key = (id(source), tuple((id(s.rows), len(s.rows)) for s in shards))
    entry = _RESIDENT.get(key)
    if entry is None:
        rows, ids = load(source) if load else (np.concatenate([np.asarray(s.rows) for s in shards]),
                                               np.concatenate([np.asarray(s.ids) for s in shards]))
        _RESIDENT.clear()  # one resident index at a time: the memory is the card's
        entry = _RESIDENT[key] = (GpuIndex(rows, ids), (source, shards))
    return entry[0].search(queries, k)
