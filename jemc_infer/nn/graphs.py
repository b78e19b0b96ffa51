"""Torch modules with exactly the inputs and outputs of the exported graphs (``export/specs.py``).

The ONNX exporter traces them and the torch engine runs them, so both compute the same function
by construction: positional inputs in the spec's order, a tuple of outputs in the spec's order.
"""

from __future__ import annotations

from torch import Tensor, nn

from jemc_infer.manifest import GraphSpec
from jemc_infer.nn.jemc import JEMC


class TextGraph(nn.Module):
    """(ids int64 [B, L], lengths int64 [B]) → one L2-normalised embedding per space."""

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


def check_matches(module: nn.Module, spec: GraphSpec) -> None:
    """Guard against a wrapper drifting from its spec (names are what engines bind by)."""
    if isinstance(module, (TextGraph, VideoGraph)):
        want = [t.name for t in spec.outputs]
        prefix = "text_" if isinstance(module, TextGraph) else "video_"
        got = [prefix + n for n in module.names]
        if got != want:
            raise AssertionError(f"graph {spec.name}: module outputs {got} != spec outputs {want}")
