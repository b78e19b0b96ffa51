"""Helpers the tests share, importable as ``support.*`` (pyproject.toml puts tests/ on pytest's
path); scripts that tests run in child processes live here too and run as ``python -m support.X``
with :func:`child_env`."""

from __future__ import annotations

import os
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment with tests/ on PYTHONPATH (so ``-m support.X`` resolves), plus ``extra``."""
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    return env
