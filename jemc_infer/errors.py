"""The project's exceptions.

Every error a user can cause is a :class:`JemcError`; the CLI prints its message as one line on
stderr and exits with code 1. Messages follow "subject | what was received | what was expected".
"""

from __future__ import annotations


class JemcError(Exception):
    """Base class of every error this toolkit raises on purpose."""


class InputError(JemcError, ValueError):
    """A user-supplied file or value is missing, malformed, or inconsistent."""


class InputShapeError(InputError):
    """An array has the wrong shape or dtype."""


class BundleError(JemcError):
    """A model bundle is missing, malformed, or does not match its own manifest."""


class BackendUnavailableError(JemcError, ImportError):
    """An optional dependency (torch, onnxruntime, TensorRT, pycuda, h5py) is not installed."""


class EngineMismatchError(JemcError):
    """A serialized engine was built for another model, library version, or device."""


class DecodeError(JemcError):
    """A video that cannot be decoded; ``str(err)`` is the reason, one line a user can act on."""


class IndexCorruptError(JemcError):
    """An index directory is inconsistent with its manifest."""
