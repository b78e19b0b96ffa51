"""One decode pass of a video file feeding all three feature streams (PyAV, torch-free).

:class:`VideoReader` demuxes the first video stream (and the first audio stream), decodes once,
and yields :class:`Chunk`\\ s of at most ``Sampling.window_seconds`` of video: the object-stream
frames, the activity-stream clips and the audio samples that fell in it, each frame with its
timestamp. Memory is bounded by the window, not by the video's length.

Frame selection works on one timeline: for a target time t, the frame used is the one on screen at
t (the last frame that started at or before t). The object stream targets ``k / frame_rate``
(or ``num_frames`` uniform times); the activity stream targets ``j / clip_fps``, which resamples
any native rate to 25 fps by repeating or dropping frames. A frame is converted to RGB once,
whatever number of targets use it.

Every failure is a :class:`DecodeError` whose message is one line a user can act on.
"""

from __future__ import annotations

import fractions
import math
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from jemc_infer.errors import DecodeError
from jemc_infer.video.sampling import Sampling

__all__ = ["Chunk", "DecodeError", "DecodeStats", "VideoInfo", "VideoReader", "probe"]


STREAMS = ("resnet", "i3d", "audio")  # the three streams, by feature name: object frames, activity clips, audio

@dataclass
class VideoInfo:
    """What the container says about a video (display size after rotation and pixel aspect)."""

    path: str
    container: str
    codec: str
    width: int
    height: int
    fps: float | None
    duration: float | None  # seconds, from the container's metadata when it has it
    rotation: int = 0  # degrees counterclockwise applied for display (a multiple of 90)
    has_audio: bool = False
    audio_codec: str | None = None


@dataclass
class Chunk:
    """The samples of one window of a video."""

    frames: np.ndarray  # uint8 [n, crop, crop, 3] object-stream frames
    frame_times: np.ndarray  # float64 [n] seconds since the first frame
    clips: np.ndarray  # uint8 [m, clip_len, crop, crop, 3] activity clips at clip_fps
    clip_times: np.ndarray  # float64 [m] start time of each clip
    audio: np.ndarray  # float32 [k] mono samples at audio_rate, continuing the previous chunk's


@dataclass
class DecodeStats:
    """Counts of one finished decode."""

    decoded_frames: int = 0
    object_frames: int = 0
    clips: int = 0
    audio_samples: int = 0
    duration: float = 0.0  # seconds of video decoded (last frame's start + its duration)
    padded: bool = False  # fewer frames than one clip: the clip was padded by repetition
    warnings: list[str] = field(default_factory=list)


class _Timeline:
    """For ascending target times, the frame on screen at each (see the module docstring)."""

    def __init__(self, rate: float | None = None, times: list[float] | None = None) -> None:
        self._rate, self._times, self._k = rate, times, 0

    def _target(self) -> float | None:
        if self._times is not None:
            return self._times[self._k] if self._k < len(self._times) else None
        return self._k / self._rate  # type: ignore[operator]

    def due(self, before: float) -> int:
        """How many targets fall strictly before ``before`` (they are consumed)."""
        n = 0
        while (t := self._target()) is not None and t < before:
            self._k += 1
            n += 1
        return n

    def remaining(self) -> int:
        """Targets left in a fixed list (a rate has no end: use :meth:`due` with the end time)."""
        return 0 if self._times is None else len(self._times) - self._k


def _fps(stream: av.video.stream.VideoStream) -> float | None:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else None


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _scan_duration(path: str) -> float | None:
    """Duration from the packets' timestamps (no decoding), for containers that do not say."""
    with av.open(path) as c:
        vs = c.streams.video[0]
        first, end = None, None
        for p in c.demux(vs):
            if p.pts is None:
                continue
            first = p.pts if first is None else min(first, p.pts)
            end = max(end or p.pts, p.pts + (p.duration or 0))
        if first is None or vs.time_base is None:
            return None
        return float((end - first) * vs.time_base)


def _reason(err: BaseException) -> str:
    text = getattr(err, "strerror", None) or str(err)
    return " ".join(str(text).split())[:200]


def probe(path: Path | str) -> tuple[av.container.InputContainer, VideoInfo]:
    """Open a video and describe it.

    Returns:
        The open container (the caller closes it) and its :class:`VideoInfo`.

    Raises:
        DecodeError: Missing, empty, unreadable, not a media file, no video stream, or a codec
            FFmpeg cannot decode.
    """
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DecodeError("file not found") from None
    except OSError as err:
        raise DecodeError(f"unreadable ({_reason(err)})") from None
    if stat.S_ISDIR(st.st_mode):
        raise DecodeError("is a directory")
    if stat.S_ISREG(st.st_mode) and st.st_size == 0:
        raise DecodeError("empty file (0 bytes)")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.InvalidDataError:
        raise DecodeError("not a video FFmpeg can read (invalid data: corrupt, truncated, or not a media file)") from None
    except (av.error.FFmpegError, OSError) as err:
        raise DecodeError(f"cannot open ({_reason(err)})") from None
    try:
        if not container.streams.video:
            kind = "audio-only file" if container.streams.audio else "no streams FFmpeg can use"
            raise DecodeError(f"no video stream ({kind})")
        vs = container.streams.video[0]
        ctx = vs.codec_context
        if ctx is None or not ctx.width or not ctx.height:
            raise DecodeError(f"unsupported video codec ({getattr(ctx, 'name', None) or 'unknown'}: FFmpeg cannot decode it here)")
        sar = float(vs.sample_aspect_ratio) if vs.sample_aspect_ratio else 1.0
        audio = container.streams.audio[0] if container.streams.audio else None
        info = VideoInfo(
            path=str(path), container=container.format.name, codec=ctx.name,
            width=max(1, round(ctx.width * sar)), height=ctx.height, fps=_fps(vs),
            duration=_duration(container, vs), has_audio=audio is not None,
            audio_codec=audio.codec_context.name if audio is not None and audio.codec_context else None,
        )
    except DecodeError:
        container.close()
        raise
    return container, info


class _FrameConverter:
    """A decoded frame → uint8 [crop, crop, 3] RGB: displayed shorter side resized, centre-cropped,
    rotated for display.

    FFmpeg's crop filter (free: it moves pointers) then one scale + RGB conversion straight to
    crop x crop: 3-7x cheaper than scaling the whole frame and cropping in numpy, and the graph
    keeps its scaler context between frames.
    """

    def __init__(self, sampling: Sampling, sar: float) -> None:
        self.sampling = sampling
        self.sar = sar  # the stream's sample (pixel) aspect ratio
        self.turns = 0  # quarter turns counterclockwise for display (set from the first frame)
        self._filter: av.filter.Graph | None = None
        self._shape: tuple[int, int, str] | None = None

    def _build(self, frame: av.VideoFrame) -> None:
        s, sar = self.sampling, self.sar
        shorter = min(frame.width * sar, frame.height)  # displayed (pre-rotation) pixels
        side = s.crop * shorter / s.resize  # the crop's side in displayed pixels
        cw = min(frame.width, max(1, round(side / sar)))
        ch = min(frame.height, max(1, round(side)))
        g = av.filter.Graph()
        src = g.add_buffer(width=frame.width, height=frame.height, format=frame.format.name,
                           time_base=fractions.Fraction(1, 90000))
        chain = [src,
                 g.add("crop", f"w={cw}:h={ch}:x={(frame.width - cw) // 2}:y={(frame.height - ch) // 2}"),
                 g.add("scale", f"w={s.crop}:h={s.crop}:flags=bilinear"),
                 g.add("format", "rgb24"),
                 g.add("buffersink")]
        for a, b in zip(chain, chain[1:], strict=False):
            a.link_to(b)
        g.configure()
        self._filter, self._shape = g, (frame.width, frame.height, frame.format.name)

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        if self._shape != (frame.width, frame.height, frame.format.name):
            self._build(frame)  # first frame, or the stream changed size/format mid-way
        assert self._filter is not None
        self._filter.push(frame)
        img = self._filter.pull().to_ndarray()
        if self.turns:
            img = np.ascontiguousarray(np.rot90(img, self.turns))
        return img


class _DecodePass:
    """The state of one decode pass: the frame on screen, where each stream's targets stand, and
    the samples collected since the last chunk.

    Video frames go to :meth:`add_frame`, audio packets to :meth:`add_audio`; :meth:`chunk` hands
    over what was collected, :meth:`finish` the last of it once the stream has ended.
    """

    def __init__(self, sampling: Sampling, info: VideoInfo, stats: DecodeStats, convert: _FrameConverter,
                 objects: _Timeline | None, activity: _Timeline | None,
                 resampler: av.AudioResampler | None) -> None:
        self.s, self.info, self.stats, self.convert = sampling, info, stats, convert
        self.objects, self.activity = objects, activity  # None: the stream is not wanted
        self.resampler = resampler  # None: no audio wanted, none in the file, or dropped as broken
        self.frames: list[np.ndarray] = []
        self.frame_times: list[float] = []
        self.act: list[np.ndarray] = []  # resampled activity frames not yet fully used by clips
        self.act_offset = 0  # global index of act[0]
        self.next_clip = 0  # global index where the next clip starts
        self.clips: list[np.ndarray] = []
        self.clip_times: list[float] = []
        self.audio_parts: list[np.ndarray] = []
        self.shown: av.VideoFrame | None = None  # the frame on screen at time ``shown_t``
        self.shown_img: np.ndarray | None = None  # its converted image, once a target used it
        self.shown_t = 0.0  # seconds since the first frame
        self.t0: float | None = None  # the first frame's timestamp

    def _image(self) -> np.ndarray:
        if self.shown_img is None:  # converted once, whatever number of targets use it
            self.shown_img = self.convert(self.shown)  # type: ignore[arg-type]
        return self.shown_img

    def _emit(self, n_obj: int, n_act: int, at: float) -> None:
        """Sample the frame on screen for ``n_obj`` object and ``n_act`` activity targets; cut
        every clip that is complete."""
        s = self.s
        for _ in range(n_obj):
            self.frames.append(self._image())
            self.frame_times.append(at)
        for _ in range(n_act):
            self.act.append(self._image())
        while self.next_clip + s.clip_len <= self.act_offset + len(self.act):
            start = self.next_clip - self.act_offset
            self.clips.append(np.stack(self.act[start:start + s.clip_len]))
            self.clip_times.append(self.next_clip / s.clip_fps)
            self.next_clip += s.clip_stride
            drop = min(self.next_clip - self.act_offset, len(self.act))
            del self.act[:drop]
            self.act_offset += drop

    def _first_frame(self, frame: av.VideoFrame, t_abs: float | None) -> None:
        info = self.info
        self.convert.turns = int(round((frame.rotation or 0) / 90)) % 4
        info.rotation = self.convert.turns * 90
        if self.convert.turns % 2:
            info.width, info.height = info.height, info.width
        self.t0 = t_abs or 0.0

    def add_frame(self, frame: av.VideoFrame) -> None:
        """A decoded video frame: the targets before its start show the previous frame."""
        t_abs = frame.time if frame.time is not None else None
        if self.t0 is None:
            self._first_frame(frame, t_abs)
        t = (t_abs - self.t0) if t_abs is not None else self.shown_t + 1 / (self.info.fps or 25.0)
        t = max(t, self.shown_t)  # timestamps never go backwards on our timeline
        if self.shown is None:  # targets before the first frame show the first frame
            self.shown, self.shown_img = frame, None
        n_obj = self.objects.due(t) if self.objects is not None else 0
        n_act = self.activity.due(t) if self.activity is not None else 0
        self._emit(n_obj, n_act, self.shown_t)
        if frame is not self.shown:
            self.shown, self.shown_img = frame, None
        self.shown_t = t
        self.stats.decoded_frames += 1

    def add_audio(self, packet: av.Packet) -> None:
        """An audio packet, resampled to mono ``audio_rate``; a broken track is dropped with a warning."""
        if self.resampler is None:
            return
        try:
            for af in packet.decode():
                for rf in self.resampler.resample(af):
                    self.audio_parts.append(rf.to_ndarray().reshape(-1))
        except av.error.FFmpegError as err:
            # a broken audio track should not cost the video its other streams
            self.stats.warnings.append(f"audio dropped: {_reason(err)}")
            self.resampler, self.audio_parts[:] = None, []
            self.info.has_audio = False

    def chunk(self) -> Chunk:
        """Hand over the samples collected since the last chunk."""
        s, c, stats = self.s, self.s.crop, self.stats
        out = Chunk(
            frames=np.stack(self.frames) if self.frames else np.zeros((0, c, c, 3), np.uint8),
            frame_times=np.array(self.frame_times, dtype=np.float64),
            clips=np.stack(self.clips) if self.clips else np.zeros((0, s.clip_len, c, c, 3), np.uint8),
            clip_times=np.array(self.clip_times, dtype=np.float64),
            audio=np.concatenate(self.audio_parts) if self.audio_parts else np.zeros(0, np.float32),
        )
        stats.object_frames += len(self.frames)
        stats.clips += len(self.clips)
        stats.audio_samples += len(out.audio)
        for samples in (self.frames, self.frame_times, self.clips, self.clip_times, self.audio_parts):
            samples.clear()
        return out

    def failure(self, err: av.error.FFmpegError) -> DecodeError:
        """The error for FFmpeg failing mid-stream."""
        if self.stats.decoded_frames == 0:
            return DecodeError(f"no frame could be decoded ({_reason(err)})")
        total = f" of {self.info.duration:.1f} s" if self.info.duration else ""
        return DecodeError(f"truncated or corrupt: decoding failed at {self.shown_t:.1f} s{total} ({_reason(err)})")

    def finish(self, fixed_objects: bool) -> Chunk:
        """The last chunk, after the stream ended: the targets up to the last frame's end, a
        padded clip for a video shorter than one clip.

        Args:
            fixed_objects: The object targets are a fixed list (``num_frames``): all are due.
        """
        s, info, stats = self.s, self.info, self.stats
        if self.shown is None:
            raise DecodeError("no frame could be decoded (the video stream is empty)")
        if self.resampler is not None:
            for rf in self.resampler.resample(None):
                self.audio_parts.append(rf.to_ndarray().reshape(-1))
        # the last frame stays on screen for one frame duration
        end = self.shown_t + 1 / (info.fps or s.clip_fps)
        stats.duration = end
        if info.duration and end < 0.9 * info.duration - 0.5:
            # the demuxer hit the end of the data early: a truncated download or copy
            raise DecodeError(f"truncated: decoded {end:.1f} s of the {info.duration:.1f} s the container declares")
        n_obj = n_act = 0
        if self.objects is not None:
            n_obj = self.objects.remaining() if fixed_objects else self.objects.due(end)
            if n_obj == 0 and stats.object_frames + len(self.frames) == 0:
                n_obj = 1
        if self.activity is not None:
            n_act = self.activity.due(end)
        self._emit(n_obj, n_act, self.shown_t)
        if self.activity is not None and self.next_clip == 0 and not self.clips and self.act:
            # shorter than one clip: pad by repeating the frames in order
            reps = math.ceil(s.clip_len / len(self.act))
            self.clips.append(np.stack((self.act * reps)[: s.clip_len]))
            self.clip_times.append(0.0)
            stats.padded = True
        return self.chunk()


class VideoReader:
    """Decode a video once into chunks for the object, activity and audio streams.

    Args:
        path: The video file.
        sampling: Sampling settings.
        object_stream, activity_stream, audio_stream: Which streams to produce (all by default).

    After iterating, ``info`` describes the video and ``stats`` counts what was produced.

    Raises (while iterating):
        DecodeError: See :func:`probe`; also a file that fails mid-stream ("truncated or corrupt
            at 3.2 s of 10.0 s …") or yields no frame.
    """

    def __init__(self, path: Path | str, sampling: Sampling, object_stream: bool = True,
                 activity_stream: bool = True, audio_stream: bool = True) -> None:
        self.path = str(path)
        self.sampling = sampling
        self.want = (object_stream, activity_stream, audio_stream)
        self.info: VideoInfo | None = None
        self.stats = DecodeStats()

    def __iter__(self) -> Iterator[Chunk]:
        container, self.info = probe(self.path)
        try:
            yield from self._decode(container, self.info)
        finally:
            container.close()

    def _object_timeline(self, info: VideoInfo) -> _Timeline:
        s = self.sampling
        if s.num_frames is None:
            return _Timeline(rate=s.frame_rate)
        duration = info.duration if info.duration else _scan_duration(self.path)
        return _Timeline(times=[(k + 0.5) * (duration or 0.0) / s.num_frames for k in range(s.num_frames)])

    def _decode(self, container: av.container.InputContainer, info: VideoInfo) -> Iterator[Chunk]:
        s = self.sampling
        want_obj, want_act, want_audio = self.want
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"  # frame threads: 1.4x faster decoding at 720p (measured; benchmarks/RESULTS.md)
        audio = container.streams.audio[0] if (want_audio and info.has_audio) else None
        sar = float(vs.sample_aspect_ratio) if vs.sample_aspect_ratio else 1.0
        state = _DecodePass(
            s, info, self.stats, _FrameConverter(s, sar),
            objects=self._object_timeline(info) if want_obj else None,
            activity=_Timeline(rate=s.clip_fps) if want_act else None,
            resampler=av.AudioResampler(format="flt", layout="mono", rate=s.audio_rate) if audio else None,
        )
        window_end = s.window_seconds
        try:
            for packet in container.demux(*([vs] + ([audio] if audio is not None else []))):
                if packet.stream.type == "video":
                    for frame in packet.decode():
                        state.add_frame(frame)
                else:
                    state.add_audio(packet)
                if state.shown_t >= window_end:
                    window_end += s.window_seconds
                    yield state.chunk()
        except av.error.FFmpegError as err:
            raise state.failure(err) from None
        last = state.finish(fixed_objects=s.num_frames is not None)
        if state.resampler is None and audio is not None:
            info.has_audio = False
        yield last
