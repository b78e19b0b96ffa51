"""The writer lock of a killed writer is taken over even while a process it was starting still
holds the inherited descriptor for a moment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import child_env

from jemc_infer.collection.lock import WriterLock
from jemc_infer.errors import InputError


def test_a_dead_writers_lock_held_by_its_child_a_moment_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    writer = subprocess.Popen([sys.executable, "-m", "support.lock_forker", str(path), "1.0"],
                              stdout=subprocess.PIPE, text=True, env=child_env())
    assert writer.stdout is not None and writer.stdout.readline().strip() == "locked"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    lock = WriterLock(path)  # waits out the child (1 s), then takes over
    try:
        assert lock.messages == [f"took over the lock left by pid {writer.pid} (not running)"]
    finally:
        lock.release()


def test_a_live_writers_lock_is_refused_at_once(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    writer = subprocess.Popen([sys.executable, "-m", "support.lock_holder", str(path)],
                              stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "locked"
        with pytest.raises(InputError, match=f"being written by pid {writer.pid}"):
            WriterLock(path)
    finally:
        writer.kill()
        writer.wait()
