"""The shapes every exported graph must serve: :class:`ShapeLimits` (``jemc_infer.export.specs``).

The graphs' names, dtypes and named axes are the runtime's, in ``jemc_infer/specs.py``; this
module adds how large each named axis may grow. One place for it: the ONNX export marks the specs'
named axes dynamic, the parity gate draws its test shapes from :class:`ShapeLimits`, and the
TensorRT optimisation profiles cover them.
"""

from __future__ import annotations

from dataclasses import dataclass

from jemc_infer.specs import SOUNDNET_MIN_EXPORT_SAMPLES

__all__ = ["ShapeLimits"]


@dataclass(frozen=True)
class ShapeLimits:
    """The largest shapes an engine must serve (TensorRT profiles' max; the parity gate's max)."""

    max_batch: int = 64  # captions, feature rows, frames per call
    max_seq: int = 64  # tokens per caption, <start> and <end> included
    max_clips: int = 8  # clips per i3d-graph call
    max_frames: int = 64  # frames per resnet-graph call
    max_samples: int = 22_050 * 60  # audio samples per call (60 s)
    opt_batch: int = 16  # the shape TensorRT tunes for
    opt_seq: int = 16

    def axis_range(self, graph: str, axis: str) -> tuple[int, int, int]:
        """(min, opt, max) of a named axis (``batch``, ``seq``, ``samples``) in a graph (``text``, ``resnet``...)."""
        if axis == "seq":
            return 1, self.opt_seq, self.max_seq
        if axis == "samples":
            return SOUNDNET_MIN_EXPORT_SAMPLES, 22_050 * 8, self.max_samples
        top = {"i3d": self.max_clips, "resnet": self.max_frames, "audio": 4}.get(graph, self.max_batch)
        return 1, min(self.opt_batch, top), top
