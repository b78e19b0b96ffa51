"""``jemc-infer features``: a folder of videos + annotations → a feature dataset, resumably.

Per-video results go to an SQLite status file in ``<out>.work/`` as each video finishes (its
features, or the reason it failed), so a killed run loses at most the videos in flight and a rerun
skips every finished one. When all are done, the feature dataset is written (atomically) from it:
videos that failed or have no file get zero features with mask False, and videos without sound
get a False audio mask.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jemc_infer.errors import InputError
from jemc_infer.train.data import FeatureDataset, write_dataset
from jemc_infer.train.formats import Annotations
from jemc_infer.video.pipeline import STREAMS, VideoResult, extract_features
from jemc_infer.video.sampling import Sampling

STATUS_FILE = "status.sqlite"
VIDEO_EXTENSIONS = ("mp4", "mkv", "webm", "avi", "mov", "m4v", "mpg", "mpeg", "flv", "wmv", "3gp", "ts", "ogv")


def work_dir_for(out: Path) -> Path:
    """Where ``jemc-infer features --out OUT`` keeps its per-video status."""
    return out.with_name(out.name + ".work")


def find_videos(root: Path, extensions: Iterable[str] = VIDEO_EXTENSIONS) -> dict[str, Path]:
    """Video files below ``root`` (recursively), by file stem.

    Raises:
        InputError: If ``root`` is not a directory, or two files share a stem.
    """
    if not root.is_dir():
        raise InputError(f"{root} | not a directory | expected a folder of videos")
    exts = {"." + e.lower().lstrip(".") for e in extensions}
    found: dict[str, Path] = {}
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() in exts and p.is_file():
            if p.stem in found:
                raise InputError(f"{p} | same name as {found[p.stem]} | expected one file per video id")
            found[p.stem] = p
    return found


class StatusDB:
    """The per-video status record (SQLite): one row per video, committed as each finishes."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript("""
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS videos (
                id TEXT PRIMARY KEY, path TEXT NOT NULL, size INTEGER, mtime_ns INTEGER,
                status TEXT NOT NULL CHECK (status IN ('ok', 'failed')), reason TEXT,
                duration REAL, frames INTEGER, clips INTEGER, has_audio INTEGER, warnings TEXT,
                resnet BLOB, i3d BLOB, audio BLOB, updated REAL NOT NULL);
        """)

    def check_meta(self, meta: dict[str, Any], where: Path) -> None:
        """Record settings not seen before; refuse a run whose recorded settings differ."""
        rows = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        new = {k: json.dumps(v, sort_keys=True) for k, v in meta.items()}
        diff = sorted(k for k in new if k in rows and rows[k] != new[k])
        if not diff:
            with self.db:
                self.db.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)", new.items())
            return
        if diff:
            raise InputError(f"{where} | features made with other settings ({', '.join(diff)}) | expected the same settings "
                             "to resume; pass --restart to start over or choose another --out")

    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM meta")}

    def known(self) -> dict[str, tuple[int, int, str]]:
        """id → (size, mtime_ns, status) of every recorded video."""
        return {r[0]: (r[1], r[2], r[3]) for r in self.db.execute("SELECT id, size, mtime_ns, status FROM videos")}

    def record(self, vid: str, path: Path, result: VideoResult) -> None:
        st = path.stat()
        blobs = [np.asarray(result.features[k], np.float32).tobytes() if k in result.features else None for k in STREAMS]
        stats, info = result.stats, result.info
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO videos VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (vid, str(path), st.st_size, st.st_mtime_ns, "ok" if result.ok else "failed", result.reason,
                 stats.duration if stats else None, stats.object_frames if stats else None, stats.clips if stats else None,
                 int(bool(info and info.has_audio and "audio" in result.features)),
                 json.dumps(stats.warnings) if stats and stats.warnings else None, *blobs, time.time()))

    def results(self) -> dict[str, tuple[str, str | None, dict[str, np.ndarray]]]:
        """id → (status, reason, features)."""
        out = {}
        for vid, status, reason, *blobs in self.db.execute("SELECT id, status, reason, resnet, i3d, audio FROM videos"):
            feats = {k: np.frombuffer(b, np.float32) for k, b in zip(STREAMS, blobs, strict=True) if b is not None}
            out[vid] = (status, reason, feats)
        return out

    def close(self) -> None:
        self.db.close()


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
    encoder_factory: Callable[[], Any],
    meta: dict[str, Any],
    sampling: Sampling = Sampling(),
    workers: int = 1,
    time_limit: float = 600.0,
    frame_batch: int = 32,
    clip_batch: int = 4,
    retry_failed: bool = False,
    restart: bool = False,
    on_start: Callable[[int, int], None] | None = None,
    on_result: Callable[[VideoResult, int], None] | None = None,
) -> ExtractSummary:
    """Extract features for every annotated video found in ``videos_dir`` and write the dataset.

    Args:
        videos_dir: Folder of videos (searched recursively; matched to annotation ids by file stem).
        annotations: Video ids, captions and splits.
        out: The feature dataset to write; per-video status goes to ``<out>.work/``.
        encoder_factory: Builds the backbones (called only if some video needs extracting).
        meta: What was asked for (weights folder, random-init, backbone kind): a rerun must match.
            The backbones' files and hashes (``encoder.provenance``) are checked and recorded too.
        sampling: Sampling settings.
        workers: Decoder processes. ``time_limit`` seconds of decoding per file.
        frame_batch: Frames per object-backbone batch. ``clip_batch`` likewise.
        retry_failed: Also redo videos that failed in an earlier run.
        restart: Forget earlier runs' results.
        on_start: Called with the number of videos to extract and the number already done.
        on_result: Called with each finished video and the number of frames it decoded.

    Raises:
        InputError: No annotated video has a file, or an earlier run used other settings.
    """
    files = find_videos(videos_dir)
    by_id = {annotations.aliases.get(stem, stem): p for stem, p in files.items()}
    present = [v for v in annotations.videos if v in by_id]
    missing = [v for v in annotations.videos if v not in by_id]
    if not present:
        example = next(iter(files), None)
        raise InputError(f"{videos_dir} | no file named after an annotated video (e.g. {annotations.videos[0]!r}; "
                         f"found {len(files)} videos{', e.g. ' + repr(example) if example else ''}) | expected <video id>.<ext> files")
    work = work_dir_for(out)
    if restart and (work / STATUS_FILE).exists():
        for name in (STATUS_FILE, STATUS_FILE + "-wal", STATUS_FILE + "-shm"):
            (work / name).unlink(missing_ok=True)
    db = StatusDB(work / STATUS_FILE)
    start = time.monotonic()
    try:
        db.check_meta({**meta, "sampling": sampling.to_json()}, work)
        known = db.known()

        def finished(vid: str) -> bool:
            if vid not in known:
                return False
            st = by_id[vid].stat()
            size, mtime, status = known[vid]
            return (size, mtime) == (st.st_size, st.st_mtime_ns) and (status == "ok" or not retry_failed)

        todo = [v for v in present if not finished(v)]
        if on_start is not None:
            on_start(len(todo), len(present) - len(todo))
        if todo:
            encoder = encoder_factory()
            # the weight files' hashes: a rerun with other weights must not mix features
            db.check_meta({"backbones": getattr(encoder, "provenance", None)}, work)
            for result in extract_features([by_id[v] for v in todo], sampling, encoder, workers=workers,
                                           time_limit=time_limit, frame_batch=frame_batch, clip_batch=clip_batch):
                db.record(todo[result.index], by_id[todo[result.index]], result)
                if on_result is not None:
                    on_result(result, result.stats.decoded_frames if result.stats else 0)
        results = db.results()
        recorded = db.meta()
    finally:
        db.close()
    dataset = _write(out, annotations, results, sampling, recorded, videos_dir, missing)
    failed = {v: r[1] or "" for v, r in results.items() if r[0] == "failed" and v in by_id}
    return ExtractSummary(dataset, len(todo), len(present) - len(todo), failed, missing, time.monotonic() - start)


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
