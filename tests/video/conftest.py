"""Fixtures: the test videos, written once per session with PyAV."""

from __future__ import annotations

import fractions
from pathlib import Path

import pytest
from support.corpus import FORMATS, broken_corpus, write_video


@pytest.fixture(scope="session")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    out = {name: write_video(root / name, **kw) for name, kw in FORMATS.items()}
    out["fps60.mp4"] = write_video(root / "fps60.mp4", fps=60, frames=120)
    out["ntsc.mp4"] = write_video(root / "ntsc.mp4", fps=fractions.Fraction(30000, 1001), frames=90)
    out["fps7.5.mkv"] = write_video(root / "fps7.5.mkv", fps=fractions.Fraction(15, 2), frames=20)
    out["one-frame.mp4"] = write_video(root / "one-frame.mp4", frames=1)
    out["five-frames.mp4"] = write_video(root / "five-frames.mp4", frames=5)
    out["long.mkv"] = write_video(root / "long.mkv", fps=10, frames=600, size=(64, 48), audio="aac")
    for rot in (0, 90, 180, 270):
        out[f"rot{rot}.mp4"] = write_video(root / f"rot{rot}.mp4", frames=3, size=(128, 96), pattern="quadrants", rotation=rot)
    out["faststart.mp4"] = write_video(root / "faststart.mp4", frames=100, audio="aac", options={"movflags": "faststart"})
    return out


@pytest.fixture(scope="session")
def broken(videos: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return broken_corpus(tmp_path_factory.mktemp("broken"), videos["faststart.mp4"])
