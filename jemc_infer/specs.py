"""The inputs and outputs of every exported graph: names, dtypes, named dynamic axes (torch-free).

The contract between the torch modules (``jemc_infer.nn.graphs``), the ONNX export, the TensorRT
profiles and the engines, which check inputs against it. The shapes the axes must serve
(:class:`~jemc_infer.export.specs.ShapeLimits`) are the export's, in ``export/specs.py``. The
manifest (``jemc_infer.manifest``) stores each exported graph's spec as JSON.

Graphs: ``text`` (the text encoders), ``video`` (the video heads) and one per backbone, named by
the feature it makes (:data:`BACKBONE_GRAPHS`: ``resnet``, ``i3d``, ``audio``; the ``i3d`` graph
is whichever activity network made the ``i3d`` features, I3D or S3D).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jemc_infer.config import ModelConfig

# The backbones' fixed input geometry (as the features are made: jemc_infer.video.sampling).
CROP = 224
CLIP_FRAMES = 16
SOUNDNET_MIN_EXPORT_SAMPLES = 12_766  # the exported SoundNet needs >= 2 output steps (jemc_infer.nn.soundnet)
BACKBONE_GRAPHS = ("resnet", "i3d", "audio")  # the backbone graphs, named by the feature each makes
GRAPHS = ("text", "video", *BACKBONE_GRAPHS)
# Backbone graphs as bundles and indexes made before the rename called them (``activity`` is a space's name).
OLD_GRAPH_NAMES = {"object": "resnet", "activity": "i3d"}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a graph. A ``str`` in ``shape`` is a named dynamic axis."""

    name: str
    dtype: str  # numpy dtype name: "float32", "float16", "int64", "bool"
    shape: tuple[int | str, ...]

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TensorSpec:
        return cls(str(d["name"]), str(d["dtype"]), tuple(d["shape"]))


@dataclass(frozen=True)
class GraphSpec:
    """A graph's inputs and outputs."""

    name: str  # one of GRAPHS: "text", "video", "resnet", "i3d", "audio"
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input(self, name: str) -> TensorSpec:
        return next(t for t in self.inputs if t.name == name)

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """``{tensor: {axis: name}}`` for inputs and outputs, as ONNX exporters take it."""
        return {t.name: t.dynamic_axes for t in self.inputs + self.outputs if t.dynamic_axes}

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "inputs": [t.to_json() for t in self.inputs], "outputs": [t.to_json() for t in self.outputs]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> GraphSpec:
        return cls(str(d["name"]), tuple(TensorSpec.from_json(t) for t in d["inputs"]),
                   tuple(TensorSpec.from_json(t) for t in d["outputs"]))


def text_spec(config: ModelConfig) -> GraphSpec:
    """Token ids and lengths → every space's text embedding (L2-normalised, or scaled by its confidence:
    ``ModelConfig.text_confidence``)."""
    return GraphSpec(
        "text",
        inputs=(TensorSpec("ids", "int64", ("batch", "seq")), TensorSpec("lengths", "int64", ("batch",))),
        outputs=tuple(TensorSpec(f"text_{s.name}", "float32", ("batch", config.embed_dim)) for s in config.spaces),
    )


def video_spec(config: ModelConfig) -> GraphSpec:
    """Pooled features (and, for shared spaces, the paired features' masks) → every space's video embedding."""
    paired = sorted({f for s in config.spaces for f in s.paired})
    inputs = tuple(TensorSpec(f, "float32", ("batch", config.feature_dims[f])) for f in config.features)
    inputs += tuple(TensorSpec(f"{f}_mask", "bool", ("batch",)) for f in paired)
    return GraphSpec(
        "video", inputs=inputs,
        outputs=tuple(TensorSpec(f"video_{s.name}", "float32", ("batch", config.embed_dim)) for s in config.spaces),
    )


def backbone_specs(resnet_dim: int = 2048, i3d_dim: int = 1024, audio_dim: int = 1024) -> dict[str, GraphSpec]:
    """The three feature backbones by graph name, inputs normalised as ``jemc_infer.video.sampling`` makes them."""
    return {
        "resnet": GraphSpec("resnet", (TensorSpec("frames", "float32", ("batch", 3, CROP, CROP)),),
                            (TensorSpec("features", "float32", ("batch", resnet_dim)),)),
        "i3d": GraphSpec("i3d", (TensorSpec("clips", "float32", ("batch", 3, CLIP_FRAMES, CROP, CROP)),),
                         (TensorSpec("features", "float32", ("batch", i3d_dim)),)),
        "audio": GraphSpec("audio", (TensorSpec("wave", "float32", ("batch", "samples")),),
                           (TensorSpec("features", "float32", ("batch", "steps", audio_dim)),)),
    }
