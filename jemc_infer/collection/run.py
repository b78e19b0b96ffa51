"""The collection pipeline: videos → per-video results, resumably, into a sink.

One run plans against the job store (what is done, unchanged), decodes the rest in worker
processes, runs the backbones on batches shared across videos, pools each video's windows
(``jemc_infer.video.pipeline``), and hands every result to a sink: index rows (``embed``) or a
feature dataset (``features``). Failures are committed to the job store with their reason as they
happen; a sink commits its results in batches it chooses. Ctrl-C commits what is finished; a kill
loses at most the results a sink had not committed yet. Progress is a stream of typed events
that one CLI renderer turns into a progress bar and a summary.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from jemc_infer.collection.faults import crash_point
from jemc_infer.collection.jobs import Job, JobStore
from jemc_infer.video.pipeline import STREAMS, FeatureEncoder, VideoResult, extract_features
from jemc_infer.video.sampling import Sampling


class Sink(Protocol):
    """Where the results of a run go."""

    def add(self, job: Job, result: VideoResult) -> int:
        """A video that succeeded (``result.features``: stream → pooled float32 [D];
        ``result.windows``: the per-window outputs with their times, if asked for). Commit now or
        batch; returns how many videos it committed now (0 while batching)."""
        ...

    def flush(self) -> int:
        """Commit everything pending (also on Ctrl-C). Returns how many videos it committed."""
        ...


@dataclass(frozen=True)
class Options:
    """How to run (none of it changes the results, except ``sampling``, which the store checks)."""

    sampling: Sampling = Sampling()
    streams: tuple[str, ...] = STREAMS  # which features to compute
    workers: int = 2  # decoder processes
    time_limit: float = 600.0  # seconds of decoding one file may take
    frame_batch: int = 16  # frames per object-backbone call
    clip_batch: int = 4  # clips per activity-backbone call
    retry_failed: bool = False  # also redo videos that failed in an earlier run
    keep_windows: bool = False  # keep each frame's and clip's output (result.windows)


# -- typed progress events --------------------------------------------------------------------
@dataclass(frozen=True)
class Planned:
    """The run knows its work: ``todo`` videos to process, ``skipped`` done before."""

    todo: int
    skipped: int


@dataclass(frozen=True)
class VideoDone:
    """One video finished (``result.ok``) or failed (``result.reason``)."""

    job: Job
    result: VideoResult

    @property
    def frames(self) -> int:
        return self.result.stats.decoded_frames if self.result.stats else 0


@dataclass(frozen=True)
class Committed:
    """The sink committed ``videos`` results (they survive any crash from now on)."""

    videos: int


Event = Planned | VideoDone | Committed


@dataclass
class RunSummary:
    done: int = 0  # processed successfully by this run
    skipped: int = 0  # done before, unchanged
    failed: dict[str, str] = field(default_factory=dict)  # store path → reason (this run)
    frames: int = 0  # frames decoded
    seconds: float = 0.0


def run_collection(paths: Sequence[Path], store: JobStore, sink: Sink, encoder: Callable[[], FeatureEncoder],
                   options: Options = Options(), on_event: Callable[[Event], None] | None = None,
                   redo: Collection[str] = ()) -> RunSummary:
    """Process every video of ``paths`` that the store does not have done, into ``sink``.

    Args:
        paths: The collection's video files (absolute; ``jemc_infer.collection.scan``).
        store: The job store (its settings already checked by the caller).
        sink: Receives each successful result.
        encoder: Builds the backbones; called only if some video needs processing.
        options: Sampling, streams, workers, batch sizes, retry, windows.
        on_event: Called with each :data:`Event`, in order.
        redo: Store paths to process again even if done and unchanged (an index gaining moments).

    Returns:
        What this run did.

    Raises:
        KeyboardInterrupt: After committing what was finished.
    """
    t0 = time.monotonic()
    emit = on_event or (lambda event: None)
    plan = store.plan(list(paths), options.retry_failed, redo)
    summary = RunSummary(skipped=plan.skipped)
    emit(Planned(len(plan.todo), plan.skipped))
    if plan.todo:
        _process(plan.todo, store, sink, encoder(), options, emit, summary)
    summary.seconds = time.monotonic() - t0
    return summary


def _process(todo: list[Job], store: JobStore, sink: Sink, encoder: FeatureEncoder, options: Options,
             emit: Callable[[Event], None], summary: RunSummary) -> None:
    results = extract_features([j.path for j in todo], options.sampling, encoder, streams=options.streams, workers=options.workers,
                               time_limit=options.time_limit, frame_batch=options.frame_batch, clip_batch=options.clip_batch,
                               keep_windows=options.keep_windows)
    try:
        for result in results:
            deliver(todo[result.index], result, store, sink, emit, summary)
    except KeyboardInterrupt:  # Ctrl-C: keep what is finished
        results.close()  # stops the decoder workers
        committed(sink.flush(), emit)
        raise
    committed(sink.flush(), emit)


def deliver(job: Job, result: VideoResult, store: JobStore, sink: Sink, emit: Callable[[Event], None],
            summary: RunSummary) -> None:
    """One video's result: to the sink (ok) or the job store (failed with its reason), counted and told."""
    done = 0
    if result.ok:
        done = sink.add(job, result)
        summary.done += 1
        summary.frames += result.stats.decoded_frames if result.stats else 0
    else:
        store.record_failed([job.record("failed", reason=result.reason)])
        summary.failed[job.key] = result.reason or ""
    emit(VideoDone(job, result))
    committed(done, emit)


def committed(videos: int, emit: Callable[[Event], None]) -> None:
    """Tell that ``videos`` were committed (the crash tests' "committed" point)."""
    if videos:
        emit(Committed(videos))
        crash_point("committed")
