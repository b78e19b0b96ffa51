"""``jemc-infer index status``: what an index holds, and why videos failed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from jemc_infer.cli._common import handle_errors

app = typer.Typer(no_args_is_help=True)


@app.command()
@handle_errors
def status(
    index: Annotated[Path, typer.Option(help="Index directory.")] = Path("jemc-index"),
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Counts, model, settings, and every failed video with its reason."""
    from jemc_infer.index.store import Index

    with Index.open(index) as idx:
        counts, failures, settings = idx.counts(), idx.failures(), idx.settings
    if as_json:
        typer.echo(json.dumps({"index": str(index), **counts, "settings": settings,
                               "failures": [{"path": p, "reason": r} for p, r in failures]}))
        return
    layout = " | ".join(f"{n} {d}" for n, d in settings["layout"])
    typer.echo(f"{index}: {counts['ok']} videos, {counts['failed']} failed, {counts['shards']} shards; "
               f"model {settings['model']}; rows [{layout}] {settings['dtype']}")
    for path, reason in failures:
        typer.echo(f"failed  {path}: {reason}")
