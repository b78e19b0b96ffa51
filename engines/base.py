"""The one Engine interface every backend implements (installed as ``jemc_infer.engines.base``).

``run(dict of numpy arrays) -> dict of numpy arrays``: the public :meth:`Engine.run` checks the
inputs against the graph's spec (names, dtypes, ranks, fixed dimensions) and calls the backend's
``_run_impl``; the engine is a context manager that owns its device memory and frees it on exit.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from jemc_infer.errors import InputShapeError
from jemc_infer.specs import GraphSpec


class Engine(ABC):
    """Runs one exported graph.

    Attributes:
        spec: The graph's inputs and outputs (names, dtypes, named dynamic axes).
        backend: ``"onnxruntime"``, ``"tensorrt"`` or ``"torch"``.
        provider: What actually executes it, e.g. ``"CPUExecutionProvider"`` or
            ``"TensorRT 10.13 on NVIDIA H100"``: never a silent fallback.
    """

    backend: str = ""

    def __init__(self, spec: GraphSpec, provider: str) -> None:
        self.spec = spec
        self.provider = provider

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.spec.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.spec.outputs)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph.

        Args:
            inputs: Every input of ``spec`` by name, with its dtype and rank; dynamic axes
                may take any size the backend supports, fixed ones must match.

        Returns:
            Every output of ``spec`` by name, as numpy arrays on the host.

        Raises:
            InputShapeError: If an input is missing or unexpected, or has the wrong dtype or shape.
        """
        missing = [n for n in self.input_names if n not in inputs]
        extra = [n for n in inputs if n not in self.input_names]
        if missing or extra:
            raise InputShapeError(f"{self.spec.name} inputs | missing {missing}, unexpected {extra} | expected {list(self.input_names)}")
        checked = {}
        for t in self.spec.inputs:
            x = inputs[t.name]
            if not isinstance(x, np.ndarray):
                raise InputShapeError(f"{self.spec.name}.{t.name} | {type(x).__name__} | expected a numpy array")
            if x.dtype != np.dtype(t.dtype):
                raise InputShapeError(f"{self.spec.name}.{t.name} | dtype {x.dtype} | expected {t.dtype}")
            if x.ndim != len(t.shape) or any(isinstance(d, int) and d != n for d, n in zip(t.shape, x.shape, strict=True)):
                raise InputShapeError(f"{self.spec.name}.{t.name} | shape {list(x.shape)} | expected {list(t.shape)} (names are dynamic)")
            checked[t.name] = np.ascontiguousarray(x)
        return self._run_impl(checked)

    @abstractmethod
    def _run_impl(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run with checked, contiguous inputs; return every output."""

    def close(self) -> None:  # noqa: B027 - optional hook: engines without device memory need none
        """Free device memory and sessions. Idempotent."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec.name!r}, provider={self.provider!r})"
