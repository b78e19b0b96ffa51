"""The one folder scan of a video collection (``embed`` and ``features`` both use it)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

VIDEO_EXTENSIONS = ("mp4", "mkv", "webm", "avi", "mov", "m4v", "mpg", "mpeg", "flv", "wmv", "3gp", "ts", "ogv")


@dataclass(frozen=True)
class Scan:
    """What a scan found."""

    files: list[Path]  # absolute paths of video files, sorted
    problems: list[str] = field(default_factory=list)  # one line per entry that could not be read: reported, not fatal


class _Walker:
    def __init__(self, extensions: Iterable[str]) -> None:
        self.exts = {"." + e.lower().lstrip(".") for e in extensions}
        self.files: set[Path] = set()
        self.problems: list[str] = []
        self.seen_dirs: set[tuple[int, int]] = set()

    def walk(self, d: Path) -> None:
        try:
            st = d.stat()
        except OSError as err:
            self.problems.append(f"{d}: {err.strerror or err}")
            return
        if (st.st_dev, st.st_ino) in self.seen_dirs:
            self.problems.append(f"{d}: symlink loop (already visited), skipped")
            return
        self.seen_dirs.add((st.st_dev, st.st_ino))
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as err:
            self.problems.append(f"{d}: {err.strerror or err}")
            return
        for e in entries:
            self.visit(e)

    def visit(self, e: os.DirEntry[str]) -> None:
        p = Path(e.path)
        try:
            is_dir, is_file = e.is_dir(follow_symlinks=True), e.is_file(follow_symlinks=True)
        except OSError as err:
            self.problems.append(f"{p}: {err.strerror or err}")
            return
        if is_dir:
            self.walk(p)
        elif is_file and p.suffix.lower() in self.exts:
            self.files.add(p.absolute())
        elif e.is_symlink() and not p.exists():
            self.problems.append(f"{p}: broken symlink")


def scan(inputs: Sequence[Path | str], extensions: Iterable[str] = VIDEO_EXTENSIONS) -> Scan:
    """Video files under ``inputs``: files as given, folders recursively (symlinks followed, each
    folder visited once, so a link back up is reported as a loop rather than followed forever).

    Args:
        inputs: Files and folders.
        extensions: Which file names are videos (case-insensitive, with or without the dot).

    Returns:
        The files found (absolute, sorted) and one line per entry that could not be read
        (permission denied, a symlink loop, a broken link, a missing input).
    """
    walker = _Walker(extensions)
    for inp in inputs:
        p = Path(inp)
        if p.is_dir():
            walker.walk(p)
        elif p.is_file():
            walker.files.add(p.absolute())
        else:
            walker.problems.append(f"{p}: no such file or folder")
    return Scan(sorted(walker.files), walker.problems)
