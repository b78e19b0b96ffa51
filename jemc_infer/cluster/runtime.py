"""Which Ray cluster to use and how to join it quietly (Ray is imported only here, lazily).

``Cluster.address`` is what ``--ray ADDRESS`` takes: ``local`` starts a cluster on this machine for
the run (and stops it after), ``auto`` joins the one already running here (``ray start --head``),
``HOST:PORT`` joins a cluster's head, ``ray://HOST:PORT`` goes through Ray Client. A process that
has already called ``ray.init`` (a test, a notebook) keeps its cluster: nothing is started or stopped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from jemc_infer.errors import InputError, missing_dependency

_ADDRESS = re.compile(r"^(local|auto|(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d{1,5})$")
ADDRESS_HELP = "local (a cluster on this machine, for this run), auto (the one running here), HOST:PORT or ray://HOST:PORT"


@dataclass(frozen=True)
class Cluster:
    """Where and how wide a distributed run goes."""

    address: str = "local"  # see the module docstring
    actors: int | None = None  # backbone actors (embed) or shard actors (search); None: one per GPU, else half the CPUs
    num_cpus: int | None = None  # CPUs of a cluster started here (address "local"); None: all of them
    runtime_env: dict[str, Any] = field(default_factory=dict)  # Ray's runtime_env for the tasks and actors (env vars, …)

    def __post_init__(self) -> None:
        if not _ADDRESS.match(self.address):
            raise InputError(f"--ray | {self.address!r} | expected {ADDRESS_HELP}")
        if self.actors is not None and self.actors < 1:
            raise InputError(f"actors | {self.actors} | expected >= 1, or None for one per GPU (else half the CPUs)")


def import_ray() -> ModuleType:
    """``ray``, or the one-line error naming the extra to install.

    Raises:
        BackendUnavailableError: Ray is not installed ("ray | not installed | needed for --ray: pip install 'jemc-infer[ray]'").
    """
    try:
        import ray
    except ImportError as err:
        friendly = missing_dependency(err, "needed for --ray")
        if friendly is None:
            raise
        raise friendly from None
    return ray


def join(cluster: Cluster) -> tuple[ModuleType, bool]:
    """Ray, joined to ``cluster``; and whether this call started or joined it (then the caller
    calls ``ray.shutdown()`` when done) rather than finding this process already joined.

    Ray's banners, worker logs and usage-stats notice are kept off the terminal: a run prints its
    own progress, not pages of Ray's logs (they stay in Ray's session folder, /tmp/ray).

    Raises:
        BackendUnavailableError: Ray is not installed.
        InputError: No cluster at ``cluster.address``.
    """
    ray = import_ray()
    if ray.is_initialized():  # the caller's cluster (a test, a notebook): use it, leave it running
        return ray, False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                                  runtime_env=cluster.runtime_env or None)
    if cluster.address == "local":
        kwargs["num_cpus"] = cluster.num_cpus
        address = "local"  # a new cluster, even where RAY_ADDRESS or `ray start` points at another
    else:
        address = cluster.address
    try:
        ray.init(address=address, **kwargs)
    except ConnectionError as err:
        raise InputError(f"--ray | cannot reach {cluster.address} ({str(err).strip().splitlines()[0]}) | expected a running "
                         "Ray cluster there (`ray start --head` on its head node), or --ray local") from None
    return ray, True


@contextlib.contextmanager
def connected(cluster: Cluster) -> Iterator[ModuleType]:
    """:func:`join` for the duration of a ``with`` block."""
    ray, owned = join(cluster)
    try:
        yield ray
    finally:
        if owned:
            ray.shutdown()


def resources(ray: ModuleType) -> tuple[float, float]:
    """(CPUs, GPUs) of the whole cluster."""
    total = ray.cluster_resources()
    return float(total.get("CPU", 0.0)), float(total.get("GPU", 0.0))


def actor_count(cluster: Cluster, cpus: float, gpus: float) -> int:
    """How many actors: as asked, else one per GPU, else half the CPUs (at least one): on a small
    machine the decoding tasks keep the other half."""
    if cluster.actors is not None:
        return cluster.actors
    if gpus >= 1:
        return int(gpus)
    return max(1, int(cpus) // 2)


def short(err: BaseException) -> str:
    """One line for a remote failure (Ray's own messages run to pages of traceback)."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        err = cause
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    return f"{type(err).__name__}: {last[:300]}" if last else type(err).__name__
