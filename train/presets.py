"""The configurations of the paper's Table 1, trainable by name.

Feature names: ``resnet`` (ResNet-152 appearance), ``i3d`` (I3D motion), ``audio`` (SoundNet).
Fusion presets have two spaces whose cosines are summed at retrieval time, as the paper's
final rows; ``CON(...)`` concatenates features into one space's video head.
"""

from __future__ import annotations

from dataclasses import dataclass

from jemc_infer.config import LossMode, SpaceConfig
from jemc_infer.errors import InputError


@dataclass(frozen=True)
class Preset:
    """A named model configuration and the loss it is trained with."""

    name: str
    label: str  # the Table 1 row label
    spaces: tuple[SpaceConfig, ...]
    loss: LossMode = LossMode.WEIGHTED

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f for s in self.spaces for f in s.all_features))


def _space(name: str, *features: str, paired: tuple[str, ...] = ()) -> SpaceConfig:
    return SpaceConfig(name=name, features=features, paired=paired)


_ALL = [
    Preset("vse-resnet", "VSE (ResNet)", (_space("object", "resnet"),), LossMode.SUM),
    Preset("vsepp-resnet", "VSE++ (ResNet)", (_space("object", "resnet"),), LossMode.HARDEST),
    Preset("weighted-resnet", "Weighted rank (ResNet)", (_space("object", "resnet"),)),
    Preset("audio", "Audio", (_space("activity", "audio"),)),
    Preset("i3d", "I3D", (_space("activity", "i3d"),)),
    Preset("con-resnet-i3d", "CON(ResNet, I3D)", (_space("video", "resnet", "i3d"),)),
    Preset("con-resnet-i3d-audio", "CON(ResNet, I3D, audio)", (_space("video", "resnet", "i3d", "audio"),)),
    Preset("shared-resnet-audio", "Shared image-text-audio space", (_space("shared", "resnet", paired=("audio",)),)),
    Preset("fusion-resnet-i3d", "Fusion [ResNet & I3D]", (_space("object", "resnet"), _space("activity", "i3d"))),
    Preset("jemc", "Fusion [ResNet & CON(I3D, audio)] (JEMC)",
           (_space("object", "resnet"), _space("activity", "i3d", "audio"))),
]
PRESETS: dict[str, Preset] = {p.name: p for p in _ALL}

# MSVD has no audio: its table is the audio-free rows.
GROUPS: dict[str, tuple[str, ...]] = {
    "msrvtt": tuple(PRESETS),
    "msvd": tuple(p.name for p in _ALL if "audio" not in p.features),
}


def get_preset(name: str) -> Preset:
    """Look a preset up by name.

    Raises:
        InputError: Listing the valid names.
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"preset | {name!r} | expected one of: {', '.join(PRESETS)}") from None
