"""Torch modules with exactly the inputs and outputs of the exported graphs (``jemc_infer/specs.py``).

The ONNX exporter traces them and the torch engine runs them, so both compute the same function
by construction: positional inputs in the spec's order, a tuple of outputs in the spec's order.

Backbone graphs are named by the feature they make (``resnet``, ``i3d``, ``audio``);
``jemc_infer.nn.backbones.Backbones`` holds the networks by stream (``object``, ``activity``,
``audio``): :data:`BACKBONE_STREAMS` is the one place that maps one to the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from jemc_infer.errors import InputError
from jemc_infer.nn.jemc import JEMC
from jemc_infer.specs import BACKBONE_GRAPHS, GraphSpec, backbone_specs

if TYPE_CHECKING:
    import torch

    from jemc_infer.nn.backbones import Backbones

# graph (feature) name → the Backbones member (stream) that computes it
BACKBONE_STREAMS = {"resnet": "object", "i3d": "activity", "audio": "audio"}


class TextGraph(nn.Module):
    """(ids int64 [B, L], lengths int64 [B]) → one embedding per space (``JEMC.encode_text``)."""

    def __init__(self, model: JEMC) -> None:
        super().__init__()
        self.model = model
        self.names = [s.name for s in model.config.spaces]

    def forward(self, ids: Tensor, lengths: Tensor) -> tuple[Tensor, ...]:
        out = self.model.encode_text(ids, lengths)
        return tuple(out[n] for n in self.names)


class VideoGraph(nn.Module):
    """(one pooled feature per model feature, then one bool mask per paired feature) → one
    L2-normalised embedding per space."""

    def __init__(self, model: JEMC) -> None:
        super().__init__()
        self.model = model
        self.features = list(model.config.features)
        self.paired = sorted({f for s in model.config.spaces for f in s.paired})
        self.names = [s.name for s in model.config.spaces]

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        feats = dict(zip(self.features, inputs[: len(self.features)], strict=True))
        masks = dict(zip(self.paired, inputs[len(self.features):], strict=True))
        out = self.model.encode_video(feats, masks)
        return tuple(out[n] for n in self.names)


class BackboneGraph(nn.Module):
    """One backbone as a graph: its single normalised input → its features."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: Tensor) -> tuple[Tensor]:
        return (self.backbone(x),)


@dataclass(frozen=True)
class LoadedBackbone:
    """One backbone graph ready to export or run: the module, its spec, where its weights came from."""

    module: BackboneGraph
    spec: GraphSpec  # with the loaded network's feature width
    provenance: dict[str, Any]  # as ``Backbones.provenance`` records it (network, weight file, sha256)


def backbone_graphs(backbones: Backbones) -> dict[str, LoadedBackbone]:
    """The loaded backbones as graphs, by graph name (``resnet``, ``i3d``, ``audio``)."""
    nets = {graph: getattr(backbones, BACKBONE_STREAMS[graph]) for graph in BACKBONE_GRAPHS}
    specs = backbone_specs(*(nets[g].out_dim for g in BACKBONE_GRAPHS))
    return {g: LoadedBackbone(BackboneGraph(nets[g]), specs[g], backbones.provenance[BACKBONE_STREAMS[g]])
            for g in BACKBONE_GRAPHS}


def backbone_graph_from_provenance(graph: str, provenance: dict[str, Any], device: str | torch.device = "cpu") -> BackboneGraph:
    """Rebuild a backbone graph from the provenance its manifest entry records (``GraphEntry.backbone``).

    Raises:
        InputError: If ``graph`` is not a backbone graph, or the weight file is gone or changed.
    """
    from jemc_infer.nn.backbones import backbone_from_provenance

    if graph not in BACKBONE_STREAMS:
        raise InputError(f"backbone graph | {graph!r} | expected one of {', '.join(BACKBONE_GRAPHS)}")
    return BackboneGraph(backbone_from_provenance(BACKBONE_STREAMS[graph], provenance, device))


def check_matches(module: nn.Module, spec: GraphSpec) -> None:
    """Guard against a wrapper drifting from its spec (names are what engines bind by)."""
    if isinstance(module, (TextGraph, VideoGraph)):
        want = [t.name for t in spec.outputs]
        prefix = "text_" if isinstance(module, TextGraph) else "video_"
        got = [prefix + n for n in module.names]
        if got != want:
            raise AssertionError(f"graph {spec.name}: module outputs {got} != spec outputs {want}")
