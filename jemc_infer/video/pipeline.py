"""From video files to per-video features: decode workers → batched backbones → means.

Torch-free: the backbones come in as a :class:`FeatureEncoder` (torch modules for ``jemc-infer
features``, exported graphs for ``embed``). Frames and clips from different videos share
batches, so the encoder always sees full batches however short the videos are; a video's result
is yielded once all of its samples have been through the encoder.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from jemc_infer.errors import InputError
from jemc_infer.video.decode import STREAMS, Chunk, DecodeStats, VideoInfo
from jemc_infer.video.pool import Event, decode_many
from jemc_infer.video.sampling import Sampling


class FeatureEncoder(Protocol):
    """The three backbones, numpy in and out. Each normalises its input as its backbone expects
    (``resnet_input`` / ``i3d_input`` in numpy, or the same on the device)."""

    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        """uint8 [n, H, W, 3] RGB → float32 [n, D_object]."""
        ...

    def encode_clips(self, clips: np.ndarray) -> np.ndarray:
        """uint8 [m, T, H, W, 3] RGB → float32 [m, D_activity]."""
        ...

    def encode_audio(self, wave: np.ndarray) -> np.ndarray:
        """float32 [L] mono waveform → float32 [T, D_audio] (T >= 1)."""
        ...


@dataclass(frozen=True)
class Windows:
    """One stream's per-window outputs for a video, in time order: what the pooled feature is the
    mean of (object: one row per sampled frame; activity: per clip; audio: per backbone time step)."""

    start: np.ndarray  # float64 [n] seconds from the first frame
    end: np.ndarray  # float64 [n]
    features: np.ndarray  # float32 [n, D]


@dataclass
class VideoResult:
    """The outcome for one input path."""

    index: int  # position in the input list
    path: str
    reason: str | None = None  # None when it succeeded
    info: VideoInfo | None = None
    stats: DecodeStats | None = None
    features: dict[str, np.ndarray] = field(default_factory=dict)  # stream → float32 [D] (no "audio" without sound)
    windows: dict[str, Windows] = field(default_factory=dict)  # stream → per-window outputs (when asked for)

    @property
    def ok(self) -> bool:
        return self.reason is None


@dataclass
class _Acc:
    sums: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    pending: int = 0  # samples waiting in a batch
    audio: list[np.ndarray] = field(default_factory=list)  # samples not yet through the audio backbone
    audio_n: int = 0
    audio_start: float = 0.0  # seconds: where the audio not yet encoded starts
    done: VideoResult | None = None
    parts: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] | None = None  # stream → [(start, end, outputs)]

    def add(self, name: str, outputs: np.ndarray, start: np.ndarray, end: np.ndarray) -> None:
        self.sums[name] = self.sums.get(name, 0) + outputs.sum(axis=0).astype(np.float64)
        self.counts[name] = self.counts.get(name, 0) + len(outputs)
        if self.parts is not None:
            self.parts.setdefault(name, []).append((start, end, outputs.astype(np.float32)))

    def windows(self, duration: float) -> dict[str, Windows]:
        out = {}
        for name, parts in (self.parts or {}).items():
            start, end, feats = (np.concatenate(x) for x in zip(*parts, strict=True))
            order = np.argsort(start, kind="stable")
            start, end, feats = start[order], end[order], feats[order]
            if name == "resnet":  # a sampled frame stands for the time until the next one
                end = np.append(start[1:], max(duration, start[-1]))
            out[name] = Windows(start, np.minimum(end, max(duration, float(start[-1]))), feats)
        return out


class _Batcher:
    """Collects samples of one stream from many videos into fixed-size encoder batches."""

    def __init__(self, name: str, size: int, encode, span: float) -> None:  # noqa: ANN001
        self.name, self.size, self.encode, self.span = name, size, encode, span  # span: seconds one sample covers
        self.items: list[tuple[int, np.ndarray, np.ndarray]] = []  # (video, samples, their start times)
        self.n = 0

    def add(self, index: int, samples: np.ndarray, times: np.ndarray) -> None:
        if len(samples):
            self.items.append((index, samples, times))
            self.n += len(samples)

    def drop(self, index: int) -> None:
        self.items = [item for item in self.items if item[0] != index]
        self.n = sum(len(item[1]) for item in self.items)

    def flush(self, accs: dict[int, _Acc], force: bool = False) -> None:
        while self.n >= self.size or (force and self.n):
            take, batch, owners = self.size, [], []
            while take and self.items:
                index, samples, times = self.items[0]
                batch.append(samples[:take])
                owners.append((index, times[:take]))
                if len(samples) > take:
                    self.items[0] = (index, samples[take:], times[take:])
                else:
                    self.items.pop(0)
                take -= len(batch[-1])
            out = self.encode(np.concatenate(batch))
            self.n -= sum(len(t) for _, t in owners)
            start = 0
            for index, times in owners:
                n = len(times)
                accs[index].add(self.name, out[start:start + n], times, times + self.span)
                accs[index].pending -= n
                start += n


def extract_features(
    paths: Sequence[Path | str],
    sampling: Sampling,
    encoder: FeatureEncoder,
    streams: Sequence[str] = STREAMS,
    workers: int = 1,
    time_limit: float = 600.0,
    frame_batch: int = 32,
    clip_batch: int = 4,
    audio_window: float = 60.0,
    keep_windows: bool = False,
) -> Iterator[VideoResult]:
    """Yield one :class:`VideoResult` per path, in completion order.

    Features are means over the video: of the object backbone over its frames, of the activity
    backbone over its clips, and of the audio backbone over its time steps.

    Args:
        paths: Video files.
        sampling: How to sample them.
        encoder: The backbones.
        streams: Which of ``resnet``, ``i3d``, ``audio`` to compute.
        workers: Decoder processes.
        time_limit: Seconds of decoding per file before it is stopped and reported.
        frame_batch: Frames per object-backbone batch. ``clip_batch`` likewise.
        audio_window: Seconds of audio per audio-backbone pass: SoundNet's receptive field spans
            seconds, so a track this long is encoded whole (as the original extraction did),
            longer ones in windows (memory stays bounded).
        keep_windows: Also return each window's output with its time (``VideoResult.windows``).

    Raises:
        InputError: An unknown stream name.
    """
    unknown = set(streams) - set(STREAMS)
    if unknown:
        raise InputError(f"streams | {sorted(unknown)} | expected a subset of {STREAMS}")
    events = decode_many(paths, sampling, workers=workers, time_limit=time_limit, streams=streams)
    yield from pool_events(events, paths, sampling, encoder, streams, frame_batch, clip_batch, audio_window, keep_windows)


def pool_events(
    events: Iterable[Event],
    paths: Sequence[Path | str],
    sampling: Sampling,
    encoder: FeatureEncoder,
    streams: Sequence[str] = STREAMS,
    frame_batch: int = 32,
    clip_batch: int = 4,
    audio_window: float = 60.0,
    keep_windows: bool = False,
) -> Iterator[VideoResult]:
    """The second half of :func:`extract_features`: decoded events (``decode_many``, or
    ``decode_file`` run elsewhere, e.g. in a Ray task) → one :class:`VideoResult` per video, in
    completion order. ``event.index`` indexes ``paths``; the other arguments are as for
    :func:`extract_features`."""
    pooler = _Pooler(paths, sampling, encoder, streams, frame_batch, clip_batch, audio_window, keep_windows)
    for event in events:
        yield from pooler.on_event(event)
    yield from pooler.finish()


class _Pooler:
    """Feeds decoded chunks of many videos through shared backbone batches and pools each video."""

    def __init__(self, paths: Sequence[Path | str], sampling: Sampling, encoder: FeatureEncoder, streams: Sequence[str],
                 frame_batch: int, clip_batch: int, audio_window: float, keep_windows: bool) -> None:
        self.paths, self.sampling, self.encoder, self.keep = paths, sampling, encoder, keep_windows
        self.audio_samples = int(audio_window * sampling.audio_rate)
        self.with_audio = "audio" in streams
        self.accs: dict[int, _Acc] = {}
        clip_span = sampling.clip_len / sampling.clip_fps
        batchers = {"resnet": _Batcher("resnet", frame_batch, encoder.encode_frames, 0.0),
                    "i3d": _Batcher("i3d", clip_batch, encoder.encode_clips, clip_span)}
        self.batchers = {k: v for k, v in batchers.items() if k in streams}

    def on_event(self, event: Event) -> Iterator[VideoResult]:
        acc = self.accs.setdefault(event.index, _Acc(parts={} if self.keep else None))
        if event.kind == "chunk" and event.chunk is not None:
            self._add_chunk(event.index, acc, event.chunk)
        elif event.kind == "done":
            self._encode_audio(acc)
            acc.done = VideoResult(event.index, str(self.paths[event.index]), info=event.info, stats=event.stats)
        else:
            for b in self.batchers.values():
                b.drop(event.index)
            self.accs.pop(event.index)
            yield VideoResult(event.index, str(self.paths[event.index]), reason=event.reason)
        yield from self._finished()

    def finish(self) -> Iterator[VideoResult]:
        for b in self.batchers.values():
            b.flush(self.accs, force=True)
        yield from self._finished()

    def _add_chunk(self, index: int, acc: _Acc, chunk: Chunk) -> None:
        for name, samples, times in (("resnet", chunk.frames, chunk.frame_times), ("i3d", chunk.clips, chunk.clip_times)):
            if name in self.batchers:
                self.batchers[name].add(index, samples, times)
                acc.pending += len(samples)
        if self.with_audio and len(chunk.audio):
            acc.audio.append(chunk.audio)
            acc.audio_n += len(chunk.audio)
            if acc.audio_n >= self.audio_samples:
                self._encode_audio(acc)
        for b in self.batchers.values():
            b.flush(self.accs)

    def _encode_audio(self, acc: _Acc) -> None:
        if not acc.audio_n:
            return
        out = self.encoder.encode_audio(np.concatenate(acc.audio))
        seconds = acc.audio_n / self.sampling.audio_rate
        edges = acc.audio_start + seconds * np.arange(len(out) + 1) / len(out)  # the time steps split the window evenly
        acc.add("audio", out, edges[:-1], edges[1:])
        acc.audio, acc.audio_n, acc.audio_start = [], 0, acc.audio_start + seconds

    def _finished(self) -> Iterator[VideoResult]:
        for index in [i for i, a in self.accs.items() if a.done is not None and a.pending == 0]:
            acc = self.accs.pop(index)
            result = acc.done
            if result is None:  # unreachable: filtered above (keeps type checkers content)
                continue
            result.features = {k: (acc.sums[k] / acc.counts[k]).astype(np.float32) for k in acc.sums if acc.counts[k]}
            if self.keep:
                result.windows = acc.windows(result.stats.duration if result.stats else 0.0)
            yield result
