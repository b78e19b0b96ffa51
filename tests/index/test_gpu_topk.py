"""The CUDA top-k: the kernel compiles clean for the cards we target (here, with nvcc), a machine
without a GPU is told so in one line, and (``gpu`` marker, scripts/gpu_check.sh) the kernel equals
the exact reference."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.cuda_emu import CudaTensor
from support.fake_gpu import harness
from support.topk_reference import assert_same, reference

from jemc_infer.errors import InputError, InputShapeError
from jemc_infer.index.gpu import compile_cubin, find_nvcc, kernel_source, spills
from jemc_infer.index.search import search
from jemc_infer.index.source import InMemory, Shard

KERNEL_NAMES = [f"jemc_simt{t}_{k}" for t in (2, 8) for k in ("f32", "f16", "bf16")] + [f"jemc_tc{t}_{k}" for t in (16, 64) for k in ("f16", "bf16")]


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_kernel_compiles_without_warnings_or_spills(arch: str, tmp_path: Path) -> None:
    if find_nvcc() is None:
        pytest.skip("no nvcc (CUDA toolkit, or pip install nvidia-cuda-nvcc nvidia-cuda-runtime nvidia-cuda-cccl)")
    cubin, report = compile_cubin(arch, cache=tmp_path)  # -Werror all-warnings: a warning fails it
    assert cubin[:4] == b"\x7fELF"
    for name in KERNEL_NAMES:
        assert f"Compiling entry function '{name}' for '{arch}'" in report
    assert report.count("0 bytes spill stores, 0 bytes spill loads") == len(KERNEL_NAMES) and not spills(report), report
    used = [int(n) for n in re.findall(r"Used (\d+) registers", report)]
    assert len(used) == len(KERNEL_NAMES) and max(used) <= 128, used  # two blocks of 256 threads per SM
    again, report2 = compile_cubin(arch, cache=tmp_path)
    assert again == cubin and report2 == ""  # cached by source, arch and compiler


def test_without_nvcc_a_cached_cubin_serves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jemc_infer.index import gpu

    monkeypatch.setattr(gpu, "find_nvcc", lambda: None)
    with pytest.raises(InputError, match="no cubin for sm_90"):
        compile_cubin("sm_90", cache=tmp_path)
    key = __import__("hashlib").sha256(kernel_source().encode()).hexdigest()[:16]
    (tmp_path / f"topk-sm_90-{key}-0123abcd.cubin").write_bytes(b"\x7fELF built elsewhere")
    assert compile_cubin("sm_90", cache=tmp_path) == (b"\x7fELF built elsewhere", "")
    with pytest.raises(InputError, match="no cubin for sm_80"):
        compile_cubin("sm_80", cache=tmp_path)


def test_spill_lines_are_found() -> None:
    report = "ptxas info: 8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads\n    0 bytes spill stores, 0 bytes spill loads"
    assert len(spills(report)) == 1


def test_the_kernel_ships_in_the_package() -> None:
    assert "extern \"C\" __global__" in kernel_source() and "jemc_simt2_f16" in kernel_source()


def _has_gpu() -> bool:
    try:
        import pycuda.driver as cuda  # type: ignore[import-not-found]

        cuda.init()
        return cuda.Device.count() > 0
    except Exception:
        return False


@pytest.mark.skipif(_has_gpu(), reason="this machine has a GPU")
def test_without_a_gpu_the_search_says_so_in_one_line() -> None:
    rows = np.eye(4, dtype=np.float32)
    with pytest.raises(InputError) as err:
        search(InMemory((Shard(rows, np.arange(4)),)), rows[:1], 2, device="cuda")
    assert "--device cuda" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InputShapeError, match="expected 'cpu' or 'cuda'"):
        search(InMemory((Shard(rows, np.arange(4)),)), rows[:1], 2, device="tpu")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("n", [1, 7, 4097, 100_003])
@pytest.mark.parametrize("k", [1, 10, 2048, 4096])
@pytest.mark.parametrize("nq", [1, 3, 16, 64])
def test_gpu_equals_the_reference(dtype: type, n: int, k: int, nq: int) -> None:
    from jemc_infer.index.gpu import GpuIndex

    rng = np.random.default_rng(n + k + nq)
    d = 100  # not a multiple of 8: padded on the card
    rows = rng.standard_normal((n, d)).astype(dtype)
    ids = np.arange(n, dtype=np.int64) * 2
    ids[rng.random(n) < 0.05] = -1  # dead rows
    queries = rng.standard_normal((nq, d)).astype(np.float32)
    got = GpuIndex(rows, ids).search(queries, k)
    assert_same(got, reference(rows.astype(np.float32), ids, queries, k), rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("k", [1, 2048, 4096])
def test_gpu_all_equal_scores_and_nan_rows(k: int) -> None:
    from jemc_infer.index.gpu import GpuIndex

    n = 100_003
    rows = np.ones((n, 16), np.float16)
    rows[::13, 2] = np.nan
    ids = np.random.default_rng(0).permutation(n).astype(np.int64)
    got = GpuIndex(rows, ids).search(np.ones((3, 16), np.float32), k)
    want = reference(rows.astype(np.float32), ids, np.ones((3, 16), np.float32), k)
    np.testing.assert_array_equal(got[1], want[1])  # all scores exactly 16: ids decide
    np.testing.assert_array_equal(got[0], want[0])


@pytest.mark.gpu
def test_gpu_search_through_the_index_api_and_sliced_inputs() -> None:
    rng = np.random.default_rng(5)
    rows = rng.standard_normal((20_000, 2048)).astype(np.float16)
    shards = InMemory((Shard(rows[:7000], np.arange(7000)), Shard(rows[7000:], np.arange(7000, 20_000))))
    queries = rng.standard_normal((256, 4096)).astype(np.float32)[:, ::2]  # a strided view
    got = search(shards, queries, 100, device="cuda")
    want = search(shards, queries, 100)
    assert_same(got, want, rtol=2e-3)


@pytest.mark.gpu
@pytest.mark.parametrize("kernel", KERNEL_NAMES)
@pytest.mark.parametrize("k", [1, 100, 4096])
def test_gpu_every_kernel_equals_the_reference(kernel: str, k: int) -> None:
    """Each kernel forced, on rows given as a torch CUDA tensor of its type, dead and NaN rows among them."""
    import torch

    from jemc_infer.index.gpu import GpuIndex

    kind = kernel.rsplit("_", 1)[1]
    rng = np.random.default_rng(k)
    n, d = 50_003, 200
    rows = torch.from_numpy(rng.standard_normal((n, d)).astype(np.float32))
    rows[::29, 5] = float("nan")
    rows = rows.to({"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[kind])
    ids = np.arange(n, dtype=np.int64) * 3
    ids[::17] = -1
    queries = rng.standard_normal((37, d)).astype(np.float32)
    got = GpuIndex(rows.cuda(), ids).search(queries, k, kernel=kernel)
    assert_same(got, reference(rows.float().numpy(), ids, queries, k), rtol=1e-3 if kind == "bf16" else 1e-4)


# --- the host code on the fake pycuda (tests/fakes): launches, copies, padding, slices ---------------------

def _emulate_scan(dtype: type, seed: int = 0) -> Callable[..., None]:
    """topk.cu's kernels as they behave, on the fake's device memory: survivors appended in a
    random order (the atomics race), the first ``cap`` kept, every survivor counted. The launch is
    checked as topk.cu needs it: 256 threads, a grid that is a whole number of query tiles, shared
    memory for the CUDA-core kernel's fp32 queries; the tensor-core kernels take the queries as two
    16-bit halves (scored as their sum)."""
    rng = np.random.default_rng(seed)

    def run(name: str, args: tuple, grid: tuple, block: tuple, shared: int) -> None:
        import pycuda.driver as cuda  # the fake

        tc = name.startswith("jemc_tc")
        if tc:
            rows_p, ids_p, dim, n_visit, step, hi_p, lo_p, nq, ts_p, ti_p, os_p, oi_p, c_p, cap = args
        else:
            rows_p, ids_p, dim, n_visit, step, q_p, nq, ts_p, ti_p, os_p, oi_p, c_p, cap = args
        dim, n_visit, step, nq, cap = int(dim), int(n_visit), int(step), int(nq), int(cap)
        tile = int("".join(ch for ch in name.split("_")[1] if ch.isdigit()))
        assert dim % 8 == 0 and block == (256, 1, 1) and grid[1:] in ((), (1,), (1, 1)) and grid[0] % -(-nq // tile) == 0
        assert shared == 0 if tc else shared >= tile * dim * 4
        n = (n_visit - 1) * step + 1

        def read(ptr: object, count: int, dt: type) -> np.ndarray:
            return np.frombuffer(cuda.device_read(int(ptr), count * np.dtype(dt).itemsize), dt).copy()

        def widen(x: np.ndarray) -> np.ndarray:  # bf16 bit patterns or fp16 values as float32
            return (x.astype(np.uint32) << np.uint32(16)).view(np.float32) if x.dtype == np.uint16 else x.astype(np.float32)

        row_t = np.uint16 if name.endswith("bf16") else dtype
        rows = widen(read(rows_p, n * dim, row_t)).reshape(n, dim)[::step]
        ids = read(ids_p, n, np.int64)[::step]
        if tc:
            q = (widen(read(hi_p, nq * dim, row_t)).astype(np.float64) + widen(read(lo_p, nq * dim, row_t))).reshape(nq, dim)
        else:
            q = read(q_p, nq * dim, np.float32).reshape(nq, dim)
        ts, ti, counts = read(ts_p, nq, np.float32), read(ti_p, nq, np.int64), read(c_p, nq, np.uint64)
        out_s, out_i = read(os_p, nq * cap, np.float32).reshape(nq, cap), read(oi_p, nq * cap, np.int64).reshape(nq, cap)
        with np.errstate(invalid="ignore"):
            scores = (q.astype(np.float64) @ rows.astype(np.float64).T).astype(np.float32)
            for j in range(nq):
                s = scores[j]
                idx = np.flatnonzero((ids >= 0) & ((s > ts[j]) | ((s == ts[j]) & (ids <= ti[j]))))
                rng.shuffle(idx)
                start = int(counts[j])
                room = max(0, min(len(idx), cap - start))
                out_s[j, start:start + room], out_i[j, start:start + room] = s[idx[:room]], ids[idx[:room]]
                counts[j] += len(idx)
        for ptr, arr in ((c_p, counts), (os_p, out_s), (oi_p, out_i)):
            cuda.device_write(int(ptr), arr.tobytes())

    return run


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from jemc_infer.index import gpu

    monkeypatch.setattr(gpu, "compile_cubin", lambda arch, cache=None, nvcc=None: (b"\x7fELF fake cubin", ""))
    gpu._RESIDENT.clear()
    with harness().fake_gpu() as fakes:
        fakes.launched = []
        for name in KERNEL_NAMES:
            emulate = functools.partial(_emulate_scan(np.float32 if name.endswith("f32") else np.float16), name)
            fakes.cuda.KERNELS[name] = lambda *a, _e=emulate, _n=name: (fakes.launched.append(_n), _e(*a))
        fakes.cuda.launched = fakes.launched
        yield fakes.cuda
    gpu._RESIDENT.clear()


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize(("n", "d", "k", "nq"), [(7, 5, 10, 1), (20_000, 100, 10, 3), (20_000, 12, 4096, 9), (3000, 2048, 50, 2),
                                                 (5000, 40, 100, 70)])
def test_host_code_on_the_fake_gpu_equals_the_reference(fake_cuda: Any, dtype: type, n: int, d: int, k: int, nq: int) -> None:
    from jemc_infer.index.gpu import GpuIndex, kernel_for

    rng = np.random.default_rng(n + d)
    rows = rng.standard_normal((n, d)).astype(dtype)
    ids = np.arange(n, dtype=np.int64) + 100
    ids[rng.random(n) < 0.1] = -1
    queries = rng.standard_normal((nq, d)).astype(np.float32)
    got = GpuIndex(rows, ids).search(queries, k)
    want = reference(rows.astype(np.float32), ids, queries, k)
    kernel = kernel_for("f32" if dtype == np.float32 else "f16", nq, (9, 0))
    assert set(fake_cuda.launched) == {kernel}
    if kernel.startswith("jemc_tc"):  # queries as hi + lo halves: their sum is within ~2^-22 of the fp32 query
        assert_same(got, want, rtol=1e-5)
    else:
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])
    assert not fake_cuda.MACHINE.context_stack  # every push popped: the caller's context is left as it was


def test_search_device_cuda_keeps_the_rows_resident(fake_cuda: Any) -> None:
    rng = np.random.default_rng(1)
    rows = rng.standard_normal((5000, 64)).astype(np.float16)
    source = InMemory((Shard(rows[:2000], np.arange(2000)), Shard(rows[2000:], np.arange(2000, 5000))))
    queries = rng.standard_normal((4, 64)).astype(np.float32)
    first = search(source, queries, 20, device="cuda")
    stats = dict(fake_cuda.MACHINE.stats)
    uploads = stats["htod"] + stats["pageable_htod"]
    again = search(source, queries, 20, device="cuda")
    for what in ("mem_alloc", "pageable_htod", "pageable_dtoh"):  # buffers kept, every copy through pinned memory
        assert fake_cuda.MACHINE.stats[what] == stats[what], what
    np.testing.assert_array_equal(first[1], again[1])
    np.testing.assert_array_equal(first[1], reference(rows.astype(np.float32), np.arange(5000), queries, 20)[1])
    rows_bytes = 5000 * 64 * 2
    assert fake_cuda.MACHINE.stats["htod"] + fake_cuda.MACHINE.stats["pageable_htod"] - uploads < 20  # queries and thresholds only
    assert sum(a.size for a in fake_cuda.MACHINE.allocations.values()) >= rows_bytes  # still resident


def test_too_big_for_the_cards_says_so(fake_cuda: Any) -> None:
    from jemc_infer.index.gpu import GpuIndex

    fake_cuda.MACHINE.devices = [("NVIDIA small", (8, 0), 300 << 20)]
    with pytest.raises(InputError, match="search on the CPU"):
        GpuIndex(np.zeros((200_000, 1024), np.float16), np.arange(200_000))


# --- tensor cores: the query halves, the choice of kernel, torch tensors ---------------------------------------


def test_query_halves_sum_to_the_query() -> None:
    """The tensor-core kernels multiply a row by hi and by lo; hi + lo must be the fp32 query to
    far below the rows' own rounding (fp16: ~2^-22; bf16: ~2^-16), and bf16 rounding must be torch's."""
    import torch

    from jemc_infer.index.gpu import bf16_bits, query_halves

    rng = np.random.default_rng(0)
    q = (rng.standard_normal((64, 256)) * np.exp(rng.uniform(-6, 6, (64, 1)))).astype(np.float32)
    hi, lo = query_halves(q, "f16")
    assert hi.dtype == lo.dtype == np.float16
    np.testing.assert_allclose(hi.astype(np.float64) + lo, q, rtol=2**-20, atol=2**-24)
    hi, lo = query_halves(q, "bf16")
    widen = lambda b: (b.astype(np.uint32) << np.uint32(16)).view(np.float32)  # noqa: E731
    np.testing.assert_allclose(widen(hi).astype(np.float64) + widen(lo), q, rtol=2**-15)
    edge = np.array([1.0, 1 + 2**-8, 1 + 3 * 2**-8, -2.5, 0.0, -0.0, np.inf, -np.inf, 3.4e38, 1e-40, np.nan], np.float32)
    for x in (q.ravel(), edge):
        want = torch.from_numpy(x).bfloat16().view(torch.int16).numpy().view(np.uint16)
        got = bf16_bits(x)
        nan = np.isnan(x)
        np.testing.assert_array_equal(got[~nan], want[~nan])
        assert (widen(got[nan]) != widen(got[nan])).all()  # NaN stays NaN


@pytest.mark.parametrize(("kind", "nq", "cc", "want"), [
    ("f16", 1, (9, 0), "jemc_simt2_f16"), ("f32", 2, (9, 0), "jemc_simt2_f32"), ("f16", 3, (9, 0), "jemc_tc16_f16"),
    ("f16", 16, (8, 0), "jemc_tc16_f16"), ("bf16", 17, (9, 0), "jemc_tc64_bf16"), ("f16", 256, (8, 6), "jemc_tc64_f16"),
    ("f32", 3, (9, 0), "jemc_simt8_f32"), ("f16", 256, (7, 5), "jemc_simt8_f16"),
])
def test_the_kernel_for_a_batch(kind: str, nq: int, cc: tuple[int, int], want: str) -> None:
    from jemc_infer.index.gpu import kernel_for, tile_of

    name = kernel_for(kind, nq, cc)
    assert name == want and name in KERNEL_NAMES
    assert tile_of(name) == {"jemc_simt2": 2, "jemc_simt8": 8, "jemc_tc16": 16, "jemc_tc64": 64}[name.rsplit("_", 1)[0]]


@pytest.mark.parametrize("nq", [2, 9, 40])
def test_a_bf16_cuda_tensor_is_searched_in_place(fake_cuda: Any, nq: int) -> None:
    import torch

    from jemc_infer.index.gpu import GpuIndex

    rng = np.random.default_rng(nq)
    rows32 = rng.standard_normal((6000, 64)).astype(np.float32)
    bf16 = torch.from_numpy(rows32).bfloat16()
    tensor = CudaTensor(fake_cuda, bf16.view(torch.int16).numpy(), "torch.bfloat16")
    ids = np.arange(6000, dtype=np.int64) * 7
    index = GpuIndex(tensor, ids)
    assert index.parts[0].rows_ptr == tensor.data_ptr()  # no copy of the rows
    queries = torch.from_numpy(rng.standard_normal((nq, 64)).astype(np.float32))  # a tensor too
    got = index.search(queries, 25)
    assert_same(got, reference(bf16.float().numpy(), ids, queries.numpy(), 25), rtol=1e-4)
    assert set(fake_cuda.launched) == {"jemc_simt2_bf16" if nq <= 2 else f"jemc_tc{16 if nq <= 16 else 64}_bf16"}


def test_a_cuda_tensor_it_cannot_use_in_place_is_refused(fake_cuda: Any) -> None:
    from jemc_infer.index.gpu import GpuIndex

    with pytest.raises(InputShapeError, match="multiple of 8"):
        GpuIndex(CudaTensor(fake_cuda, np.zeros((10, 12), np.float16), "torch.float16"), np.arange(10))
    with pytest.raises(InputShapeError, match="float16 or bfloat16"):
        GpuIndex(CudaTensor(fake_cuda, np.zeros((10, 8), np.int64), "torch.int64"), np.arange(10))
