"""``jemc-infer features``: raw videos + annotations → a feature dataset for ``jemc-infer train``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from jemc_infer.cli._common import echo_err, fail, handle_errors

app = typer.Typer()

EXIT_SOME_FAILED = 3


def _annotations(captions: list[Path], msvd_mapping: Path | None, msvd_split: str):  # noqa: ANN202
    from jemc_infer.train.formats import load_captions_jsonl, load_msrvtt, load_msvd

    kinds = {p.suffix.lower() for p in captions}
    if kinds == {".json"}:
        return load_msrvtt(*captions)
    if len(captions) == 1 and kinds == {".txt"}:
        try:
            sizes = [int(x) for x in msvd_split.split(",")]
            assert len(sizes) == 3
        except (ValueError, AssertionError):
            raise fail(f"--msvd-split | {msvd_split!r} | expected three counts like 1200,100,670") from None
        return load_msvd(captions[0], msvd_mapping, sizes)
    if len(captions) == 1 and kinds == {".jsonl"}:
        return load_captions_jsonl(captions[0])
    raise fail(f"--captions | {[str(p) for p in captions]} | expected MSR-VTT videodatainfo .json file(s), "
               "one MSVD caption list .txt, or one .jsonl of {video, text, split}")


@app.command(epilog=f"Exit codes: 0 all videos done; 1 bad input; {EXIT_SOME_FAILED} some videos failed "
             "(the dataset is still written, with their features zero and masked).")
@handle_errors
def features(
    videos: Annotated[Path, typer.Argument(help="Folder of videos, searched recursively; file stems are video ids.")],
    captions: Annotated[list[Path], typer.Option(help="Annotations: MSR-VTT videodatainfo .json (repeat for train_val + test), "
                                                      "an MSVD caption list .txt, or a .jsonl of {video, text, split}.")],
    out: Annotated[Path, typer.Option(help="Feature dataset directory to write (per-video status in OUT.work/).")],
    weights: Annotated[Path | None, typer.Option(help="Folder with the backbone weights (else $JEMC_WEIGHTS, then torchvision's cache).")] = None,
    random_init: Annotated[bool, typer.Option("--random-init", help="Random backbones, no weight files: for tests and demos only (recorded in the dataset).")] = False,
    activity: Annotated[str, typer.Option(help="Activity backbone: i3d or s3d.")] = "i3d",
    device: Annotated[str, typer.Option(help="auto (CUDA when available), cpu, cuda, cuda:N.")] = "auto",
    frame_rate: Annotated[float, typer.Option(min=0.001, help="Object-stream frames per second.")] = 1.0,
    num_frames: Annotated[int | None, typer.Option(min=1, help="Instead: this many frames, uniformly over each video.")] = None,
    clip_stride: Annotated[int, typer.Option(min=1, help="Resampled (25 fps) frames between clip starts; 16 = non-overlapping.")] = 16,
    workers: Annotated[int, typer.Option(min=1, help="Decoder processes.")] = 2,
    time_limit: Annotated[float, typer.Option(min=1.0, help="Seconds of decoding one file may take before it is stopped and reported.")] = 600.0,
    frame_batch: Annotated[int, typer.Option(min=1, help="Frames per ResNet batch.")] = 32,
    clip_batch: Annotated[int, typer.Option(min=1, help="Clips per I3D batch.")] = 4,
    msvd_mapping: Annotated[Path | None, typer.Option(help="MSVD youtube_mapping.txt (clip id → vidN).")] = None,
    msvd_split: Annotated[str, typer.Option(help="MSVD train,val,test video counts.")] = "1200,100,670",
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Redo videos that failed in an earlier run.")] = False,
    restart: Annotated[bool, typer.Option("--restart", help="Forget earlier runs' results for OUT.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Decode every annotated video once and extract ResNet-152, I3D and SoundNet features.

    Rerunning skips the videos already done (resume after a crash or Ctrl-C); a file that hangs
    or is broken is recorded with its reason and the run goes on.
    """
    from jemc_infer.nn.backbones import load_backbones
    from jemc_infer.train.extract import extract_dataset, work_dir_for
    from jemc_infer.video.sampling import Sampling

    sampling = Sampling(frame_rate=frame_rate, num_frames=num_frames, clip_stride=clip_stride)
    ann = _annotations(captions, msvd_mapping, msvd_split)
    def encoder():  # noqa: ANN202 - built only if something needs extracting
        return load_backbones(weights, random_init=random_init, device=device, activity=activity)

    # the request, for the resume check (the weight files' hashes are checked once loaded)
    meta = {"random_init": random_init, "activity": activity, "weights": str(weights) if weights else None}
    progress, task, t0, counts = None, None, time.monotonic(), {"frames": 0, "failed": 0, "done": 0}
    if not quiet:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        progress = Progress(TextColumn("features"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                            TimeRemainingColumn(), console=Console(stderr=True))

    def on_result(result, frames: int) -> None:  # noqa: ANN001
        counts["done"] += 1
        counts["frames"] += frames
        counts["failed"] += not result.ok
        if not result.ok and quiet:
            echo_err(f"failed: {result.path}: {result.reason}")
        if progress is not None:
            dt = max(time.monotonic() - t0, 1e-9)
            progress.update(task, advance=1, rate=f"{counts['done'] / dt:.2f} videos/s  {counts['frames'] / dt:.0f} frames/s  "
                                                 f"{counts['failed']} failed")
            if not result.ok:
                progress.console.print(f"failed: {result.path}: {result.reason}", markup=False, highlight=False)

    def on_start(todo: int, done: int) -> None:
        nonlocal task
        if done:
            echo_err(f"resuming: {done} videos done in earlier runs, {todo} to go")
        if progress is not None:
            progress.start()
            task = progress.add_task("features", total=todo, rate="")

    try:
        summary = extract_dataset(videos, ann, out, encoder, meta, sampling=sampling, workers=workers, time_limit=time_limit,
                                  frame_batch=frame_batch, clip_batch=clip_batch, retry_failed=retry_failed, restart=restart,
                                  on_start=on_start, on_result=on_result)
    finally:
        if progress is not None:
            progress.stop()
    ds = summary.dataset
    dims = ", ".join(f"{k} {d}-d ({int(ds.masks[k].sum())} present)" for k, d in ds.feature_dims.items())
    typer.echo(f"{ds.path}: {len(ds.videos)} videos, {summary.extracted} extracted now, {summary.skipped} from earlier runs; "
               f"{len(summary.failed)} failed, {len(summary.missing)} without a file; features: {dims}"
               + (" [random-init backbones: not real features]" if random_init else ""))
    if summary.missing:
        echo_err(f"{len(summary.missing)} annotated videos have no file in {videos} (e.g. {summary.missing[0]}): zero features, masked")
    if summary.failed:
        echo_err(f"{len(summary.failed)} videos failed; reasons in {work_dir_for(out) / 'status.sqlite'} (table videos)")
        raise typer.Exit(code=EXIT_SOME_FAILED)
