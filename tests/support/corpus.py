"""Real video files for the tests, encoded with PyAV from numpy, and a corpus of broken ones.

Frames carry their index: in the ``index`` pattern frame k is a uniform grey of level
``20 + 8 * (k % 28)`` (lossy codecs keep flat frames within a few levels), so a test can tell which
source frame a sample came from. The ``quadrants`` pattern (red | green over blue | white) shows
orientation.
"""

from __future__ import annotations

import fractions
import os
from pathlib import Path

import av
import numpy as np

LEVELS = 28

FORMATS = {  # name → write_video arguments: containers × codecs, with and without audio
    "h264.mp4": dict(codec="libx264", audio="aac"),
    "h264.mkv": dict(codec="libx264", audio="libopus"),
    "vp9.webm": dict(codec="libvpx-vp9", audio="libopus"),
    "mpeg4.avi": dict(codec="mpeg4", audio="libmp3lame"),
    "hevc.mov": dict(codec="libx265", audio="aac"),
    "mjpeg-odd.avi": dict(codec="mjpeg", size=(33, 47), pix_fmt="yuvj444p"),
    "h264-odd-444.mkv": dict(codec="libx264", size=(97, 61), pix_fmt="yuv444p"),
}


def level_of(k: int) -> int:
    return 20 + 8 * (k % LEVELS)


def index_of(img: np.ndarray) -> int:
    """The frame index (mod 28) an ``index``-pattern image shows."""
    return int(round((float(img.mean()) - 20) / 8)) % LEVELS


def _image(k: int, w: int, h: int, pattern: str) -> np.ndarray:
    if pattern == "index":
        return np.full((h, w, 3), level_of(k), np.uint8)
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2, : w // 2] = (255, 0, 0)
    img[: h // 2, w // 2:] = (0, 255, 0)
    img[h // 2:, : w // 2] = (0, 0, 255)
    img[h // 2:, w // 2:] = (255, 255, 255)
    return img


def write_video(path: Path, *, codec: str = "libx264", fps: float | fractions.Fraction = 25, size: tuple[int, int] = (96, 64),
                frames: int = 50, audio: str | None = None, audio_seconds: float | None = None, rotation: int = 0,
                pattern: str = "index", pix_fmt: str = "yuv420p", options: dict | None = None) -> Path:
    """Encode ``frames`` frames of ``size`` (w, h) at ``fps`` (and a 440 Hz tone with ``audio`` codec)."""
    w, h = size
    rate = fractions.Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w", options=options or {}) as out:
        vs = out.add_stream(codec, rate=rate)
        vs.width, vs.height, vs.pix_fmt = w, h, pix_fmt
        if codec == "libx265":
            vs.options = {"x265-params": "log-level=none"}
        if rotation:
            vs.set_display_rotation(rotation)
        ast = None
        if audio:
            ast = out.add_stream(audio, rate=44100 if audio != "libopus" else 48000)
            ast.layout = "stereo"
        audio_blocks = _audio_blocks(ast, audio_seconds if audio_seconds is not None else frames / float(rate)) if ast else iter(())
        pending_audio = next(audio_blocks, None)
        for k in range(frames):
            frame = av.VideoFrame.from_ndarray(_image(k, w, h, pattern), format="rgb24")
            frame.pts, frame.time_base = k, 1 / rate
            for p in vs.encode(frame):
                out.mux(p)
            # interleave: audio up to this frame's time goes in next, as real muxers do
            while pending_audio is not None and pending_audio[0] <= (k + 1) / float(rate):
                for p in ast.encode(pending_audio[1]):
                    out.mux(p)
                pending_audio = next(audio_blocks, None)
        for p in vs.encode():
            out.mux(p)
        while pending_audio is not None:
            for p in ast.encode(pending_audio[1]):
                out.mux(p)
            pending_audio = next(audio_blocks, None)
        if ast is not None:
            for p in ast.encode():
                out.mux(p)
    return path


def _audio_blocks(ast: av.audio.stream.AudioStream, seconds: float):  # noqa: ANN202
    """(start time, frame) of a 440 Hz stereo tone in the encoder's sample format."""
    sr = ast.rate
    fmt = ast.codec_context.format.name
    size = ast.codec_context.frame_size or 1024
    n = int(seconds * sr)
    for start in range(0, n, size):
        t = (start + np.arange(min(size, n - start))) / sr
        block = np.stack([(0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)] * 2)
        if not fmt.endswith("p"):
            block = block.T.reshape(1, -1)
        if fmt.startswith("s16"):
            block = (block * 32767).astype(np.int16)
        elif fmt.startswith("s32"):
            block = (block * 2**31 * 0.99).astype(np.int32)
        af = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format=fmt, layout="stereo")
        af.sample_rate, af.pts = sr, start
        yield start / sr, af


def write_audio_only(path: Path, seconds: float = 1.0) -> Path:
    with av.open(str(path), "w", format="mp4") as out:
        ast = out.add_stream("aac", rate=44100)
        for start in range(0, int(seconds * 44100), 1024):
            af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            af.sample_rate, af.pts = 44100, start
            for p in ast.encode(af):
                out.mux(p)
        for p in ast.encode():
            out.mux(p)
    return path


def broken_corpus(root: Path, good: Path) -> dict[str, Path]:
    """Broken files next to a good faststart mp4 ``good``: name → path."""
    root.mkdir(parents=True, exist_ok=True)
    data = good.read_bytes()
    files = {"zero_bytes.mp4": b"", "random_bytes.mp4": np.random.default_rng(0).bytes(50_000),
             "text.avi": b"this is not a video\n" * 100}
    for frac in (0.05, 0.5, 0.9):
        files[f"truncated_{int(frac * 100)}.mp4"] = data[: int(len(data) * frac)]
    out = {}
    for name, content in files.items():
        (root / name).write_bytes(content)
        out[name] = root / name
    out["audio_only.mp4"] = write_audio_only(root / "audio_only.mp4")
    return out


def make_fifo(path: Path) -> Path:
    """A named pipe nobody writes to: opening it as a video blocks forever (a hung file)."""
    os.mkfifo(path)
    return path
