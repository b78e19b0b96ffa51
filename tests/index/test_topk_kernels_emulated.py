"""topk.cu's kernels themselves, run on the CPU (tests/fakes/cuda_emu: threads as coroutines,
``__syncthreads``, warp shuffles, WMMA), launched by the real host code on the fake pycuda: every
kernel equals the reference with several query tiles, rows in several chunks and several tiles
per block, dead and NaN rows, sampled and full passes. Where g++ or the CUDA toolkit's headers are
missing the tests skip and say so (the toolkit's nvcc test skips alike). What this cannot show:
speed, and anything the emulation does not model (memory bounds, the hardware's own rounding)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from support.cuda_emu import CudaTensor, build, launcher
from support.fake_gpu import harness
from support.topk_reference import assert_same, reference

from jemc_infer.index import gpu

KERNELS = [f"jemc_simt{t}_{k}" for t in (2, 8) for k in ("f32", "f16", "bf16")] + [f"jemc_tc{t}_{k}" for t in (16, 64) for k in ("f16", "bf16")]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Any:
    so = build(tmp_path_factory.mktemp("cuda_emu"))
    if so is None:
        pytest.skip("no g++ or no CUDA toolkit headers (cuda_fp16.h): the kernels cannot be emulated here")
    return so


@pytest.fixture
def card(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The fake pycuda with topk.cu's kernels emulated, on a card of 2 multiprocessors (so every
    block loops over several tiles of rows)."""
    monkeypatch.setattr(gpu, "compile_cubin", lambda arch, cache=None, nvcc=None: (b"\x7fELF emulated", ""))
    gpu._RESIDENT.clear()
    with harness().fake_gpu() as fakes:
        fakes.cuda.MACHINE.sms = 2
        for name in KERNELS:
            fakes.cuda.KERNELS[name] = launcher(emulator, name)
        yield fakes.cuda
    gpu._RESIDENT.clear()


def _rows(card: Any, kind: str, n: int, d: int, seed: int) -> tuple[Any, np.ndarray]:
    """Rows of ``kind`` as GpuIndex takes them (numpy for f32/f16, a CUDA tensor for bf16) and as
    float32 for the reference; every 13th row NaN in one column."""
    rows = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    rows[::13, 3] = np.nan
    if kind == "bf16":
        import torch

        bf16 = torch.from_numpy(rows).bfloat16()
        return CudaTensor(card, bf16.view(torch.int16).numpy(), "torch.bfloat16"), bf16.float().numpy()
    typed = rows.astype(np.float16 if kind == "f16" else np.float32)
    return typed, typed.astype(np.float32)


@pytest.mark.parametrize(("kernel", "nq", "n", "d", "k"), [
    ("jemc_simt8_f32", 3, 600, 150, 20),   # one tile of 8 queries; D padded to 152, every lane of a warp busy
    ("jemc_simt8_f32", 11, 400, 37, 10),   # two tiles; D padded to 40
    ("jemc_simt8_f16", 3, 600, 300, 20),   # 304: each lane twice, the second time not all
    ("jemc_simt8_bf16", 3, 600, 264, 20),
    ("jemc_simt2_f32", 3, 600, 150, 20),   # two tiles of 2 queries, the second half empty
    ("jemc_simt2_f16", 1, 600, 300, 20),
    ("jemc_simt2_bf16", 2, 600, 264, 20),
    ("jemc_tc16_f16", 20, 3000, 136, 50),  # two tiles of 16 queries; D in three chunks, the last partial
    ("jemc_tc64_f16", 70, 3000, 136, 50),  # two tiles of 64 queries
    ("jemc_tc16_bf16", 20, 3000, 136, 50),
    ("jemc_tc64_bf16", 70, 1500, 64, 50),
    ("jemc_tc16_f16", 5, 9000, 24, 10),    # more rows than half a buffer: samples, then the full pass
])
def test_each_kernel_equals_the_reference(card: Any, kernel: str, nq: int, n: int, d: int, k: int) -> None:
    kind = kernel.rsplit("_", 1)[1]
    rows, rows32 = _rows(card, kind, n, d, seed=nq + n)
    ids = np.arange(n, dtype=np.int64) * 3 + 1
    ids[::11] = -1  # dead rows
    queries = np.random.default_rng(d).standard_normal((nq, d)).astype(np.float32)
    got = gpu.GpuIndex(rows, ids).search(queries, k, kernel=kernel)
    assert_same(got, reference(rows32, ids, queries, k), rtol=1e-5 if kind != "bf16" else 1e-4)
    assert (got[1] >= 0).all() and not np.isnan(got[0]).any()  # never a dead or a NaN row


def test_the_default_choice_of_kernel_runs_too(card: Any) -> None:
    """No kernel forced: the host picks by batch size (tensor cores from 3 queries of fp16 rows)."""
    rows, rows32 = _rows(card, "f16", 2000, 64, seed=3)
    ids = np.arange(2000, dtype=np.int64)
    for nq in (1, 2, 3, 17):
        queries = np.random.default_rng(nq).standard_normal((nq, 64)).astype(np.float32)
        assert_same(gpu.GpuIndex(rows, ids).search(queries, 25), reference(rows32, ids, queries, 25), rtol=1e-5)


@pytest.mark.parametrize("kernel", KERNELS)
def test_one_pass_keeps_what_the_contract_says(card: Any, kernel: str) -> None:
    """One scan, not a search (a search mends a faulty pass): every ``step``-th row, each live,
    non-NaN one whose pair reaches the threshold kept with its own id and score, none other."""
    kind = kernel.rsplit("_", 1)[1]
    n, d, step, nq = 2000, 72, 7, 20 if kernel.startswith("jemc_tc") else 3
    rows, rows32 = _rows(card, kind, n, d, seed=5)
    ids = np.arange(n, dtype=np.int64) * 5 + 2
    ids[::11] = -1
    queries = np.random.default_rng(6).standard_normal((nq, d)).astype(np.float32)
    scan = gpu.GpuIndex(rows, ids).parts[0]
    scan.kernel = kernel
    with np.errstate(invalid="ignore"):
        truth = (queries.astype(np.float64) @ rows32[::step].astype(np.float64).T).astype(np.float32)  # [nq, visited]
    thr_s = np.nanmedian(truth, axis=1).astype(np.float32)
    thr_s[0] = -np.inf  # the first query: no threshold (a sample's first pass)
    thr_i = np.full(nq, np.iinfo(np.int64).max, np.int64)
    c = scan.scan(queries, thr_s, thr_i, step, cap=4096)
    visited = ids[::step]
    for q in range(nq):
        kept = dict(zip(c.ids[q, : c.counts[q]].tolist(), c.scores[q, : c.counts[q]].tolist(), strict=True))
        assert len(kept) == c.counts[q] <= 4096  # no row twice
        live = (visited >= 0) & ~np.isnan(truth[q])
        clear = np.abs(truth[q] - thr_s[q]) > 1e-3  # away from the threshold: rounding cannot decide
        want = set(visited[live & clear & (truth[q] > thr_s[q])].tolist())
        assert want <= set(kept) and not (set(kept) & set(visited[live & clear & (truth[q] < thr_s[q])].tolist()))
        assert set(kept) <= set(visited[live].tolist())  # only visited, live rows
        for i, s in kept.items():
            np.testing.assert_allclose(s, truth[q][np.flatnonzero(visited == i)[0]], rtol=1e-4, atol=1e-4)
