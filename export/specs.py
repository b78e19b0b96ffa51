"""What the export and the TensorRT builder read about each graph: the specs (from the runtime's
``jemc_infer.specs``) and the shapes they must serve.

One place for it: the ONNX export marks the specs' named axes dynamic, the parity gate draws its
test shapes from :class:`ShapeLimits`, and the TensorRT optimisation profiles cover them.
"""

from __future__ import annotations

from dataclasses import dataclass

from jemc_infer.specs import (
    CLIP_FRAMES,
    CROP,
    SOUNDNET_MIN_EXPORT_SAMPLES,
    GraphSpec,
    TensorSpec,
    backbone_specs,
    text_spec,
    video_spec,
)

__all__ = ["CLIP_FRAMES", "CROP", "SOUNDNET_MIN_EXPORT_SAMPLES", "GraphSpec", "ShapeLimits", "TensorSpec",
           "backbone_specs", "text_spec", "video_spec"]


@dataclass(frozen=True)
class ShapeLimits:
    """The largest shapes an engine must serve (TensorRT profiles' max; the parity gate's max)."""

    max_batch: int = 64  # captions, feature rows, frames per call
    max_seq: int = 64  # tokens per caption, <start> and <end> included
    max_clips: int = 8  # clips per activity-backbone call
    max_frames: int = 64  # frames per object-backbone call
    max_samples: int = 22_050 * 60  # audio samples per call (60 s)
    opt_batch: int = 16  # the shape TensorRT tunes for
    opt_seq: int = 16

    def axis_range(self, graph: str, axis: str) -> tuple[int, int, int]:
        """(min, opt, max) of a named axis in a graph."""
        if axis == "seq":
            return 1, self.opt_seq, self.max_seq
        if axis == "samples":
            return SOUNDNET_MIN_EXPORT_SAMPLES, 22_050 * 8, self.max_samples
        top = {"activity": self.max_clips, "object": self.max_frames, "audio": 4}.get(graph, self.max_batch)
        return 1, min(self.opt_batch, top), top
