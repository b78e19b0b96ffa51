"""``jemc-infer query``: search an index with sentences."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Annotated

import typer

from jemc_infer.cli._common import echo_err, fail, handle_errors, ray_cluster
from jemc_infer.errors import InputError

app = typer.Typer()

# query()'s argument names → this command's options, for its SettingErrors
FLAGS = {"model": "--model", "k": "-k", "space_weights": "--space-weights", "texts": "TEXT or --queries FILE", "video": "--like"}


def clock(seconds: float) -> str:
    """``HH:MM:SS`` of whole seconds."""
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def moment_text(moment: tuple[float, float] | None) -> str:
    """``00:01:23–00:01:27``: the start rounded down, the end up, so the span holds the window."""
    if moment is None:
        return "-"
    return f"{clock(math.floor(moment[0]))}–{clock(math.ceil(moment[1]))}"


def _shown(index: Path, rel: str) -> str:
    path = os.path.normpath(index / rel)
    try:
        return os.path.relpath(path) if not os.path.relpath(path).startswith("../..") else path
    except ValueError:
        return path


@app.command()
@handle_errors
def query(
    text: Annotated[str | None, typer.Argument(help="What to look for, e.g. \"a man cooking\".")] = None,
    index: Annotated[Path, typer.Option(help="Index directory.")] = Path("jemc-index"),
    model: Annotated[Path | None, typer.Option(help="Model bundle (else $JEMC_MODEL, the index's model, the demo bundle).")] = None,
    k: Annotated[int, typer.Option("-k", min=1, help="Results per query.")] = 10,
    queries: Annotated[Path | None, typer.Option(help="A file with one query per line (searched as one batch).")] = None,
    space_weights: Annotated[str | None, typer.Option(help="Fusion weights, e.g. object=1,activity=0.5.")] = None,
    backend: Annotated[str, typer.Option(help="auto, tensorrt, onnxruntime or torch.")] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda (cuda: the text encoder and the top-k search on the GPU, the fused CUDA kernel).")] = "auto",
    precision: Annotated[str, typer.Option(help="The text graph: auto (on the CPU the int8 one where exported with its gates "
                                                "passed, else fp32), fp32, fp16 or int8.")] = "auto",
    like: Annotated[str | None, typer.Option(help="More like this: rank by a video (a file, or an indexed video's id or path).",
                                             metavar="VIDEO")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines: one per result (with the text engine that encoded the query).")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also say on stderr which engine encodes the text, and why.")] = False,
    ray: Annotated[str | None, typer.Option(
        "--ray", metavar="ADDRESS", help="Search on a Ray cluster, the index's shards split across actors (the same hits): "
        "local (start one here for this query), auto (the one `ray start` runs here), HOST:PORT or ray://HOST:PORT. Every "
        "node needs the index at the same path.")] = None,
    ray_actors: Annotated[int | None, typer.Option(min=1, help="With --ray: shard actors (default: one per GPU, else half "
                                                   "the cluster's CPUs).")] = None,
) -> None:
    """Rank the index's videos for TEXT (or each line of --queries, or the video --like):
    rank, score, duration, the best-matching moment, path.

    Example: jemc-infer query "a man cooking" --index jemc-index --ray local
    """
    from jemc_infer.query import ModelMismatchError, SettingError, query_like
    from jemc_infer.query import query as run_query

    if like is not None and (text is not None or queries is not None):
        raise fail(f"--like | with {'TEXT' if text is not None else '--queries'} | expected one question: a video (--like) or sentences")
    cluster = ray_cluster(ray, ray_actors)
    texts = [text] if text is not None else []
    if queries is not None:
        try:
            texts += [ln.strip() for ln in queries.read_text(encoding="utf-8").splitlines() if ln.strip()]
        except OSError as err:
            raise fail(f"{queries} | unreadable ({err.strerror}) | expected a text file, one query per line") from None
    if not texts and like is None:
        raise fail("query | no text | expected a sentence (jemc-infer query \"a man cooking\"), --queries FILE or --like VIDEO")
    engines: list[str] = []
    try:
        if like is not None:
            found, warnings = query_like(index, like, k, model, space_weights, backend, device, cluster=cluster)
            hits, texts = [found], [like]
        else:
            hits, warnings = run_query(index, texts, k, model, space_weights, backend, device, precision, on_engine=engines.append,
                                       cluster=cluster)
    except SettingError as err:  # the same error, naming this command's option
        raise InputError(f"{FLAGS.get(err.setting, err.setting)} | {err.got} | expected {err.expected}") from err
    except ModelMismatchError as err:
        raise InputError(f"{err.index_dir} | built with model {err.indexed} | expected the same model, got {err.given} "
                         f"({err.given_path}): pass the --model the index was built with") from err
    for w in warnings:
        echo_err(f"warning: {w}")
    if verbose:
        for line in engines:
            echo_err(line)
    for t, rows in zip(texts, hits, strict=True):
        if as_json:
            for h in rows:
                moment = None if h.moment is None else [round(h.moment[0], 3), round(h.moment[1], 3)]
                line = {"like" if like is not None else "query": t, "rank": h.rank, "score": round(h.score, 6),
                        "path": _shown(index, h.path), "duration": h.duration, "id": h.id, "moment": moment}
                typer.echo(json.dumps(line | ({"text_engine": engines[0]} if engines else {})))
            continue
        if len(texts) > 1:
            typer.echo(f"\n{t}")
        typer.echo(f"{'rank':>4}  {'score':>7}  {'duration':>8}  {'moment':<17}  path")
        for h in rows:
            dur = f"{h.duration:.1f}s" if h.duration is not None else "-"
            typer.echo(f"{h.rank:>4}  {h.score:7.4f}  {dur:>8}  {moment_text(h.moment):<17}  {_shown(index, h.path)}")
