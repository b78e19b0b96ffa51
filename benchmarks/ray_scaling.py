"""Distributed (Ray) against local: ``embed`` throughput and search latency on this machine.

- embed: the same clips embedded by ``jemc_infer.embed.embed`` into fresh indexes, locally
  (``--workers`` decoder processes, the backbones in this process) and on a local Ray cluster of
  ``--cpus`` CPUs with ``--actors`` backbone actors (decoding in Ray tasks). The cluster is
  started before the clock starts (its start is reported apart); the actors' start (each opens
  the three backbones) is inside the embed time, as it is for a user.
- search: a random fp32 index of ``--rows`` × ``--dim`` in ``--shards`` shard files, exact top-10
  for 1 and 16 queries: the local ``search()`` against ``ShardedSearch`` with ``--actors``
  actors (median of ``--repeat`` runs; the shards' hand-over to the actors reported apart).
  Both answer the same ids and scores (checked here too).

    .venv/bin/python benchmarks/ray_scaling.py [--clips 6] [--seconds 5] [--rows 200000] [--dim 512]

Uses the random-weight bundle of benchmarks/embed_throughput.py (cached under
benchmarks/out/embed_model; exporting it takes ~2 minutes).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from embed_throughput import OUT, model_bundle  # noqa: E402

from jemc_infer.video.samples import write_clip  # noqa: E402


def bench_embed(args: argparse.Namespace, ray) -> dict:  # noqa: ANN001
    from jemc_infer.cluster import Cluster
    from jemc_infer.collection import Options
    from jemc_infer.embed import embed
    from jemc_infer.index.store import Index

    (OUT / "media").mkdir(parents=True, exist_ok=True)
    files = [write_clip(OUT / "media" / f"clip{i}_320x240_{args.seconds:g}s.mp4", args.seconds, size=(320, 240), seed=i)
             for i in range(args.clips)]
    bundle = model_bundle()
    options = Options(workers=args.workers, frame_batch=16, clip_batch=4)
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        local = embed(files, Path(tmp) / "local", bundle, backend="onnxruntime", options=options)
        on_ray = embed(files, Path(tmp) / "ray", bundle, backend="onnxruntime", options=options, cluster=Cluster(actors=args.actors))
        assert local.run.done == on_ray.run.done == len(files), (local.run.failed, on_ray.run.failed)
        rows = []
        for name in ("local", "ray"):
            with Index.open(Path(tmp) / name) as ix:
                live = {int(i): np.asarray(s.rows[r]) for s in ix.shards() for r, i in enumerate(s.ids) if i >= 0}
                rows.append({Path(p).name: live[v.id] for p, v in ix.videos().items()})
        diff = max(float(np.abs(rows[0][k] - rows[1][k]).max()) for k in rows[0])
    for name, s in (("local", local), ("ray", on_ray)):
        out[name] = {"s": round(s.run.seconds, 2), "videos_per_s": round(s.run.done / s.run.seconds, 3),
                     "video_seconds_per_s": round(s.run.done * args.seconds / s.run.seconds, 2)}
    out["ray"]["messages"] = [m for m in on_ray.messages if m.startswith("ray:")]
    out["max_abs_row_difference"] = diff
    out["ray_over_local"] = round(local.run.seconds / on_ray.run.seconds, 3)
    return out


def bench_search(args: argparse.Namespace) -> dict:
    from jemc_infer.cluster import Cluster
    from jemc_infer.cluster.search import ShardedSearch
    from jemc_infer.index.search import search
    from jemc_infer.index.source import InMemory, Shard

    rng = np.random.default_rng(0)
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        blocks, at = [], 0
        per = args.rows // args.shards
        for j in range(args.shards):
            rows = rng.standard_normal((per, args.dim), dtype=np.float32)
            np.save(Path(tmp) / f"{j}.npy", rows)
            blocks.append(Shard(np.load(Path(tmp) / f"{j}.npy", mmap_mode="r"), np.arange(at, at + per, dtype=np.int64)))
            at += per
        source = InMemory(tuple(blocks))
        with ShardedSearch(Cluster(actors=args.actors)) as sharded:
            t = time.perf_counter()
            sharded.load(source)
            out["load_s"] = round(time.perf_counter() - t, 3)
            for nq in (1, 16):
                q = rng.standard_normal((nq, args.dim), dtype=np.float32)
                times: dict[str, list[float]] = {"local": [], "ray": []}
                for _ in range(args.repeat):  # alternate, so that noise hits both alike
                    t = time.perf_counter()
                    want = search(source, q, 10)
                    times["local"].append(time.perf_counter() - t)
                    t = time.perf_counter()
                    got = sharded.search(q, 10)
                    times["ray"].append(time.perf_counter() - t)
                    assert np.array_equal(want[1], got[1]) and np.array_equal(want[0], got[0])
                out[f"nq={nq}"] = {k: {"median_ms": round(1000 * statistics.median(v), 1), "min_ms": round(1000 * min(v), 1)}
                                   for k, v in times.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=2, help="local decoder processes")
    ap.add_argument("--cpus", type=int, default=2, help="the local Ray cluster's CPUs")
    ap.add_argument("--actors", type=int, default=2, help="Ray actors (backbones for embed, shards for search)")
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--skip-embed", action="store_true")
    args = ap.parse_args()
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    t = time.perf_counter()
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    started = time.perf_counter() - t
    try:
        res = {"machine": f"{platform.machine()}, {os.cpu_count()} cores (shared: other jobs ran at the same time)",
               "ray": ray.__version__, "cluster": f"local, {args.cpus} CPUs, {args.actors} actors",
               "cluster_start_s": round(started, 2),
               "search": {"rows": args.rows, "dim": args.dim, "shards": args.shards, "k": 10, **bench_search(args)}}
        if not args.skip_embed:
            res["embed"] = {"clips": args.clips, "seconds_each": args.seconds, "size": "320x240 h264 25 fps + AAC",
                            "local_workers": args.workers, **bench_embed(args, ray)}
    finally:
        ray.shutdown()
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
