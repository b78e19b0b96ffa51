"""The collection pipeline on Ray: the same results, resumably, into the same sink.

What runs where:

- **the driver** (this process) plans against the job store (what is done, unchanged), holds the
  one writer (the sink: for ``embed``, the index's lock, its video heads and its manifest), and
  commits each result exactly once, as :func:`jemc_infer.collection.run_collection` does;
- **decoding** runs in CPU tasks, one per video (:func:`jemc_infer.video.pool.decode_file`): the
  video's samples go into Ray's object store, not through the driver;
- **the backbones** run in a pool of actors (one per GPU with ``num_gpus=1``, else CPU actors of
  half a CPU each, so that a small machine keeps CPUs for the decoders): an actor pools a
  video's samples into the same :class:`~jemc_infer.video.pipeline.VideoResult` the local
  pipeline yields (features, and windows when asked for), and only that comes back.

Guarantees, as locally: a video that fails is recorded with its reason; a worker that dies is
replaced and its video retried by Ray (tasks and actor calls), and the driver accepts one result
per video, so nothing is lost or doubled; a driver that dies loses what its sink had not
committed, which the next run (the job store decides) does again.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from jemc_infer.cluster.runtime import Cluster, actor_count, connected, resources, short
from jemc_infer.collection.faults import crash_point
from jemc_infer.collection.jobs import Job, JobStore
from jemc_infer.collection.run import Event, Options, Planned, RunSummary, Sink, committed, deliver
from jemc_infer.errors import JemcError
from jemc_infer.video.pipeline import FeatureEncoder, VideoResult, pool_events
from jemc_infer.video.pool import decode_file
from jemc_infer.video.sampling import Sampling

# Seconds a decode task may run beyond the decode time limit before the driver stops it: the
# task's own clock (decode_file) cannot stop a decoder stuck inside one call (a hung mount).
_STUCK_GRACE = 5.0
_CALLS_PER_ACTOR = 2  # encode calls queued on an actor: one running, one ready to start
_MAX_TRIES = 3  # a video whose worker died this many times is recorded as failed


def _decode(path: str, sampling: Sampling, streams: tuple[str, ...], time_limit: float) -> list:
    """The decode task: one video's events (its samples and its outcome), into the object store."""
    return list(decode_file(0, path, sampling, streams, time_limit))


class EncoderActor:
    """A backbone actor: opens the encoder once (``make_encoder()``), then pools videos."""

    def __init__(self, make_encoder: Callable[[], FeatureEncoder], options: Options) -> None:
        self.make_encoder, self.options = make_encoder, options
        self.encoder: FeatureEncoder | None = None

    def start(self) -> list[str]:
        """Open the encoder now (a model or backend problem surfaces before any video is sent);
        returns what it says about itself (which backend runs each graph, and why)."""
        return list(getattr(self._encoder(), "why", []))

    def encode(self, path: str, events: list) -> VideoResult:
        """One video's decoded events → its result (features, windows when asked; or its failure)."""
        crash_point("ray-encode")  # the worker-death tests (JEMC_CRASH_AT=ray-encode:N)
        o = self.options
        (result,) = pool_events(events, [path], o.sampling, self._encoder(), o.streams, o.frame_batch, o.clip_batch,
                                keep_windows=o.keep_windows)
        return result

    def _encoder(self) -> FeatureEncoder:
        if self.encoder is None:
            self.encoder = self.make_encoder()
        return self.encoder


@dataclass
class _Flight:
    """One video in the cluster."""

    job: Job
    decode: Any  # ObjectRef of its decode task
    since: float  # when the decode task was submitted
    decoded: bool = False  # its decode task has finished (its events, or its failure, are in the object store)
    encode: Any = None  # ObjectRef of its encode call, once decoded
    actor: int = -1
    tries: int = 1


@dataclass
class ClusterRun:
    """What a distributed run did besides the summary."""

    actors: int = 0
    decode_slots: int = 0
    notes: list[str] = field(default_factory=list)  # the actors' own lines (engine choices)


def run_collection_ray(paths: Sequence[Path], store: JobStore, sink: Sink, make_encoder: Callable[[], FeatureEncoder],
                       cluster: Cluster, options: Options = Options(), on_event: Callable[[Event], None] | None = None,
                       redo: Collection[str] = ()) -> tuple[RunSummary, ClusterRun]:
    """:func:`jemc_infer.collection.run_collection` on a Ray cluster.

    Args:
        paths, store, sink, options, on_event, redo: As for ``run_collection`` (``options.workers``
            is not used: the cluster's free CPUs decide how many videos decode at once).
        make_encoder: Builds the backbones on an actor (picklable; it runs there, never here).
        cluster: Which cluster, how many actors.

    Returns:
        What this run did, and how the cluster ran it.

    Raises:
        KeyboardInterrupt: After committing what was finished.
        BackendUnavailableError: Ray is not installed.
        InputError, BackendUnavailableError: An actor could not open the encoder (the model, the backend).
    """
    t0 = time.monotonic()
    emit = on_event or (lambda event: None)
    plan = store.plan(list(paths), options.retry_failed, redo)
    summary, info = RunSummary(skipped=plan.skipped), ClusterRun()
    emit(Planned(len(plan.todo), plan.skipped))
    if plan.todo:
        with connected(cluster) as ray:
            _Driver(ray, cluster, make_encoder, options, info).run(plan.todo, store, sink, emit, summary)
    summary.seconds = time.monotonic() - t0
    return summary, info


class _Driver:
    """Keeps the decoders and the actors busy and hands every result to the one writer."""

    def __init__(self, ray: ModuleType, cluster: Cluster, make_encoder: Callable[[], FeatureEncoder], options: Options,
                 info: ClusterRun) -> None:
        self.ray, self.options = ray, options
        cpus, gpus = resources(ray)
        n = actor_count(cluster, cpus, gpus)
        gpu = 1 <= n <= gpus  # one GPU per actor where there are enough
        actor_cpus = 1.0 if gpu else 0.5
        # an actor pool that takes every CPU starves the decode tasks and hangs (PITFALLS: Ray on 2 cores)
        info.actors, info.decode_slots = n, max(1, int(cpus - n * actor_cpus))
        env = cluster.runtime_env or None
        self.decode_task = ray.remote(num_cpus=1, max_retries=_MAX_TRIES, runtime_env=env)(_decode)
        cls = ray.remote(num_cpus=actor_cpus, num_gpus=1 if gpu else 0, max_restarts=-1, max_task_retries=0,
                         runtime_env=env)(EncoderActor)
        self.actors = [cls.remote(make_encoder, options) for _ in range(n)]
        self.load = [0] * n
        self.slots = info.decode_slots
        # every actor opens its encoder before any video is sent: a bad model fails here, once
        try:
            notes = ray.get([a.start.remote() for a in self.actors])
        except ray.exceptions.RayTaskError as err:
            for a in self.actors:
                ray.kill(a)
            if isinstance(err.cause, JemcError):  # the user's error (model, backend), as one line
                raise err.cause from None
            raise
        info.notes = [f"{line} (each of {n} Ray actors)" for line in notes[0]]

    def run(self, todo: list[Job], store: JobStore, sink: Sink, emit: Callable[[Event], None], summary: RunSummary) -> None:
        pending, flying = deque(todo), []
        done: set[str] = set()  # the one writer takes one result per video, whatever Ray retried
        try:
            while pending or flying:
                # as many decodes running as there are free CPUs (so a task starts when submitted
                # and the watchdog's clock is its own), and decoded videos queued for the actors
                decoding = [f for f in flying if not f.decoded]
                queued = sum(f.decoded and f.encode is None for f in flying)
                while pending and len(decoding) < self.slots and queued < len(self.actors):
                    decoding.append(self._decode(pending.popleft()))
                    flying.append(decoding[-1])
                for f in self._ready([f.decode for f in decoding], {f.decode: f for f in decoding}, block=False):
                    f.decoded = True
                for f in flying:
                    if f.decoded and f.encode is None and min(self.load) < _CALLS_PER_ACTOR:
                        self._encode(f)
                encoding = {f.encode: f for f in flying if f.encode is not None}
                ready = self._ready([f.encode for f in encoding.values()], encoding, block=True)
                for f in [*ready, *(f for f in flying if not f.decoded)]:
                    result = self._outcome(f)
                    if result is None:
                        continue
                    flying.remove(f)
                    if f.job.key in done:
                        continue
                    done.add(f.job.key)
                    deliver(f.job, result, store, sink, emit, summary)
        except KeyboardInterrupt:  # Ctrl-C: keep what is finished
            committed(sink.flush(), emit)
            raise
        finally:
            for a in self.actors:
                self.ray.kill(a)
        committed(sink.flush(), emit)

    def _decode(self, job: Job) -> _Flight:
        o = self.options
        return _Flight(job, self.decode_task.remote(str(job.path), o.sampling, tuple(o.streams), o.time_limit), time.monotonic())

    def _ready(self, refs: list, owners: dict[Any, _Flight], block: bool) -> list[_Flight]:
        """The flights whose ``refs`` are ready (waiting up to 0.2 s for a first one if ``block``)."""
        if not refs:
            if block:
                time.sleep(0.05)
            return []
        if block:
            self.ray.wait(refs, num_returns=1, timeout=0.2, fetch_local=False)
        ready = self.ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)[0]
        return [owners[r] for r in ready]

    def _encode(self, f: _Flight) -> None:
        f.actor = min(range(len(self.load)), key=self.load.__getitem__)
        self.load[f.actor] += 1
        f.encode = self.actors[f.actor].encode.remote(str(f.job.path), f.decode)

    def _outcome(self, f: _Flight) -> VideoResult | None:
        """The result of a video whose encode call is ready (a failure with its reason included),
        or of a decode stuck past the time limit (stopped); None if it goes on (sent again after
        its worker died, or still decoding)."""
        if not f.decoded:
            if time.monotonic() - f.since <= self.options.time_limit + _STUCK_GRACE:
                return None
            self.ray.cancel(f.decode, force=True)
            return VideoResult(0, str(f.job.path), reason=f"timed out: no result for {self.options.time_limit:g} s (stopped)")
        self.load[f.actor] -= 1
        try:
            return self.ray.get(f.encode)
        except self.ray.exceptions.RayActorError as err:  # the actor died (Ray restarts it)
            if f.tries >= _MAX_TRIES:
                return VideoResult(0, str(f.job.path), reason=f"worker died {f.tries} times on it ({short(err)})")
        except self.ray.exceptions.RayError as err:  # a bug on one video must not end the run
            return VideoResult(0, str(f.job.path), reason=f"worker error: {short(err)}")
        f.tries += 1  # send it again, to the restarted actor or another
        self._encode(f)
        return None
