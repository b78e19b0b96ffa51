"""The project's exceptions.

Every error a user can cause is a :class:`JemcError`; the CLI prints its message as one line on
stderr and exits with code 1. Messages follow "subject | what was received | what was expected".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path


class JemcError(Exception):
    """Base class of every error this toolkit raises on purpose."""


class InputError(JemcError, ValueError):
    """A user-supplied file or value is missing, malformed, or inconsistent."""


class InputShapeError(InputError):
    """An array has the wrong shape or dtype."""


class SettingsMismatchError(InputError):
    """A store (an index, a feature work folder) holds results made with other settings; the CLI
    adds the flag that starts a new one."""


class BundleError(JemcError):
    """A model bundle is missing, malformed, or does not match its own manifest."""


class BackendUnavailableError(JemcError, ImportError):
    """An optional dependency (torch, onnxruntime, TensorRT, pycuda, h5py, matplotlib) is not installed."""


class EngineMismatchError(JemcError):
    """A serialized engine was built for another model, library version, or device."""


class DecodeError(JemcError):
    """A video that cannot be decoded; ``str(err)`` is the reason, one line a user can act on."""


class IndexCorruptError(JemcError):
    """An index directory is inconsistent with its manifest."""



class SettingError(InputError):
    """A bad value of one argument of :func:`jemc_infer.query.query`; ``setting`` is the argument's name, so a front
    end (the CLI) can name its own option for it. ``str(err)`` is "setting | got | expected"."""

    def __init__(self, setting: str, got: str, expected: str) -> None:
        self.setting, self.got, self.expected = setting, got, expected
        super().__init__(f"{setting} | {got} | expected {expected}")


class ModelMismatchError(InputError):
    """The model bundle is not the one the index was built with (its rows would not be comparable)."""

    def __init__(self, index_dir: Path, indexed: str, given: str, given_path: Path) -> None:
        self.index_dir, self.indexed, self.given, self.given_path = index_dir, indexed, given, given_path
        super().__init__(f"{index_dir} | built with model {indexed} | expected the same model, got {given} ({given_path}): "
                         "query with the model the index was built with")


class RunConflictError(InputError):
    """The bundle's run directory holds a run this call cannot resume: one with other settings
    (``differences`` names them) or an unreadable checkpoint. Restarting (``restart=True``)
    discards it; training into another bundle keeps it."""

    def __init__(self, where: Path, got: str, expected: str, differences: tuple[str, ...] = ()) -> None:
        self.where, self.got, self.expected, self.differences = where, got, expected, differences
        super().__init__(f"{where} | {got} | expected {expected}; restart the run to discard it, or train into another bundle")

# What to install for each optional dependency, by top-level module name: the one table that the
# CLI's one-line errors, the engines and `doctor` read.
INSTALL: dict[str, str] = {
    "torch": "pip install 'jemc-infer[train]'",
    "torchvision": "pip install 'jemc-infer[train]'",
    "h5py": "pip install 'jemc-infer[train]'",
    "onnx": "pip install 'jemc-infer[train]'",
    "onnxscript": "pip install 'jemc-infer[train]'",
    "onnxconverter_common": "pip install 'jemc-infer[train]'",
    "matplotlib": "pip install 'jemc-infer[train]'",
    "onnxruntime": "pip install 'jemc-infer[cpu]' (or [gpu] for CUDA; never both)",
    "pycuda": "pip install 'jemc-infer[gpu]' (pycuda builds from source against the CUDA toolkit)",
    "tensorrt": "pip install --extra-index-url https://pypi.nvidia.com tensorrt-cu13",
    "faiss": "pip install 'jemc-infer[bench]'",
    "fastapi": "pip install 'jemc-infer[serve]'",
    "uvicorn": "pip install 'jemc-infer[serve]'",
    "ray": "pip install 'jemc-infer[ray]'",
}


def missing_dependency(err: ImportError, needed: str = "needed here") -> BackendUnavailableError | None:
    """The one-line error for an optional dependency that failed to import.

    Args:
        err: The ``ImportError`` (or ``ModuleNotFoundError``) that was raised.
        needed: What the dependency is for, e.g. ``"needed to export"``. Defaults to ``"needed here"``.

    Returns:
        ``"torch | not installed | needed here: pip install 'jemc-infer[train]'"`` as a
        :class:`BackendUnavailableError`, or None when ``err`` is not about an optional dependency
        (an ImportError inside jemc_infer itself is a bug, and keeps its traceback).
    """
    name = err.name or ""
    top = name.split(".")[0]
    if top not in INSTALL:
        return None
    if isinstance(err, ModuleNotFoundError) and name == top:
        got = "not installed"
    else:  # installed but broken: a missing shared library, a submodule, a version mismatch
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        got = f"not importable ({first})"
    return BackendUnavailableError(f"{top} | {got} | {needed}: {INSTALL[top]}")
