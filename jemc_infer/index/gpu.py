"""Exact top-k search on an NVIDIA GPU: the fused scoring-and-filtering kernels (``topk.cu``)
driven by pycuda, with the plan of :mod:`jemc_infer.index.topk_plan`.

The index rows are uploaded once (fp32 or fp16 as stored, each row padded to a multiple of 8
elements) and stay resident — or, given a torch CUDA tensor (fp32, fp16 or bf16), used where they
are — and every search then reads each row about once: a sample of a few percent of them, then one
full pass, copying back only the survivors. A few queries run on the CUDA-core kernel; larger
batches of fp16/bf16 rows on tensor cores (16 or 64 queries a tile). Beyond the free memory of one
card the rows are split in slices, one per visible card, searched each and merged exactly.

The kernels are compiled by nvcc (on PATH, ``$CUDA_HOME/bin`` or the ``nvidia-cuda-nvcc`` wheel)
for the card's architecture at first use and cached by source hash, architecture and compiler
version (``$JEMC_CUDA_CACHE``, default ``~/.cache/jemc-infer/cuda``); the module is loaded with
``module_from_buffer`` into the device's primary context (never ``pycuda.autoinit``), the context
torch uses too.

Only this module imports pycuda, and only when a GPU search is asked for; it never imports torch
(a tensor is used through its own methods).
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
KINDS = {np.dtype(np.float32): "f32", np.dtype(np.float16): "f16"}  # numpy rows; bf16 comes from torch
TORCH_KINDS = {"torch.float32": "f32", "torch.float16": "f16", "torch.bfloat16": "bf16"}
THREADS, WARPS = 256, 8  # as in topk.cu
TC_ROWS = {16: 128, 64: 64}  # tensor-core tiles: queries -> rows (topk.cu's JEMC_TC)
FEW_QUERIES = 2  # batches this small take the 2-query CUDA-core kernel (to be settled by benchmarks/search_gpu.py)
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


def kernel_for(kind: str, nq: int, capability: tuple[int, int]) -> str:
    """The kernel for ``nq`` queries over rows of ``kind``: one or two queries on the CUDA cores, 2
    a tile (little shared-memory traffic: the pass stays bound by memory); more on tensor cores, 16
    or 64 a tile — or, for fp32 rows or a card before sm_80, on the CUDA cores 8 a tile."""
    if nq <= FEW_QUERIES:
        return f"jemc_simt2_{kind}"
    if kind == "f32" or capability < (8, 0):
        return f"jemc_simt8_{kind}"
    return f"jemc_tc{16 if nq <= 16 else 64}_{kind}"


def tile_of(kernel: str) -> int:
    """Queries per tile of a kernel, from its name (``jemc_simt8_f16`` → 8, ``jemc_tc64_bf16`` → 64)."""
    return int(re.sub(r"\D", "", kernel.split("_")[1]))


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 → bfloat16 (round to nearest even), as uint16 bit patterns (numpy has no bf16)."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    out = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)
    out[np.isnan(x)] = 0x7FC0
    return out


def query_halves(q: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """fp32 queries as two halves in the rows' 16-bit type, ``q ≈ hi + lo``: what the tensor cores
    multiply (both), so the scores are those of the fp32 queries, not of queries rounded to 16 bits."""
    q = np.ascontiguousarray(q, np.float32)
    if kind == "f16":
        hi = q.astype(np.float16)
        return hi, (q - hi.astype(np.float32)).astype(np.float16)
    hi_bits = bf16_bits(q)
    hi32 = (hi_bits.astype(np.uint32) << np.uint32(16)).view(np.float32)
    with np.errstate(invalid="ignore"):
        return hi_bits, bf16_bits(q - hi32)


def _is_cuda_tensor(x: Any) -> bool:
    return bool(getattr(x, "is_cuda", False)) and callable(getattr(x, "data_ptr", None))


class CudaScan:
    """One slice of the rows, resident on one card: the :class:`~jemc_infer.index.topk_plan.Scan` the plan drives.

    ``rows`` is a numpy array (uploaded, padded) or a torch CUDA tensor on this card (used in
    place: contiguous, D a multiple of 8). Buffers are kept from one scan to the next; the
    :class:`~jemc_infer.index.topk_plan.Candidates` a scan returns are valid until the next.
    """

    def __init__(self, cuda: Any, device: int, rows: Any, ids: np.ndarray, kind: str) -> None:
        self.cuda, self.n_rows, self.kind = cuda, len(ids), kind
        self.ctx = cuda.Device(device).retain_primary_context()
        self.ctx.push()
        try:
            dev = cuda.Device(device)
            self.capability = dev.compute_capability()
            cubin, _ = compile_cubin("sm_{}{}".format(*self.capability))
            self.module = cuda.module_from_buffer(cubin)
            self.kernels: dict[str, Any] = {}
            if isinstance(rows, np.ndarray):
                self.dim = -(-rows.shape[1] // ALIGN) * ALIGN
                padded = np.zeros((len(rows), self.dim), rows.dtype)
                padded[:, : rows.shape[1]] = rows
                self.rows, self.rows_ptr = cuda.to_device(padded), None
            else:
                self.dim, self.rows, self.rows_ptr = int(rows.shape[1]), rows, int(rows.data_ptr())
                cuda.Context.synchronize()  # whatever torch still runs on its streams to make them
            self.ids = cuda.to_device(np.ascontiguousarray(ids, np.int64))
            self.stream = cuda.Stream()
            self.sms = dev.get_attribute(cuda.device_attribute.MULTIPROCESSOR_COUNT)
            # The kernel every scan of the current search runs (GpuIndex.search sets it): one search,
            # one way of scoring, so a threshold one pass proves holds in the next.
            self.kernel: str | None = None
            self._bufs: dict[str, Any] = {}
        finally:
            self.ctx.pop()

    def _kernel(self, name: str) -> Any:
        if name not in self.kernels:
            f = self.kernels[name] = self.module.get_function(name)
            smem = self._shared(name)
            if smem > 48 << 10:  # the CUDA-core kernels' queries: dynamic shared memory, opted in beyond 48 kB
                f.set_attribute(self.cuda.function_attribute.MAX_DYNAMIC_SHARED_SIZE_BYTES, smem)
        return self.kernels[name]

    def _shared(self, name: str) -> int:
        """Dynamic shared memory of a launch: the CUDA-core kernels hold their tile's fp32 queries."""
        return 0 if name.startswith("jemc_tc") else tile_of(name) * self.dim * 4

    def _buffer(self, key: str, nbytes: int, pinned: tuple[tuple[int, ...], Any] | None = None) -> Any:
        """A device (or, with ``pinned`` = (shape, dtype), page-locked host) buffer kept for the next
        scan; grown, never shrunk."""
        have = self._bufs.get(key)
        if have is None or have[1] < nbytes:
            buf = self.cuda.pagelocked_empty(*pinned) if pinned else self.cuda.mem_alloc(max(1, nbytes))
            have = self._bufs[key] = (buf, nbytes)
        buf = have[0]
        return buf.reshape(-1)[: int(np.prod(pinned[0]))].reshape(pinned[0]) if pinned else buf

    def _put(self, key: str, host: np.ndarray) -> Any:
        """``host`` copied into a kept device buffer through a kept pinned one (on the stream)."""
        staged = self._buffer(key + "/host", host.nbytes, (host.shape, host.dtype))
        staged[...] = host
        dev = self._buffer(key, host.nbytes)
        self.cuda.memcpy_htod_async(dev, staged, self.stream)
        return dev

    def scan(self, queries: np.ndarray, thr_scores: np.ndarray, thr_ids: np.ndarray, step: int, cap: int) -> topk_plan.Candidates:
        cuda, nq = self.cuda, len(queries)
        name = self.kernel or kernel_for(self.kind, nq, self.capability)
        tile, tc = tile_of(name), name.startswith("jemc_tc")
        q = np.zeros((nq, self.dim), np.float32)
        q[:, : queries.shape[1]] = queries
        n_visit = -(-self.n_rows // step)
        q_tiles = -(-nq // tile)
        per_block = TC_ROWS[tile] if tc else WARPS
        groups = max(1, min(-(-n_visit // per_block), (self.sms * (2 if tc else 8)) // q_tiles))
        self.ctx.push()
        try:
            counts = self._buffer("counts/host", 8 * nq, ((nq,), np.uint64))
            scores = self._buffer("scores/host", 4 * nq * cap, ((nq, cap), np.float32))
            ids = self._buffer("ids/host", 8 * nq * cap, ((nq, cap), np.int64))
            if tc:
                hi, lo = query_halves(q, self.kind)
                qargs = [self._put("q_hi", hi), self._put("q_lo", lo)]
            else:
                qargs = [self._put("q", q)]
            dts, dti = self._put("thr_s", thr_scores.astype(np.float32)), self._put("thr_i", thr_ids.astype(np.int64))
            dc = self._put("counts", np.zeros(nq, np.uint64))
            ds, di = self._buffer("scores", 4 * nq * cap), self._buffer("ids", 8 * nq * cap)
            rows = np.uintp(self.rows_ptr) if self.rows_ptr is not None else self.rows
            self._kernel(name)(rows, self.ids, np.int32(self.dim), np.int64(n_visit), np.int64(step), *qargs, np.int32(nq),
                               dts, dti, ds, di, dc, np.int32(cap), block=(THREADS, 1, 1), grid=(groups * q_tiles, 1, 1),
                               shared=self._shared(name), stream=self.stream)
            for host, dev in ((counts, dc), (scores, ds), (ids, di)):
                cuda.memcpy_dtoh_async(host, dev, self.stream)
            self.stream.synchronize()
        finally:
            self.ctx.pop()
        return topk_plan.Candidates(scores, ids, counts.astype(np.int64))


class GpuIndex:
    """Rows resident on the visible cards (one slice per card); exact top-k over all of them.

    ``rows``: a numpy array [N, D] (fp16 or fp32; others are searched as fp32), or a torch CUDA
    tensor (fp32, fp16 or bf16; contiguous, D a multiple of 8), searched on its card in place.
    """

    def __init__(self, rows: Any, ids: np.ndarray) -> None:
        ids = np.asarray(ids)
        if len(rows.shape) != 2 or rows.shape[0] != len(ids):
            raise InputShapeError(f"GPU index | rows {list(rows.shape)}, ids {list(ids.shape)} | expected [N, D] and [N]")
        cuda = _driver()
        if _is_cuda_tensor(rows):
            kind = TORCH_KINDS.get(str(rows.dtype))
            if kind is None or rows.shape[1] % ALIGN or not rows.is_contiguous() or rows.data_ptr() % 16:
                raise InputShapeError(f"GPU index | a {rows.dtype} CUDA tensor {list(rows.shape)} | expected a contiguous "
                                      f"float32, float16 or bfloat16 tensor with D a multiple of {ALIGN} (pad with zeros: "
                                      "the scores do not change)")
            self.parts = [CudaScan(cuda, rows.device.index or 0, rows, ids, kind)]
            self.dim = rows.shape[1]
            return
        rows = np.asarray(rows)
        if rows.dtype not in KINDS:
            rows = rows.astype(np.float32)
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
        self.parts = [CudaScan(cuda, d, rows[a:b], ids[a:b], KINDS[rows.dtype])
                      for d, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))]
        self.dim = rows.shape[1]

    def search(self, queries: Any, k: int, kernel: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` of ``queries`` [nq, D] (numpy, or a torch tensor on any device); ``kernel``
        forces one of topk.cu's kernels (benchmarks), else :func:`kernel_for` picks for the batch."""
        if callable(getattr(queries, "detach", None)):
            queries = queries.detach().float().cpu().numpy()
        queries = np.asarray(queries, np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise InputShapeError(f"GPU search | queries {list(queries.shape)} | expected [nq, {self.dim}]")
        for p in self.parts:
            p.kernel = kernel or kernel_for(p.kind, len(queries), p.capability)
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
