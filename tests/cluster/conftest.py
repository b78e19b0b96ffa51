"""One local Ray cluster for this folder's tests (2 CPUs, no dashboard, started and stopped here)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from types import ModuleType

import pytest
from support import TESTS

ray = pytest.importorskip("ray")


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[ModuleType]:
    """Ray joined to a cluster started for the tests: the library's ``--ray`` calls find it and use it.
    Workers get tests/ on their path (the stub backbones of ``support`` run on them)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield ray
    ray.shutdown()
