"""On a GPU: our fused top-k against torch ``mm`` + ``topk`` on the same resident rows (issue 13's grid).

Rows: N x D fp16 unit vectors made on the card by torch (10M x 2048 = 41 GB by default) and
searched in place by ours (a torch CUDA tensor) and by torch. Per cell, the median of
``--repeats`` searches, each synchronised: queries in from the host, exact top-k out on the host
(torch's results are copied back too, for the same work). Columns:

- ``GB/s``: the bytes of the rows divided by the search's time (one search reads the index about
  once: samples of a few percent, then one full pass), and ``of copy``: that as a fraction of the
  card's device-to-device copy bandwidth measured in the same run (bytes read + written / time).
  Goal: >= 0.85 for nq <= 16 at every k.
- ``torch/ours``: speed against torch. Goal: > 1 in every cell, >= 1.5 on the geometric mean.
- ``same``: the fraction of ids both return (torch rounds its scores to fp16, ours keeps fp32: a
  near-tie can differ).
- One more search per cell, its scans counted: ``launches``, ``read/N`` (rows visited over N:
  about 1.0 is the plan working), ``scans ms`` (kernels and copies) and ``host ms`` (the plan's
  own work on the host: thresholds, guesses, the final selection).

Then the choice of kernel for small batches (``gpu.kernel_for``, ``gpu.FEW_QUERIES``): each
kernel that can serve nq in {1, 2, 4, 8, 16}, timed at k = 10.

    python3 benchmarks/search_gpu.py [--rows 10000000] [--dim 2048] [--repeats 5] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable

import numpy as np


def _time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm: compile, allocate, first transfer
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def _copy_bandwidth(torch, rows, repeats: int) -> float:  # type: ignore[no-untyped-def]
    """Device-to-device copy of up to 8 GB of the rows: (bytes read + bytes written) / time."""
    src = rows.view(-1)[: min(rows.numel(), 4 << 30)]
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    del dst
    return 2 * src.numel() * src.element_size() / statistics.median(times) / 1e9


def _traced(ours, queries: np.ndarray, k: int) -> tuple[tuple[np.ndarray, np.ndarray], dict]:  # type: ignore[no-untyped-def]
    """One search, its scans counted: launches, rows visited over N, and the time outside the scans
    (the plan's host work: thresholds, guesses, selection) against the time inside them."""
    part = ours.parts[0]
    log = {"launches": 0, "rows": 0, "in_scan_s": 0.0}
    inner = part.scan

    def scan(queries, thr_scores, thr_ids, step, cap):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        out = inner(queries, thr_scores, thr_ids, step, cap)
        log["in_scan_s"] += time.perf_counter() - t
        log["launches"] += 1
        log["rows"] += -(-part.n_rows // step)
        return out

    part.scan = scan
    try:
        t = time.perf_counter()
        got = ours.search(queries, k)
        total = time.perf_counter() - t
    finally:
        del part.scan
    return got, {"launches": log["launches"], "rows_read_over_n": log["rows"] / part.n_rows,
                 "scans_ms": log["in_scan_s"] * 1e3, "host_ms": (total - log["in_scan_s"]) * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    import torch

    from jemc_infer.index.gpu import GpuIndex, kernel_for

    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    rows = torch.empty((a.rows, a.dim), dtype=torch.float16, device=dev)
    for at in range(0, a.rows, 1 << 20):  # unit rows, made a slice at a time (no fp32 copy of it all)
        x = torch.randn((min(1 << 20, a.rows - at), a.dim), generator=gen, device=dev)
        rows[at:at + len(x)] = (x / x.norm(dim=1, keepdim=True)).half()
    del x
    ids = np.arange(a.rows, dtype=np.int64)
    name = torch.cuda.get_device_name(0)
    gb = rows.numel() * rows.element_size() / 1e9
    copy = _copy_bandwidth(torch, rows, a.repeats)
    t = time.perf_counter()
    ours = GpuIndex(rows, ids)
    setup = time.perf_counter() - t
    cc = ours.parts[0].capability
    print(f"{name} (sm_{cc[0]}{cc[1]}): {a.rows} x {a.dim} fp16 rows ({gb:.1f} GB) on the card; "
          f"device-to-device copy {copy:.0f} GB/s; ours set up in {setup:.1f} s")
    print(f"{'nq':>4} {'k':>5} {'kernel':>20} {'ours ms':>9} {'GB/s':>7} {'of copy':>7} {'torch ms':>9} {'torch/ours':>10} {'same':>6}"
          f" {'launches':>8} {'read/N':>6} {'scans ms':>8} {'host ms':>7}")
    rng = np.random.default_rng(0)
    cells = []
    for nq in (1, 16, 64, 256):
        q = rng.standard_normal((nq, a.dim), dtype=np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        tq = torch.from_numpy(q).to(dev).half()
        for k in (10, 100, 1000, 4096):
            def peer() -> tuple[np.ndarray, np.ndarray]:
                s, i = torch.topk((tq @ rows.T).float(), k, dim=1)  # noqa: B023 - called at once
                return s.cpu().numpy(), i.cpu().numpy()

            mine = _time(lambda: ours.search(q, k), a.repeats)  # noqa: B023 - called at once
            theirs = _time(peer, a.repeats)
            (got, trace), want = _traced(ours, q, k), peer()
            same = float(np.mean([len(set(g) & set(w)) / k for g, w in zip(got[1], want[1], strict=True)]))
            cell = {"nq": nq, "k": k, "kernel": kernel_for("f16", nq, cc), "ours_ms": mine * 1e3, "torch_ms": theirs * 1e3,
                    "ours_gbps": gb / mine, "of_copy": gb / mine / copy, "torch_over_ours": theirs / mine, "same_ids": same, **trace}
            cells.append(cell)
            print(f"{nq:>4} {k:>5} {cell['kernel']:>20} {mine * 1e3:>9.2f} {gb / mine:>7.0f} {cell['of_copy']:>7.2f} "
                  f"{theirs * 1e3:>9.2f} {theirs / mine:>10.2f} {same:>6.4f} {trace['launches']:>8} "
                  f"{trace['rows_read_over_n']:>6.3f} {trace['scans_ms']:>8.2f} {trace['host_ms']:>7.2f}")
    choice = []
    print("kernel choice at k = 10:")
    for nq in (1, 2, 4, 8, 16):
        q = rng.standard_normal((nq, a.dim), dtype=np.float32)
        for kernel in ("jemc_simt2_f16", "jemc_simt8_f16", "jemc_tc16_f16"):
            ms = _time(lambda: ours.search(q, 10, kernel=kernel), a.repeats) * 1e3  # noqa: B023 - called at once
            choice.append({"nq": nq, "kernel": kernel, "ms": ms})
            print(f"  nq {nq:>3} {kernel:>20} {ms:8.2f} ms")
    small = [c["of_copy"] for c in cells if c["nq"] <= 16]
    ratios = [c["torch_over_ours"] for c in cells]
    geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    print(f"goals: nq<=16 of copy bw {min(small):.2f} ({'met' if min(small) >= 0.85 else 'NOT met'}, >=0.85); "
          f"ahead of torch {sum(r > 1 for r in ratios)}/{len(ratios)}; geomean {geo:.2f}x ({'met' if geo >= 1.5 else 'NOT met'}, >=1.5)")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump({"gpu": name, "rows": a.rows, "dim": a.dim, "copy_gbps": copy, "setup_s": setup, "cells": cells,
                       "kernel_choice": choice, "geomean_torch_over_ours": geo}, f, indent=1)


if __name__ == "__main__":
    main()
