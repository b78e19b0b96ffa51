"""``jemc-infer embed``: add folders of videos to an index (the main job, with ``query``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from jemc_infer.cli._common import echo_err, handle_errors

app = typer.Typer()

EXIT_SOME_FAILED = 3
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
    extensions: Annotated[str, typer.Option(help="Comma-separated video file extensions.")] = ",".join(
        ("mp4", "mkv", "webm", "avi", "mov", "m4v", "mpg", "mpeg", "flv", "wmv", "3gp", "ts", "ogv")),
    prune: Annotated[bool, typer.Option("--prune", help="Drop indexed videos whose files are gone.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Embed every video under VIDEOS into the index, skipping those already there unchanged.

    Safe to interrupt: rerunning continues where it stopped; a broken or hung file is recorded
    with its reason and the rest are embedded.
    """
    from jemc_infer.embed import embed as run_embed
    progress, task, t0, counts = None, None, time.monotonic(), {"done": 0, "frames": 0, "failed": 0}
    if not quiet and not as_json:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        progress = Progress(TextColumn("embed"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                            TimeRemainingColumn(), console=Console(stderr=True))

    def on_start(todo: int, skipped: int) -> None:
        nonlocal task
        if skipped:
            echo_err(f"{skipped} videos already in the index unchanged: skipped")
        if progress is not None and todo:
            progress.start()
            task = progress.add_task("embed", total=todo, rate="")

    def on_result(result) -> None:  # noqa: ANN001
        counts["done"] += 1
        counts["frames"] += result.stats.decoded_frames if result.stats else 0
        counts["failed"] += not result.ok
        if progress is not None and task is not None:
            dt = max(time.monotonic() - t0, 1e-9)
            progress.update(task, advance=1, rate=f"{counts['done'] / dt:.2f} videos/s  {counts['frames'] / dt:.0f} frames/s  "
                                                 f"{counts['failed']} failed")
            if not result.ok:
                progress.console.print(f"failed: {result.path}: {result.reason}", markup=False, highlight=False)

    try:
        s = run_embed(videos, index, _model(model, index), backend=backend, device=device, workers=workers,
                      time_limit=time_limit, batch_size=batch_size, flush_every=flush_every, dtype=dtype,
                      extensions=[e for e in extensions.split(",") if e], prune=prune, on_start=on_start, on_result=on_result)
    finally:
        if progress is not None:
            progress.stop()
    if as_json:
        typer.echo(json.dumps({"index": str(index), "embedded": s.embedded, "skipped": s.skipped, "failed": s.failed,
                               "pruned": s.pruned, "problems": s.problems, "frames": s.frames, "seconds": round(s.seconds, 2),
                               "engines": s.engines, "messages": s.messages}))
    else:
        for line in s.messages + _grouped(s.engines) + s.problems:
            echo_err(line)
        rate = f", {s.embedded / s.seconds:.2f} videos/s, {s.frames / s.seconds:.0f} frames/s" if s.embedded else ""
        typer.echo(f"{index}: {s.embedded} embedded, {s.skipped} unchanged, {len(s.failed)} failed, {s.pruned} pruned "
                   f"in {s.seconds:.1f} s{rate}")
    if s.failed:
        raise typer.Exit(code=EXIT_SOME_FAILED)


def _grouped(engines: list[str]) -> list[str]:
    """``graph: why`` lines with the same why, as one line naming all their graphs."""
    groups: dict[str, list[str]] = {}
    for line in engines:
        graph, _, why = line.partition(": ")
        groups.setdefault(why, []).append(graph)
    return [f"{', '.join(graphs)}: {why}" for why, graphs in groups.items()]


def _model(model: Path | None, index: Path) -> Path:
    """--model, else $JEMC_MODEL, else the model an existing index was built with, else the demo bundle."""
    from jemc_infer.index.store import MANIFEST, Index
    from jemc_infer.query import resolve_model

    if model is None and (index / MANIFEST).exists():
        with Index.open(index) as ix:
            return resolve_model(None, ix)
    return resolve_model(model)
