"""Run a module or a script with some top-level packages impossible to import, as on an install
without them (a child process of the tests: the guard must be in place before anything imports).

    python tests/support/block_imports.py torch,onnxruntime -m jemc_infer --help
    python tests/support/block_imports.py torch,torchvision tests/support/runtime_no_torch.py BUNDLE

The guard wraps ``builtins.__import__``: ``import torch`` and ``from torch import x`` raise
``ModuleNotFoundError`` naming the module, as Python does for a package that is not installed.
"""

from __future__ import annotations

import builtins
import runpy
import sys
from collections.abc import Collection
from pathlib import Path

HERE = Path(__file__).resolve().parent


def block(names: Collection[str]) -> None:
    """Make every module whose top-level package is in ``names`` fail to import."""
    real = builtins.__import__

    def guard(name: str, *args: object, **kwargs: object) -> object:
        if name.split(".")[0] in names:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real(name, *args, **kwargs)

    builtins.__import__ = guard


def main(argv: list[str]) -> None:
    blocked, target, *rest = argv
    block(set(blocked.split(",")))
    if target == "-m":
        module, *args = rest
        sys.argv = [module, *args]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    else:
        sys.argv = [target, *rest]
        sys.path[0] = str(Path(target).resolve().parent)  # as `python script.py` would have it
        runpy.run_path(target, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
