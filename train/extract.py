"""``jemc-infer features``: a folder of videos + annotations → a feature dataset, resumably.

Configuration plus a sink over the collection pipeline (``jemc_infer.collection``): the job store
and each finished video's features live in ``<out>.work/status.sqlite`` (one writer at a time),
committed as each video finishes, so a killed run loses at most the videos in flight and a rerun
skips every finished one. When all are done, the feature dataset is written (atomically) from
it: videos that failed or have no file get zero features with mask False, and videos without
sound get a False audio mask.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jemc_infer.collection import Event, Job, JobStore, Options, run_collection, scan
from jemc_infer.collection.lock import WriterLock
from jemc_infer.errors import InputError
from jemc_infer.train.data import FeatureDataset, write_dataset
from jemc_infer.train.formats import Annotations
from jemc_infer.video.pipeline import STREAMS, FeatureEncoder, VideoResult
from jemc_infer.video.sampling import Sampling

STATUS_FILE = "status.sqlite"
WORK_FORMAT = "jemc-features-work/2"
_RESULTS = """
CREATE TABLE IF NOT EXISTS results (
    path TEXT PRIMARY KEY, frames INTEGER, clips INTEGER, has_audio INTEGER, warnings TEXT,
    resnet BLOB, i3d BLOB, audio BLOB);
"""


def work_dir_for(out: Path) -> Path:
    """Where ``jemc-infer features --out OUT`` keeps its per-video status."""
    return out.with_name(out.name + ".work")


def videos_by_stem(root: Path) -> dict[str, Path]:
    """Video files below ``root`` (the collection scan), by file stem: a dataset's video ids.

    Raises:
        InputError: If ``root`` is not a directory, or two files share a stem.
    """
    if not root.is_dir():
        raise InputError(f"{root} | not a directory | expected a folder of videos")
    found: dict[str, Path] = {}
    for p in scan([root]).files:
        if p.stem in found:
            raise InputError(f"{p} | same name as {found[p.stem]} | expected one file per video id")
        found[p.stem] = p
    return found


class FeatureStore:
    """``<out>.work/``: the run's job store and each finished video's features, under a writer lock."""

    def __init__(self, work: Path, restart: bool = False) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.lock = WriterLock(work / "lock")
        try:
            if restart:
                for name in (STATUS_FILE, STATUS_FILE + "-wal", STATUS_FILE + "-shm"):
                    (work / name).unlink(missing_ok=True)
            self.db = sqlite3.connect(work / STATUS_FILE)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            _check_format(self.db, work)
            self.jobs = JobStore(self.db, work)
            self.db.executescript(_RESULTS)
        except BaseException:
            self.lock.release()
            raise

    def add(self, job: Job, result: VideoResult) -> None:
        """Commit one finished video: its job record and its features, in one transaction."""
        stats, info = result.stats, result.info
        blobs = [np.asarray(result.features[k], np.float32).tobytes() if k in result.features else None for k in STREAMS]
        with self.db:
            self.jobs.upsert(job.record("ok", stats.duration if stats else None))
            self.db.execute("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (job.key, stats.object_frames if stats else None, stats.clips if stats else None,
                             int(bool(info and info.has_audio and "audio" in result.features)),
                             json.dumps(stats.warnings) if stats and stats.warnings else None, *blobs))

    def results(self) -> dict[str, tuple[str, str | None, dict[str, np.ndarray]]]:
        """path (relative to the work folder) → (status, reason, features) of every recorded video."""
        out = {}
        rows = self.db.execute("SELECT v.path, v.status, v.reason, r.resnet, r.i3d, r.audio FROM videos v "
                               "LEFT JOIN results r ON r.path = v.path")
        for path, status, reason, *blobs in rows:
            feats = {k: np.frombuffer(b, np.float32) for k, b in zip(STREAMS, blobs, strict=True) if b is not None}
            out[path] = (status, reason, feats if status == "ok" else {})
        return out

    def close(self) -> None:
        self.db.close()
        self.lock.release()


def _check_format(db: sqlite3.Connection, work: Path) -> None:
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "meta" in tables:
        row = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        if row is None or row[0] != WORK_FORMAT:
            raise InputError(f"{work / STATUS_FILE} | made by another version of jemc-infer ({row[0] if row else 'no format'}) | "
                             f"expected {WORK_FORMAT}: restart the extraction (its earlier results cannot be reused)")
        return
    db.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);")
    with db:
        db.execute("INSERT INTO meta VALUES ('format', ?)", (WORK_FORMAT,))


class DatasetSink:
    """The ``features`` sink: each finished video is committed to the feature store at once."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store

    def add(self, job: Job, result: VideoResult) -> int:
        self.store.add(job, result)
        return 1

    def flush(self) -> int:
        return 0


@dataclass
class ExtractSummary:
    dataset: FeatureDataset
    extracted: int  # videos processed by this run
    skipped: int  # finished in an earlier run
    failed: dict[str, str]  # id → reason, over all runs
    missing: list[str]  # annotated videos with no file
    seconds: float


def extract_dataset(
    videos_dir: Path,
    annotations: Annotations,
    out: Path,
    encoder_factory: Callable[[], FeatureEncoder],
    meta: dict[str, Any],
    options: Options = Options(workers=1, frame_batch=32, clip_batch=4),
    restart: bool = False,
    on_event: Callable[[Event], None] | None = None,
) -> ExtractSummary:
    """Extract features for every annotated video found in ``videos_dir`` and write the dataset.

    Args:
        videos_dir: Folder of videos (searched recursively; matched to annotation ids by file stem).
        annotations: Video ids, captions and splits.
        out: The feature dataset to write; per-video status goes to ``<out>.work/``.
        encoder_factory: Builds the backbones (called only if some video needs extracting).
        meta: What was asked for (weights folder, random-init, backbone kind): a rerun must match.
            The backbones' files and hashes (``encoder.provenance``) are checked and recorded too.
        options: Sampling (a rerun must match), workers, time limit, batch sizes, ``retry_failed``
            (also redo videos that failed in an earlier run).
        restart: Forget earlier runs' results.
        on_event: Called with each progress event (``jemc_infer.collection.run``).

    Raises:
        InputError: No annotated video has a file, another run is writing ``out``.
        SettingsMismatchError: An earlier run used other settings.
    """
    start = time.monotonic()
    files = videos_by_stem(videos_dir)
    by_id = {annotations.aliases.get(stem, stem): p for stem, p in files.items()}
    present = [v for v in annotations.videos if v in by_id]
    missing = [v for v in annotations.videos if v not in by_id]
    if not present:
        example = next(iter(files), None)
        raise InputError(f"{videos_dir} | no file named after an annotated video (e.g. {annotations.videos[0]!r}; "
                         f"found {len(files)} videos{', e.g. ' + repr(example) if example else ''}) | expected <video id>.<ext> files")
    store = FeatureStore(work_dir_for(out), restart)
    try:
        remedy = "restart the extraction, or write the dataset somewhere else"
        store.jobs.check_settings({**meta, "sampling": options.sampling.to_json()}, "features", remedy)

        def encoder() -> FeatureEncoder:
            enc = encoder_factory()
            # the weight files' hashes: a rerun with other weights must not mix features
            store.jobs.check_settings({"backbones": getattr(enc, "provenance", None)}, "features", remedy)
            return enc

        run = run_collection([by_id[v] for v in present], store.jobs, DatasetSink(store), encoder, options, on_event)
        recorded_results = store.results()
        results = {v: recorded_results.get(store.jobs.key(p), ("missing", None, {})) for v, p in by_id.items()}
        recorded = store.jobs.settings() or {}
    finally:
        store.close()
    dataset = _write(out, annotations, results, options.sampling, recorded, videos_dir, missing)
    failed = {v: r[1] or "" for v, r in results.items() if r[0] == "failed"}
    return ExtractSummary(dataset, run.done + len(run.failed), run.skipped, failed, missing, time.monotonic() - start)


def _write(out: Path, ann: Annotations, results: dict, sampling: Sampling, meta: dict[str, Any],
           videos_dir: Path, missing: list[str]) -> FeatureDataset:
    dims = {}
    for status, _, feats in results.values():
        if status == "ok":
            dims.update({k: len(v) for k, v in feats.items()})
    if not dims:
        raise InputError(f"{videos_dir} | every video failed | expected at least one decodable video (reasons: {work_dir_for(out) / STATUS_FILE})")
    n = len(ann.videos)
    features = {k: np.zeros((n, d), np.float32) for k, d in dims.items() if k in STREAMS}
    masks = {k: np.zeros(n, bool) for k in features}
    for row, vid in enumerate(ann.videos):
        status, _, feats = results.get(vid, ("missing", None, {}))
        if status != "ok":
            continue
        for k, vec in feats.items():
            features[k][row] = vec
            masks[k][row] = True
    n_failed = sum(1 for v in ann.videos if results.get(v, ("",))[0] == "failed")
    source = {"extracted_from": str(videos_dir), "sampling": sampling.to_json(), **meta,
              "videos_failed": n_failed, "videos_missing": len(missing)}
    return write_dataset(out, ann.videos, features, ann.captions, ann.splits, masks=masks, name=out.name, source=source)
