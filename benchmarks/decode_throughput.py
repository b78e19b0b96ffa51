"""Decode + preprocess throughput vs PyAV decode-only throughput on the same files.

decode-only: demux and decode every video and audio frame with PyAV (frame threads on), nothing
else. decode+resize/crop: ``VideoReader`` (one pass feeding all three streams: 1 fps object frames,
16-frame clips at 25 fps, 22.05 kHz mono audio, resize 256 + centre crop 224, uint8) — what a
decode worker does. decode+preprocess: the same plus the numpy normalisation each backbone expects
(the ONNX path's; the torch path normalises on the device). Goal: at most 25% over decode-only.

    .venv/bin/python benchmarks/decode_throughput.py [--seconds 30] [--files 3] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import av

from jemc_infer.video.decode import VideoReader
from jemc_infer.video.samples import write_clip
from jemc_infer.video.sampling import Sampling, i3d_input, resnet_input


def decode_only(path: Path) -> int:
    frames = 0
    with av.open(str(path)) as c:
        streams = list(c.streams.video[:1]) + list(c.streams.audio[:1])
        c.streams.video[0].thread_type = "AUTO"
        for packet in c.demux(*streams):
            decoded = packet.decode()
            if packet.stream.type == "video":
                frames += len(decoded)
    return frames


def decode_preprocess(path: Path, sampling: Sampling, normalize: bool = True) -> int:
    reader = VideoReader(path, sampling)
    for chunk in reader:
        if normalize:
            resnet_input(chunk.frames)
            i3d_input(chunk.clips)
    return reader.stats.decoded_frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--files", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3, help="alternating rounds; the best of each is kept")
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--cache", type=Path, default=Path("benchmarks/out/media"))
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    w, h = map(int, args.size.split("x"))
    files = [write_clip(args.cache / f"clip{i}_{args.size}_{int(args.seconds)}s.mp4", args.seconds, (w, h), seed=i)
             for i in range(args.files)]
    sampling = Sampling()
    runs = {"decode_only": decode_only,
            "decode_resize_crop": lambda p: decode_preprocess(p, sampling, normalize=False),
            "decode_preprocess": lambda p: decode_preprocess(p, sampling)}
    best = dict.fromkeys(runs, float("inf"))
    frames = 0
    for _ in range(args.repeat):  # alternate so all see the same machine noise
        for name, fn in runs.items():
            t = time.perf_counter()
            frames = sum(fn(p) for p in files)
            best[name] = min(best[name], time.perf_counter() - t)
    result = {
        "files": len(files), "seconds_each": args.seconds, "size": args.size, "frames": frames,
        **{f"{k}_fps": round(frames / v, 1) for k, v in best.items()},
        "overhead_resize_crop": round(best["decode_resize_crop"] / best["decode_only"] - 1, 3),
        "overhead_with_normalisation": round(best["decode_preprocess"] / best["decode_only"] - 1, 3),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, PyAV {av.__version__}",
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
