"""A Triton Inference Server model repository from an exported bundle (``jemc-infer export --to triton``).

One model per exported ONNX graph (``text``, ``video``, ``resnet``, ``i3d``, ``audio``; fp16
twins as ``text_fp16``…) as ``MODEL/1/model.onnx`` on the ``onnxruntime_onnx`` platform; one per
TensorRT plan in the manifest as ``GRAPH_trt_PRECISION/1/model.plan`` (``tensorrt_plan``: bound
to the GPU and TensorRT version that built it, as the manifest records); and:

- ``tokenizer``: a Python-backend model (``export/triton_tokenizer.py``, self-contained) that
  turns raw text into ``ids`` and ``lengths`` with the bundle's vocabulary;
- ``query_fuse`` / ``row_concat``: two tiny ONNX graphs (Mul + Concat) that make the fused query
  ``[w_1·t_1 | w_2·t_2 | …]`` (the bundle's space weights) and the index row ``[v_1 | v_2 | …]``;
- ``query``: an ensemble text → tokenizer → text → query_fuse → ``query``;
- ``index_row``: an ensemble of the video graph's inputs (pooled features, masks) → video →
  row_concat → ``row``.

Batching: a graph whose every input and output starts with the named ``batch`` axis is served
with ``max_batch_size`` = the largest batch the export checked it for (the manifest's parity
cases) and dynamic batching; Triton then owns the first axis, so ``dims`` leave it out, a
``[batch]`` tensor is ``dims: [1]`` reshaped to ``[]`` for the graph, and other dynamic axes are
``-1``. A graph without a leading batch axis would get ``max_batch_size: 0`` and full dims.
The shapes the export checked (min/max per input; a plan's TensorRT profiles) are recorded in
each config's ``parameters`` (``jemc.shape_limits``): Triton does not enforce them for ONNX, a
client must stay inside them.

The I/O names, dtypes and dims are read from the ONNX files themselves (and checked against the
manifest's specs), never assumed.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jemc_infer.atomic import staged_dir
from jemc_infer.bundle import Bundle, read_bundle, sha256_file
from jemc_infer.errors import BundleError
from jemc_infer.export.specs import ShapeLimits
from jemc_infer.manifest import GraphEntry, graph_entries, read_manifest, verified_file

__all__ = ["MARKER", "TensorIO", "export_triton", "onnx_io", "pbtxt"]

MARKER = "jemc-triton.json"  # written at the repository's top: what it was made from (Triton ignores files there)
FUSE_OPSET, FUSE_IR = 17, 8  # the small graphs load in onnxruntime releases older than ours (Triton's)
_ONNX_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16", 7: "TYPE_INT64", 6: "TYPE_INT32", 9: "TYPE_BOOL", 11: "TYPE_FP64"}


class Enum(str):
    """A protobuf enum value in text format (written bare, not quoted)."""


def pbtxt(value: dict[str, Any], indent: int = 0) -> str:
    """Protobuf text format of nested dicts: str → quoted, :class:`Enum`/int/bool → bare, dict → a
    message, a list of dicts → a repeated message, a list of scalars → ``[a, b]``."""
    pad, lines = "  " * indent, []

    def scalar(v: Any) -> str:
        if isinstance(v, Enum):
            return str(v)
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        return str(v)

    for key, v in value.items():
        if isinstance(v, dict):
            lines += [f"{pad}{key} {{", pbtxt(v, indent + 1), f"{pad}}}"]
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            for item in v:
                lines += [f"{pad}{key} {{", pbtxt(item, indent + 1), f"{pad}}}"]
        elif isinstance(v, list):
            lines.append(f"{pad}{key}: [{', '.join(scalar(x) for x in v)}]")
        else:
            lines.append(f"{pad}{key}: {scalar(v)}")
    return "\n".join(line for line in lines if line)


@dataclass(frozen=True)
class TensorIO:
    """One input or output as the ONNX file declares it. ``shape``: an int, or None for a named/unknown axis."""

    name: str
    data_type: str  # Triton's: TYPE_FP32, TYPE_INT64, TYPE_BOOL...
    shape: tuple[int | None, ...]


def onnx_io(path: Path) -> tuple[list[TensorIO], list[TensorIO]]:
    """The graph inputs (initializers excluded) and outputs of an ONNX file, without loading its weights.

    Raises:
        BundleError: If a tensor has a type Triton's ONNX platform has no name for here.
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}

    def io(values: Any) -> list[TensorIO]:
        out = []
        for v in values:
            if v.name in inits:
                continue
            t = v.type.tensor_type
            if t.elem_type not in _ONNX_TYPES:
                raise BundleError(f"{path} | tensor {v.name!r} has ONNX type {t.elem_type} | expected one of "
                                  f"{sorted(_ONNX_TYPES)} (float, float16, int64, int32, bool, double)")
            out.append(TensorIO(v.name, _ONNX_TYPES[t.elem_type],
                                tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)))
        return out

    return io(graph.input), io(graph.output)


def _check_spec(path: Path, entry: GraphEntry, inputs: list[TensorIO], outputs: list[TensorIO]) -> None:
    want = ({t.name for t in entry.spec.inputs}, {t.name for t in entry.spec.outputs})
    got = ({t.name for t in inputs}, {t.name for t in outputs})
    if want != got:
        raise BundleError(f"{path} | inputs {sorted(got[0])}, outputs {sorted(got[1])} | expected {sorted(want[0])}, "
                          f"{sorted(want[1])} as the manifest records; re-run `jemc-infer export`")


def shape_limits(entry: GraphEntry) -> dict[str, dict[str, list[int]]]:
    """``{input: {"min": shape, "max": shape}}``: the smallest and largest shapes the export checked
    the graph on (its parity cases); where the manifest has none, the export's default limits."""
    cases = [c["shapes"] for c in (entry.parity or {}).get("cases", []) if isinstance(c, dict) and "shapes" in c]
    if cases:
        return {name: {"min": [min(c[name][i] for c in cases) for i in range(len(cases[0][name]))],
                       "max": [max(c[name][i] for c in cases) for i in range(len(cases[0][name]))]}
                for name in cases[0]}
    limits = ShapeLimits()
    return {t.name: {k: [d if isinstance(d, int) else limits.axis_range(entry.spec.name, d)[j] for d in t.shape]
                     for k, j in (("min", 0), ("max", 2))} for t in entry.spec.inputs}


def _batched(inputs: list[TensorIO], outputs: list[TensorIO]) -> bool:
    return all(t.shape and t.shape[0] is None for t in inputs + outputs)


def _tensor(t: TensorIO, batched: bool) -> dict[str, Any]:
    dims = [-1 if d is None else d for d in (t.shape[1:] if batched else t.shape)]
    out: dict[str, Any] = {"name": t.name, "data_type": Enum(t.data_type), "dims": dims or [1]}
    if not dims:  # a [batch] tensor: Triton's dims cannot be empty, the graph's shape is
        out["reshape"] = {"shape": []}
    return out


def _model_config(name: str, platform: str, inputs: list[TensorIO], outputs: list[TensorIO], max_batch: int,
                  kind: str, parameters: dict[str, str]) -> dict[str, Any]:
    batched = _batched(inputs, outputs)
    config: dict[str, Any] = {"name": name, "platform": platform, "max_batch_size": max_batch if batched else 0,
                              "input": [_tensor(t, batched) for t in inputs], "output": [_tensor(t, batched) for t in outputs]}
    if batched:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": 100}
    config["instance_group"] = [{"count": 1, "kind": Enum(kind)}]
    config["parameters"] = [{"key": k, "value": {"string_value": v}} for k, v in parameters.items()]
    return config


def _write_model(repo: Path, name: str, config: dict[str, Any], files: dict[str, Path]) -> None:
    version = repo / name / "1"
    version.mkdir(parents=True)
    for dest, src in files.items():
        shutil.copyfile(src, version / dest)
    (repo / name / "config.pbtxt").write_text(pbtxt(config) + "\n", encoding="utf-8")


def _max_batch(limits: dict[str, dict[str, list[int]]]) -> int:
    return min(shape["max"][0] for shape in limits.values())


def _graph_model(bundle: Path, repo: Path, key: str, entry: GraphEntry, instance_kind: str) -> dict[str, Any]:
    """``MODEL/1/model.onnx`` (+ its external data files) and ``config.pbtxt`` for one manifest graph."""
    path = verified_file(bundle, entry)
    inputs, outputs = onnx_io(path)
    _check_spec(path, entry, inputs, outputs)
    limits = shape_limits(entry)
    name = key.replace(".", "_")
    files = {"model.onnx": path, **{Path(rel).name: bundle / rel for rel in list(entry.files)[1:]}}
    params = {"jemc.graph": entry.spec.name, "jemc.precision": entry.precision, "jemc.onnx_sha256": entry.sha256,
              "jemc.shape_limits": json.dumps(limits, sort_keys=True)}
    config = _model_config(name, "onnxruntime_onnx", inputs, outputs, _max_batch(limits), instance_kind, params)
    _write_model(repo, name, config, files)
    return {"name": name, "inputs": inputs, "outputs": outputs, "max_batch_size": config["max_batch_size"], "limits": limits}


def _plan_models(bundle: Path, repo: Path, entries: dict[str, GraphEntry]) -> list[str]:
    """One ``tensorrt_plan`` model per engine the manifest records (its sha256 checked first)."""
    by_sha = {e.sha256: e for e in entries.values()}
    names: list[str] = []
    for key, record in sorted(read_manifest(bundle)["engines"].items()):
        plan = bundle / record["file"]
        if not plan.is_file() or sha256_file(plan) != record.get("sha256"):
            raise BundleError(f"{plan} | missing or not the file the manifest records | expected the engine built by "
                              "`jemc-infer export --to tensorrt`; rebuild it")
        source = by_sha.get(record.get("onnx_sha256"))
        if source is None:
            raise BundleError(f"{plan} | built from an ONNX graph the manifest no longer lists | expected a rebuild: "
                              f"`jemc-infer export {bundle} --to tensorrt`")
        inputs, outputs = onnx_io(verified_file(bundle, source))
        name = f"{record['graph']}_trt_{record['precision']}"
        if name in names:
            name = f"{name}_{key[:8]}"
        profile = record["profiles"][0]
        limits = {t: {"min": s["min"], "max": s["max"]} for t, s in profile.items()}
        params = {"jemc.graph": record["graph"], "jemc.precision": record["precision"], "jemc.engine_key": key,
                  "jemc.tensorrt": str(record.get("tensorrt")), "jemc.gpu": str(record.get("gpu")),
                  "jemc.compute_capability": str(record.get("compute_capability")),
                  "jemc.shape_limits": json.dumps(limits, sort_keys=True), "jemc.profiles": json.dumps(record["profiles"])}
        _write_model(repo, name, _model_config(name, "tensorrt_plan", inputs, outputs, _max_batch(limits), "KIND_GPU", params),
                     {"model.plan": plan})
        names.append(name)
    return names


def _fuse_graph(path: Path, inputs: list[str], weights: list[float] | None, output: str, width: int) -> None:
    """A small ONNX graph: ``output = concat(w_i · input_i, axis=1)`` (no Mul where ``weights`` is None)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, parts = [], [], []
    for i, name in enumerate(inputs):
        if weights is None:
            parts.append(name)
            continue
        inits.append(numpy_helper.from_array(np.array(weights[i], dtype=np.float32), f"w_{i}"))
        nodes.append(helper.make_node("Mul", [name, f"w_{i}"], [f"{name}_weighted"]))
        parts.append(f"{name}_weighted")
    nodes.append(helper.make_node("Concat", parts, [output], axis=1))
    graph = helper.make_graph(nodes, path.stem, [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", width]) for n in inputs],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", width * len(inputs)])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", FUSE_OPSET)], producer_name="jemc-infer")
    model.ir_version = FUSE_IR
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _fuse_model(repo: Path, staging: Path, name: str, sources: list[str], weights: list[float] | None, output: str,
                width: int, max_batch: int, instance_kind: str) -> None:
    _fuse_graph(staging / f"{name}.onnx", sources, weights, output, width)
    inputs, outputs = onnx_io(staging / f"{name}.onnx")
    params = {"jemc.weights": json.dumps(weights)} if weights is not None else {}
    _write_model(repo, name, _model_config(name, "onnxruntime_onnx", inputs, outputs, max_batch, instance_kind, params),
                 {"model.onnx": staging / f"{name}.onnx"})
    (staging / f"{name}.onnx").unlink()


def _space_outputs(graph: dict[str, Any], prefix: str, b: Bundle) -> list[str]:
    names = [f"{prefix}_{s.name}" for s in b.config.spaces]
    have = {t.name for t in graph["outputs"]}
    if not set(names) <= have:
        raise BundleError(f"{graph['name']} graph | outputs {sorted(have)} | expected {names}, one per space of the bundle")
    return names


def _tokenizer_model(repo: Path, b: Bundle, text: dict[str, Any]) -> None:
    seq = text["limits"]["ids"]["max"][1]
    config = {"name": "tokenizer", "backend": "python", "max_batch_size": text["max_batch_size"],
              "input": [{"name": "text", "data_type": Enum("TYPE_STRING"), "dims": [1]}],
              "output": [{"name": "ids", "data_type": Enum("TYPE_INT64"), "dims": [-1]},
                         {"name": "lengths", "data_type": Enum("TYPE_INT64"), "dims": [1]}],
              "instance_group": [{"count": 1, "kind": Enum("KIND_CPU")}],
              "parameters": [{"key": "max_len", "value": {"string_value": str(seq)}}]}
    _write_model(repo, "tokenizer", config, {"model.py": Path(__file__).with_name("triton_tokenizer.py")})
    (repo / "tokenizer" / "1" / "vocab.json").write_text(json.dumps(b.vocab.to_json(), ensure_ascii=False) + "\n", encoding="utf-8")


def _ensemble(name: str, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]], max_batch: int,
              steps: list[tuple[str, dict[str, str], dict[str, str]]]) -> dict[str, Any]:
    """An ensemble config; a step is (model, {model input: ensemble tensor}, {model output: ensemble tensor})."""
    return {"name": name, "platform": "ensemble", "max_batch_size": max_batch, "input": inputs, "output": outputs,
            "ensemble_scheduling": {"step": [{"model_name": m, "model_version": -1,
                                              "input_map": [{"key": k, "value": v} for k, v in ins.items()],
                                              "output_map": [{"key": k, "value": v} for k, v in outs.items()]}
                                             for m, ins, outs in steps]}}


def _write_ensemble(repo: Path, config: dict[str, Any]) -> None:
    (repo / config["name"] / "1").mkdir(parents=True)  # Triton wants a version folder, empty for an ensemble
    (repo / config["name"] / "config.pbtxt").write_text(pbtxt(config) + "\n", encoding="utf-8")


def export_triton(bundle: Bundle | Path | str, out: Path, instance_kind: str = "KIND_AUTO",
                  echo: Callable[[str], None] = print) -> list[str]:
    """Write a Triton model repository for an exported bundle.

    Args:
        bundle: A bundle with exported ONNX graphs (``jemc-infer export``); ``text`` and ``video`` are needed
            for the ensembles, the backbones and TensorRT plans are added where the manifest has them.
        out: The repository folder; written beside and renamed into place, replacing only a repository
            this function wrote (it holds ``jemc-triton.json``).
        instance_kind: Triton's instance kind for the ONNX models: ``KIND_AUTO`` (a GPU where there is one),
            ``KIND_GPU`` or ``KIND_CPU``.
        echo: Gets one line per model.

    Returns:
        The model names, in the order written.

    Raises:
        BundleError: No exported ``text`` or ``video`` graph, a file whose sha256 differs from the
            manifest, a graph whose inputs/outputs differ from its spec.
        InputError: ``out`` exists and is not a repository this function wrote.
    """
    b = bundle if isinstance(bundle, Bundle) else read_bundle(Path(bundle))
    entries = graph_entries(b.path)
    missing = [g for g in ("text", "video") if g not in entries]
    if missing:
        raise BundleError(f"{b.path} | no exported {' or '.join(missing)} graph (has: {', '.join(sorted(entries)) or 'none'}) | "
                          f"expected both: run `jemc-infer export {b.path}` first")
    names: list[str] = []
    with staged_dir(Path(out), MARKER) as repo:
        staging = repo / ".staging"
        staging.mkdir()
        graphs = {}
        for key, entry in entries.items():
            graphs[key] = _graph_model(b.path, repo, key, entry, instance_kind)
            names.append(graphs[key]["name"])
        names += _plan_models(b.path, repo, entries)
        text, video = graphs["text"], graphs["video"]
        weights = [float(s.weight) for s in b.config.spaces]
        width = b.config.embed_dim
        _fuse_model(repo, staging, "query_fuse", _space_outputs(text, "text", b), weights, "query", width,
                    text["max_batch_size"], instance_kind)
        _fuse_model(repo, staging, "row_concat", _space_outputs(video, "video", b), None, "row", width,
                    video["max_batch_size"], instance_kind)
        _tokenizer_model(repo, b, text)
        text_outs = _space_outputs(text, "text", b)
        row_width = width * len(b.config.spaces)
        _write_ensemble(repo, _ensemble(
            "query", [{"name": "text", "data_type": Enum("TYPE_STRING"), "dims": [1]}],
            [{"name": "query", "data_type": Enum("TYPE_FP32"), "dims": [row_width]}], text["max_batch_size"],
            [("tokenizer", {"text": "text"}, {"ids": "ids", "lengths": "lengths"}),
             ("text", {"ids": "ids", "lengths": "lengths"}, {n: n for n in text_outs}),
             ("query_fuse", {n: n for n in text_outs}, {"query": "query"})]))
        video_outs = _space_outputs(video, "video", b)
        _write_ensemble(repo, _ensemble(
            "index_row", [{k: v for k, v in _tensor(t, True).items() if k != "reshape"} for t in video["inputs"]],
            [{"name": "row", "data_type": Enum("TYPE_FP32"), "dims": [row_width]}], video["max_batch_size"],
            [("video", {t.name: t.name for t in video["inputs"]}, {n: n for n in video_outs}),
             ("row_concat", {n: n for n in video_outs}, {"row": "row"})]))
        names += ["query_fuse", "row_concat", "tokenizer", "query", "index_row"]
        staging.rmdir()
        (repo / MARKER).write_text(json.dumps({"format": "jemc-triton/1", "bundle": str(b.path.resolve()), "models": names,
                                               "space_weights": dict(zip([s.name for s in b.config.spaces], weights, strict=True))},
                                              indent=2) + "\n", encoding="utf-8")
    for name in names:
        echo(f"{name}: {Path(out) / name / 'config.pbtxt'}")
    return names
