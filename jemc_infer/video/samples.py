"""Sample videos made with PyAV: moving textured scenes at realistic bitrates, with a tone.

For benchmarks and the demo (``make demo`` has no other videos to index offline).
"""

from __future__ import annotations

import fractions
from pathlib import Path

import av
import numpy as np


def write_clip(path: Path, seconds: float, size: tuple[int, int] = (640, 360), fps: int = 25,
               bitrate: int = 2_000_000, audio: bool = True, seed: int = 0) -> Path:
    """An h264 mp4 (+ AAC) of a drifting textured scene; ~``bitrate`` bits/s like a web video."""
    if path.exists():
        return path
    w, h = size
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, (h * 2, w * 2, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    tmp = path.with_name(path.name + ".part")
    with av.open(str(tmp), "w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt, vs.bit_rate = w, h, "yuv420p", bitrate
        vs.options = {"preset": "veryfast"}
        ast = out.add_stream("aac", rate=44100) if audio else None
        n = int(seconds * fps)
        for k in range(n):
            dx, dy = (3 * k) % w, (2 * k) % h
            img = texture[dy:dy + h, dx:dx + w].copy()
            img[..., 0] = ((xx + 4 * k) % 256).astype(np.uint8) // 2 + img[..., 0] // 2
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = k, fractions.Fraction(1, fps)
            for p in vs.encode(frame):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        if ast is not None:
            sr, pts = 44100, 0
            for start in range(0, int(seconds * sr), 1024):
                t = (start + np.arange(1024)) / sr
                wave = (0.2 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(1024)).astype(np.float32)
                af = av.AudioFrame.from_ndarray(wave[None], format="fltp", layout="mono")
                af.sample_rate, af.pts = sr, pts
                pts += 1024
                for p in ast.encode(af):
                    out.mux(p)
            for p in ast.encode():
                out.mux(p)
    tmp.rename(path)
    return path
