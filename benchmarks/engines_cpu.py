"""onnxruntime vs torch eager on the CPU: text-encoder latency and throughput, backbone throughput.

A JEMC bundle at the paper's sizes (vocabulary 10,000, word dim 300, joint size 1024, two spaces:
object [resnet] and activity [i3d + audio]), random weights, exported with ``export_bundle``.
Both engines run the same graph on the same inputs in the same process, alternating.

    .venv/bin/python benchmarks/engines_cpu.py [--text-iters 300] [--backbones]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from paper_model import paper_model

from jemc_infer.engines.onnxruntime import OnnxruntimeEngine
from jemc_infer.engines.torch import TorchEngine
from jemc_infer.export.onnx import export_bundle
from jemc_infer.export.specs import ShapeLimits


def _timings(engine, inputs: dict, iters: int) -> list[float]:  # noqa: ANN001
    for _ in range(5):
        engine.run(inputs)
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        engine.run(inputs)
        out.append((time.perf_counter() - t) * 1000)
    return out


def _pct(xs: list[float], q: float) -> float:
    return round(float(np.percentile(xs, q)), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text-iters", type=int, default=300)
    ap.add_argument("--backbones", action="store_true", help="also ResNet-152, I3D and SoundNet (slow on 2 cores)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    results: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
                                f"({torch.get_num_threads()} threads)"}
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "model"
        _, vocab = paper_model(bundle)
        backbones = None
        if args.backbones:
            from jemc_infer.nn.backbones import load_backbones

            backbones = load_backbones(random_init=True)
        only = ("text", "video") + (("resnet", "i3d", "audio") if backbones else ())
        export_bundle(bundle, ShapeLimits(max_frames=8, max_clips=2), backbones=backbones, only=only, echo=lambda s: None)
        engines = {"onnxruntime": lambda g: OnnxruntimeEngine.from_bundle(bundle, g),
                   "torch": lambda g: TorchEngine.from_bundle(bundle, g, "cpu", backbones)}

        def text_inputs(batch: int, length: int = 12) -> dict:
            ids = rng.integers(4, len(vocab), size=(batch, length), dtype=np.int64)
            ids[:, 0], ids[:, -1] = 1, 2
            return {"ids": ids, "lengths": np.full(batch, length, dtype=np.int64)}

        text = {}
        for name, make in engines.items():
            e = make("text")
            one = _timings(e, text_inputs(1), args.text_iters)
            many = _timings(e, text_inputs(64), max(20, args.text_iters // 10))
            text[name] = {"batch1_p50_ms": _pct(one, 50), "batch1_p90_ms": _pct(one, 90),
                          "batch64_captions_per_s": round(64 / (statistics.median(many) / 1000), 1)}
        text["speedup_batch1_p50"] = round(text["torch"]["batch1_p50_ms"] / text["onnxruntime"]["batch1_p50_ms"], 2)
        text["speedup_batch64"] = round(text["onnxruntime"]["batch64_captions_per_s"] / text["torch"]["batch64_captions_per_s"], 2)
        results["text_encoder (2 spaces, 12 tokens)"] = text
        if backbones:
            cases = {"resnet": ("frames", (8, 3, 224, 224), 5), "i3d": ("clips", (2, 3, 16, 224, 224), 3),
                     "audio": ("wave", (1, 22_050 * 8), 10)}
            for graph, (inp, shape, iters) in cases.items():
                x = {inp: rng.standard_normal(shape).astype(np.float32)}
                row = {}
                for name, make in engines.items():
                    ms = statistics.median(_timings(make(graph), x, iters))
                    row[f"{name}_items_per_s"] = round(shape[0] / (ms / 1000), 2)
                row["speedup"] = round(row["onnxruntime_items_per_s"] / row["torch_items_per_s"], 2)
                results[f"{graph} backbone (batch {shape[0]})"] = row
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
