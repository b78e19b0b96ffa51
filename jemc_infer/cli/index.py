"""``jemc-infer index status`` (what an index holds, and why videos failed) and ``index compact``."""

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
    missing = counts["shards"] - counts["compact_shards"]
    typer.echo(f"compact copy: {counts['segments']} segment(s)" + (
        f"; {missing} shard(s) without one (search reads them in full): run `jemc-infer index compact --index {index}`"
        if missing else ", every shard"))
    for path, reason in failures:
        typer.echo(f"failed  {path}: {reason}")


@app.command()
@handle_errors
def compact(
    index: Annotated[Path, typer.Option(help="Index directory.")] = Path("jemc-index"),
) -> None:
    """Write the int8 compact copy of every shard that has none (embed does this itself).

    Search scans the compact copy (a quarter of the bytes of float32 rows) and rescores from the full rows only the rows whose error bounds let them reach the top k: the answer is the same, exactly. An index made before compact copies existed gains one here or on its next embed.
    """
    import time

    from jemc_infer.index.store import Index

    start = time.monotonic()
    with Index.open(index, writer=True) as idx:
        for message in idx.messages:
            typer.echo(message, err=True)
        rows, segments = idx.compact()
    typer.echo(f"{index}: {rows} rows written to the compact copy, {segments} segment(s) in {time.monotonic() - start:.1f} s")
