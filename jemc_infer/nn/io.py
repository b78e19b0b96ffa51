"""Between torch modules and model bundles (the bundle format itself is torch-free)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from jemc_infer.bundle import Bundle, read_bundle, write_bundle
from jemc_infer.errors import InputError
from jemc_infer.nn.jemc import JEMC
from jemc_infer.text import Vocabulary


def save_model(model: JEMC, vocab: Vocabulary, path: Path | str, meta: dict[str, Any] | None = None) -> Bundle:
    """Write ``model`` and ``vocab`` as a bundle at ``path`` (atomically; see ``write_bundle``)."""
    tensors = {k: v.detach().to("cpu", torch.float32).numpy() for k, v in model.state_dict().items()}
    meta = dict(meta or {})
    meta["versions"] = {"torch": torch.__version__, **meta.get("versions", {})}
    return write_bundle(path, model.config, vocab, tensors, meta)


def model_from_bundle(bundle: Bundle | Path | str, device: str | torch.device = "cpu") -> JEMC:
    """Build the model a bundle describes and load its verified weights.

    Args:
        bundle: A :class:`Bundle` or its directory.
        device: Where to put the model. Defaults to ``"cpu"``.

    Returns:
        The model in eval mode.

    Raises:
        BundleError: As :meth:`Bundle.load_weights`.
    """
    if not isinstance(bundle, Bundle):
        bundle = read_bundle(bundle)
    tensors = bundle.load_weights()
    model = JEMC(bundle.config)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=True)
    return model.to(device).eval()


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else the CPU.

    Raises:
        InputError: If a CUDA device is asked for and none is usable.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"device | {name!r} | expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise InputError(f"device | {name!r} | not available here (torch.cuda.is_available() is {torch.cuda.is_available()}); use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"device | {name!r} | expected auto, cpu, cuda or cuda:N")
    return device
