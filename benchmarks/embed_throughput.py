"""``embed`` throughput against decode-only throughput on the same files, same worker count.

- decode-only: every packet of every file demuxed and decoded by PyAV (video + audio), the
  files spread over ``--workers`` processes: the floor any embedder has to pay;
- pipeline (no networks): ``extract_features`` with an encoder that only prepares the networks'
  inputs (``resnet_input`` / ``i3d_input``) and returns zeros: decoding in workers, sampling,
  resize/crop, normalisation, batching — everything ``embed`` does except the networks;
- embed: ``jemc_infer.embed.embed`` end to end (ResNet-152, I3D, SoundNet and the video heads as
  exported ONNX graphs through onnxruntime, shards and manifest written), random weights (same
  compute as pretrained ones), into a fresh index.

    .venv/bin/python benchmarks/embed_throughput.py [--clips 4] [--seconds 10] [--workers 2] [--backend onnxruntime]

The exported bundle is cached under benchmarks/out/embed_model (export takes ~2 minutes here).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from decode_throughput import decode_only  # noqa: E402

from jemc_infer.video.pipeline import extract_features  # noqa: E402
from jemc_infer.video.samples import write_clip  # noqa: E402
from jemc_infer.video.sampling import Sampling, i3d_input, resnet_input  # noqa: E402

OUT = Path(__file__).parent / "out"


class InputsOnly:
    """A FeatureEncoder that prepares the networks' inputs and skips the networks."""

    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        return np.zeros((len(resnet_input(frames)), 2048), np.float32)

    def encode_clips(self, clips: np.ndarray) -> np.ndarray:
        return np.zeros((len(i3d_input(clips)), 1024), np.float32)

    def encode_audio(self, wave: np.ndarray) -> np.ndarray:
        return np.zeros((max(1, len(wave) // 22050), 1024), np.float32)


def model_bundle() -> Path:
    """A random-init JEMC bundle (joint size 256) with all five graphs exported; cached."""
    path = OUT / "embed_model"
    if (path / "manifest.json").exists():
        return path
    import torch

    from jemc_infer.config import ModelConfig, SpaceConfig
    from jemc_infer.export.onnx import export_bundle
    from jemc_infer.export.specs import ShapeLimits
    from jemc_infer.nn import JEMC, save_model
    from jemc_infer.nn.backbones import load_backbones
    from jemc_infer.text import SPECIALS, Vocabulary

    vocab = Vocabulary(words=SPECIALS + tuple(f"w{i}" for i in range(1000)))
    config = ModelConfig(spaces=(SpaceConfig("object", ("resnet",)), SpaceConfig("activity", ("i3d", "audio"))),
                         vocab_size=len(vocab), embed_dim=256)
    torch.manual_seed(0)
    save_model(JEMC(config), vocab, path)
    export_bundle(path, ShapeLimits(max_batch=16, max_frames=16, max_clips=4), backbones=load_backbones(random_init=True),
                  echo=lambda s: print(s, file=sys.stderr))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--backend", default="onnxruntime")
    args = ap.parse_args()
    from jemc_infer.collection import Options
    from jemc_infer.embed import embed

    files = [write_clip(OUT / "media" / f"clip{i}_640x360_{args.seconds:g}s.mp4", args.seconds, seed=i) for i in range(args.clips)]
    bundle = model_bundle()
    video_s = args.clips * args.seconds

    t = time.perf_counter()
    with mp.get_context("spawn").Pool(args.workers) as pool:
        frames = sum(pool.map(decode_only, files))
    t_decode = time.perf_counter() - t

    t = time.perf_counter()
    results = list(extract_features(files, Sampling(), InputsOnly(), workers=args.workers, frame_batch=args.batch_size,
                                    clip_batch=max(1, args.batch_size // 4)))
    t_pipeline = time.perf_counter() - t
    assert all(r.ok for r in results), [r.reason for r in results]

    with tempfile.TemporaryDirectory() as tmp:
        options = Options(workers=args.workers, frame_batch=args.batch_size, clip_batch=max(1, args.batch_size // 4))
        summary = embed(files, Path(tmp) / "index", bundle, backend=args.backend, options=options)
    assert summary.run.done == len(files) and not summary.run.failed, summary
    t_embed = summary.run.seconds

    def rate(seconds: float) -> dict:
        return {"s": round(seconds, 2), "videos_per_s": round(args.clips / seconds, 3),
                "video_seconds_per_s": round(video_s / seconds, 2), "frames_per_s": round(frames / seconds, 1)}

    res = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "videos": args.clips, "seconds_each": args.seconds,
           "size": "640x360 h264 25 fps + AAC", "workers": args.workers, "decoded_frames": frames,
           "decode_only": rate(t_decode), "pipeline_no_networks": rate(t_pipeline), "embed": rate(t_embed),
           "engines": summary.engines,
           "pipeline_over_decode": round(t_decode / t_pipeline, 3), "embed_over_decode": round(t_decode / t_embed, 3),
           "goal_embed_over_decode": 0.8}
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
