"""From video files to per-video features: decode workers → batched backbones → means.

Torch-free: the backbones come in as a :class:`FeatureEncoder` (torch modules for ``jemc-infer
features``, exported graphs for ``embed``). Frames and clips from different videos share
batches, so the encoder always sees full batches however short the videos are; a video's result
is yielded once all of its samples have been through the encoder.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from jemc_infer.video.decode import DecodeStats, VideoInfo
from jemc_infer.video.pool import decode_many
from jemc_infer.video.sampling import Sampling

STREAMS = ("resnet", "i3d", "audio")  # feature names: object, activity, audio


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


@dataclass
class VideoResult:
    """The outcome for one input path."""

    index: int  # position in the input list
    path: str
    reason: str | None = None  # None when it succeeded
    info: VideoInfo | None = None
    stats: DecodeStats | None = None
    features: dict[str, np.ndarray] = field(default_factory=dict)  # stream → float32 [D] (no "audio" without sound)

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
    done: VideoResult | None = None

    def add(self, name: str, total: np.ndarray, n: int) -> None:
        self.sums[name] = self.sums.get(name, 0) + total.astype(np.float64)
        self.counts[name] = self.counts.get(name, 0) + n


class _Batcher:
    """Collects samples of one stream from many videos into fixed-size encoder batches."""

    def __init__(self, name: str, size: int, encode) -> None:  # noqa: ANN001
        self.name, self.size, self.encode = name, size, encode
        self.items: list[tuple[int, np.ndarray]] = []
        self.n = 0

    def add(self, index: int, samples: np.ndarray) -> None:
        if len(samples):
            self.items.append((index, samples))
            self.n += len(samples)

    def drop(self, index: int) -> None:
        self.items = [(i, s) for i, s in self.items if i != index]
        self.n = sum(len(s) for _, s in self.items)

    def flush(self, accs: dict[int, _Acc], force: bool = False) -> None:
        while self.n >= self.size or (force and self.n):
            take, batch, owners = self.size, [], []
            while take and self.items:
                index, samples = self.items[0]
                part, rest = samples[:take], samples[take:]
                batch.append(part)
                owners.append((index, len(part)))
                take -= len(part)
                if len(rest):
                    self.items[0] = (index, rest)
                else:
                    self.items.pop(0)
            out = self.encode(np.concatenate(batch))
            self.n -= sum(n for _, n in owners)
            start = 0
            for index, n in owners:
                accs[index].add(self.name, out[start:start + n].sum(axis=0), n)
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
        audio_window: Seconds of audio per pass of the audio backbone. SoundNet's receptive field
            spans seconds, so a track up to this long is encoded whole, as the original feature
            extraction did; longer ones in windows of this length (memory stays bounded).
    """
    unknown = set(streams) - set(STREAMS)
    if unknown:
        raise ValueError(f"streams | {sorted(unknown)} | expected a subset of {STREAMS}")
    want = tuple(s in streams for s in STREAMS)
    accs: dict[int, _Acc] = {}
    batchers = {"resnet": _Batcher("resnet", frame_batch, encoder.encode_frames),
                "i3d": _Batcher("i3d", clip_batch, encoder.encode_clips)}
    batchers = {k: v for k, v in batchers.items() if k in streams}

    def encode_audio(acc: _Acc) -> None:
        if acc.audio_n:
            out = encoder.encode_audio(np.concatenate(acc.audio))
            acc.add("audio", out.sum(axis=0), len(out))
            acc.audio, acc.audio_n = [], 0

    def finished() -> Iterator[VideoResult]:
        for index in [i for i, a in accs.items() if a.done is not None and a.pending == 0]:
            acc = accs.pop(index)
            result = acc.done
            assert result is not None
            result.features = {k: (acc.sums[k] / acc.counts[k]).astype(np.float32) for k in acc.sums if acc.counts[k]}
            yield result

    for event in decode_many(paths, sampling, workers=workers, time_limit=time_limit, streams=want):
        acc = accs.setdefault(event.index, _Acc())
        if event.kind == "chunk":
            chunk = event.chunk
            assert chunk is not None
            if want[0]:
                batchers["resnet"].add(event.index, chunk.frames)
                acc.pending += len(chunk.frames)
            if want[1]:
                batchers["i3d"].add(event.index, chunk.clips)
                acc.pending += len(chunk.clips)
            if want[2] and len(chunk.audio):
                acc.audio.append(chunk.audio)
                acc.audio_n += len(chunk.audio)
                if acc.audio_n >= audio_window * sampling.audio_rate:
                    encode_audio(acc)
            for b in batchers.values():
                b.flush(accs)
        elif event.kind == "done":
            encode_audio(acc)
            acc.done = VideoResult(event.index, str(paths[event.index]), info=event.info, stats=event.stats)
        else:
            for b in batchers.values():
                b.drop(event.index)
            accs.pop(event.index)
            yield VideoResult(event.index, str(paths[event.index]), reason=event.reason)
        yield from finished()
    for b in batchers.values():
        b.flush(accs, force=True)
    yield from finished()
