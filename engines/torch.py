"""torch engine: eager, CPU or CUDA, straight from a bundle's weights (``jemc_infer.engines.torch``).

The reference the exported engines are checked against: it runs the same modules the exporter
traces (``jemc_infer.nn.graphs``). Needs the ``[train]`` extra; imported only when chosen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jemc_infer.engines.base import Engine
from jemc_infer.errors import INSTALL, BackendUnavailableError, InputError
from jemc_infer.manifest import graph_entry
from jemc_infer.specs import BACKBONE_GRAPHS, GRAPHS, GraphSpec, text_spec, video_spec

try:
    import torch
except ImportError:  # the engine module stays importable; constructing one says what is missing
    torch = None  # type: ignore[assignment]


class TorchEngine(Engine):
    """A graph's torch module, run eagerly under ``inference_mode``."""

    backend = "torch"

    def __init__(self, module: Any, spec: GraphSpec, device: str = "cpu") -> None:
        """Args: module: positional inputs in ``spec`` order → tuple of outputs in ``spec`` order
        (``jemc_infer.nn.graphs``); device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``."""
        if torch is None:
            raise BackendUnavailableError(f"torch | not installed | the torch engine needs {INSTALL['torch']}")
        from jemc_infer.nn.io import resolve_device

        self._device = resolve_device(device)
        self._module = module.to(self._device).eval()
        super().__init__(spec, f"torch {torch.__version__} {self._device}")

    @classmethod
    def from_bundle(cls, bundle: Path | str, graph: str, device: str = "cpu", backbones: Any = None) -> TorchEngine:
        """The engine for ``graph`` of a bundle: ``text`` or ``video`` from its weights, or a
        backbone (``resnet``, ``i3d``, ``audio``) from ``backbones``, else from the weight files its
        exported graph's manifest entry records.

        Raises:
            InputError: Unknown graph, or a backbone graph neither given nor exported.
            BundleError: The bundle's weights do not verify.
        """
        if torch is None:
            raise BackendUnavailableError(f"torch | not installed | the torch engine needs {INSTALL['torch']}")
        from jemc_infer.bundle import read_bundle
        from jemc_infer.nn.graphs import TextGraph, VideoGraph, backbone_graph_from_provenance, backbone_graphs
        from jemc_infer.nn.io import model_from_bundle

        if graph in ("text", "video"):
            b = read_bundle(bundle)
            model = model_from_bundle(b)
            if graph == "text":
                return cls(TextGraph(model), text_spec(b.config), device)
            return cls(VideoGraph(model), video_spec(b.config), device)
        if graph in BACKBONE_GRAPHS:
            if backbones is not None:
                loaded = backbone_graphs(backbones)[graph]
                return cls(loaded.module, loaded.spec, device)
            # the weights the exported graph was made from, as its manifest entry records them
            entry = graph_entry(Path(bundle), graph)
            if entry.backbone is None:
                raise InputError(f"{bundle} | the {graph!r} graph records no backbone weights | expected its source's "
                                 "provenance, as the export writes it; re-export it")
            return cls(backbone_graph_from_provenance(graph, entry.backbone, device), entry.spec, device)
        raise InputError(f"graph | {graph!r} | expected one of {', '.join(GRAPHS)}")

    def _run_impl(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(inputs[t.name]).to(self._device) for t in self.spec.inputs]
        with torch.inference_mode():
            outs = self._module(*args)
        return {t.name: o.float().cpu().numpy() for t, o in zip(self.spec.outputs, outs, strict=True)}

    def close(self) -> None:
        if self._module is not None and self._device.type == "cuda":
            self._module = None
            torch.cuda.empty_cache()
