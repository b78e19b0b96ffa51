"""Videos the synthetic world did not make: shapes drawn by Pillow, tones that are not its sines.

Everything a renderer could leave as a fingerprint differs from ``jemc_infer.train.world``: the
drawing (Pillow's rasteriser, pure RGB colours, no jitter), the frame size (400×300, not one of
the world's), the frame rate (50/s), the file (MPEG-2 video and MPEG-1 layer II audio in an MPEG
program stream), the audio rate (32 kHz) and the sound itself (triangle waves, with odd
harmonics, where the world plays pure sines). A model that learnt the cues and not the renderer
finds them like any world video.
"""

from __future__ import annotations

import fractions
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

WIDTH, HEIGHT, FPS, SAMPLE_RATE, SECONDS = 400, 300, 50, 32_000, 3.0


@dataclass(frozen=True)
class Foreign:
    """One foreign video: what is drawn, on what, and its tone (Hz; None: no audio track)."""

    stem: str
    shape: str  # "circle", "square" or "triangle"
    rgb: tuple[int, int, int]
    background: tuple[int, int, int]
    tone_hz: float | None


VIDEOS = (
    Foreign("pil_red_circle", "circle", (255, 0, 0), (128, 128, 128), 2200.0),  # a high tone
    Foreign("pil_blue_square", "square", (0, 0, 255), (0, 0, 0), 250.0),  # a low tone
    Foreign("pil_yellow_triangle", "triangle", (255, 255, 0), (128, 128, 128), None),
)


def _triangle_wave(hz: float) -> np.ndarray:
    phase = (np.arange(int(SAMPLE_RATE * SECONDS)) / SAMPLE_RATE * hz) % 1.0
    return (0.5 * (4 * np.abs(phase - 0.5) - 1)).astype(np.float32)


def _frame(video: Foreign) -> np.ndarray:
    """The still frame: the shape, 140 px across, in the middle."""
    image = Image.new("RGB", (WIDTH, HEIGHT), video.background)
    draw = ImageDraw.Draw(image)
    cx, cy, r = WIDTH // 2, HEIGHT // 2, 70
    if video.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=video.rgb)
    elif video.shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=video.rgb)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=video.rgb)
    return np.asarray(image)


def write(video: Foreign, path: Path) -> None:
    """An .mpg of ``video``: the shape staying still for three seconds, with its tone."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("mpeg2video", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        wave = None if video.tone_hz is None else _triangle_wave(video.tone_hz)
        audio = None if wave is None else out.add_stream("mp2", rate=SAMPLE_RATE, layout="mono")
        still = _frame(video)
        for k in range(int(FPS * SECONDS)):
            frame = av.VideoFrame.from_ndarray(still, format="rgb24")
            frame.pts, frame.time_base = k, fractions.Fraction(1, FPS)
            out.mux(vs.encode(frame))
        out.mux(vs.encode())
        if audio is None or wave is None:
            return
        n = audio.codec_context.frame_size or 1152
        for start in range(0, len(wave), n):
            chunk = np.pad(wave[start:start + n], (0, max(0, start + n - len(wave))))
            pcm = (chunk * 32767).astype(np.int16).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
            frame.sample_rate, frame.pts = SAMPLE_RATE, start
            out.mux(audio.encode(frame))
        out.mux(audio.encode())


def write_all(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{v.stem}.mpg" for v in VIDEOS]
    for video, path in zip(VIDEOS, paths, strict=True):
        write(video, path)
    return paths
