"""Training throughput (captions/s) of the real training loop at the paper's sizes, on this machine.

Runs ``jemc_infer.train.loop.train`` for one epoch per preset on a synthetic dataset with the
default feature widths (2048 / 1024 / 1024), word dim 300, joint size 1024, batch 128, and reads
the rate the loop logs (training steps only; validation excluded).

    .venv/bin/python benchmarks/train_throughput.py [--videos 1000] [--presets weighted-resnet,jemc] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from jemc_infer.train.loop import TrainConfig, load_log, train
from jemc_infer.train.synthetic import synthesize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=1000, help="training videos (10 captions each)")
    ap.add_argument("--presets", default="weighted-resnet,jemc")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    if args.device.startswith("cuda"):
        machine += f", {torch.cuda.get_device_name(args.device)}"
    results = {"machine": machine, "device": args.device, "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        data = synthesize(Path(tmp) / "data", n_train=args.videos, n_val=100, n_test=10)
        for preset in args.presets.split(","):
            t0 = time.perf_counter()
            res = train(data.path, preset, Path(tmp) / preset, TrainConfig(epochs=1, device=args.device), progress=False, echo=lambda s: None)
            rate = load_log(res.log)[0]["captions_per_s"]
            row = {"preset": preset, "captions_per_s": rate, "captions": len(data.split("train").captions),
                   "wall_s_incl_validation": round(time.perf_counter() - t0, 1)}
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
    print(results["machine"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
