"""``jemc-infer embed``: add folders of videos to an index (the main job, with ``query``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from jemc_infer.cli._common import echo_err, fail, handle_errors, ray_cluster
from jemc_infer.cli._progress import EXIT_SOME_FAILED, Progress, exit_for
from jemc_infer.collection.scan import VIDEO_EXTENSIONS
from jemc_infer.errors import SettingsMismatchError

app = typer.Typer()

DEFAULT_INDEX = Path("jemc-index")


@app.command(epilog=f"Exit codes: 0 every video embedded or skipped; 1 bad input; {EXIT_SOME_FAILED} some videos "
             "failed (the others are in the index; reasons in `jemc-infer index status`).")
@handle_errors
def embed(
    videos: Annotated[list[Path], typer.Argument(help="Video files and folders (searched recursively).")],
    index: Annotated[Path, typer.Option(help="Index directory (created if absent).")] = DEFAULT_INDEX,
    model: Annotated[Path | None, typer.Option(help="Model bundle with exported graphs (else $JEMC_MODEL, the index's model, the demo bundle).")] = None,
    backend: Annotated[str, typer.Option(help="auto, tensorrt, onnxruntime or torch.")] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    batch_size: Annotated[int, typer.Option(min=1, help="Frames per backbone call (clips: a quarter).")] = 16,
    workers: Annotated[int, typer.Option(min=1, help="Decoder processes.")] = 2,
    time_limit: Annotated[float, typer.Option(min=1.0, help="Seconds of decoding per file before it is stopped.")] = 600.0,
    flush_every: Annotated[int, typer.Option(min=1, help="Commit to the index every N embedded videos.")] = 64,
    dtype: Annotated[str, typer.Option(help="Row precision: float32 or float16 (half the size).")] = "float32",
    extensions: Annotated[str, typer.Option(help="Comma-separated video file extensions.")] = ",".join(VIDEO_EXTENSIONS),
    prune: Annotated[bool, typer.Option("--prune", help="Drop indexed videos whose files are gone.")] = False,
    moments: Annotated[bool | None, typer.Option(
        "--with-moments/--no-moments", help="Keep each frame's and clip's row, so that `query` says where a video matches "
        "(default: on for a new index, as before for an existing one; --with-moments on an index made without them "
        "embeds its videos again).", show_default=False)] = None,
    ray: Annotated[str | None, typer.Option(
        "--ray", metavar="ADDRESS", help="Run on a Ray cluster: local (start one on this machine for this run), auto (the one "
        "`ray start` runs here), HOST:PORT or ray://HOST:PORT. Decoding runs in Ray tasks, the backbones in Ray actors; "
        "the index is written here, by this process. Needs Ray (the jemc-infer extra named ray) and the model at the same path "
        "on every node.")] = None,
    ray_actors: Annotated[int | None, typer.Option(min=1, help="With --ray: backbone actors (default: one per GPU, "
                                                   "else half the cluster's CPUs).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Embed every video under VIDEOS into the index, skipping those already there unchanged.

    Safe to interrupt: rerunning continues where it stopped; a broken or hung file is recorded
    with its reason and the rest are embedded. With --ray the same holds on a cluster, e.g.
    jemc-infer embed videos/ --index jemc-index --ray local
    """
    from jemc_infer.collection import Options
    from jemc_infer.embed import embed as run_embed
    from jemc_infer.embed import model_for_index
    from jemc_infer.query import SettingError

    cluster = ray_cluster(ray, ray_actors)
    options = Options(workers=workers, time_limit=time_limit, frame_batch=batch_size, clip_batch=max(1, batch_size // 4))
    skipped = lambda todo, done: f"{done} videos already in the index unchanged: skipped" if done else None  # noqa: E731
    try:
        with Progress("embed", show_bar=not quiet and not as_json, show_failures=not as_json, on_planned=skipped) as progress:
            s = run_embed(videos, index, model_for_index(model, index), backend=backend, device=device, options=options,
                          flush_every=flush_every, dtype=dtype, extensions=[e for e in extensions.split(",") if e], prune=prune,
                          on_event=progress, moments=moments, cluster=cluster)
    except SettingsMismatchError as err:
        raise fail(f"{err} (jemc-infer embed ... --index NEW_DIR)") from None
    except SettingError as err:  # the model was not found: name this command's option
        raise fail(f"--model | {err.got} | expected {err.expected}") from None
    r = s.run
    if as_json:
        typer.echo(json.dumps({"index": str(index), "embedded": r.done, "skipped": r.skipped, "failed": r.failed,
                               "pruned": s.pruned, "problems": s.problems, "frames": r.frames, "seconds": round(r.seconds, 2),
                               "engines": s.engines, "messages": s.messages}))
    else:
        for line in s.messages + _grouped(s.engines) + s.problems:
            echo_err(line)
        rate = f", {r.done / r.seconds:.2f} videos/s, {r.frames / r.seconds:.0f} frames/s" if r.done else ""
        typer.echo(f"{index}: {r.done} embedded, {r.skipped} unchanged, {len(r.failed)} failed, {s.pruned} pruned "
                   f"in {r.seconds:.1f} s{rate}")
    exit_for(len(r.failed))


def _grouped(engines: list[str]) -> list[str]:
    """``graph: why`` lines with the same why, as one line naming all their graphs."""
    groups: dict[str, list[str]] = {}
    for line in engines:
        graph, _, why = line.partition(": ")
        groups.setdefault(why, []).append(graph)
    return [f"{', '.join(graphs)}: {why}" for why, graphs in groups.items()]
