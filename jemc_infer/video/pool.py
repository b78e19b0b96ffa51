"""Decode many videos in worker processes, each file under a time limit.

A hung or pathological file (a stalled network mount, a decoder stuck in a loop, a crash inside
FFmpeg) must cost one file, not the run. So every decode runs in a worker process that the parent
can kill: the worker gives up on a file whose decoding time passes ``time_limit``; the parent kills
a worker that sends nothing for ``time_limit`` seconds *while the parent is waiting on it* (time
the parent spends elsewhere, e.g. running backbones, does not count), and replaces it.

Chunks travel back through one pipe per worker; a worker blocks while its pipe is full, which
bounds memory to about one chunk per worker in flight.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import time
from collections import deque
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from jemc_infer.errors import InputError
from jemc_infer.video.decode import STREAMS, Chunk, DecodeError, DecodeStats, VideoInfo, VideoReader
from jemc_infer.video.sampling import Sampling


@dataclass
class Event:
    """Something that happened to the video at ``index`` of the input list."""

    index: int
    kind: str  # "chunk", "done" or "failed"
    chunk: Chunk | None = None
    info: VideoInfo | None = None
    stats: DecodeStats | None = None
    reason: str | None = None  # why it failed (one line)


def decode_file(index: int, path: str, sampling: Sampling, streams: Collection[str] = STREAMS,
                time_limit: float = 600.0) -> Iterator[Event]:
    """Decode one file in this process: its ``chunk`` events, then one ``done`` or ``failed``.

    Time the consumer holds a chunk (between yields) is not decoding time: only the decoder's own
    time counts against ``time_limit``. A decoder stuck inside one call (a hung mount) is not
    stopped here: :func:`decode_many` kills such a worker from outside.

    Args:
        index: The video's position in the caller's list (``Event.index``).
        path: The file. sampling, streams, time_limit: as for :func:`decode_many`.
    """
    start, waited = time.monotonic(), 0.0
    try:
        reader = VideoReader(path, sampling, object_stream="resnet" in streams, activity_stream="i3d" in streams,
                             audio_stream="audio" in streams)
        for chunk in reader:
            t = time.monotonic()
            yield Event(index, "chunk", chunk=chunk)
            waited += time.monotonic() - t  # held by the consumer: not decoding time
            if time.monotonic() - start - waited > time_limit:
                raise DecodeError(f"timed out: decoding took more than {time_limit:g} s")
        yield Event(index, "done", info=reader.info, stats=reader.stats)
    except DecodeError as err:
        yield Event(index, "failed", reason=str(err))
    except Exception as err:  # noqa: BLE001 - any bug in one file must not end the run
        yield Event(index, "failed", reason=f"decoder error: {type(err).__name__}: {err}")


def _worker(conn: Connection, sampling: Sampling, streams: tuple[str, ...], time_limit: float) -> None:
    """Worker process: decode the files the parent sends, stream chunks back."""
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        index, path = task
        for event in decode_file(index, path, sampling, streams, time_limit):  # time blocked on the parent excluded
            if event.kind == "chunk":
                conn.send(("chunk", index, event.chunk))
            elif event.kind == "done":
                conn.send(("done", index, event.info, event.stats))
            else:
                conn.send(("failed", index, event.reason))


class _Slot:
    """One worker process and the file it is decoding."""

    def __init__(self, ctx: Any, args: tuple) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker, args=(child, *args), daemon=True)
        self.proc.start()
        child.close()
        self.task: tuple[int, str] | None = None
        self.stall = 0.0

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join(timeout=5)
        self.conn.close()


def decode_many(
    paths: Sequence[Path | str],
    sampling: Sampling,
    workers: int = 1,
    time_limit: float = 600.0,
    streams: Collection[str] = STREAMS,
) -> Iterator[Event]:
    """Decode ``paths`` in ``workers`` processes; yield their chunks and outcomes as they come.

    Every path ends with exactly one ``done`` or ``failed`` event; its ``chunk`` events come
    before it, in order. Events of different videos interleave.

    Args:
        paths: Video files.
        sampling: Sampling settings.
        workers: Decoder processes (>= 1).
        time_limit: Seconds of decoding one file may take (waits on the consumer excluded).
        streams: Which of ``resnet`` (object frames), ``i3d`` (activity clips) and ``audio`` to produce.

    Raises:
        InputError: If ``workers`` < 1 or ``time_limit`` is not > 0.
    """
    if workers < 1:
        raise InputError(f"decoder workers | {workers} | expected >= 1")
    if not time_limit > 0:
        raise InputError(f"decode time limit | {time_limit:g} s | expected > 0 seconds")
    ctx = mp.get_context("spawn")  # no fork: the parent may hold torch / CUDA state
    args = (sampling, tuple(streams), time_limit)
    pending = deque((i, str(p)) for i, p in enumerate(paths))
    slots = [_Slot(ctx, args) for _ in range(min(workers, max(1, len(pending))))]
    try:
        while True:
            for slot in slots:
                if slot.task is None and pending:
                    slot.task, slot.stall = pending.popleft(), 0.0
                    slot.conn.send(slot.task)
            busy = [s for s in slots if s.task is not None]
            if not busy:
                return
            t = time.monotonic()
            ready = wait([s.conn for s in busy], timeout=min(1.0, time_limit))
            waited = time.monotonic() - t
            for i, slot in enumerate(slots):
                if slot.task is None:
                    continue
                index = slot.task[0]
                if slot.conn in ready:
                    event = _receive(slot, index)
                    if event is None:  # the worker died: replace it
                        code = slot.proc.exitcode
                        slots[i] = _Slot(ctx, args)
                        slot.kill()
                        event = Event(index, "failed", reason=f"decoder process died (exit code {code})")
                    yield event
                else:
                    slot.stall += waited
                    if slot.stall > time_limit:
                        slot.kill()
                        slots[i] = _Slot(ctx, args)
                        yield Event(index, "failed", reason=f"timed out: no progress for {time_limit:g} s (stopped)")
    finally:
        _close(slots)


def _receive(slot: _Slot, index: int) -> Event | None:
    """The next event from a worker (decoding video ``index``) that has something to read; None
    if it died (EOF)."""
    slot.stall = 0.0
    try:
        msg = slot.conn.recv()
    except (EOFError, OSError):
        return None
    kind = msg[0]
    if kind == "chunk":
        return Event(index, "chunk", chunk=msg[2])
    slot.task = None
    if kind == "done":
        return Event(index, "done", info=msg[2], stats=msg[3])
    return Event(index, "failed", reason=msg[2])


def _close(slots: list[_Slot]) -> None:
    """Stop the workers: idle ones are asked to exit, busy ones (stopped early: they may be
    blocked sending to us) are killed."""
    for slot in slots:
        if slot.task is not None:
            slot.kill()
            continue
        with contextlib.suppress(OSError):
            slot.conn.send(None)
        slot.proc.join(timeout=5)
        if slot.proc.is_alive():
            slot.proc.kill()
        slot.conn.close()
