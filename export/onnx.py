"""Export a bundle's encoders and the feature backbones to ONNX, behind a parity gate.

Every graph is traced from the modules of ``jemc_infer.nn.graphs`` with the axes
``export/specs.py`` names made dynamic, checked with ``onnx.checker``, then run by onnxruntime
and torch on the same fresh random inputs (batch 1, 7 and the maximum; sequences of length 1 and
the maximum, lengths unsorted). The export is refused — nothing is written to the bundle — when
the largest difference passes the tolerance; the manifest records what was measured.

torch's exporter talks a lot (deprecation warnings, notices about axis names, progress): that
output is collected, not printed, unless asked for; a refused graph's error carries it
(:attr:`ParityError.details`), since it often says why.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import io
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from jemc_infer.bundle import Bundle, read_bundle, sha256_file
from jemc_infer.errors import InputError, JemcError, missing_dependency
from jemc_infer.export.specs import ShapeLimits
from jemc_infer.manifest import GraphEntry, graph_key, update_manifest
from jemc_infer.nn.graphs import TextGraph, VideoGraph, backbone_graphs, check_matches
from jemc_infer.nn.io import model_from_bundle
from jemc_infer.specs import GRAPHS, GraphSpec, text_spec, video_spec

OPSET = 18
FP32_TOLERANCE = 1e-4  # max |torch - onnxruntime| for the encoders (unit vectors)
FP16_TOLERANCE = 1e-2  # the same for fp16 graphs: half precision carries ~3 decimal digits
INT8_TOLERANCE = 1e-2  # the int8 text graph (measured 7e-4 at the paper's sizes); retrieval parity is its real gate
RETRIEVAL_LIMIT_POINTS = 0.5  # how far R@1/5/10 may move (points) for an int8 text graph to be kept
EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf caps a file at 2 GB: above this, weights go beside it


class ParityError(JemcError):
    """An exported graph does not compute what the torch module computes.

    Attributes:
        details: What the exporter said while making the refused graph (warnings, log lines),
            one message per item: often the reason.
    """

    def __init__(self, message: str, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.details = list(details)


class ExporterOutput:
    """Collects what torch's exporter prints, warns and logs while :meth:`capture` is active."""

    def __init__(self, passthrough: bool = False) -> None:
        self.passthrough = passthrough  # let it reach the terminal as usual instead (debugging)
        self.lines: list[str] = []

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        """Collect warnings, and stdout/stderr writes (log records without a handler go there too)."""
        if self.passthrough:
            yield
            return
        text = io.StringIO()
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
            warnings.simplefilter("always")
            try:
                yield
            finally:
                for w in caught:
                    self._add(f"{w.category.__name__}: {' '.join(str(w.message).split())}")
                for line in text.getvalue().splitlines():
                    self._add(line.rstrip())

    def _add(self, line: str) -> None:
        if line and line not in self.lines:  # the same deprecation warning comes once per traced call
            self.lines.append(line)


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


def _cpu_session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings go to the C++ stderr, past any capture
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


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

    session = _cpu_session(path)
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
    _forget_dispatch_caches()
    torch.onnx.export(module, args, str(path), input_names=[t.name for t in spec.inputs],
                      output_names=[t.name for t in spec.outputs], dynamic_shapes=dynamic, opset_version=OPSET,
                      dynamo=True, external_data=external, optimize=True, verbose=False)
    onnx.checker.check_model(str(path), full_check=True)
    files = [path] + ([path.with_name(path.name + ".data")] if external else [])
    return [f for f in files if f.exists()]


def _forget_dispatch_caches() -> None:
    """Clear torch's per-operator Python dispatch caches before a trace.

    The ONNX exporter keeps ``aten.gru`` whole (it becomes one ONNX GRU with a dynamic sequence
    axis) only while that op's dispatch cache holds no Python decomposition. An earlier trace in
    the same process leaves ``AutogradCPU → gru_impl`` cached, the next trace then unrolls the GRU
    over the example's length, and the exporter silently fixes the ``seq`` axis (a second export in
    one process was refused by the parity gate, or worse, not exercised at all). torch clears the
    same caches itself when a pre-dispatch mode is pushed (``torch.utils._python_dispatch._push_mode``);
    the caches are only caches, so clearing them changes nothing else.
    """
    for op in getattr(torch._ops, "get_cached_ops", lambda: ())():
        cache = getattr(op, "_dispatch_cache", None)
        if cache is not None:
            cache.clear()


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


def _gate(module: nn.Module, path: Path, spec: GraphSpec, cases: list[dict[str, np.ndarray]], precision: str,
          relative: bool, output: ExporterOutput) -> dict[str, Any]:
    """The parity record of one written graph; a ParityError (with the exporter's output) if it fails."""
    tolerance = FP32_TOLERANCE if precision == "fp32" else INT8_TOLERANCE if precision == "int8" else FP16_TOLERANCE
    with output.capture():
        parity = check_parity(module, path, spec, cases, tolerance, relative)
    if not parity["passed"]:
        what = f"{spec.name} graph" if precision == "fp32" else f"{spec.name} {precision} graph"
        raise ParityError(f"{what} | max |torch - onnxruntime| = {parity['max_abs_diff']:.2e} | expected "
                          f"<= {tolerance:g}{' x scale' if relative else ''}: the export is refused", output.lines)
    return parity


def export_one(staging: Path, module: nn.Module, spec: GraphSpec, limits: ShapeLimits, source: dict[str, Any],
               vocab_size: int = 100, fp16: bool = False, relative: bool = False, seed: int = 0,
               echo: Callable[[str], None] = print, show_exporter_output: bool = False,
               int8: bool = False) -> dict[str, GraphEntry]:
    """Export one graph (and its fp16 twin) into ``staging`` and gate it.

    Args:
        int8: The text graph only: also the int8 CPU graph (``export.text_int8``). Its gate does not
            refuse the export: a graph past :data:`INT8_TOLERANCE` is left out, with one line to ``echo``.
        echo: Gets one line for the graph: what was written, how long it took, the largest difference.
        show_exporter_output: Let torch's exporter print its warnings and logs as it goes;
            otherwise they are collected and only a refused graph's :class:`ParityError` carries them.

    Returns:
        Manifest entries by key, their ``files`` relative paths under ``staging`` (hashes filled in
        by :func:`publish`).

    Raises:
        ParityError: If onnxruntime and torch differ by more than the tolerance.
    """
    import onnx
    import onnxruntime

    t0 = time.perf_counter()
    output = ExporterOutput(passthrough=show_exporter_output)
    path = staging / "onnx" / f"{spec.name}.onnx"
    example = random_inputs(spec, 2, np.random.default_rng(seed), seq=4, samples=limits.axis_range("audio", "samples")[0] + 1,
                            vocab_size=vocab_size)
    with output.capture():
        files = {"fp32": export_graph(module, spec, example, path, _dims(spec, limits))}
    cases = parity_cases(spec, limits, vocab_size, seed + 1)
    parity = {"fp32": _gate(module, path, spec, cases, "fp32", relative, output)}
    if fp16:
        files["fp16"] = [staging / "onnx" / f"{spec.name}.fp16.onnx"]
        with output.capture():
            to_fp16(path, files["fp16"][0])
        parity["fp16"] = _gate(module, files["fp16"][0], spec, cases, "fp16", relative, output)
    if int8 and spec.name == "text":
        kept = _text_int8(module, staging / "onnx" / "text.int8.onnx", path, spec, cases, output, echo)
        if kept is not None:
            files["int8"], parity["int8"] = [staging / "onnx" / "text.int8.onnx"], kept
    versions = {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    exported = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    entries = {graph_key(spec.name, p): GraphEntry(files={str(f.relative_to(staging)): "" for f in fs}, spec=spec, precision=p,
                                                    source=source, parity=parity[p], opset=OPSET, exporter="torch.onnx (dynamo)",
                                                    versions=versions, exported=exported)
               for p, fs in files.items()}
    worst = max(p["max_abs_diff"] for p in parity.values())
    echo(f"{spec.name}: {', '.join(entries)} exported and checked in {time.perf_counter() - t0:.1f} s (max |diff| {worst:.1e})")
    return entries


def _text_int8(module: nn.Module, path: Path, fp32_path: Path, spec: GraphSpec, cases: list[dict[str, np.ndarray]],
               output: ExporterOutput, echo: Callable[[str], None]) -> dict[str, Any] | None:
    """Write and gate the int8 text graph: its parity record (with max |diff| against the fp32 graph
    too), or None (one line to ``echo``) if the gate leaves it out."""
    from jemc_infer.export.text_int8 import write_text_int8

    with output.capture():
        write_text_int8(module.model, spec, path)  # type: ignore[arg-type]
    try:
        parity = _gate(module, path, spec, cases, "int8", False, output)
    except ParityError as err:
        echo(f"text.int8: left out | {str(err).split(' | ', 1)[1].replace('the export is refused', 'fp32 is used')}")
        path.unlink(missing_ok=True)
        return None
    ref, got = _cpu_session(fp32_path), _cpu_session(path)
    names = [t.name for t in spec.outputs]
    outs = [(ref.run(names, c), got.run(names, c)) for c in cases]
    parity["max_abs_diff_vs_fp32_graph"] = max(float(np.abs(a - b).max()) for r, q in outs for a, b in zip(r, q, strict=True))
    parity["min_cosine_vs_fp32_graph"] = min(float((a * b).sum(1).min()) for r, q in outs for a, b in zip(r, q, strict=True))
    return parity


def retrieval_parity(staging: Path, entries: dict[str, GraphEntry], config: Any, vocab: Any, data: Path,
                     split: str = "test", limit: float = 0.5, precision: str = "fp16") -> dict[str, Any]:
    """R@1/5/10 of the ``precision`` text + video graphs against the fp32 ones on a held-out split
    (``int8``: the int8 text graph with the fp32 video graph).

    Raises:
        ParityError: If any recall moves by more than ``limit`` points.
    """
    from jemc_infer.train.data import open_dataset
    from jemc_infer.train.evaluate import check_compatible
    from jemc_infer.train.metrics import retrieval_metrics

    ds = open_dataset(data)
    check_compatible(config, ds)
    sp = ds.split(split)
    feats, masks = ds.gather(sp.videos, config.features)
    video_in = {t.name: (masks[t.name[:-5]] if t.dtype == "bool" else feats[t.name]) for t in entries["video"].spec.inputs}
    ids, lengths = vocab.encode_batch(sp.captions)
    metrics = {}
    for p in ("fp32", precision):
        keys = {g: graph_key(g, p) if graph_key(g, p) in entries else g for g in ("text", "video")}
        sess = {g: _cpu_session(staging / entries[k].path) for g, k in keys.items()}
        text = sess["text"].run(None, {"ids": ids, "lengths": lengths})
        video = sess["video"].run(None, video_in)
        sims = sum(s.weight * (t @ v.T) for s, t, v in zip(config.spaces, text, video, strict=True))
        metrics[p] = retrieval_metrics(sims, sp.caption_video)
    moves = {f"{d}_r{k}": abs(metrics[precision][d][f"r{k}"] - metrics["fp32"][d][f"r{k}"]) for d in ("t2v", "v2t") for k in (1, 5, 10)}
    record = {"data": str(ds.path), "split": split, "captions": len(sp.captions), "videos": len(sp.videos),
              "fp32": metrics["fp32"], precision: metrics[precision], "max_move_points": max(moves.values()), "limit_points": limit}
    if record["max_move_points"] > limit:
        worst = max(moves, key=moves.__getitem__)
        raise ParityError(f"{precision} retrieval | {worst} moved {moves[worst]:.2f} points on {ds.path} ({split}) | expected "
                          f"<= {limit} points: the {precision} export is refused")
    return record


def _int8_retrieval_parity(staging: Path, entries: dict[str, GraphEntry], bundle: Bundle, data: Path,
                           echo: Callable[[str], None]) -> None:
    """Record retrieval parity on the staged ``text.int8`` entry, or remove it (one line) if it fails."""
    try:
        rp = retrieval_parity(staging, entries, bundle.config, bundle.vocab, data, limit=RETRIEVAL_LIMIT_POINTS, precision="int8")
    except ParityError as err:
        echo(f"text.int8: left out | {str(err).split(' | ', 1)[1].replace('the int8 export is refused', 'fp32 is used')}")
        (staging / entries.pop("text.int8").path).unlink(missing_ok=True)
        return
    entries["text.int8"] = dataclasses.replace(entries["text.int8"], retrieval_parity=rp)
    echo(f"int8 text retrieval parity: R@1/5/10 moved at most {rp['max_move_points']:.2f} points")


def publish(bundle: Path, staging: Path, entries: dict[str, GraphEntry], drop: Sequence[str] = ()) -> dict[str, GraphEntry]:
    """Move every staged file into the bundle (fsynced), hash it, and record all graphs at once
    (removing the records ``drop`` names: graphs made from what was just replaced).

    Returns:
        The entries as recorded: ``files`` with their sha256.
    """
    published = {}
    for key, entry in entries.items():
        hashed = {}
        for rel in entry.files:
            src, dest = staging / rel, bundle / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(src, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(src, dest)
            hashed[rel] = sha256_file(dest)
        published[key] = dataclasses.replace(entry, files=hashed)
    dropped: list[str] = []

    def change(m: dict[str, Any]) -> None:
        for key in drop:
            dropped.extend((m["graphs"].pop(key, None) or {}).get("files", {}))
        m["graphs"].update({k: e.to_json() for k, e in published.items()})

    update_manifest(bundle, change)
    kept = {rel for e in published.values() for rel in e.files}
    for rel in set(dropped) - kept:  # after the manifest no longer names them
        (bundle / rel).unlink(missing_ok=True)
    return published


def export_bundle(bundle: Bundle | Path | str, limits: ShapeLimits = ShapeLimits(), fp16: bool = False,
                  eval_data: Path | None = None, backbones: Any = None, seed: int = 0,
                  only: Sequence[str] | None = None, echo: Callable[[str], None] = print,
                  show_exporter_output: bool = False, text_int8: bool = False) -> dict[str, GraphEntry]:
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
        only: Export just these graphs (``text``, ``video``, ``resnet``, ``i3d``, ``audio``).
        echo: Gets one line per graph (and one for fp16 retrieval parity).
        show_exporter_output: Let torch's exporter print its warnings and logs (debugging).
            Defaults to False: collected, and attached to a :class:`ParityError`.
        text_int8: Also the int8 text graph for the CPU (``text.int8``), gated by graph parity
            (:data:`INT8_TOLERANCE`) and retrieval parity on ``eval_data`` (int8 text + fp32 video
            against fp32 both). A gate it fails leaves it out with one line to ``echo``; the
            rest is published. An earlier ``text.int8`` is removed when the text graph is re-exported
            without one.

    Returns:
        The manifest entries written, by key (``text``, ``text.fp16``, ``resnet``...).

    Raises:
        ParityError: A gate failed (nothing is written).
        InputError: fp16 text and video graphs or an int8 text graph without ``eval_data``, an int8
            text graph without the video graph, or an unknown graph in ``only``.
        BackendUnavailableError: onnx, onnxscript or onnxruntime is missing.
    """
    _require_onnx()
    wanted = set(only or GRAPHS)
    if wanted - set(GRAPHS):
        raise InputError(f"graphs to export | {sorted(wanted - set(GRAPHS))} | expected some of {', '.join(GRAPHS)}")
    if fp16 and eval_data is None and {"text", "video"} <= wanted:
        raise InputError("fp16 export | no held-out data | expected eval_data, a feature dataset with a test split: "
                         "fp16 graphs are only kept if R@1/5/10 move by at most 0.5 points")
    if text_int8 and not {"text", "video"} <= wanted:
        raise InputError(f"int8 text export | graphs {sorted(wanted)} | expected text and video: the int8 text graph is "
                         "kept only if retrieval with it (and the video graph) moves R@1/5/10 by at most 0.5 points")
    if text_int8 and eval_data is None:
        raise InputError("int8 text export | no held-out data | expected eval_data, a feature dataset with a test split: "
                         "the int8 text graph is kept only if R@1/5/10 move by at most 0.5 points")
    if not isinstance(bundle, Bundle):
        bundle = read_bundle(bundle)
    staging = bundle.path / f".export-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    one = functools.partial(export_one, staging, limits=limits, fp16=fp16, seed=seed, echo=echo,
                            show_exporter_output=show_exporter_output)
    entries: dict[str, GraphEntry] = {}
    try:
        model = model_from_bundle(bundle)
        source = {"weights_sha256": bundle.weights_sha256}
        if "text" in wanted:
            entries |= one(TextGraph(model), text_spec(bundle.config), source=source, vocab_size=len(bundle.vocab), int8=text_int8)
        if "video" in wanted:
            entries |= one(VideoGraph(model), video_spec(bundle.config), source=source)
        if fp16 and {"text", "video"} <= wanted:
            rp = retrieval_parity(staging, entries, bundle.config, bundle.vocab, Path(eval_data))  # type: ignore[arg-type]
            echo(f"fp16 retrieval parity: R@1/5/10 moved at most {rp['max_move_points']:.2f} points")
            for key in ("text.fp16", "video.fp16"):
                entries[key] = dataclasses.replace(entries[key], retrieval_parity=rp)
        if "text.int8" in entries:
            _int8_retrieval_parity(staging, entries, bundle, Path(eval_data), echo)  # type: ignore[arg-type]
        if backbones is not None:
            for name, loaded in backbone_graphs(backbones).items():
                if name in wanted:
                    entries |= one(loaded.module, loaded.spec, source={"backbone": loaded.provenance}, relative=True)
        stale = [graph_key("text", "int8")] if "text" in entries and "text.int8" not in entries else []
        return publish(bundle.path, staging, entries, drop=stale)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
