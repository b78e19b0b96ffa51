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
        self._filter: av.filter.Graph | None = None
        self._shape: tuple[int, int, str] | None = None
        self._turns = 0
        self._sar = 1.0

    # -- frame conversion ------------------------------------------------------------------
    # FFmpeg's crop filter (free: it moves pointers) then one scale + RGB conversion straight to
    # crop x crop: 3-7x cheaper than scaling the whole frame and cropping in numpy, and the
    # graph keeps its scaler context between frames.
    def _graph(self, frame: av.VideoFrame) -> None:
        s, info = self.sampling, self.info
        assert info is not None
        sar = self._sar
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

    def _convert(self, frame: av.VideoFrame) -> np.ndarray:
        if self._shape != (frame.width, frame.height, frame.format.name):
            self._graph(frame)  # first frame, or the stream changed size/format mid-way
        self._filter.push(frame)
        img = self._filter.pull().to_ndarray()
        if self._turns:
            img = np.ascontiguousarray(np.rot90(img, self._turns))
        return img

    # -- the decode loop ---------------------------------------------------------------------
    def __iter__(self) -> Iterator[Chunk]:
        s = self.sampling
        want_obj, want_act, want_audio = self.want
        container, self.info = probe(self.path)
        info = self.info
        sar = container.streams.video[0].sample_aspect_ratio
        self._sar = float(sar) if sar else 1.0
        try:
            vs = container.streams.video[0]
            vs.thread_type = "AUTO"  # frame threads: 1.4x faster decoding at 720p (measured; benchmarks/RESULTS.md)
            audio = container.streams.audio[0] if (want_audio and info.has_audio) else None
            if s.num_frames is not None and want_obj:
                duration = info.duration if info.duration else _scan_duration(self.path)
                times = [(k + 0.5) * (duration or 0.0) / s.num_frames for k in range(s.num_frames)]
                obj_line = _Timeline(times=times)
            else:
                obj_line = _Timeline(rate=s.frame_rate)
            act_line = _Timeline(rate=s.clip_fps)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=s.audio_rate) if audio else None

            frames: list[np.ndarray] = []
            frame_times: list[float] = []
            act: list[np.ndarray] = []  # resampled activity frames not yet fully used by clips
            act_offset = 0  # global index of act[0]
            next_clip = 0  # global index where the next clip starts
            clips: list[np.ndarray] = []
            clip_times: list[float] = []
            audio_parts: list[np.ndarray] = []
            prev: av.VideoFrame | None = None
            prev_img: np.ndarray | None = None
            prev_t = 0.0
            t0: float | None = None
            window_end = s.window_seconds
            stats = self.stats

            def image() -> np.ndarray:
                nonlocal prev_img
                if prev_img is None:
                    prev_img = self._convert(prev)  # type: ignore[arg-type]
                return prev_img

            def emit(n_obj: int, n_act: int, at: float) -> None:
                nonlocal act_offset, next_clip
                for _ in range(n_obj):
                    frames.append(image())
                    frame_times.append(at)
                for _ in range(n_act):
                    act.append(image())
                while next_clip + s.clip_len <= act_offset + len(act):
                    start = next_clip - act_offset
                    clips.append(np.stack(act[start:start + s.clip_len]))
                    clip_times.append(next_clip / s.clip_fps)
                    next_clip += s.clip_stride
                    drop = min(next_clip - act_offset, len(act))
                    del act[:drop]
                    act_offset += drop

            def chunk() -> Chunk:
                c = s.crop
                out = Chunk(
                    frames=np.stack(frames) if frames else np.zeros((0, c, c, 3), np.uint8),
                    frame_times=np.array(frame_times, dtype=np.float64),
                    clips=np.stack(clips) if clips else np.zeros((0, s.clip_len, c, c, 3), np.uint8),
                    clip_times=np.array(clip_times, dtype=np.float64),
                    audio=np.concatenate(audio_parts) if audio_parts else np.zeros(0, np.float32),
                )
                stats.object_frames += len(frames)
                stats.clips += len(clips)
                stats.audio_samples += len(out.audio)
                frames.clear(), frame_times.clear(), clips.clear(), clip_times.clear(), audio_parts.clear()
                return out

            def on_video(frame: av.VideoFrame) -> None:
                nonlocal prev, prev_img, prev_t, t0
                t_abs = frame.time if frame.time is not None else None
                if t0 is None:
                    self._turns = int(round((frame.rotation or 0) / 90)) % 4
                    info.rotation = self._turns * 90
                    if self._turns % 2:
                        info.width, info.height = info.height, info.width
                    t0 = t_abs or 0.0
                t = (t_abs - t0) if t_abs is not None else prev_t + 1 / (info.fps or 25.0)
                t = max(t, prev_t)  # timestamps never go backwards on our timeline
                if prev is None:  # targets before the first frame show the first frame
                    prev, prev_img = frame, None
                n_obj = obj_line.due(t) if want_obj else 0
                n_act = act_line.due(t) if want_act else 0
                emit(n_obj, n_act, prev_t)
                if frame is not prev:
                    prev, prev_img = frame, None
                prev_t = t
                stats.decoded_frames += 1

            streams = [vs] + ([audio] if audio is not None else [])
            try:
                for packet in container.demux(*streams):
                    if packet.stream.type == "video":
                        for frame in packet.decode():
                            on_video(frame)
                    elif resampler is not None:
                        try:
                            for af in packet.decode():
                                for rf in resampler.resample(af):
                                    audio_parts.append(rf.to_ndarray().reshape(-1))
                        except av.error.FFmpegError as err:
                            # a broken audio track should not cost the video its other streams
                            stats.warnings.append(f"audio dropped: {_reason(err)}")
                            resampler, audio_parts[:] = None, []
                            info.has_audio = False
                    if prev_t >= window_end:
                        window_end += s.window_seconds
                        yield chunk()
            except av.error.FFmpegError as err:
                if stats.decoded_frames == 0:
                    raise DecodeError(f"no frame could be decoded ({_reason(err)})") from None
                total = f" of {info.duration:.1f} s" if info.duration else ""
                raise DecodeError(f"truncated or corrupt: decoding failed at {prev_t:.1f} s{total} ({_reason(err)})") from None
            if prev is None:
                raise DecodeError("no frame could be decoded (the video stream is empty)")
            if resampler is not None:
                for rf in resampler.resample(None):
                    audio_parts.append(rf.to_ndarray().reshape(-1))

            # the last frame stays on screen for one frame duration
            end = prev_t + 1 / (info.fps or s.clip_fps)
            stats.duration = end
            if info.duration and end < 0.9 * info.duration - 0.5:
                # the demuxer hit the end of the data early: a truncated download or copy
                raise DecodeError(f"truncated: decoded {end:.1f} s of the {info.duration:.1f} s the container declares")
            n_obj = (obj_line.remaining() if s.num_frames is not None else obj_line.due(end)) if want_obj else 0
            n_act = act_line.due(end) if want_act else 0
            if want_obj and n_obj == 0 and stats.object_frames + len(frames) == 0:
                n_obj = 1
            emit(n_obj, n_act, prev_t)
            if want_act and next_clip == 0 and not clips and act:
                # shorter than one clip: pad by repeating the frames in order
                reps = math.ceil(s.clip_len / len(act))
                clips.append(np.stack((act * reps)[: s.clip_len]))
                clip_times.append(0.0)
                stats.padded = True
            if resampler is None and audio is not None:
                info.has_audio = False
            yield chunk()
        finally:
            container.close()
