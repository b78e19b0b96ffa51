"""Export a bundle's encoders and the feature backbones to ONNX, behind a parity gate.

Every graph is traced from the modules of ``jemc_infer.nn.graphs`` with the axes
``export/specs.py`` names made dynamic, checked with ``onnx.checker``, then run by onnxruntime
and torch on the same fresh random inputs (batch 1, 7 and the maximum; sequences of length 1 and
the maximum, lengths unsorted). The export is refused — nothing is written to the bundle — when
the largest difference passes the tolerance; the manifest records what was measured.
"""

from __future__ import annotations

import inspect
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from jemc_infer.bundle import Bundle, read_bundle, sha256_file
from jemc_infer.errors import InputError, JemcError, missing_dependency
from jemc_infer.export.specs import ShapeLimits, backbone_specs, text_spec, video_spec
from jemc_infer.manifest import GraphSpec, graph_key, update_manifest
from jemc_infer.nn.graphs import BackboneGraph, TextGraph, VideoGraph, check_matches
from jemc_infer.nn.io import model_from_bundle

OPSET = 18
FP32_TOLERANCE = 1e-4  # max |torch - onnxruntime| for the encoders (unit vectors)
FP16_TOLERANCE = 1e-2  # the same for fp16 graphs: half precision carries ~3 decimal digits
EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf caps a file at 2 GB: above this, weights go beside it


class ParityError(JemcError):
    """An exported graph does not compute what the torch module computes."""


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise (missing_dependency(err, "needed to export") or err) from None


def random_inputs(spec: GraphSpec, batch: int, rng: np.random.Generator, seq: int = 8, samples: int = 22_050,
                  vocab_size: int = 100) -> dict[str, np.ndarray]:
    """Fresh inputs for ``spec``: token ids with unsorted lengths (the longest = ``seq``), non-negative
    features like pooled activations, random masks, normalised-image-like frames, waveforms."""
    out: dict[str, np.ndarray] = {}
    for t in spec.inputs:
        shape = tuple(batch if d == "batch" else seq if d == "seq" else samples if d == "samples" else d for d in t.shape)
        if t.name == "ids":
            out[t.name] = rng.integers(0, vocab_size, size=shape, dtype=np.int64)
        elif t.name == "lengths":
            lengths = rng.integers(1, seq + 1, size=shape, dtype=np.int64)
            lengths[rng.integers(0, batch)] = seq
            out[t.name] = lengths
        elif t.dtype == "bool":
            out[t.name] = rng.random(shape) < 0.7
        elif t.name == "wave":
            out[t.name] = rng.uniform(-0.5, 0.5, size=shape).astype(np.float32)
        elif t.name in ("frames", "clips"):
            out[t.name] = rng.standard_normal(shape).astype(np.float32)
        else:
            out[t.name] = np.abs(rng.standard_normal(shape)).astype(np.float32)
    return out


def parity_cases(spec: GraphSpec, limits: ShapeLimits, vocab_size: int, seed: int) -> list[dict[str, np.ndarray]]:
    """The gate's inputs: batch 1, 7 and the maximum; sequence lengths 1 and the maximum."""
    rng = np.random.default_rng(seed)
    _, _, max_b = limits.axis_range(spec.name, "batch")
    batches = sorted({1, min(7, max_b), max_b})
    if spec.name == "text":
        combos = [(1, 1), (min(7, max_b), limits.max_seq), (max_b, limits.max_seq), (max_b, 1)]
        return [random_inputs(spec, b, rng, seq=s, vocab_size=vocab_size) for b, s in combos]
    if spec.name == "audio":
        lo, mid, _ = limits.axis_range("audio", "samples")
        return [random_inputs(spec, b, rng, samples=s) for b, s in zip(batches, (lo, mid, mid), strict=False)]
    return [random_inputs(spec, b, rng) for b in batches]


def _torch_outputs(module: nn.Module, spec: GraphSpec, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    with torch.inference_mode():
        outs = module(*(torch.from_numpy(inputs[t.name]) for t in spec.inputs))
    return [o.float().numpy() for o in outs]


def check_parity(module: nn.Module, path: Path, spec: GraphSpec, cases: list[dict[str, np.ndarray]],
                 tolerance: float, relative: bool = False) -> dict[str, Any]:
    """Run torch and onnxruntime (CPU) on each case.

    Args:
        relative: Scale the tolerance by max(1, max |output|) (deep backbones' raw features are
            not unit vectors; their float error grows with their magnitude).

    Returns:
        The record kept in the manifest: per-case shapes and max |difference|, the tolerance,
        and whether every case passed.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [t.name for t in spec.outputs]
    records, worst = [], 0.0
    for case in cases:
        want = _torch_outputs(module, spec, case)
        got = session.run(names, case)
        diff = max(float(np.abs(g.astype(np.float32) - w).max()) for g, w in zip(got, want, strict=True))
        scale = max(1.0, max(float(np.abs(w).max()) for w in want)) if relative else 1.0
        worst = max(worst, diff / scale)
        records.append({"shapes": {k: list(v.shape) for k, v in case.items()}, "max_abs_diff": diff, "scale": scale})
    return {"cases": records, "max_abs_diff": max(r["max_abs_diff"] for r in records), "tolerance": tolerance,
            "relative": relative, "passed": worst <= tolerance, "runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider"}


def export_graph(module: nn.Module, spec: GraphSpec, example: dict[str, np.ndarray], path: Path,
                 dims: dict[str, tuple[int, int]]) -> list[Path]:
    """Trace ``module`` to ONNX at ``path`` with ``spec``'s named axes dynamic (``dims``: name → (min, max)).

    Returns:
        The files written (the graph, and its external data file when the weights pass 2 GB).
    """
    import onnx

    module.eval()
    check_matches(module, spec)
    named = {name: torch.export.Dim(name, min=lo, max=hi) for name, (lo, hi) in dims.items()}
    per_input = [{i: named[a] for i, a in t.dynamic_axes.items()} or None for t in spec.inputs]
    # torch.export wants the structure of forward's parameters: a tuple for *inputs, else one per name
    params = list(inspect.signature(module.forward).parameters.values())
    if params and params[0].kind is inspect.Parameter.VAR_POSITIONAL:
        dynamic: Any = {params[0].name: tuple(per_input)}
    else:
        dynamic = {p.name: d for p, d in zip(params, per_input, strict=True)}
    args = tuple(torch.from_numpy(example[t.name]) for t in spec.inputs)
    size = sum(p.numel() * p.element_size() for p in module.parameters())
    external = size > EXTERNAL_DATA_BYTES
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(module, args, str(path), input_names=[t.name for t in spec.inputs],
                      output_names=[t.name for t in spec.outputs], dynamic_shapes=dynamic, opset_version=OPSET,
                      dynamo=True, external_data=external, optimize=True, verbose=False)
    onnx.checker.check_model(str(path), full_check=True)
    files = [path] + ([path.with_name(path.name + ".data")] if external else [])
    return [f for f in files if f.exists()]


def to_fp16(src: Path, dst: Path) -> None:
    """An fp16 copy of an fp32 graph; inputs and outputs keep their types (callers are unchanged)."""
    import onnx
    from onnxconverter_common import float16

    # the converter retypes these nodes' outputs but not their fp32 "value"/"to" attributes: keep them fp32
    block = [*float16.DEFAULT_OP_BLOCK_LIST, "ConstantOfShape", "Cast"]
    model = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True, op_block_list=block)
    onnx.save(model, str(dst))
    onnx.checker.check_model(str(dst))


def _dims(spec: GraphSpec, limits: ShapeLimits) -> dict[str, tuple[int, int]]:
    axes = {a for t in spec.inputs for a in t.dynamic_axes.values()}
    return {a: (limits.axis_range(spec.name, a)[0], limits.axis_range(spec.name, a)[2]) for a in axes}


def export_one(staging: Path, module: nn.Module, spec: GraphSpec, limits: ShapeLimits, source: dict[str, Any],
               vocab_size: int = 100, fp16: bool = False, relative: bool = False, seed: int = 0,
               echo: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
    """Export one graph (and its fp16 twin) into ``staging`` and gate it.

    Returns:
        Manifest records by key, their ``files`` still relative paths under ``staging``.

    Raises:
        ParityError: If onnxruntime and torch differ by more than the tolerance.
    """
    import onnx
    import onnxruntime

    t0 = time.perf_counter()
    path = staging / "onnx" / f"{spec.name}.onnx"
    example = random_inputs(spec, 2, np.random.default_rng(seed), seq=4, samples=limits.axis_range("audio", "samples")[0] + 1,
                            vocab_size=vocab_size)
    files = export_graph(module, spec, example, path, _dims(spec, limits))
    cases = parity_cases(spec, limits, vocab_size, seed + 1)
    parity = check_parity(module, path, spec, cases, FP32_TOLERANCE, relative)
    if not parity["passed"]:
        raise ParityError(f"{spec.name} graph | max |torch - onnxruntime| = {parity['max_abs_diff']:.2e} | expected "
                          f"<= {FP32_TOLERANCE:g}{' x scale' if relative else ''}: the export is refused")
    entries = {graph_key(spec.name): (files, parity, "fp32")}
    if fp16:
        path16 = staging / "onnx" / f"{spec.name}.fp16.onnx"
        to_fp16(path, path16)
        parity16 = check_parity(module, path16, spec, cases, FP16_TOLERANCE, relative)
        if not parity16["passed"]:
            raise ParityError(f"{spec.name} fp16 graph | max |torch - onnxruntime| = {parity16['max_abs_diff']:.2e} | "
                              f"expected <= {FP16_TOLERANCE:g}: the export is refused")
        entries[graph_key(spec.name, "fp16")] = ([path16], parity16, "fp16")
    versions = {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    records = {}
    for key, (fs, par, precision) in entries.items():
        records[key] = {"files": {str(f.relative_to(staging)): "" for f in fs}, "precision": precision, "spec": spec.to_json(),
                        "opset": OPSET, "exporter": "torch.onnx (dynamo)", "parity": par, "source": source,
                        "versions": versions, "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    worst = max(r["parity"]["max_abs_diff"] for r in records.values())
    echo(f"{spec.name}: {', '.join(records)} exported and checked in {time.perf_counter() - t0:.1f} s (max |diff| {worst:.1e})")
    return records


def retrieval_parity(staging: Path, records: dict[str, dict[str, Any]], config: Any, vocab: Any, data: Path,
                     split: str = "test", limit: float = 0.5) -> dict[str, Any]:
    """R@1/5/10 of the fp16 text + video graphs against the fp32 ones on a held-out split.

    Raises:
        ParityError: If any recall moves by more than ``limit`` points.
    """
    import onnxruntime as ort

    from jemc_infer.train.data import open_dataset
    from jemc_infer.train.evaluate import check_compatible
    from jemc_infer.train.metrics import retrieval_metrics

    ds = open_dataset(data)
    check_compatible(config, ds)
    sp = ds.split(split)
    feats, masks = ds.gather(sp.videos, config.features)
    vspec = GraphSpec.from_json(records["video"]["spec"])
    video_in = {t.name: (masks[t.name[:-5]] if t.dtype == "bool" else feats[t.name]) for t in vspec.inputs}
    ids, lengths = vocab.encode_batch(sp.captions)
    metrics = {}
    for precision in ("fp32", "fp16"):
        sess = {g: ort.InferenceSession(str(staging / next(iter(records[graph_key(g, precision)]["files"]))),
                                        providers=["CPUExecutionProvider"]) for g in ("text", "video")}
        text = sess["text"].run(None, {"ids": ids, "lengths": lengths})
        video = sess["video"].run(None, video_in)
        sims = sum(s.weight * (t @ v.T) for s, t, v in zip(config.spaces, text, video, strict=True))
        metrics[precision] = retrieval_metrics(sims, sp.caption_video)
    moves = {f"{d}_r{k}": abs(metrics["fp16"][d][f"r{k}"] - metrics["fp32"][d][f"r{k}"]) for d in ("t2v", "v2t") for k in (1, 5, 10)}
    record = {"data": str(ds.path), "split": split, "captions": len(sp.captions), "videos": len(sp.videos),
              "fp32": metrics["fp32"], "fp16": metrics["fp16"], "max_move_points": max(moves.values()), "limit_points": limit}
    if record["max_move_points"] > limit:
        worst = max(moves, key=moves.__getitem__)
        raise ParityError(f"fp16 retrieval | {worst} moved {moves[worst]:.2f} points on {ds.path} ({split}) | expected "
                          f"<= {limit} points: the fp16 export is refused")
    return record


def publish(bundle: Path, staging: Path, records: dict[str, dict[str, Any]]) -> None:
    """Move every staged file into the bundle (fsynced), hash it, and record all graphs at once."""
    for record in records.values():
        hashed = {}
        for rel in record["files"]:
            src, dest = staging / rel, bundle / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(src, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(src, dest)
            hashed[rel] = sha256_file(dest)
        record["files"] = hashed
    update_manifest(bundle, lambda m: m["graphs"].update(records))


def export_bundle(bundle: Bundle | Path | str, limits: ShapeLimits = ShapeLimits(), fp16: bool = False,
                  eval_data: Path | None = None, backbones: Any = None, seed: int = 0,
                  only: Sequence[str] | None = None, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Export the text encoders and video heads of a bundle, and the backbones if given.

    All or nothing: graphs are staged beside the bundle and published (with the manifest) only
    when every gate passed.

    Args:
        bundle: The model bundle (graphs go under ``onnx/`` and into ``manifest.json``).
        limits: Largest shapes the gate checks (and TensorRT profiles will cover).
        fp16: Also write fp16 variants, gated with a looser tolerance and by retrieval parity.
        eval_data: The held-out feature dataset for fp16 retrieval parity (its ``test`` split).
        backbones: A ``jemc_infer.nn.backbones.Backbones`` to export too, or None.
        seed: Seeds the gate's random inputs.
        only: Export just these graphs (``text``, ``video``, ``object``, ``activity``, ``audio``).

    Returns:
        The manifest entries written.

    Raises:
        ParityError: A gate failed (nothing is written).
        InputError: fp16 without ``eval_data``.
        BackendUnavailableError: onnx, onnxscript or onnxruntime is missing.
    """
    _require_onnx()
    if not isinstance(bundle, Bundle):
        bundle = read_bundle(bundle)
    wanted = set(only or ("text", "video", "object", "activity", "audio"))
    if fp16 and eval_data is None and {"text", "video"} <= wanted:
        raise InputError("--fp16 | no held-out data | expected --eval-data DATA (a feature dataset with a test split): "
                         "fp16 graphs are only kept if R@1/5/10 move by at most 0.5 points")
    model = model_from_bundle(bundle)
    source = {"weights_sha256": bundle.weights_sha256}
    config = bundle.config
    staging = bundle.path / f".export-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    records: dict[str, dict[str, Any]] = {}
    try:
        if "text" in wanted:
            records |= export_one(staging, TextGraph(model), text_spec(config), limits, source, len(bundle.vocab), fp16,
                                  seed=seed, echo=echo)
        if "video" in wanted:
            records |= export_one(staging, VideoGraph(model), video_spec(config), limits, source, fp16=fp16, seed=seed, echo=echo)
        if fp16 and {"text", "video"} <= wanted:
            rp = retrieval_parity(staging, records, config, bundle.vocab, Path(eval_data))  # type: ignore[arg-type]
            echo(f"fp16 retrieval parity: R@1/5/10 moved at most {rp['max_move_points']:.2f} points")
            for key in ("text.fp16", "video.fp16"):
                records[key]["retrieval_parity"] = rp
        if backbones is not None:
            specs = backbone_specs(backbones.object.out_dim, backbones.activity.out_dim, backbones.audio.out_dim)
            for name in [n for n in ("object", "activity", "audio") if n in wanted]:
                module = BackboneGraph(getattr(backbones, name))
                records |= export_one(staging, module, specs[name], limits, {"backbone": backbones.provenance[name]},
                                      fp16=fp16, relative=True, seed=seed, echo=echo)
        publish(bundle.path, staging, records)
        return records
    finally:
        shutil.rmtree(staging, ignore_errors=True)
