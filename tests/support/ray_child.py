"""A driver for the Ray kill -9 test: ``python -m support.ray_child VIDEOS DB`` runs the collection
pipeline on a local Ray cluster of its own (stub backbones, ``TableSink``); JEMC_CRASH_AT picks
where the driver dies."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

from jemc_infer.cluster import Cluster
from jemc_infer.cluster.collection import run_collection_ray
from jemc_infer.collection import JobStore, Options, scan


def run(videos: Path, db_path: Path) -> None:
    from support import TESTS
    from support.collection_child import TableSink
    from support.stub_encoder import Stub

    db = sqlite3.connect(db_path)
    store = JobStore(db, db_path.parent)
    # the stub backbones run on the workers: they need tests/ on their path too
    cluster = Cluster(actors=1, num_cpus=2, runtime_env={"env_vars": {"PYTHONPATH": str(TESTS)}})
    summary, _ = run_collection_ray(scan([videos]).files, store, TableSink(store, every=2), Stub, cluster, Options())
    print(summary.done, summary.skipped, len(summary.failed))
    db.close()


if __name__ == "__main__":
    run(Path(sys.argv[1]), Path(sys.argv[2]))
