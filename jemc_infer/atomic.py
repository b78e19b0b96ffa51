"""Crash-safe publication of files and directories: build aside, fsync, rename into place.

A crash at any point leaves either the old or the new version, never a half-written one.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from jemc_infer.errors import InputError


def fsync_dir(path: Path) -> None:
    """Persist a directory's entries (the renames inside it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for p in sorted(root.rglob("*")):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    fsync_dir(root)


def replace_dir(tmp: Path, dest: Path, marker: str) -> None:
    """Atomically put directory ``tmp`` at ``dest``, replacing an older one.

    ``dest`` may only be replaced if it is absent, empty, or contains ``marker`` (so a mistyped
    ``--out ~`` never deletes a home directory).

    Raises:
        InputError: If ``dest`` exists and is not something this toolkit wrote.
    """
    check_replaceable(dest, marker)
    _fsync_tree(tmp)
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    fsync_dir(dest.parent)
    shutil.rmtree(old, ignore_errors=True)


def check_replaceable(dest: Path, marker: str) -> None:
    """Raise :class:`InputError` unless ``dest`` is absent, empty, or holds ``marker``."""
    if dest.exists() and not dest.is_dir():
        raise InputError(f"{dest} | exists and is a file | expected a directory path to write")
    if dest.is_dir() and any(dest.iterdir()) and not (dest / marker).exists():
        raise InputError(f"{dest} | is a non-empty directory without {marker} | expected a new path or one this toolkit wrote")


@contextmanager
def staged_dir(dest: Path, marker: str) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``dest``; on success publish it at ``dest``.

    On an exception the temporary directory is removed and ``dest`` is untouched.
    """
    dest = Path(dest)
    check_replaceable(dest, marker)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        replace_dir(tmp, dest, marker)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_file(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)``, fsync, then rename onto ``path`` (atomic replace)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
