"""Exact top-k search on the CPU: ours over memory-mapped shards vs numpy, torch and faiss in RAM.

For each N: random L2-normalised rows [N, D] written once as 4 fp32 ``.npy`` shards (and 4 fp16
shards, and the int8 compact copy of the fp32 shards as an index keeps it) under ``--dir``, in
blocks so the writer's memory stays small. Ours runs twice: the full scan of the fp32 rows
(``compact=False``) and the compact scan (int8 copy + exact rescoring from the fp32 rows, what an
index made by ``embed`` does, with NumKong's int8 products; its results are checked against the
full scan's). The compact scan runs next to numpy and torch (while they hold their 8 GB copy at 1M) and again next to faiss (while
faiss holds its own): each peer is compared with ours from its own phase, as the page cache left
to our memory maps differs between them. Then, in a fresh process
per N, every method runs every cell (nq in {1, 64} x k in {10, 1000}): one warm-up call (which
also warms the page cache and the memory map), then ``--repeats`` timed calls; the median is
reported. Memory is measured in yet another fresh process per N: peak anonymous memory (sampled
``RssAnon``) and numpy's peak allocations (``tracemalloc``) during our search, against the
extra memory numpy's full-matrix search allocates.

Peers, each over the whole fp32 matrix in RAM:
- numpy: ``q @ X.T`` then ``argpartition`` and a sort of the k best;
- torch: ``torch.mm`` then ``torch.topk`` (the array shared with numpy, no copy);
- faiss-cpu ``IndexFlatIP`` with ``faiss.cvar.distance_compute_blas_threshold = 20``
  (with the default, 64 queries take the non-BLAS path and are ~8x slower);
- and, approximate, faiss-cpu ``IndexScalarQuantizer`` (``QT_8bit``, inner product): its recall@k
  against the exact ids is reported beside its time.

    .venv/bin/python benchmarks/search_cpu.py [--sizes 100000 1000000] [--dim 2048] [--repeats 5]

Needs ``N * D * 8`` bytes free under ``--dir`` (16 GB for 1M x 2048) and deletes them at the end
unless ``--keep``. Writes ``benchmarks/out/search_cpu.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np

from jemc_infer.index.compact import Segment, write_segment
from jemc_infer.index.npyfile import npy_writer
from jemc_infer.index.search import search
from jemc_infer.index.source import InMemory, Shard

SHARDS = 4
CELLS = [(1, 10), (1, 1000), (64, 10), (64, 1000)]
OUT = Path(__file__).parent / "out" / "search_cpu.json"


def write_data(folder: Path, n: int, dim: int, block: int = 32768) -> None:
    """4 fp32 and 4 fp16 shards of random unit rows, written block by block."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    bounds = np.linspace(0, n, SHARDS + 1).astype(int)
    for s in range(SHARDS):
        rows = int(bounds[s + 1] - bounds[s])
        # written front to back as an index writes its files (npy_writer: large writes, so the page
        # cache holds them in large folios; np.save writes a shard in one)
        with (npy_writer(folder / f"f32_{s}.npy", (rows, dim), np.float32) as f32,
              npy_writer(folder / f"f16_{s}.npy", (rows, dim), np.float16) as f16):
            for a in range(0, rows, block):
                x = rng.standard_normal((min(block, rows - a), dim), dtype=np.float32)
                x /= np.linalg.norm(x, axis=1, keepdims=True)
                f32.write(x)
                f16.write(x)
        np.save(folder / f"ids_{s}.npy", np.arange(bounds[s], bounds[s + 1], dtype=np.int64))
        shard = Shard(np.load(folder / f"f32_{s}.npy", mmap_mode="r"), np.zeros(rows, np.int64), s)
        write_segment([shard], dim, folder / f"c8_{s}.npy", folder / f"r8_{s}.npy", folder / f"c8meta_{s}.npy")


def open_source(folder: Path, kind: str, compact: bool = False) -> InMemory:
    """The shards as an index opens them: read-only memory maps, no pickle (and the compact copy)."""
    shards = tuple(Shard(np.load(folder / f"{kind}_{s}.npy", mmap_mode="r", allow_pickle=False),
                         np.load(folder / f"ids_{s}.npy", allow_pickle=False), s) for s in range(SHARDS))
    if not compact:
        return InMemory(shards)
    return InMemory(shards, tuple(Segment(*(np.load(folder / f"{name}_{s}.npy", mmap_mode="r") for name in ("c8", "r8", "c8meta")),
                                          (s,), (len(shards[s].ids),)) for s in range(SHARDS)))


def load_full(folder: Path, n: int, dim: int) -> np.ndarray:
    full = np.empty((n, dim), np.float32)
    at = 0
    for s in range(SHARDS):
        part = np.load(folder / f"f32_{s}.npy", mmap_mode="r")
        full[at : at + len(part)] = part
        at += len(part)
    return full


def queries(nq: int, dim: int) -> np.ndarray:
    q = np.random.default_rng(7).standard_normal((nq, dim), dtype=np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def numpy_topk(full: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = q @ full.T
    part = np.argpartition(scores, scores.shape[1] - k, axis=1)[:, -k:]
    best = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-best, axis=1)
    return np.take_along_axis(best, order, axis=1), np.take_along_axis(part, order, axis=1)


def agree(full: tuple[np.ndarray, np.ndarray], compact: tuple[np.ndarray, np.ndarray]) -> bool:
    """The same scores (up to float32 rounding: BLAS's fp32 sums vs the compact path's rounded
    float64) and the same ids, but where two rows' scores lie within that rounding of each other."""
    (fs, fi), (cs, ci) = full, compact
    if fi.shape != ci.shape or not np.allclose(fs, cs, rtol=0, atol=1e-6):
        return False
    for s, a, b in zip(fs, fi, ci, strict=True):
        clear = s > s[-1] + 2e-6  # above the k-th by more than rounding
        if set(a[clear]) != set(b[clear]) or not set(a[clear]) <= set(b):
            return False
    return True


def timed(fn, repeats: int) -> float:  # noqa: ANN001
    fn()  # warm-up: page cache, memory map, BLAS/OpenMP thread pools
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def _phase_in_ram(folder: Path, n: int, dim: int, qs: dict, src32: InMemory, src8: InMemory, repeats: int) -> dict:
    """Ours (page cache) against numpy and torch (anonymous memory), alternating per cell."""
    import torch

    out: dict = {}
    full = load_full(folder, n, dim)
    tfull = torch.from_numpy(full)
    for nq, k in CELLS:
        key, q, tq = f"nq={nq} k={k}", qs[nq], torch.from_numpy(qs[nq])
        if not agree(search(src32, q, k, compact=False), search(src8, q, k, compact=True)):
            sys.exit(f"compact search | other results than the full scan at {key} | expected the same (a bug)")
        out[f"ours fp32 {key}"] = timed(lambda: search(src32, q, k, compact=False), repeats)  # noqa: B023
        out[f"ours compact {key}"] = timed(lambda: search(src8, q, k, compact=True), repeats)  # noqa: B023
        out[f"numpy {key}"] = timed(lambda: numpy_topk(full, q, k), repeats)  # noqa: B023
        out[f"torch {key}"] = timed(lambda: torch.topk(torch.mm(tq, tfull.T), k, dim=1), repeats)  # noqa: B023
    return out


def _faiss_index(folder: Path, dim: int, kind: str):  # noqa: ANN202
    import faiss

    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    else:
        index = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
        index.train(np.ascontiguousarray(np.load(folder / "f32_0.npy", mmap_mode="r")[:65536]))
    for s in range(SHARDS):  # block by block: no second full copy next to faiss's own
        part = np.load(folder / f"f32_{s}.npy", mmap_mode="r")
        for a in range(0, len(part), 65536):
            index.add(np.ascontiguousarray(part[a : a + 65536]))
    return index


def _phase_faiss(folder: Path, n: int, dim: int, qs: dict, src32: InMemory, src8: InMemory, repeats: int) -> dict:
    """faiss (its own copy of the rows; the numpy copy is freed) against ours again; then faiss's
    8-bit scalar quantizer (approximate) with its recall against the exact ids."""
    import faiss

    faiss.cvar.distance_compute_blas_threshold = 20
    out: dict = {}
    index = _faiss_index(folder, dim, "flat")
    for nq, k in CELLS:
        key, q = f"nq={nq} k={k}", qs[nq]
        out[f"faiss {key}"] = timed(lambda: index.search(q, k), repeats)  # noqa: B023
        out[f"ours compact {key}"] = timed(lambda: search(src8, q, k, compact=True), repeats)  # noqa: B023
    index.reset()  # frees its copy of the rows before the quantizer makes its own
    sq = _faiss_index(folder, dim, "sq8")
    for nq, k in CELLS:
        key, q = f"nq={nq} k={k}", qs[nq]
        out[f"faiss-sq8 {key}"] = timed(lambda: sq.search(q, k), repeats)  # noqa: B023
        got, want = sq.search(q, k)[1], search(src8, q, k)[1]
        out[f"faiss-sq8 recall {key}"] = float(np.mean([len(set(g) & set(w)) / k for g, w in zip(got, want, strict=True)]))
    return out


def child_times(folder: Path, n: int, dim: int, repeats: int) -> dict:
    """All timings for one N, in ms; each phase holds at most two copies of the rows in memory."""
    qs = {nq: queries(nq, dim) for nq in (1, 64)}
    src32, src16, src8 = open_source(folder, "f32"), open_source(folder, "f16"), open_source(folder, "f32", compact=True)
    a = _phase_in_ram(folder, n, dim, qs, src32, src8, repeats)
    b = _phase_faiss(folder, n, dim, qs, src32, src8, repeats)
    out = a | {key: v for key, v in b.items() if key.startswith("faiss")}
    for nq, k in CELLS:
        key = f"nq={nq} k={k}"
        # the compact scan ran in both phases: each peer is compared with ours from its own phase
        out[f"ours compact {key}"] = a[f"ours compact {key}"]
        out[f"ours compact next to faiss {key}"] = b[f"ours compact {key}"]
        out[f"ours fp16 {key}"] = timed(lambda: search(src16, qs[nq], k, compact=False), repeats)  # noqa: B023
    return out


def rss_anon_kb() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("RssAnon:"))


def child_memory(folder: Path, n: int, dim: int) -> dict:
    """Peak memory of our search (nq = 64, k = 1000, the largest state) in a fresh process."""
    src = open_source(folder, "f32", compact=True)
    q = queries(64, dim)
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_anon_kb())
            time.sleep(0.002)

    t = time.perf_counter()
    search(src, q[:1], 10, compact=True)  # the first call on fresh memory maps faults every page in
    first_ms = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    search(src, q[:1], 10, compact=True)
    second_ms = (time.perf_counter() - t) * 1000
    base = rss_anon_kb()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    tracemalloc.start()
    search(src, q, 1000, compact=True)
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    stop.set()
    sampler.join()
    result = {"ours_anon_peak_mb": (peak[0] - base) / 1024, "ours_traced_peak_mb": traced / 2**20,
              "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "first_call_after_open_ms": first_ms, "second_call_ms": second_ms}
    full = load_full(folder, n, dim)
    tracemalloc.start()
    numpy_topk(full, q, 1000)
    result["numpy_traced_peak_mb_beyond_matrix"] = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return result


def run_child(mode: str, folder: Path, n: int, dim: int, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--dir", str(folder), "--sizes", str(n), "--dim", str(dim),
           "--repeats", str(repeats)]
    proc = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(results: dict) -> str:
    lines = ["| N | nq | k | ours compact (next to numpy / next to faiss) | ours fp32 full scan "
             "| ours fp16 full scan | numpy | torch | faiss | peer / ours compact, the closest peer "
             "| faiss SQ8 (approx.) | its recall@k |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, r in results["sizes"].items():
        t = r["times_ms"]
        for nq, k in CELLS:
            key = f"nq={nq} k={k}"
            peers = {p: t[f"{p} {key}"] for p in ("numpy", "torch", "faiss")}
            ours = {p: t[f"ours compact next to faiss {key}" if p == "faiss" else f"ours compact {key}"] for p in peers}
            best = min(peers, key=lambda p: peers[p] / ours[p])  # the peer closest to ours, each in its own phase
            cells = " | ".join(f"{peers[p]:,.1f}" for p in ("numpy", "torch", "faiss"))
            lines.append(f"| {int(n):,} | {nq} | {k} | **{ours['numpy']:,.1f}** / {ours['faiss']:,.1f} "
                         f"| {t[f'ours fp32 {key}']:,.1f} "
                         f"| {t[f'ours fp16 {key}']:,.1f} | {cells} | **{peers[best] / ours[best]:.2f}x** ({best}) "
                         f"| {t[f'faiss-sq8 {key}']:,.1f} | {t[f'faiss-sq8 recall {key}']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/jemc-search-bench"))
    ap.add_argument("--keep", action="store_true", help="keep the data files")
    ap.add_argument("--child", choices=["times", "memory"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        n = args.sizes[0]
        res = child_times(args.dir, n, args.dim, args.repeats) if args.child == "times" else child_memory(args.dir, n, args.dim)
        print(json.dumps(res))
        return
    import faiss
    import torch

    results: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}, torch {torch.__version__}, "
                                f"faiss-cpu {faiss.__version__}", "dim": args.dim, "repeats": args.repeats, "sizes": {}}
    args.dir.mkdir(parents=True, exist_ok=True)
    try:
        for n in args.sizes:
            need = n * args.dim * 8
            free = shutil.disk_usage(args.dir).free
            if free < need * 1.1:
                sys.exit(f"{args.dir} | {free / 1e9:.1f} GB free | expected {need * 1.1 / 1e9:.1f} GB for N = {n:,}")
            folder = args.dir / str(n)
            t = time.perf_counter()
            write_data(folder, n, args.dim)
            print(f"N={n:,}: data written in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
            times = run_child("times", folder, n, args.dim, args.repeats)
            memory = run_child("memory", folder, n, args.dim, args.repeats)
            results["sizes"][str(n)] = {"times_ms": times, "memory": memory}
            print(json.dumps(results["sizes"][str(n)], indent=1), file=sys.stderr, flush=True)
            if not args.keep:
                shutil.rmtree(folder)
    finally:
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=1))
    print(results["machine"])
    print(table(results))


if __name__ == "__main__":
    main()
