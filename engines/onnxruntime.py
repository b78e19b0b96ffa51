"""onnxruntime engine: CPU, CUDA or TensorRT execution providers (``jemc_infer.engines.onnxruntime``).

onnxruntime quietly runs a session on the CPU when the GPU provider asked for cannot start (it
only logs); this engine checks which provider is really active and refuses instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jemc_infer.engines.base import Engine
from jemc_infer.errors import BackendUnavailableError, missing_dependency
from jemc_infer.manifest import graph_entry, verified_file
from jemc_infer.specs import GraphSpec

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as err:
        raise (missing_dependency(err, "needed by the onnxruntime engine") or err) from None
    return onnxruntime


def available_providers() -> list[str]:
    """The execution providers this onnxruntime build offers (empty if onnxruntime is absent)."""
    try:
        return list(_ort().get_available_providers())
    except BackendUnavailableError:
        return []


def session_from_onnx(path: Path | str, provider: str = "cpu", threads: int = 0) -> Any:
    """An ``InferenceSession`` on ``provider``, verified to really run there.

    Args:
        path: The ONNX file (verified by the caller).
        provider: ``"cpu"``, ``"cuda"`` or ``"tensorrt"``. Defaults to ``"cpu"``.
        threads: Intra-op threads; 0 lets onnxruntime choose.

    Raises:
        BackendUnavailableError: If the provider is not built in, or did not start (e.g. no GPU).
    """
    ort = _ort()
    want = PROVIDERS.get(provider)
    if want is None:
        raise BackendUnavailableError(f"onnxruntime provider | {provider!r} | expected one of {', '.join(PROVIDERS)}")
    have = ort.get_available_providers()
    if want not in have:
        hint = "install onnxruntime-gpu (the [gpu] extra) instead of onnxruntime" if provider != "cpu" else ""
        raise BackendUnavailableError(f"onnxruntime {ort.__version__} | has {have} | expected {want}{'; ' + hint if hint else ''}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    providers = [want] if want == "CPUExecutionProvider" else [want, "CPUExecutionProvider"]
    session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    active = session.get_providers()
    if active[0] != want:
        raise BackendUnavailableError(f"onnxruntime session | running on {active} | expected {want} (no usable GPU? "
                                      "onnxruntime fell back to the CPU; ask for the cpu provider to accept that)")
    return session


class OnnxruntimeEngine(Engine):
    """One exported graph in an onnxruntime session."""

    backend = "onnxruntime"

    def __init__(self, path: Path | str, spec: GraphSpec, provider: str = "cpu", threads: int = 0) -> None:
        """Args: path: a verified ONNX file; spec: its inputs/outputs; provider/threads: see
        :func:`session_from_onnx`."""
        self._session = session_from_onnx(path, provider, threads)
        super().__init__(spec, self._session.get_providers()[0])
        names = {i.name for i in self._session.get_inputs()}
        if names != set(self.input_names):
            raise BackendUnavailableError(f"{path} | inputs {sorted(names)} | expected {sorted(self.input_names)} per the manifest")

    @classmethod
    def from_bundle(cls, bundle: Path | str, graph: str, precision: str = "fp32", provider: str = "cpu",
                    threads: int = 0) -> OnnxruntimeEngine:
        """The engine for a graph exported into ``bundle`` (sha256-verified against the manifest).

        Raises:
            BundleError: The graph was not exported, or its file does not match the manifest.
        """
        entry = graph_entry(Path(bundle), graph, precision)
        return cls(verified_file(Path(bundle), entry), entry.spec, provider, threads)

    def _run_impl(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self._session.run(list(self.output_names), inputs)
        return dict(zip(self.output_names, outs, strict=True))

    def close(self) -> None:
        self._session = None
