"""Engines (installed as ``jemc_infer.engines``): one interface over onnxruntime, TensorRT and torch.

:func:`open_engine` picks the backend for a graph of a bundle. ``auto`` takes the fastest one that
really works here — a TensorRT engine built for this GPU, then onnxruntime on CUDA, then
onnxruntime on the CPU, then torch — and says which and why. Backends are imported only when
tried, so a runtime install without torch, TensorRT or pycuda never imports them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jemc_infer.engines.base import Engine
from jemc_infer.errors import BackendUnavailableError, BundleError, EngineMismatchError, InputError, missing_dependency

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
DEVICES = ("auto", "cpu", "cuda")

__all__ = ["BACKENDS", "DEVICES", "Engine", "open_engine"]


def _tensorrt(bundle: Path, graph: str, precision: str, only_if_built: bool = False) -> Engine:
    from jemc_infer.manifest import read_manifest

    # auto, and no engine for this graph: say so without importing TensorRT (~20 ms of every CPU
    # query's start); asked for by name, the import below says what is missing
    if only_if_built and not any(isinstance(e, dict) and e.get("graph") == graph for e in read_manifest(bundle)["engines"].values()):
        raise EngineMismatchError(f"{bundle} | no TensorRT engine for the {graph} graph | expected one built by "
                                  f"`jemc-infer export {bundle} --to tensorrt` on a GPU machine")
    try:
        from jemc_infer.engines.tensorrt import TensorrtEngine
    except ImportError as err:
        raise BackendUnavailableError(f"TensorRT engine | unavailable ({err}) | expected jemc_infer.engines.tensorrt") from None
    return TensorrtEngine.from_bundle(bundle, graph, precision)


def _onnxruntime(bundle: Path, graph: str, precision: str, provider: str) -> Engine:
    from jemc_infer.engines.onnxruntime import OnnxruntimeEngine

    return OnnxruntimeEngine.from_bundle(bundle, graph, precision, provider)


def _torch(bundle: Path, graph: str, device: str, backbones: Any) -> Engine:
    try:
        from jemc_infer.engines.torch import TorchEngine
    except ImportError as err:
        raise (missing_dependency(err, "needed by the torch engine") or err) from None
    return TorchEngine.from_bundle(bundle, graph, device, backbones)


def open_engine(bundle: Path | str, graph: str, backend: str = "auto", device: str = "auto", precision: str = "auto",
                backbones: Any = None) -> tuple[Engine, str]:
    """Open the engine for one graph of a bundle.

    Args:
        bundle: The model bundle (exported graphs and engines are read from its manifest).
        graph: ``text``, ``video``, or a backbone graph: ``resnet``, ``i3d`` or ``audio``.
        backend: ``auto``, ``tensorrt``, ``onnxruntime`` or ``torch``. Defaults to ``auto``.
        device: ``auto``, ``cpu`` or ``cuda``. Defaults to ``auto`` (a GPU when one really works).
        precision: ``auto`` (fp16 on a GPU where exported; on the CPU the int8 text graph where
            exported with its gates passed, else fp32), ``fp32``, ``fp16`` or ``int8`` (the text
            graph on the onnxruntime CPU provider only).
        backbones: For the torch backend's backbone graphs: loaded ``Backbones``.

    Returns:
        The engine and one line saying which backend runs it and why.

    Raises:
        InputError: An unknown backend, device or precision.
        BackendUnavailableError: The requested backend cannot run here (with the reason); for
            ``auto``, none could (with every reason).
    """
    if backend not in BACKENDS:
        raise InputError(f"backend | {backend!r} | expected one of {', '.join(BACKENDS)}")
    if device not in DEVICES:
        raise InputError(f"device | {device!r} | expected one of {', '.join(DEVICES)}")
    if precision not in ("auto", "fp32", "fp16", "int8"):
        raise InputError(f"precision | {precision!r} | expected auto, fp32, fp16 or int8")
    if precision == "int8" and (backend not in ("auto", "onnxruntime") or device == "cuda"):
        raise InputError(f"precision int8 | backend {backend}, device {device} | expected onnxruntime on the cpu: the int8 "
                         "text graph is for the CPU")
    bundle = Path(bundle)
    gpu_precision = "fp32" if precision == "fp32" else "fp16"
    cpu_precision, int8_why = _cpu_precision(bundle, graph, precision)
    tries: list[tuple[str, Any]] = []
    if precision == "int8":  # asked for: the CPU graph, never a GPU or torch in its place
        backend, device = "onnxruntime", "cpu"
    if backend in ("auto", "tensorrt") and device != "cpu":
        tries.append((f"TensorRT {gpu_precision}", lambda: _tensorrt(bundle, graph, gpu_precision, only_if_built=backend == "auto")))
    if backend in ("auto", "onnxruntime"):
        if device != "cpu":
            tries.append((f"onnxruntime CUDA {gpu_precision}", lambda: _onnxruntime_any(bundle, graph, gpu_precision, "cuda")))
        if device != "cuda":
            tries.append((f"onnxruntime CPU {cpu_precision}", lambda: _onnxruntime(bundle, graph, cpu_precision, "cpu")))
    if backend in ("auto", "torch"):
        tries.append((f"torch {device}", lambda: _torch(bundle, graph, device, backbones)))
    if not tries:
        raise InputError(f"backend {backend}, device {device} | cannot go together | TensorRT needs a GPU")
    reasons = []
    for label, make in tries:
        try:
            engine = make()
        except (BackendUnavailableError, EngineMismatchError, BundleError) as err:
            reasons.append(f"not {label}: {err}")
            continue
        why = f"{graph}: {engine.backend} on {engine.provider}"
        if label.startswith("onnxruntime CPU"):
            why += f", {cpu_precision}" + (f" ({int8_why})" if cpu_precision == "int8" or precision == "auto" and graph == "text" else "")
        return engine, why + (f" ({'; '.join(reasons)})" if reasons else "")
    raise BackendUnavailableError(f"{graph} graph | no backend could run it | " + "; ".join(reasons))


def _cpu_precision(bundle: Path, graph: str, precision: str) -> tuple[str, str]:
    """The precision of the graph to run on the CPU, and why (for the int8 text graph: its gates)."""
    if precision in ("fp32", "fp16") or graph != "text":
        return ("fp16" if precision == "fp16" else "fp32"), ""
    from jemc_infer.manifest import gated_int8

    try:
        entry, why = gated_int8(bundle, graph)
    except BundleError as err:
        entry, why = None, str(err)
    if entry is None and precision == "int8":
        raise BundleError(f"{bundle} | {why} | expected a gated int8 text graph: run `jemc-infer export {bundle} --text-int8 "
                          "--eval-data DATA`")
    return ("int8" if entry is not None else "fp32"), why


def _onnxruntime_any(bundle: Path, graph: str, precision: str, provider: str) -> Engine:
    """fp16 where it was exported, else fp32 (a GPU still wins with fp32)."""
    try:
        return _onnxruntime(bundle, graph, precision, provider)
    except BundleError:
        if precision == "fp32":
            raise
        return _onnxruntime(bundle, graph, "fp32", provider)
