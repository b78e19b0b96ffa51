"""Small real video collections for the service's tests (tests/serve): videos written with PyAV,
embedded with the runtime engines, copied with their index."""

from __future__ import annotations

import shutil
from pathlib import Path

from support.corpus import write_video

FPS = 25
N_VIDEOS = 4


def make_videos(folder: Path, n: int, first: int = 0) -> Path:
    """``n`` 3-second 64×48 videos (frame k a flat grey of level 20 + 8·(k mod 28): support.corpus)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(first, first + n):
        write_video(folder / f"v{i}.mp4", frames=3 * FPS + 5 * i, fps=FPS, size=(64, 48), audio="aac" if i % 2 == 0 else None)
    return folder


def embed_into(videos: Path, index: Path, model: Path) -> None:
    from jemc_infer.collection import Options
    from jemc_infer.embed import embed

    summary = embed([videos], index, model, options=Options(workers=1), flush_every=1)
    assert not summary.run.failed, summary.run.failed


def copy_collection(index: Path, dest: Path) -> Path:
    """A copy of an index and its videos, side by side as the original (the index stores relative paths)."""
    shutil.copytree(index.parent / "videos", dest / "videos", symlinks=True)
    shutil.copytree(index, dest / "ix")
    return dest / "ix"
