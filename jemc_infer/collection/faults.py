"""Named crash points for the kill -9 tests: ``JEMC_CRASH_AT=NAME:N`` kills this process with
SIGKILL the N-th time the code passes ``crash_point(NAME)``. Unset (always, outside those tests)
it costs one comparison. With ``JEMC_CRASH_ONCE=FILE`` as well, only the process that creates
FILE dies: a worker that is restarted (Ray's actors) runs on the second time. The points sit where a crash is most dangerous: after a shard file is
written but before it is renamed, after the rename but before the manifest commits it, inside a
job-store transaction, and after each committed batch.
"""

from __future__ import annotations

import os
import signal

_TARGET = os.environ.get("JEMC_CRASH_AT", "")
_ONCE = os.environ.get("JEMC_CRASH_ONCE", "")
_SEEN: dict[str, int] = {}


def crash_point(name: str) -> None:
    """SIGKILL this process if ``JEMC_CRASH_AT`` names this point and its count is reached."""
    if not _TARGET:
        return
    point, _, count = _TARGET.partition(":")
    if point != name:
        return
    _SEEN[name] = _SEEN.get(name, 0) + 1
    if _SEEN[name] >= int(count or 1):
        if _ONCE:
            try:
                os.close(os.open(_ONCE, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return  # another process died here already
        os.kill(os.getpid(), signal.SIGKILL)
