"""Take a store's writer lock, then fork a process that keeps the inherited descriptor for
``SECONDS`` (as a process being started holds it until exec): ``python -m support.lock_forker
LOCKFILE SECONDS`` prints ``locked`` once both exist, then sleeps until killed."""

import os
import sys
import time
from pathlib import Path

from jemc_infer.collection.lock import WriterLock

if __name__ == "__main__":
    lock = WriterLock(Path(sys.argv[1]))
    if os.fork() == 0:  # the child: holds the lock's descriptor (and so the flock) a while, then goes
        time.sleep(float(sys.argv[2]))
        os._exit(0)
    print("locked", flush=True)
    time.sleep(60)
