"""``jemc-infer features``: raw videos + annotations → a feature dataset for ``jemc-infer train``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from jemc_infer.cli._common import echo_err, fail, handle_errors
from jemc_infer.cli._progress import EXIT_SOME_FAILED, Progress, exit_for
from jemc_infer.errors import InputError, SettingsMismatchError

app = typer.Typer()


def _annotations(captions: list[Path], msvd_mapping: Path | None, msvd_split: str):  # noqa: ANN202
    from jemc_infer.train.formats import load_captions_jsonl, load_msrvtt, load_msvd

    kinds = {p.suffix.lower() for p in captions}
    if kinds == {".json"}:
        return load_msrvtt(*captions)
    if len(captions) == 1 and kinds == {".txt"}:
        parts = msvd_split.split(",")
        if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
            raise InputError(f"--msvd-split | {msvd_split!r} | expected three counts like 1200,100,670")
        sizes = [int(p) for p in parts]
        return load_msvd(captions[0], msvd_mapping, sizes)
    if len(captions) == 1 and kinds == {".jsonl"}:
        return load_captions_jsonl(captions[0])
    raise InputError(f"--captions | {[str(p) for p in captions]} | expected MSR-VTT videodatainfo .json file(s), "
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
    object: Annotated[str, typer.Option("--object", help="Object (frame) backbone: resnet152, or vgg-compact (a synthetic world's).")] = "resnet152",  # noqa: A002
    activity: Annotated[str, typer.Option(help="Activity backbone: i3d, s3d, or c3d-compact (a synthetic world's).")] = "i3d",
    device: Annotated[str, typer.Option(help="auto (CUDA when available), cpu, cuda, cuda:N.")] = "auto",
    frame_rate: Annotated[float, typer.Option(min=0.001, help="Object-stream frames per second.")] = 1.0,
    num_frames: Annotated[int | None, typer.Option(min=1, help="Instead: this many frames, uniformly over each video.")] = None,
    clip_fps: Annotated[float, typer.Option(min=0.001, help="The activity stream's frame rate (I3D: 25).")] = 25.0,
    clip_stride: Annotated[int, typer.Option(min=1, help="Resampled frames between clip starts; 16 = non-overlapping.")] = 16,
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
    """Decode every annotated video once and extract object (ResNet-152), activity (I3D) and audio (SoundNet) features.

    Rerunning skips the videos already done (resume after a crash or Ctrl-C); a file that hangs
    or is broken is recorded with its reason and the run goes on.
    """
    from jemc_infer.collection import Options
    from jemc_infer.nn.backbones import load_backbones
    from jemc_infer.train.extract import extract_dataset, work_dir_for
    from jemc_infer.video.sampling import Sampling

    sampling = Sampling(frame_rate=frame_rate, num_frames=num_frames, clip_fps=clip_fps, clip_stride=clip_stride)
    options = Options(sampling=sampling, workers=workers, time_limit=time_limit, frame_batch=frame_batch, clip_batch=clip_batch,
                      retry_failed=retry_failed)
    ann = _annotations(captions, msvd_mapping, msvd_split)

    def encoder():  # noqa: ANN202 - built only if something needs extracting
        return load_backbones(weights, random_init=random_init, device=device, activity=activity, object=object)

    # the request, for the resume check (the weight files' hashes are checked once loaded)
    meta = {"random_init": random_init, "activity": activity, "weights": str(weights) if weights else None}
    if object != "resnet152":  # only then: runs begun before the option existed still resume
        meta["object"] = object
    resuming = lambda todo, done: f"resuming: {done} videos done in earlier runs, {todo} to go" if done else None  # noqa: E731
    try:
        with Progress("features", show_bar=not quiet, on_planned=resuming) as progress:
            summary = extract_dataset(videos, ann, out, encoder, meta, options=options, restart=restart, on_event=progress)
    except SettingsMismatchError as err:
        raise fail(f"{err} (--restart, or another --out)") from None
    _report(summary, videos, work_dir_for(out), random_init)


def _report(summary, videos: Path, work: Path, random_init: bool) -> None:  # noqa: ANN001
    ds = summary.dataset
    dims = ", ".join(f"{k} {d}-d ({int(ds.masks[k].sum())} present)" for k, d in ds.feature_dims.items())
    typer.echo(f"{ds.path}: {len(ds.videos)} videos, {summary.extracted} extracted now, {summary.skipped} from earlier runs; "
               f"{len(summary.failed)} failed, {len(summary.missing)} without a file; features: {dims}"
               + (" [random-init backbones: not real features]" if random_init else ""))
    if summary.missing:
        echo_err(f"{len(summary.missing)} annotated videos have no file in {videos} (e.g. {summary.missing[0]}): zero features, masked")
    if summary.failed:
        echo_err(f"{len(summary.failed)} videos failed; reasons in {work / 'status.sqlite'} (table videos)")
    exit_for(len(summary.failed))
