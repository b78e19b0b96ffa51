"""On a GPU: our fused top-k kernel against torch ``mm`` + ``topk`` on the same resident rows.

Rows fp16 [N, D] on the card (uploaded once, not timed); per cell, the median of ``--repeats``
searches, each synchronised: queries in, exact top-k out (ours copies ids and scores back to
the host; torch's are synchronised on the card and copied back too, for the same work). The
bandwidth column is the bytes of the rows read once divided by the time: the kernel's goal is
the card's memory bandwidth (H100/H200 HBM3: 3.3-4.8 TB/s).

    python3 benchmarks/search_gpu.py [--rows 1000000] [--dim 2048] [--repeats 5] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def _time(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm: compile, allocate, first transfer
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    import torch

    from jemc_infer.index.gpu import GpuIndex

    rng = np.random.default_rng(0)
    rows = rng.standard_normal((a.rows, a.dim), dtype=np.float32).astype(np.float16)
    rows /= np.linalg.norm(rows.astype(np.float32), axis=1, keepdims=True).astype(np.float16)
    ids = np.arange(a.rows, dtype=np.int64)
    t = time.perf_counter()
    ours = GpuIndex(rows, ids)
    upload = time.perf_counter() - t
    dev = torch.device("cuda")
    trows = torch.from_numpy(rows).to(dev)
    name = torch.cuda.get_device_name(0)
    gb = rows.nbytes / 1e9
    results = []
    print(f"{name}: {a.rows} x {a.dim} fp16 rows ({gb:.1f} GB), upload {upload:.1f} s")
    print(f"{'nq':>4} {'k':>5} {'ours ms':>9} {'GB/s':>7} {'torch ms':>9} {'torch/ours':>10}  same ids")
    for nq in (1, 64, 256):
        q = rng.standard_normal((nq, a.dim), dtype=np.float32)
        tq = torch.from_numpy(q).to(dev).half()
        for k in (10, 1000, 4096):
            mine = _time(lambda: ours.search(q, k), a.repeats)  # noqa: B023 - called at once

            def peer() -> tuple[np.ndarray, np.ndarray]:
                s, i = torch.topk((tq @ trows.T).float(), k, dim=1)  # noqa: B023
                return s.cpu().numpy(), i.cpu().numpy()

            theirs = _time(peer, a.repeats)
            got, want = ours.search(q, k), peer()
            same = float(np.mean([len(set(g) & set(w)) / k for g, w in zip(got[1], want[1], strict=True)]))
            results.append({"nq": nq, "k": k, "ours_ms": mine * 1e3, "torch_ms": theirs * 1e3, "ours_gbps": gb / mine,
                            "overlap_with_torch": same})
            print(f"{nq:>4} {k:>5} {mine * 1e3:>9.2f} {gb / mine:>7.0f} {theirs * 1e3:>9.2f} {theirs / mine:>10.2f}  {same:.4f}")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump({"gpu": name, "rows": a.rows, "dim": a.dim, "upload_s": upload, "cells": results}, f, indent=1)


if __name__ == "__main__":
    main()
