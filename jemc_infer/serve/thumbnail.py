"""A video's frame at a time, as a JPEG, with PyAV alone (its MJPEG encoder: no Pillow, no torch)."""

from __future__ import annotations

import fractions
from pathlib import Path
from typing import Any

import av

from jemc_infer.errors import InputError
from jemc_infer.video.decode import DecodeError, probe


def video_details(path: Path) -> dict[str, Any]:
    """Container, codecs, display size, fps and duration of a video.

    Raises:
        InputError: The file cannot be opened as a video (the reason in the message).
    """
    try:
        container, info = probe(path)
    except DecodeError as err:
        raise InputError(f"{path.name} | {err} | expected a video FFmpeg can read") from None
    container.close()
    return {"container": info.container, "codec": info.codec, "width": info.width, "height": info.height, "fps": info.fps,
            "duration": info.duration, "has_audio": info.has_audio, "audio_codec": info.audio_codec}


def frame_jpeg(path: Path, t: float, width: int = 320) -> bytes:
    """The frame shown at ``t`` seconds (since the first frame) as a JPEG at most ``width`` wide.

    Seeks to the keyframe before ``t`` and decodes forward to the frame whose display interval
    holds ``t`` (the last frame when ``t`` is past the end).

    Raises:
        InputError: The file cannot be decoded, or holds no frame.
    """
    try:
        container, _ = probe(path)
    except DecodeError as err:
        raise InputError(f"{path.name} | {err} | expected a video FFmpeg can read") from None
    try:
        with container:
            frame = _frame_at(container, t)
    except av.error.FFmpegError as err:
        raise InputError(f"{path.name} | undecodable near {t:g}s ({err}) | expected a video FFmpeg can read") from None
    if frame is None:
        raise InputError(f"{path.name} | no frame to show | expected a video with at least one frame")
    return _encode_jpeg(frame, width)


def _frame_at(container: av.container.InputContainer, t: float) -> av.VideoFrame | None:
    vs = container.streams.video[0]
    tb = vs.time_base or fractions.Fraction(1, 1_000_000)
    start = float(vs.start_time * tb) if vs.start_time is not None else 0.0
    target = start + max(t, 0.0)
    if t > 0:
        container.seek(int(target / tb), stream=vs, backward=True, any_frame=False)
    last = None
    for frame in container.decode(vs):
        if frame.time is None:
            last = last or frame
            continue
        if frame.time > target + 1e-6:  # the previous frame was on screen at t
            return last or frame
        last = frame
    return last


def _encode_jpeg(frame: av.VideoFrame, width: int) -> bytes:
    w, h = frame.width, frame.height
    if w > width:
        w, h = width, max(2, round(h * width / w))
    w, h = max(2, w - w % 2), max(2, h - h % 2)  # 4:2:0 wants even sides
    img = frame.reformat(width=w, height=h, format="yuvj420p")
    enc = av.CodecContext.create("mjpeg", "w")
    enc.width, enc.height, enc.pix_fmt = w, h, "yuvj420p"
    enc.time_base = fractions.Fraction(1, 25)
    img.pts = 0
    packets = list(enc.encode(img)) + list(enc.encode(None))
    return b"".join(bytes(p) for p in packets)
