"""The GPU top-k's plan, without a GPU: how many rows a search reads, through the NumPy model of the kernel.

The kernel's cost is the bytes it reads, so the plan's figure of merit is the rows it visits per
search over N (samples plus full passes; one launch reads its rows once for all its queries) and
how many queries needed another full pass (a guess too high, or a buffer overflow): one such
query in a batch costs the batch a whole pass. Rows are random unit-free normals in D = 8 (the
plan sees only scores), queries too. ``plan ms``: the median time of a search outside the model's
scans — the host's selection and thresholds, as the GPU search runs them. ``--data`` picks how rows lie in the index: ``normal``,
``clustered`` (runs of 50 similar rows, as a collection embedded video by video, queries near
rows) or ``sorted`` (scores rising with the row number: the atomics' order at its worst).

    python3 benchmarks/topk_passes.py [--rows 1000000] [--queries 256] [--batches 4] [--data normal]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from jemc_infer.index import topk_plan


class _Counting(topk_plan.NumpyScan):
    def __init__(self, rows: np.ndarray, ids: np.ndarray, seed: int) -> None:
        super().__init__(rows, ids, block_rows=1 << 16, seed=seed)
        self.full, self.again, self.read, self.launches, self.in_scan = 0, 0, 0, 0, 0.0

    def scan(self, queries: np.ndarray, thr_scores: np.ndarray, thr_ids: np.ndarray, step: int, cap: int) -> topk_plan.Candidates:
        self.read += len(range(0, self.n_rows, step))
        self.launches += 1
        if step == 1:
            self.full += 1
            self.again += len(queries) if self.full > 1 else 0
        t = time.perf_counter()
        out = super().scan(queries, thr_scores, thr_ids, step, cap)
        self.in_scan += time.perf_counter() - t
        return out


def _data(kind: str, n: int, nq: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    d = 8
    if kind == "clustered":
        centres = rng.standard_normal((n // 50 + 1, d))
        rows = (np.repeat(centres, 50, axis=0)[:n] + 0.3 * rng.standard_normal((n, d))).astype(np.float32)
        return rows, (rows[rng.integers(0, n, nq)] + 0.1 * rng.standard_normal((nq, d))).astype(np.float32)
    if kind == "sorted":
        rows = np.sort(rng.standard_normal(n)).astype(np.float32)[:, None].repeat(d, axis=1)
        return rows, rng.standard_normal((nq, d)).astype(np.float32)
    return rng.standard_normal((n, d)).astype(np.float32), rng.standard_normal((nq, d)).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=256)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--data", choices=("normal", "clustered", "sorted"), default="normal")
    a = ap.parse_args()
    print(f"N = {a.rows}, {a.batches} batches of {a.queries} queries, {a.data} rows")
    print(f"{'k':>5} {'rows read / N (worst batch)':>28} {'launches':>9} {'query passes after the first':>29} {'plan ms':>8}")
    for k in (10, 100, 1000, 4096):
        read, launches, again, host = [], [], 0, []
        for b in range(a.batches):
            rows, queries = _data(a.data, a.rows, a.queries, np.random.default_rng(b))
            scan = _Counting(rows, np.arange(a.rows, dtype=np.int64), seed=b)
            t = time.perf_counter()
            topk_plan.topk(scan, queries, k)
            host.append(time.perf_counter() - t - scan.in_scan)
            read.append(scan.read / a.rows)
            launches.append(scan.launches)
            again += scan.again
        print(f"{k:>5} {max(read):>28.3f} {max(launches):>9} {again:>21} of {a.queries * a.batches:<5} {np.median(host) * 1e3:>8.1f}")


if __name__ == "__main__":
    main()
