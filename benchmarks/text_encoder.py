"""The text encoder on the CPU: the exported fp32 graph (ONNX ``GRU``) against the int8 graph
``export --text-int8`` writes (the GRU as a ``Loop`` of int8 MatMuls), and that graph before
quantisation (fp32 MatMuls: what the Loop form costs by itself).

A JEMC bundle at the paper's sizes (vocabulary 10,000, word dim 300, GRU/joint size 1024, two
spaces), random weights. All graphs run in one process, interleaved call by call on the same
inputs (captions of ``--tokens`` tokens), so machine noise falls on all of them alike. Also reports
how far the int8 graph's outputs are from the fp32 graph's on random captions (max |diff|, min cosine).

    .venv/bin/python benchmarks/text_encoder.py [--iters 300] [--tokens 12] [--threads 0]
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
import onnx
import onnxruntime as ort
from paper_model import paper_model

from jemc_infer.bundle import read_bundle
from jemc_infer.export.onnx import export_bundle
from jemc_infer.export.text_int8 import gru_weights, text_loop_model, write_text_int8
from jemc_infer.specs import text_spec


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _captions(rng: np.random.Generator, batch: int, tokens: int, vocab: int) -> dict[str, np.ndarray]:
    ids = rng.integers(4, vocab, size=(batch, tokens), dtype=np.int64)
    ids[:, 0], ids[:, -1] = 1, 2
    return {"ids": ids, "lengths": np.full(batch, tokens, dtype=np.int64)}


def _interleaved(sessions: dict[str, ort.InferenceSession], inputs: dict[str, np.ndarray], iters: int) -> dict[str, list[float]]:
    for s in sessions.values():
        for _ in range(5):
            s.run(None, inputs)
    out: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(iters):
        for name, s in sessions.items():
            t = time.perf_counter()
            s.run(None, inputs)
            out[name].append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--tokens", type=int, default=12)
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0: onnxruntime's choice)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "model"
        model, vocab = paper_model(bundle)
        export_bundle(bundle, only=("text",), echo=lambda s: None)
        spec = text_spec(read_bundle(bundle).config)
        paths = {"fp32 (ONNX GRU)": bundle / "onnx" / "text.onnx", "fp32 (Loop of MatMuls)": Path(tmp) / "loop.onnx",
                 "int8 (Loop of int8 MatMuls)": Path(tmp) / "text.int8.onnx"}
        onnx.save(text_loop_model(gru_weights(model), spec), str(paths["fp32 (Loop of MatMuls)"]))
        write_text_int8(model, spec, paths["int8 (Loop of int8 MatMuls)"])
        sessions = {k: _session(p, args.threads) for k, p in paths.items()}
        one = _interleaved(sessions, _captions(rng, 1, args.tokens, len(vocab)), args.iters)
        many = _interleaved(sessions, _captions(rng, 64, args.tokens, len(vocab)), max(10, args.iters // 15))
        ref, q = sessions["fp32 (ONNX GRU)"], sessions["int8 (Loop of int8 MatMuls)"]
        diffs, cosines = [], []
        for batch, tokens in ((1, 1), (1, args.tokens), (64, args.tokens), (7, 40)):
            case = _captions(rng, batch, tokens, len(vocab))
            case["lengths"] = rng.integers(1, tokens + 1, size=batch, dtype=np.int64)
            for a, b in zip(ref.run(None, case), q.run(None, case), strict=True):
                diffs.append(float(np.abs(a - b).max()))
                cosines.append(float((a * b).sum(1).min()))
        sizes = {k: round(p.stat().st_size / 1e6, 1) for k, p in paths.items()}
    rows = {k: {"batch1_p50_ms": round(statistics.median(v), 3), "batch1_p90_ms": round(float(np.percentile(v, 90)), 3),
                "batch64_captions_per_s": round(64 / (statistics.median(many[k]) / 1000), 1), "file_mb": sizes[k]}
            for k, v in one.items()}
    base = rows["fp32 (ONNX GRU)"]["batch1_p50_ms"]
    for row in rows.values():
        row["speedup_batch1_p50"] = round(base / row["batch1_p50_ms"], 2)
    print(json.dumps({"machine": f"{platform.machine()}, {os.cpu_count()} cores, onnxruntime {ort.__version__}, "
                                 f"intra-op threads {args.threads or 'default'}",
                      "sizes": "vocabulary 10,000, word dim 300, GRU 1024, 2 spaces", "tokens": args.tokens, "iters": args.iters,
                      "graphs": rows, "int8_vs_fp32": {"max_abs_diff": max(diffs), "min_cosine": min(cosines)}, "goal_p50_ms": 2.0},
                     indent=1))


if __name__ == "__main__":
    main()
