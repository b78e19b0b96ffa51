"""SoundNet-8 (Aytar, Vondrick & Torralba, NIPS 2016) up to conv7, as an audio feature extractor.

Eight 1-D convolutions over the raw waveform; the original Torch7 model and every PyTorch port
write them as ``Conv2d`` with ``(k, 1)`` kernels over a ``[N, 1, L, 1]`` tensor. Here they are
``Conv1d`` over ``[N, 1, L]`` — the same arithmetic, one axis fewer to carry through an export.

Features are the conv7 block's output after BatchNorm and ReLU: module 24 of the Torch7
``soundnet8_final.t7`` (``extract_feat.lua``'s default ``layer = 24``; JEMC's SoundNet files store it
as dataset ``layer24``, ``[1024, T]``). ``forward`` returns it time-major, ``[N, T, 1024]``.

**Input scaling.** SoundNet was trained on raw samples in about [-256, 256]: ``extract_feat.lua``
multiplies Torch ``audio.load``'s 32-bit-integer-scaled samples by 2^-23, and the TensorFlow port
(eborboihuc/SoundNet-tensorflow ``util.preprocess``), from which the common PyTorch weights were
converted, multiplies librosa's [-1, 1] samples by 256. :class:`SoundNet` takes [-1, 1] and applies
that × :data:`INPUT_SCALE` itself, so callers pass audio as decoders produce it. The rate is
22,050 Hz mono (what the TensorFlow port and its feature checks use).

**Weights.** :data:`SMALLFLYINGPIG_LAYOUT` maps the commonly used conversion, smallflyingpig/
SoundNet_Pytorch ``sound8.pth`` (``pytorch_model.py`` ``SoundNet8_pytorch``: ``conv1.0.weight``
[16, 1, 64, 1], ``conv1.1.running_mean``, …, ``conv7.1.running_var``), onto this module. Its
two classifier heads (``conv8`` → 1000 ImageNet objects, ``conv8_2`` → 401 Places scenes) come after
the features and are dropped on purpose.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch.nn.functional as F
from torch import Tensor, nn

from jemc_infer.errors import InputShapeError
from jemc_infer.nn.weights import KeyLayout, load_mapped

SAMPLE_RATE = 22_050
INPUT_SCALE = 256.0  # [-1, 1] → SoundNet's trained range [-256, 256]
FEATURE_DIM = 1024
# (out channels, kernel, max-pool after the block or 0); every conv has stride 2 and padding k/2.
_BLOCKS = ((16, 64, 8), (32, 32, 8), (64, 16, 0), (128, 8, 0), (256, 4, 4), (512, 4, 0), (1024, 4, 0))


def soundnet_frames(num_samples: int) -> int:
    """How many feature steps :class:`SoundNet` returns for a waveform of ``num_samples`` samples.

    About one step per 32,768 samples (1.49 s at 22,050 Hz): the product of the strides.

    Args:
        num_samples: The waveform's length L.

    Returns:
        T, or 0 where L is too short (a max pool would get fewer samples than its window).
    """
    length = num_samples
    for _, kernel, pool in _BLOCKS:
        length = (length + 2 * (kernel // 2) - kernel) // 2 + 1 if length + 2 * (kernel // 2) >= kernel else 0
        if pool:
            if length < pool:
                return 0
            length //= pool
    return max(length, 0)


MIN_SAMPLES = 4_574  # 0.21 s at 22,050 Hz: the shortest L with soundnet_frames(L) ≥ 1 (a test re-derives it)


def repeat_to_min_length(wave: Tensor, min_samples: int = MIN_SAMPLES) -> Tensor:
    """Repeat a too-short waveform along time until it has ``min_samples`` samples (SoundNet's own padding).

    The TensorFlow port tiles short clips the same way; zero padding would feed the network
    silence it never saw in place of the sound.

    Args:
        wave: float [N, L], L ≥ 1.
        min_samples: The length to reach. Defaults to :data:`MIN_SAMPLES`.

    Returns:
        ``wave`` itself when L ≥ ``min_samples``, else [N, min_samples] made of whole repeats plus a cut one.

    Raises:
        InputShapeError: If L is 0 (nothing to repeat).
    """
    length = wave.shape[-1]
    if length >= min_samples:
        return wave
    if length == 0:
        raise InputShapeError("audio | 0 samples | expected at least 1 sample (a video without audio has no audio feature)")
    repeats = -(-min_samples // length)
    return wave.repeat(*([1] * (wave.dim() - 1)), repeats)[..., :min_samples]


class SoundBlock(nn.Module):
    """Conv1d (stride 2, padding k/2, bias) → BatchNorm1d (eps 1e-5) → ReLU → optional max pool."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, pool: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel, stride=2, padding=kernel // 2, bias=True)
        self.bn = nn.BatchNorm1d(out_channels, eps=1e-5)
        self.pool = pool

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn(self.conv(x)))
        if not self.pool:
            return x
        # max_pool2d over a (pool, 1) window: torch.export specialises max_pool1d to the example's
        # length (torch 2.14), which would freeze L in an exported graph; the 2-D op keeps L dynamic.
        return F.max_pool2d(x.unsqueeze(-1), (self.pool, 1), (self.pool, 1)).squeeze(-1)


class SoundNet(nn.Module):
    """SoundNet-8 conv1 … conv7: float32 ``[N, L]`` waveform in [-1, 1] → float32 ``[N, T, 1024]``.

    L must be at least :data:`MIN_SAMPLES` (T = :func:`soundnet_frames` (L)); pad shorter audio
    with :func:`repeat_to_min_length` first (``Backbones.encode_audio`` does). The module itself
    does no shape-dependent padding, so it exports with a dynamic L.
    """

    def __init__(self) -> None:
        super().__init__()
        blocks, channels = [], 1
        for out_channels, kernel, pool in _BLOCKS:
            blocks.append(SoundBlock(channels, out_channels, kernel, pool))
            channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.input_scale = INPUT_SCALE
        self.out_dim = channels

    def forward(self, wave: Tensor) -> Tensor:
        """conv7-level features over time.

        Args:
            wave: float32 [N, L], mono 22,050 Hz samples in [-1, 1], L ≥ :data:`MIN_SAMPLES`.

        Returns:
            float32 [N, T, 1024], T = ``soundnet_frames(L)``.
        """
        x = (wave * self.input_scale).unsqueeze(1)
        for block in self.blocks:
            x = block(x)
        return x.transpose(1, 2)


# sound8.pth: conv{i}.0 is block i's Conv2d, conv{i}.1 its BatchNorm2d (nn.Sequential indices).
_SUBLAYERS = {"0": "conv", "1": "bn"}
_SUBLAYERS_INV = {v: k for k, v in _SUBLAYERS.items()}
_PARAMS = {"0": ("weight", "bias"), "1": ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}


def soundnet_key_from_smallflyingpig(key: str) -> str | None:
    """Our name for a ``sound8.pth`` key: ``conv3.0.weight`` → ``blocks.2.conv.weight``, ``conv3.1.bias`` → ``blocks.2.bn.bias``.

    Returns:
        Our key, or None where ``key`` is not a conv1…conv7 key of that layout.
    """
    parts = key.split(".")
    if len(parts) != 3 or not parts[0].startswith("conv") or not parts[0][4:].isdigit():
        return None
    index, sub, param = int(parts[0][4:]), parts[1], parts[2]
    if not 1 <= index <= len(_BLOCKS) or sub not in _SUBLAYERS or param not in _PARAMS[sub]:
        return None
    return f"blocks.{index - 1}.{_SUBLAYERS[sub]}.{param}"


def smallflyingpig_key_from_soundnet(key: str) -> str:
    """The inverse of :func:`soundnet_key_from_smallflyingpig`."""
    _, index, sub, param = key.split(".")
    return f"conv{int(index) + 1}.{_SUBLAYERS_INV[sub]}.{param}"


def _conv2d_to_conv1d(key: str, value: Tensor) -> Tensor:
    # [out, in, k, 1] (Conv2d with a (k, 1) kernel) → [out, in, k]; anything else is left for the shape check to name.
    if key.endswith("conv.weight") and value.dim() == 4 and value.shape[-1] == 1:
        return value.squeeze(-1)
    return value


def _conv1d_to_conv2d_shape(key: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    return (*shape, 1) if key.endswith("conv.weight") else shape


SMALLFLYINGPIG_LAYOUT = KeyLayout(
    name="smallflyingpig/SoundNet_Pytorch SoundNet8_pytorch (sound8.pth: conv1.0.weight [16, 1, 64, 1], conv1.1.running_mean, …, conv8.0, conv8_2.0)",
    to_ours=soundnet_key_from_smallflyingpig,
    to_source=smallflyingpig_key_from_soundnet,
    ignored=lambda key: key.startswith(("conv8.", "conv8_2.")),
    convert=_conv2d_to_conv1d,
    source_shape=_conv1d_to_conv2d_shape,
)


def load_smallflyingpig_state_dict(model: SoundNet, tensors: Mapping[str, Tensor], source: str) -> None:
    """Load a smallflyingpig ``sound8.pth`` state dict into ``model``, in place.

    Args:
        model: The module to fill.
        tensors: ``sound8.pth`` key → tensor, as read by :func:`jemc_infer.nn.weights.read_weights`.
        source: What to call the checkpoint in errors (its path).

    Raises:
        InputError: Naming every missing, unexpected and mis-shaped key, in ``sound8.pth``'s names.
    """
    load_mapped(model, tensors, SMALLFLYINGPIG_LAYOUT, source)

