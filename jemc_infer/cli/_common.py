"""What every command shares: one-line errors with exit code 1, and small parsers."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from jemc_infer.errors import JemcError, missing_dependency

if TYPE_CHECKING:
    from jemc_infer.cluster import Cluster

DEBUG = False  # set by the --debug global option

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` on stderr and return the Exit(1) to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)


def handle_errors(func: F) -> F:
    """Turn :class:`JemcError` and a missing optional dependency (torch, onnx, tensorrt, pycuda, …:
    the line names what to install) into one line on stderr and exit code 1 (tracebacks with
    --debug); Ctrl-C into exit code 130."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except JemcError as err:
            if DEBUG:
                raise
            raise fail(str(err)) from None
        except ImportError as err:
            friendly = missing_dependency(err)
            if friendly is None or DEBUG:
                raise
            raise fail(str(friendly)) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]


def echo_err(message: str) -> None:
    """Status messages go to stderr so stdout stays parseable."""
    print(message, file=sys.stderr, flush=True)


def parse_csv(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]



def ray_cluster(address: str | None, actors: int | None) -> Cluster | None:
    """The cluster ``--ray ADDRESS`` and ``--ray-actors N`` name, or None (run here).

    Raises:
        typer.Exit: ``--ray-actors`` without ``--ray``. InputError: A malformed address.
        BackendUnavailableError: Ray is not installed (said now, before any work).
    """
    if address is None:
        if actors is not None:
            raise fail(f"--ray-actors | {actors} without --ray | expected --ray ADDRESS as well (e.g. --ray local)")
        return None
    from jemc_infer.cluster import Cluster
    from jemc_infer.cluster.runtime import import_ray

    cluster = Cluster(address=address, actors=actors)
    import_ray()
    return cluster
