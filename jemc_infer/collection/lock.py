"""One writer at a time: an flock on a lock file (the kernel releases it when the holder dies,
even by kill -9) plus the holder's pid in the file, so a refusal can name the holder and a
takeover can say whose lock it took."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from pathlib import Path

from jemc_infer.errors import InputError

TAKEOVER_WAIT = 5.0  # seconds a dead writer's lock may stay held by a process it was starting


class WriterLock:
    """The writer lock of a store (an index, a feature work folder); release it when done.

    Raises:
        InputError: Another live process holds it ("… being written by pid N …").
    """

    def __init__(self, path: Path) -> None:
        self.messages: list[str] = []  # for the user: a dead writer's lock taken over
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        previous = os.pread(fd, 200, 0).decode(errors="replace").split()
        # A writer that died this instant may leave its lock, for a moment, with a process it was
        # forking (until that one closes the descriptor it inherited, before exec): wait that out.
        deadline = time.monotonic() + TAKEOVER_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                dead = bool(previous) and previous[0].isdigit() and not _alive(int(previous[0]))
                if dead and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                os.close(fd)
                holder = f"pid {previous[0]}" if previous else "another process"
                raise InputError(f"{path.parent} | being written by {holder} | expected one writer at a time: wait for it "
                                 "to finish, or stop it (a killed writer's lock is taken over automatically)") from None
        if previous and previous[0].isdigit() and int(previous[0]) != os.getpid():
            # flock is free, so the pid left in the file is a writer that died without closing
            state = "not running" if not _alive(int(previous[0])) else "no longer holding it"
            self.messages.append(f"took over the lock left by pid {previous[0]} ({state})")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode(), 0)
        os.fsync(fd)
        self._fd: int | None = fd

    def release(self) -> None:
        """Clear the pid and unlock. Idempotent."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)  # a clean exit leaves no pid behind
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
