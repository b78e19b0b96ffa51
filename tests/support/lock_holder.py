"""Hold a store's writer lock until killed (the lock tests): ``python -m support.lock_holder LOCKFILE``
prints ``locked`` once it holds it."""

import sys
import time
from pathlib import Path

from jemc_infer.collection.lock import WriterLock

if __name__ == "__main__":
    lock = WriterLock(Path(sys.argv[1]))
    print("locked", flush=True)
    time.sleep(60)
