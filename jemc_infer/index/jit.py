"""The int8 scan's product compiled by numba: a loop that streams the codes once.

onnxruntime's ``MatMulInteger`` (MLAS) packs every block of codes before it multiplies, which
holds the compact scan to ~13–16 GB/s here; this loop reads each code once at about the memory's
speed (~40 GB/s on two threads): one query over 1M x 2,048 rows in 64 ms against 118 ms, 2.9x
numpy's fp32 scan (``benchmarks/RESULTS.md``). It answers the same integers as the product it
replaces, and checks itself the same way before it is used. A second kernel does the residual
narrowing's product over the candidate rows where they lie (no gathered copy), at any number of
queries.

It is off until :func:`enable` is called: numba's import and the load of its cached machine code
cost ~0.23 s per process (the first compile, once per machine, ~2 s) — more than one query over a
million rows saves, so a one-shot ``query`` keeps onnxruntime's product, and ``serve`` (and a
program that searches many times) turns this on at start. numba comes with the ``[jit]`` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # compact imports this module: its names for annotations only
    from jemc_infer.index.compact import Product, RowsProduct

# Each query is another pass over a block; onnxruntime's blocked product reads it once for all of
# them: numba's is ahead at one query (26 against 48 ms per 400k rows) and two (46 / 50), behind
# at three (66 / 51; benchmarks/RESULTS.md).
MAX_QUERIES = 2

_state: dict[str, object] = {"kernel": None, "rows": None, "why": "not enabled (jemc_infer.index.jit.enable())"}


def enable() -> str | None:
    """Import numba and compile (or load from numba's cache) the kernel, then check it on extreme
    operands against numpy's int64 product. Returns None when it is on, else why it is not (it
    stays off: the search uses onnxruntime's product)."""
    if _state["kernel"] is not None:
        return None
    from jemc_infer.index.compact import _rows_self_check, _self_check

    try:
        product, rows = _compile()
        exact = _self_check(product) and _rows_self_check(rows)  # their first calls compile them (or load numba's cache)
    except ImportError as err:
        _state["why"] = f"numba is not installed ({err}): pip install 'jemc-infer[jit]'"
        return str(_state["why"])
    except Exception as err:  # noqa: BLE001 - e.g. no writable cache folder, an LLVM error: the search goes on without it
        _state["why"] = f"numba could not build the kernel ({type(err).__name__}: {err})"
        return str(_state["why"])
    if not exact:
        _state["why"] = "numba's product was not exact on this machine"
        return str(_state["why"])
    _state["kernel"], _state["rows"] = product, rows
    return None


def disable() -> None:
    """Turn it off again: the scan goes back to onnxruntime's product."""
    _state["kernel"] = _state["rows"] = None
    _state["why"] = "disabled (jemc_infer.index.jit.disable())"


def kernel() -> Product | None:
    """The checked product (same operands and answer as the compact scan's onnxruntime product),
    or None while it is not enabled."""
    return _state["kernel"]  # type: ignore[return-value]


def rows() -> RowsProduct | None:
    """The checked product over rows picked where they lie (``compact.RowsProduct``: the residual
    narrowing's), or None while it is not enabled."""
    return _state["rows"]  # type: ignore[return-value]


def why_not() -> str:
    """Why :func:`kernel` is None."""
    return str(_state["why"])


def _compile() -> tuple[Product, RowsProduct]:
    from jemc_infer.index._numba_product import pairs, rows_pairs  # numba's import: only here

    def product(a: np.ndarray, blocks: np.ndarray) -> np.ndarray:
        """``MatMulInteger(a uint8 [m, D], blocks int8 [b, D, w], a_zero_point 64)`` -> int32 [b, m, w]."""
        a = np.ascontiguousarray(a, dtype=np.uint8)
        blocks = np.ascontiguousarray(blocks, dtype=np.int8)
        out = np.empty((blocks.shape[0], a.shape[0], blocks.shape[2]), np.int32)
        pairs(a, blocks, out)
        return out

    def rows_product(codes: np.ndarray, rows: np.ndarray, query_codes: np.ndarray) -> np.ndarray:
        """``codes[rows] @ query_codes[0]`` (int8 [n, D], int64 [m], int8 [1, D, 2]) -> int32 [m, 2]."""
        out = np.empty((len(rows), 2), np.int32)
        rows_pairs(np.asarray(codes), np.ascontiguousarray(rows, dtype=np.int64), np.ascontiguousarray(query_codes[0].T), out)
        return out

    return product, rows_product
