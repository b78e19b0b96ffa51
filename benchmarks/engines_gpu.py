"""On a GPU: TensorRT fp16 (and onnxruntime CUDA, where installed) vs torch eager fp32.

Text encoder (batch 1 latency, batch 64 throughput) and the backbones' throughput, same process,
same inputs. Backends that are not installed are reported as such (the lent GPU machines have no
TensorRT or onnxruntime-gpu unless their wheels are carried). Goal: TensorRT fp16 >= 3x torch.

    python3 benchmarks/engines_gpu.py
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from jemc_infer.config import ModelConfig, SpaceConfig
from jemc_infer.engines import open_engine
from jemc_infer.errors import JemcError
from jemc_infer.export.onnx import export_bundle
from jemc_infer.export.specs import ShapeLimits
from jemc_infer.nn import JEMC, save_model
from jemc_infer.nn.backbones import load_backbones
from jemc_infer.text import SPECIALS, Vocabulary


def _ms(engine, inputs: dict, iters: int) -> float:  # noqa: ANN001
    for _ in range(5):
        engine.run(inputs)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        engine.run(inputs)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    assert torch.cuda.is_available(), "needs a CUDA GPU"
    rng = np.random.default_rng(0)
    out: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        vocab = Vocabulary(words=SPECIALS + tuple(f"w{i}" for i in range(9996)))
        config = ModelConfig(spaces=(SpaceConfig("object", ("resnet",)), SpaceConfig("activity", ("i3d", "audio"))), vocab_size=len(vocab))
        bundle = Path(tmp) / "model"
        save_model(JEMC(config), vocab, bundle)
        nets = load_backbones(random_init=True)
        limits = ShapeLimits(max_frames=32, max_clips=8)
        export_bundle(bundle, limits, backbones=nets, echo=lambda s: None)
        try:
            from jemc_infer.export.tensorrt import build_engine

            for graph in ("text", "video", "resnet", "i3d", "audio"):
                build_engine(bundle, graph, "fp16", limits)
            out["tensorrt"] = "built fp16 engines"
        except JemcError as err:
            out["tensorrt"] = f"unavailable: {err}"
        ids = rng.integers(4, 10_000, size=(64, 12), dtype=np.int64)
        cases = {"text b1": ("text", {"ids": ids[:1], "lengths": np.array([12], np.int64)}, 1),
                 "text b64": ("text", {"ids": ids, "lengths": np.full(64, 12, np.int64)}, 64),
                 "resnet b32": ("resnet", {"frames": rng.standard_normal((32, 3, 224, 224)).astype(np.float32)}, 32),
                 "i3d b8": ("i3d", {"clips": rng.standard_normal((8, 3, 16, 224, 224)).astype(np.float32)}, 8)}
        gpu_nets = load_backbones(random_init=True, device="cuda")
        for label, (graph, x, n) in cases.items():
            row = {}
            for backend in ("tensorrt", "onnxruntime", "torch"):
                try:
                    engine, why = open_engine(bundle, graph, backend=backend, device="cuda", backbones=gpu_nets)
                except JemcError as err:
                    row[backend] = f"unavailable: {str(err)[:120]}"
                    continue
                ms = _ms(engine, x, 30)
                row[backend] = {"ms": round(ms, 3), "items_per_s": round(n / ms * 1000, 1), "provider": engine.provider}
            if isinstance(row.get("tensorrt"), dict):
                row["tensorrt_speedup_vs_torch"] = round(row["torch"]["ms"] / row["tensorrt"]["ms"], 2)
            out[label] = row
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
