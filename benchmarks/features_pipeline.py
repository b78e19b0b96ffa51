"""Feature extraction: end-to-end CPU throughput, and peak memory against video length.

throughput: ``extract_features`` with the real backbones (ResNet-152, I3D, SoundNet; random
init: same compute as pretrained) over N clips, against decode-only on the same files.

memory: peak RSS of the parent and of a decode worker's workload (each in a fresh process) for
a 10-second and a 10-minute video, with the real ResNet-152 + SoundNet and a cheap activity
stand-in (I3D on 937 clips of a 10-minute video would take ~20 CPU-minutes; its memory per batch
is constant, like ResNet's), so the figure isolates what grows with length: decoding, chunking,
batching, accumulation.

    .venv/bin/python benchmarks/features_pipeline.py throughput [--clips 3 --seconds 10] [--device cuda]
    .venv/bin/python benchmarks/features_pipeline.py memory
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from decode_throughput import decode_only  # noqa: E402

from jemc_infer.video.pipeline import extract_features  # noqa: E402
from jemc_infer.video.samples import write_clip  # noqa: E402
from jemc_infer.video.sampling import Sampling  # noqa: E402

CACHE = Path("benchmarks/out/media")


def throughput(args: argparse.Namespace) -> dict:
    from jemc_infer.nn.backbones import load_backbones

    files = [write_clip(CACHE / f"clip{i}_640x360_{args.seconds}s.mp4", args.seconds, seed=i) for i in range(args.clips)]
    backbones = load_backbones(random_init=True, device=args.device)
    t = time.perf_counter()
    frames = sum(decode_only(p) for p in files)
    t_decode = time.perf_counter() - t
    t = time.perf_counter()
    results = list(extract_features(files, Sampling(), backbones, workers=args.workers, frame_batch=16, clip_batch=2))
    t_extract = time.perf_counter() - t
    assert all(r.ok for r in results)
    samples = {"object_frames": sum(r.stats.object_frames for r in results), "clips": sum(r.stats.clips for r in results)}
    return {"device": str(backbones.device), "videos": len(files), "seconds_each": args.seconds, "decoded_frames": frames, **samples,
            "decode_only_s": round(t_decode, 2), "extract_s": round(t_extract, 2),
            "videos_per_s": round(len(files) / t_extract, 3), "frames_per_s": round(frames / t_extract, 1),
            "video_seconds_per_s": round(len(files) * args.seconds / t_extract, 3)}


class _Activity:
    """Cheap stand-in for I3D in the memory run (see the module docstring)."""

    def __init__(self, backbones) -> None:  # noqa: ANN001
        self.b = backbones

    def encode_frames(self, x: np.ndarray) -> np.ndarray:
        return self.b.encode_frames(x)

    def encode_clips(self, x: np.ndarray) -> np.ndarray:
        return np.repeat(x.reshape(len(x), -1)[:, :1].astype(np.float32), 1024, axis=1)

    def encode_audio(self, w: np.ndarray) -> np.ndarray:
        return self.b.encode_audio(w)


def _memory_child(path: str) -> None:
    from jemc_infer.nn.backbones import load_backbones

    enc = _Activity(load_backbones(random_init=True, device="cpu"))
    t = time.perf_counter()
    [r] = list(extract_features([path], Sampling(), enc, workers=1, frame_batch=16, clip_batch=8))
    assert r.ok, r.reason
    print(json.dumps({"parent_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "frames": r.stats.decoded_frames, "clips": r.stats.clips, "seconds": round(time.perf_counter() - t, 1)}))


def _worker_child(path: str) -> None:
    """What a decode worker does (decode, chunk, serialise for the pipe), in a process of its own:
    a spawned worker's ru_maxrss would include the moment it was forked from a parent holding torch."""
    import pickle

    from jemc_infer.video.decode import VideoReader

    for chunk in VideoReader(path, Sampling()):
        pickle.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL)
    print(json.dumps({"worker_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def memory(args: argparse.Namespace) -> dict:
    out = {}
    for label, seconds in (("10s", 10), ("10min", 600)):
        path = write_clip(CACHE / f"mem_{label}.mp4", seconds, seed=7)
        out[label] = {}
        for child in ("_memory_child", "_worker_child"):
            res = subprocess.run([sys.executable, __file__, child, str(path)], capture_output=True, text=True, check=True)
            out[label].update(json.loads(res.stdout.strip().splitlines()[-1]))
    for key in ("parent_peak_mb", "worker_peak_mb"):
        out[f"{key}_ratio_10min_over_10s"] = round(out["10min"][key] / out["10s"][key], 3)
    return out


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] in ("_memory_child", "_worker_child"):
        {"_memory_child": _memory_child, "_worker_child": _worker_child}[sys.argv[1]](sys.argv[2])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["throughput", "memory"])
    ap.add_argument("--clips", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="throughput: cpu, cuda, cuda:N")
    args = ap.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    result = throughput(args) if args.mode == "throughput" else memory(args)
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} cores"
    print(json.dumps(result))


if __name__ == "__main__":
    main()
