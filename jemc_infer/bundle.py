"""Model bundles: a directory with ``config.json``, ``vocab.json`` and ``weights.safetensors``.

Torch-free: the runtime reads bundles with numpy; the torch side (``jemc_infer.nn.io``) converts
to and from ``nn.Module`` state dicts. Loading checks the weights' sha256, names and shapes
against the config and says exactly what does not match.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jemc_infer import __version__
from jemc_infer.atomic import staged_dir
from jemc_infer.config import ModelConfig, expected_shapes
from jemc_infer.errors import BundleError, InputError
from jemc_infer.text import Vocabulary

BUNDLE_FORMAT = "jemc-bundle/1"
CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE = "config.json", "vocab.json", "weights.safetensors"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    import hashlib  # here: a query that verifies nothing does not pay its import

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A model bundle on disk, its config and vocabulary read and validated."""

    path: Path
    config: ModelConfig
    vocab: Vocabulary
    weights_sha256: str  # what config.json vouches for
    meta: dict[str, Any] = field(default_factory=dict)  # versions, training record

    @property
    def fingerprint(self) -> str:
        """A short id of the exact weights (an index records it to refuse mixing models)."""
        return self.weights_sha256[:16]

    def load_weights(self) -> dict[str, np.ndarray]:
        """Read and verify the weights.

        Returns:
            Tensor name → float32 numpy array, exactly the names and shapes of
            :func:`jemc_infer.config.expected_shapes`.

        Raises:
            BundleError: If the file is missing, its sha256 differs from config.json (tampered or
                truncated), or a tensor is missing, unexpected, or mis-shaped.
        """
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        path = self.path / WEIGHTS_FILE
        if not path.is_file():
            raise BundleError(f"{path} | missing | expected the bundle's weights")
        actual = sha256_file(path)
        if actual != self.weights_sha256:
            raise BundleError(
                f"{path} | sha256 {actual[:12]}… | expected {self.weights_sha256[:12]}… as recorded in "
                f"{CONFIG_FILE}: the weights were modified or truncated; re-export or retrain the bundle"
            )
        try:
            tensors = load_file(str(path))
        except SafetensorError as err:
            raise BundleError(f"{path} | unreadable ({err}) | expected a safetensors file") from None
        verify_weights(self.config, tensors, source=str(path))
        return tensors


def verify_weights(config: ModelConfig, tensors: dict[str, np.ndarray], source: str) -> None:
    """Check tensor names and shapes against ``config``.

    Raises:
        BundleError: Listing every missing, unexpected and mis-shaped tensor.
    """
    want = expected_shapes(config)
    missing = sorted(set(want) - set(tensors))
    extra = sorted(set(tensors) - set(want))
    wrong = [f"{k} has shape {list(tensors[k].shape)}, expected {list(want[k])}"
             for k in sorted(set(want) & set(tensors)) if tuple(tensors[k].shape) != want[k]]
    problems = ([f"missing {missing}"] if missing else []) + ([f"unexpected {extra}"] if extra else []) + wrong
    if problems:
        raise BundleError(f"{source} | " + "; ".join(problems) + " | expected the tensors of the architecture in config.json")


def read_bundle(path: Path | str) -> Bundle:
    """Open a bundle directory and validate its config and vocabulary (weights are read lazily).

    Raises:
        BundleError: If the directory, config or vocabulary is missing or malformed, or the
            vocabulary size disagrees with the config.
    """
    path = Path(path)
    cfg_path = path / CONFIG_FILE
    if not path.is_dir():
        raise BundleError(f"{path} | not a directory | expected a model bundle (a directory with {CONFIG_FILE})")
    try:
        data = json.loads(cfg_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{cfg_path} | missing | expected a model bundle's {CONFIG_FILE}") from None
    except json.JSONDecodeError as err:
        raise BundleError(f"{cfg_path} | invalid JSON ({err.msg}, line {err.lineno}) | expected a bundle config") from None
    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise BundleError(f"{cfg_path} | format {got!r} | expected {BUNDLE_FORMAT!r}")
    try:
        config = ModelConfig.from_json(data.get("model"), source=f"{cfg_path} 'model'")
        vocab = Vocabulary.load(path / data.get("vocabulary", VOCAB_FILE))
        sha = str(data["weights"]["sha256"])
    except InputError as err:
        raise BundleError(str(err)) from None
    except (KeyError, TypeError):
        raise BundleError(f"{cfg_path} | no weights.sha256 | expected the weights' hash") from None
    if len(vocab) != config.vocab_size:
        raise BundleError(f"{path / VOCAB_FILE} | {len(vocab)} words | expected {config.vocab_size} (config.json vocab_size)")
    meta = {k: v for k, v in data.items() if k not in ("format", "model", "vocabulary", "weights")}
    return Bundle(path=path, config=config, vocab=vocab, weights_sha256=sha, meta=meta)


def write_bundle(
    path: Path | str,
    config: ModelConfig,
    vocab: Vocabulary,
    tensors: dict[str, np.ndarray],
    meta: dict[str, Any] | None = None,
) -> Bundle:
    """Write a bundle atomically: into a temporary sibling directory, fsynced, then renamed.

    Args:
        path: The bundle directory (replaced if it is an older bundle).
        config: The architecture.
        vocab: The vocabulary (its length must equal ``config.vocab_size``).
        tensors: Every weight, named as :func:`jemc_infer.config.expected_shapes`; stored float32.
        meta: Extra JSON-able fields for config.json (e.g. ``{"training": {...}}``).

    Returns:
        The bundle as :func:`read_bundle` would open it.

    Raises:
        BundleError: If the tensors do not match the config.
        InputError: If ``path`` is occupied by something that is not a bundle.
    """
    import platform

    from safetensors.numpy import save_file

    path = Path(path)
    if len(vocab) != config.vocab_size:
        raise BundleError(f"vocabulary | {len(vocab)} words | expected config.vocab_size={config.vocab_size}")
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    verify_weights(config, tensors, source="weights to save")
    meta = dict(meta or {})
    versions = {"jemc_infer": __version__, "numpy": np.__version__, "python": platform.python_version(),
                **meta.pop("versions", {})}
    with staged_dir(path, marker=CONFIG_FILE) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE))
        vocab.save(tmp / VOCAB_FILE)
        record = {
            "format": BUNDLE_FORMAT,
            "model": config.to_json(),
            "vocabulary": VOCAB_FILE,
            "weights": {"file": WEIGHTS_FILE, "sha256": sha256_file(tmp / WEIGHTS_FILE)},
            "versions": versions,
            **meta,
        }
        (tmp / CONFIG_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return read_bundle(path)
