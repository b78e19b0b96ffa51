"""The ``jemc-infer`` command line: a thin shell over the library, one file per command.

Heavy modules (torch, onnxruntime) are imported inside the commands that need them, so
``jemc-infer --help`` is fast and works on a runtime-only install.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from jemc_infer.cli import _common
from jemc_infer.cli.data import app as data_app
from jemc_infer.cli.demo import app as demo_app
from jemc_infer.cli.doctor import app as doctor_app
from jemc_infer.cli.embed import app as embed_app
from jemc_infer.cli.evaluate import app as evaluate_app
from jemc_infer.cli.export import app as export_app
from jemc_infer.cli.features import app as features_app
from jemc_infer.cli.index import app as index_app
from jemc_infer.cli.query import app as query_app
from jemc_infer.cli.serve import app as serve_app
from jemc_infer.cli.table1 import app as table1_app
from jemc_infer.cli.train import app as train_app
from jemc_infer.cli.world import app as world_app

app = typer.Typer(
    name="jemc-infer",
    help="Search video collections with sentences (JEMC joint embeddings).\n\n"
    "Search: jemc-infer embed videos/ --model model && jemc-infer query \"a man cooking\"\n\n"
    "Serve:  jemc-infer serve --index jemc-index (a search page at http://127.0.0.1:8000/)\n\n"
    "Train:  jemc-infer data synth --out data && jemc-infer train --data data --preset jemc --out model\n\n"
    "Deploy: jemc-infer export model --weights DIR",
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback(invoke_without_command=True)
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


app.add_typer(embed_app)
app.add_typer(query_app)
app.add_typer(serve_app)
app.add_typer(index_app, name="index", help="Inspect an index, or add its compact copy.")
app.add_typer(data_app, name="data", help="Create feature datasets (synthetic, MSR-VTT, MSVD).")
app.add_typer(features_app)
app.add_typer(train_app)
app.add_typer(evaluate_app)
app.add_typer(table1_app)
app.add_typer(export_app)
app.add_typer(doctor_app)
app.add_typer(demo_app)
app.add_typer(world_app, name="world", help="A synthetic world with known answers: make it, train its backbones.")
