"""A minimal sink over the collection pipeline, and a child-process entry for the kill -9 tests:
``python -m support.collection_child VIDEOS DB`` (JEMC_CRASH_AT picks where it dies)."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import numpy as np

from jemc_infer.collection import Job, JobStore, Options, run_collection, scan
from jemc_infer.video.pipeline import VideoResult


class TableSink:
    """Commits pooled ``resnet`` features to a ``results`` table with their job records, ``every`` videos at a time."""

    def __init__(self, store: JobStore, every: int = 2) -> None:
        self.store, self.every, self.pending = store, every, []
        store.db.execute("CREATE TABLE IF NOT EXISTS results (path TEXT PRIMARY KEY, resnet BLOB)")

    def add(self, job: Job, result: VideoResult) -> int:
        self.pending.append((job, result))
        return self.flush() if len(self.pending) >= self.every else 0

    def flush(self) -> int:
        pending, self.pending = self.pending, []
        with self.store.db:
            for job, result in pending:
                self.store.upsert(job.record("ok", result.stats.duration if result.stats else None))
                self.store.db.execute("INSERT OR REPLACE INTO results VALUES (?, ?)",
                                      (job.key, result.features["resnet"].astype(np.float32).tobytes()))
        return len(pending)


def run(videos: Path, db_path: Path, every: int = 2) -> None:
    from support.stub_encoder import Stub

    db = sqlite3.connect(db_path)
    store = JobStore(db, db_path.parent)
    store.check_settings({"sampling": Options().sampling.to_json()}, "results", "start over")
    run_collection(scan([videos]).files, store, TableSink(store, every), Stub, Options(workers=1))
    db.close()


if __name__ == "__main__":  # the decoder workers are spawned: they import this module, and must not run it
    run(Path(sys.argv[1]), Path(sys.argv[2]))
