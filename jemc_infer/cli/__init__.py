"""The ``jemc-infer`` command line: a thin shell over the library, one file per command.

Heavy modules (torch, onnxruntime) are imported inside the commands that need them, so
``jemc-infer --help`` is fast and works on a runtime-only install. A run builds only the command it
names (:func:`run`): ``jemc-infer query`` neither imports nor builds the other twelve, which was a
tenth of its cold start. ``app`` (every command) is built on first use.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import sys
from typing import Annotated, Any, NoReturn

import typer

from jemc_infer.cli import _common

HELP = ("Search video collections with sentences (JEMC joint embeddings).\n\n"
        "Search: jemc-infer embed videos/ --model model && jemc-infer query \"a man cooking\"\n\n"
        "Serve:  jemc-infer serve --index jemc-index (a search page at http://127.0.0.1:8000/)\n\n"
        "Train:  jemc-infer data synth --out data && jemc-infer train --data data --preset jemc --out model\n\n"
        "Deploy: jemc-infer export model --weights DIR")
# Command → its module in this package, and the help of a group of commands (None: one command).
COMMANDS: dict[str, tuple[str, str | None]] = {
    "embed": ("embed", None),
    "query": ("query", None),
    "serve": ("serve", None),
    "index": ("index", "Inspect an index, or add its compact copy."),
    "data": ("data", "Create feature datasets (synthetic, MSR-VTT, MSVD)."),
    "features": ("features", None),
    "train": ("train", None),
    "evaluate": ("evaluate", None),
    "table1": ("table1", None),
    "export": ("export", None),
    "doctor": ("doctor", None),
    "demo": ("demo", None),
    "world": ("world", "A synthetic world with known answers: make it, train its backbones."),
}
# Commands that only read and print. When one ends, the process leaves at once (its output flushed,
# the atexit handlers run) instead of tearing the interpreter down: freeing every module, object and
# onnxruntime session took ~45 ms, a fifth of a cold `query` over 100k rows (benchmarks/RESULTS.md).
QUICK_EXIT = frozenset({"query"})


def main(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print jemc-infer's version and exit.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --version: also every dependency's version, as JSON.")] = False,
) -> None:
    _common.DEBUG = debug
    if version or as_json:
        if ctx.invoked_subcommand is not None or not version:
            got = f"before the command {ctx.invoked_subcommand!r}" if ctx.invoked_subcommand else "--json without --version"
            raise _common.fail(f"--version/--json | {got} | expected `jemc-infer --version [--json]` alone "
                               "(a command's own --json goes after it)")
        from jemc_infer.cli.doctor import versions

        typer.echo(json.dumps(versions(), indent=2) if as_json else f"jemc-infer {versions()['jemc_infer']}")
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(code=2)  # as Click's no_args_is_help: a bare `jemc-infer` is not a successful run


def build(command: str | None = None) -> typer.Typer:
    """The ``jemc-infer`` app with every command, or with ``command`` alone (its module is the
    only one imported)."""
    app = typer.Typer(name="jemc-infer", help=HELP, add_completion=False, pretty_exceptions_show_locals=False)
    app.callback(invoke_without_command=True)(main)
    for name, (module, group_help) in COMMANDS.items():
        if command is None or name == command:
            sub = importlib.import_module(f"jemc_infer.cli.{module}").app
            if group_help is None:
                app.add_typer(sub)
            else:
                app.add_typer(sub, name=name, help=group_help)
    return app


def run(quick_exit: bool = True) -> None:
    """The ``jemc-infer`` command: the app with the command the arguments name (every command for
    ``--help``, ``--version``, no command or an unknown one, whose error lists them all).

    Args:
        quick_exit: Let a command of ``QUICK_EXIT`` end the process without the interpreter's
            teardown. False: every run ends in ``SystemExit``, as Click's (embedding, tests).
    """
    named = next((a for a in sys.argv[1:] if not a.startswith("-")), None)  # the global options are flags
    try:
        build(named if named in COMMANDS else None)(prog_name="jemc-infer")
    except SystemExit as done:  # Typer (Click) ends every run it handles with one
        if not quick_exit or named not in QUICK_EXIT:
            raise
        _leave(done.code)


def _leave(code: object) -> NoReturn:
    """Leave as ``sys.exit(code)`` would, but for the interpreter's teardown: run the atexit
    handlers, flush stdout and stderr (exit status 120 where that fails, as Python's), then
    ``os._exit``."""
    if code is None or isinstance(code, int):
        status = code or 0
    else:
        print(code, file=sys.stderr)
        status = 1
    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)  # CPython's own, run on every normal exit
    if run_exitfuncs is not None:
        run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe or stream
        status = status or 120
    os._exit(status)


def __getattr__(name: str) -> Any:
    if name == "app":  # every command, for tests and embedding (built once)
        globals()["app"] = build()
        return globals()["app"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
