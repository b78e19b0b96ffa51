"""The index directory: embedding shards + an SQLite manifest, crash-safe, one writer at a time.

Layout::

    INDEX/
      manifest.sqlite     meta (format, settings), shards (file, rows, dtype, the video id of
                          each row), dead (rows whose video moved on), videos (one row per
                          video: path relative to INDEX, size, mtime, content hash, duration,
                          status ok/failed + reason, shard, row)
      shards/000001.npy   float16/float32 [n, D]: rows = [space 1 | space 2 | …] embeddings
      windows/000001.npy  float16/float32 [m, D]: the per-window rows of shard 1's videos, with
                          their times in the manifest's ``windows`` table (indexes with moments:
                          meta ``moments`` = 1; see ``jemc_infer.index.windows``)
      compact/000001.i8.npy, .r8.npy, .meta.npy
                          the int8 copy of a run of shards, its 7-bit residual and per-row scales
                          and error bounds
                          (``jemc_infer.index.compact``): search scans it and rescores the few
                          rows that can win from the shards; listed in the ``compact`` table
      lock                the writer's pid (flock-ed while it writes)

A shard is written under a temporary name, fsynced, renamed, and only then committed to the
manifest together with its videos (and its window shard, written the same way), in one transaction: a crash at any point leaves the old state
or the new one. Shard files the manifest does not know (a crash between rename and commit) and
temporary files are removed when a writer opens the index. A re-embedded video keeps its id and
points at its new row; its old row is dead and never returned.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from jemc_infer.atomic import fsync_dir
from jemc_infer.collection.faults import crash_point
from jemc_infer.collection.jobs import JobStore, VideoRecord
from jemc_infer.collection.lock import WriterLock
from jemc_infer.errors import IndexCorruptError, InputError, SettingsMismatchError
from jemc_infer.index.compact import Segment, write_segment
from jemc_infer.index.source import Shard
from jemc_infer.index.windows import VideoWindows, WindowRows
from jemc_infer.specs import OLD_GRAPH_NAMES

INDEX_FORMAT = "jemc-index/1"
MANIFEST, SHARDS, WINDOWS, COMPACT, LOCK = "manifest.sqlite", "shards", "windows", "compact", "lock"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS shards (id INTEGER PRIMARY KEY, file TEXT UNIQUE NOT NULL, rows INTEGER NOT NULL,
                                   dtype TEXT NOT NULL, created REAL NOT NULL,
                                   ids BLOB NOT NULL);  -- int64 little-endian: the video id of each row
CREATE TABLE IF NOT EXISTS videos (
    id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT UNIQUE NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, content_hash TEXT, duration REAL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')), reason TEXT,
    shard INTEGER REFERENCES shards(id), row INTEGER, updated REAL NOT NULL);
-- rows whose video moved on (re-embedded, failed since, pruned): search skips them
CREATE TABLE IF NOT EXISTS dead (shard INTEGER NOT NULL, row INTEGER NOT NULL, PRIMARY KEY (shard, row));
-- the window shard of a shard (indexes with moments); blobs little-endian: offsets int64 [rows + 1]
-- (pooled row i's windows are offsets[i]:offsets[i+1]), starts/ends float64 [m] seconds, spaces uint8 [m]
CREATE TABLE IF NOT EXISTS windows (shard INTEGER PRIMARY KEY REFERENCES shards(id), file TEXT UNIQUE NOT NULL,
                                    rows INTEGER NOT NULL, offsets BLOB NOT NULL, starts BLOB NOT NULL,
                                    ends BLOB NOT NULL, spaces BLOB NOT NULL);
-- compact int8 copies of runs of shards; blobs int64 little-endian: the shard ids in order, their row counts
CREATE TABLE IF NOT EXISTS compact (id INTEGER PRIMARY KEY, codes TEXT UNIQUE NOT NULL, residual TEXT UNIQUE NOT NULL,
                                    meta TEXT UNIQUE NOT NULL, rows INTEGER NOT NULL, shards BLOB NOT NULL,
                                    counts BLOB NOT NULL);
CREATE TRIGGER IF NOT EXISTS row_left AFTER UPDATE OF shard, row, status ON videos
    WHEN OLD.shard IS NOT NULL AND (NEW.shard IS NOT OLD.shard OR NEW.row IS NOT OLD.row OR NEW.status != 'ok')
    BEGIN INSERT OR IGNORE INTO dead VALUES (OLD.shard, OLD.row); END;
CREATE TRIGGER IF NOT EXISTS row_deleted AFTER DELETE ON videos WHEN OLD.shard IS NOT NULL
    BEGIN INSERT OR IGNORE INTO dead VALUES (OLD.shard, OLD.row); END;
"""


class Index:
    """An open index. Use :meth:`open`; close it (or use ``with``) to release the writer lock."""

    def __init__(self, path: Path, db: sqlite3.Connection, settings: dict[str, Any], lock: WriterLock | None) -> None:
        self.path, self.db, self.settings, self._lock = path, db, settings, lock
        self.jobs = JobStore(db, path, result_columns=("shard", "row"))  # the videos, their identity and status
        self.messages: list[str] = []

    # -- opening -----------------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path | str, settings: dict[str, Any] | None = None, writer: bool = False) -> Index:
        """Open (or, as a writer with ``settings``, create) an index.

        Args:
            path: The index directory.
            settings: What the embeddings were made with (model fingerprint, row layout, sampling,
                backbones, dtype). A writer's settings must equal the stored ones; a new index
                stores them.
            writer: Take the writer lock and clean up after crashes.

        Raises:
            InputError: Not an index (and nothing to create), another writer holds it, or the
                settings differ (the message says what, and how to start a new index).
            IndexCorruptError: The manifest is unreadable.
        """
        path = Path(path)
        db_path = path / MANIFEST
        if not db_path.exists() and not (writer and settings is not None):
            raise InputError(f"{path} | no index here ({MANIFEST} missing) | expected an index (made by `jemc-infer embed`)")
        lock = None
        if writer:
            (path / SHARDS).mkdir(parents=True, exist_ok=True)
            (path / WINDOWS).mkdir(exist_ok=True)
            (path / COMPACT).mkdir(exist_ok=True)
            lock = WriterLock(path / LOCK)
        try:
            db = sqlite3.connect(db_path, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as err:
            _release(lock)
            raise IndexCorruptError(f"{db_path} | unreadable ({err}) | expected an SQLite index manifest") from None
        if not meta:
            if not writer or settings is None:
                _release(lock)
                raise InputError(f"{path} | empty index | expected one made by `jemc-infer embed`")
            with db:  # one transaction: an index has its format and settings, or is empty
                db.executemany("INSERT INTO meta VALUES (?, ?)",
                               [("format", INDEX_FORMAT), ("settings", json.dumps(settings, sort_keys=True))])
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("format") != INDEX_FORMAT:
            _release(lock)
            raise IndexCorruptError(f"{db_path} | format {meta.get('format')!r} | expected {INDEX_FORMAT!r}")
        raw = json.loads(meta["settings"])
        stored = _current_names(raw)
        if settings is not None:
            if stored != raw:  # an index made before the graph renames: store its settings under today's names
                with db:
                    db.execute("INSERT OR REPLACE INTO meta VALUES ('settings', ?)", (json.dumps(stored, sort_keys=True),))
            try:
                stored = JobStore(db, path).check_settings(_current_names(settings), "embeddings",
                                                           "start a new index in another directory")
            except SettingsMismatchError:
                _release(lock)
                raise
        index = cls(path, db, stored, lock)
        if lock is not None:
            index.messages.extend(lock.messages)
            index._clean_orphans()
        return index

    def close(self) -> None:
        """Close the manifest and release the writer lock. Idempotent."""
        if self.db is not None:
            self.db.close()
            self.db = None  # type: ignore[assignment]
        _release(self._lock)
        self._lock = None

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _clean_orphans(self) -> None:
        known = {r[0] for r in self.db.execute("SELECT file FROM shards UNION ALL SELECT file FROM windows "
                                                "UNION ALL SELECT codes FROM compact UNION ALL SELECT residual FROM compact "
                                                "UNION ALL SELECT meta FROM compact")}
        removed = 0
        for folder in (SHARDS, WINDOWS, COMPACT):
            gone = [p for p in (self.path / folder).iterdir() if f"{folder}/{p.name}" not in known]
            for p in gone:
                p.unlink(missing_ok=True)
            if gone:
                fsync_dir(self.path / folder)
            removed += len(gone)
        if removed:
            self.messages.append(f"removed {removed} file(s) left by an interrupted run")

    # -- reading -----------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(sum(d for _, d in self.settings["layout"]))

    @property
    def dtype(self) -> str:
        return str(self.settings["dtype"])

    @property
    def model_path(self) -> str | None:
        """Where the bundle the rows were made with was, as the last writer recorded it."""
        row = self.db.execute("SELECT value FROM meta WHERE key = 'model_path'").fetchone()
        return row[0] if row else None

    def set_model_path(self, path: Path) -> None:
        """Record where the model bundle is (``query`` and ``embed`` default to it)."""
        self._check_writer()
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('model_path', ?)", (str(Path(path).resolve()),))

    @property
    def has_moments(self) -> bool:
        """Whether every shard this index writes keeps its videos' windows (indexes made before
        moments existed do not, until ``embed --with-moments``)."""
        row = self.db.execute("SELECT value FROM meta WHERE key = 'moments'").fetchone()
        return row is not None and row[0] == "1"

    def is_new(self) -> bool:
        """No video committed yet (ok or failed)."""
        return self.db.execute("SELECT COUNT(*) FROM videos").fetchone()[0] == 0

    def keep_moments(self) -> None:
        """From now on every shard keeps its windows. The videos committed before without them
        are listed by :meth:`without_moments` (``embed`` re-embeds them)."""
        self._check_writer()
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('moments', '1')")

    def without_moments(self) -> set[str]:
        """Paths of the ok videos whose rows have no windows."""
        q = "SELECT path FROM videos WHERE status = 'ok' AND shard NOT IN (SELECT shard FROM windows)"
        return {r[0] for r in self.db.execute(q)}

    def videos(self) -> dict[str, VideoRecord]:
        """path (relative to the index) → its record (``id`` is what search answers with)."""
        return self.jobs.records()

    def describe(self, ids: np.ndarray) -> dict[int, tuple[str, float | None]]:
        """id → (path relative to the index, duration) for the given ids."""
        wanted = sorted({int(i) for i in np.asarray(ids).ravel() if i >= 0})
        out: dict[int, tuple[str, float | None]] = {}
        for start in range(0, len(wanted), 900):  # SQLite's parameter limit
            part = wanted[start:start + 900]
            q = f"SELECT id, path, duration FROM videos WHERE id IN ({','.join('?' * len(part))})"
            out.update({r[0]: (r[1], r[2]) for r in self.db.execute(q, part)})
        return out

    def shards(self) -> Iterator[Shard]:
        """Every shard as a read-only memory map, with the id of each live row (-1 if dead).

        Row ids come from the shard's own record and dead rows from the ``dead`` table (kept by
        triggers), so opening costs two small queries, not one per video.
        """
        dead: dict[int, list[int]] = {}
        for shard, row in self.db.execute("SELECT shard, row FROM dead"):
            dead.setdefault(shard, []).append(row)
        for sid, file, rows, blob in self.db.execute("SELECT id, file, rows, ids FROM shards ORDER BY id"):
            ids = np.frombuffer(blob, dtype="<i8").astype(np.int64)
            if len(ids) != rows:
                raise IndexCorruptError(f"{self.path / MANIFEST} | shard {file} lists {len(ids)} ids | expected {rows}")
            if sid in dead:
                ids[dead[sid]] = -1
                if (ids < 0).all():
                    continue
            yield Shard(rows=self._load(file, rows), ids=ids, key=sid)

    def segments(self) -> list[Segment]:
        """The compact int8 copies (read-only memory maps), oldest first; [] for an index without.

        Raises:
            IndexCorruptError: A file is unreadable or disagrees with the manifest.
        """
        out = []
        for codes, residual, meta, rows, shards, counts in self.db.execute(
                "SELECT codes, residual, meta, rows, shards, counts FROM compact ORDER BY id"):
            try:
                c, r, m = (self._load_compact(f) for f in (codes, residual, meta))
            except FileNotFoundError:
                return []  # a writer merged it away since this read began: search the shards themselves
            keys, ns = np.frombuffer(shards, "<i8"), np.frombuffer(counts, "<i8")
            if c.ndim == 1:
                continue  # the first layout (codes in transposed blocks): not searched; compact() rewrites it
            if (c.shape != (rows, self.dim) or c.dtype != np.int8 or r.shape != (rows, self.dim) or r.dtype != np.int8
                    or m.shape != (rows, 5) or len(keys) != len(ns) or ns.sum() != rows):
                raise IndexCorruptError(f"{self.path / codes} | {c.dtype} {list(c.shape)}, residual {list(r.shape)}, meta "
                                        f"{list(m.shape)} | expected int8 [{rows}, {self.dim}] twice, float32 [{rows}, 5]")
            out.append(Segment(c, r, m, tuple(int(k) for k in keys), tuple(int(n) for n in ns)))
        return out

    def compact(self) -> tuple[int, int]:
        """Write the compact copy of every shard that has none: one new segment, which takes in the
        newest segments while it holds at least half as many rows as the one before it (so an index
        keeps a few segments, the oldest the largest, and a row is rewritten O(log n) times).
        Returns (rows written, segments now).
        """
        self._check_writer()
        segs, stale = [], []
        for sid, rows, blob, codes in self.db.execute("SELECT id, rows, shards, codes FROM compact ORDER BY id"):
            if self._load_compact(codes).ndim == 1:  # the first layout (codes in transposed blocks): rewritten
                stale.append(sid)
            else:
                segs.append((sid, rows, [int(k) for k in np.frombuffer(blob, "<i8")]))
        covered = {k for _, _, keys in segs for k in keys}
        todo = [(sid, rows) for sid, rows in self.db.execute("SELECT id, rows FROM shards ORDER BY id") if sid not in covered]
        if not todo:  # (a stale segment's shards are never covered: shards are not deleted)
            return 0, len(segs)
        keys, total, replace = [k for k, _ in todo], sum(n for _, n in todo), stale
        while segs and 2 * total >= segs[-1][1]:
            sid, rows, seg_keys = segs.pop()
            keys, total, replace = seg_keys + keys, total + rows, [sid, *replace]
        return self._write_segment(keys, tuple(replace)), len(segs) + 1

    def _write_segment(self, keys: list[int], replace: tuple[int, ...]) -> int:
        """Quantise shards ``keys`` into new files, then commit them (replacing segments ``replace``)
        in one transaction and delete the files they replace."""
        files = {sid: (file, rows) for sid, file, rows in self.db.execute("SELECT id, file, rows FROM shards")}
        shards = [Shard(self._load(files[k][0], files[k][1]), np.zeros(files[k][1], np.int64), k) for k in keys]
        n = sum(len(s.ids) for s in shards)
        next_id = (self.db.execute("SELECT MAX(id) FROM compact").fetchone()[0] or 0) + 1
        rel = {name: f"{COMPACT}/{next_id:06d}.{name}.npy" for name in ("i8", "r8", "meta")}
        tmp = {name: (self.path / r).with_name(f".{Path(r).name}.tmp-{os.getpid()}") for name, r in rel.items()}
        write_segment(shards, self.dim, tmp["i8"], tmp["r8"], tmp["meta"])
        crash_point("compact-written")
        for name in rel:
            os.replace(tmp[name], self.path / rel[name])
        fsync_dir(self.path / COMPACT)
        old = [r for sid in replace
               for r in self.db.execute("SELECT codes, residual, meta FROM compact WHERE id = ?", (sid,)).fetchone()]
        with self.db:
            self.db.executemany("DELETE FROM compact WHERE id = ?", [(sid,) for sid in replace])
            self.db.execute("INSERT INTO compact VALUES (?, ?, ?, ?, ?, ?, ?)", (
                next_id, rel["i8"], rel["r8"], rel["meta"], n, np.asarray(keys, "<i8").tobytes(),
                np.asarray([len(s.ids) for s in shards], "<i8").tobytes()))
        for file in old:
            (self.path / file).unlink(missing_ok=True)
        return n

    def row(self, video_id: int) -> np.ndarray | None:
        """The pooled row float32 [D] of a video, or None if it has none (unknown, failed)."""
        found = self.db.execute("SELECT s.file, v.row FROM videos v JOIN shards s ON s.id = v.shard "
                                "WHERE v.id = ? AND v.status = 'ok'", (int(video_id),)).fetchone()
        if found is None:
            return None
        return np.asarray(self._load(found[0], None)[found[1]], dtype=np.float32)

    def windows(self, ids: np.ndarray) -> dict[int, VideoWindows]:
        """id → its windows (rows, times, spaces), for the ids that have them.

        Raises:
            IndexCorruptError: A window shard is unreadable or disagrees with the manifest.
        """
        wanted = sorted({int(i) for i in np.asarray(ids).ravel() if i >= 0})
        found: list[tuple[int, int, int]] = []
        for start in range(0, len(wanted), 900):  # SQLite's parameter limit
            part = wanted[start:start + 900]
            q = f"SELECT id, shard, row FROM videos WHERE status = 'ok' AND id IN ({','.join('?' * len(part))})"
            found += self.db.execute(q, part).fetchall()
        out: dict[int, VideoWindows] = {}
        shards: dict[int, tuple | None] = {}
        for vid, sid, row in found:
            if sid not in shards:
                meta = self.db.execute("SELECT file, rows, offsets, starts, ends, spaces FROM windows WHERE shard = ?", (sid,)).fetchone()
                shards[sid] = None if meta is None else self._window_shard(*meta)
            ws = shards[sid]
            if ws is None:
                continue
            rows, offsets, starts, ends, spaces = ws
            if row + 1 >= len(offsets):
                raise IndexCorruptError(f"{self.path / MANIFEST} | row {row} beyond the {len(offsets) - 1} of its window shard "
                                        "| expected one window range per shard row")
            part = slice(int(offsets[row]), int(offsets[row + 1]))
            out[vid] = VideoWindows(rows[part], starts[part], ends[part], spaces[part])
        return out

    def _window_shard(self, file: str, rows: int, offsets: bytes, starts: bytes, ends: bytes, spaces: bytes) -> tuple:
        o = np.frombuffer(offsets, "<i8")
        s, e, sp = np.frombuffer(starts, "<f8"), np.frombuffer(ends, "<f8"), np.frombuffer(spaces, np.uint8)
        if not (len(s) == len(e) == len(sp) == rows) or (len(o) and o[-1] != rows):
            raise IndexCorruptError(f"{self.path / MANIFEST} | window shard {file} lists {len(s)} times for {rows} rows "
                                    "| expected one start, end and space per row")
        return self._load(file, rows), o, s, e, sp

    def _load_compact(self, file: str) -> np.ndarray:
        """A file of a compact copy, memory-mapped.

        Raises:
            FileNotFoundError: It is gone (a writer merged it away).
            IndexCorruptError: It is unreadable.
        """
        try:
            return np.load(self.path / file, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as err:
            raise IndexCorruptError(f"{self.path / file} | unreadable ({err}) | expected the compact copy the manifest lists") from None

    def _load(self, file: str, rows: int | None) -> np.ndarray:
        try:
            data = np.load(self.path / file, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise IndexCorruptError(f"{self.path / file} | unreadable ({err}) | expected the shard the manifest lists") from None
        if data.ndim != 2 or data.shape[1] != self.dim or (rows is not None and len(data) != rows):
            raise IndexCorruptError(f"{self.path / file} | shape {list(data.shape)} | expected [{rows if rows is not None else 'n'}, {self.dim}]")
        return data

    def counts(self) -> dict[str, int]:
        out = dict(self.db.execute("SELECT status, COUNT(*) FROM videos GROUP BY status").fetchall())
        segments = self.segments()  # those search reads (not a copy in the first layout)
        return {"ok": out.get("ok", 0), "failed": out.get("failed", 0),
                "shards": self.db.execute("SELECT COUNT(*) FROM shards").fetchone()[0],
                "compact_shards": len({k for seg in segments for k in seg.keys}), "segments": len(segments)}

    def failures(self) -> list[tuple[str, str]]:
        """(path, reason) of every video that failed, by path."""
        return self.jobs.failures()

    # -- writing (writer only) -------------------------------------------------------------------
    def add_shard(self, rows: np.ndarray, records: list[VideoRecord], windows: WindowRows | None = None) -> None:
        """Write ``rows`` as a new shard and commit it with its videos (row i ↔ records[i]) and,
        in an index with moments, their windows (required there, refused elsewhere: an index
        has windows for every video or for none).

        Raises:
            InputError: Rows or windows of the wrong shape, windows missing or not wanted.
        """
        self._check_writer()
        if len(rows) != len(records) or rows.ndim != 2 or rows.shape[1] != self.dim:
            raise InputError(f"shard | rows {list(rows.shape)} for {len(records)} videos | expected [{len(records)}, {self.dim}]")
        if (windows is not None) != self.has_moments:
            raise InputError(f"shard | {'windows' if windows is not None else 'no windows'} for an index "
                             f"{'with' if self.has_moments else 'without'} moments | expected "
                             f"{'windows with every shard' if self.has_moments else 'none (Index.keep_moments() first)'}")
        if windows is not None:
            windows.check(len(records), self.dim)
        next_id = (self.db.execute("SELECT MAX(id) FROM shards").fetchone()[0] or 0) + 1
        rel, wrel = f"{SHARDS}/{next_id:06d}.npy", f"{WINDOWS}/{next_id:06d}.npy"
        self._write(rel, rows, "shard-written")
        if windows is not None:
            self._write(wrel, windows.rows, "windows-written")
        crash_point("shard-renamed")
        with self.db:  # one transaction: the shard, its windows and its videos appear together, or not at all
            self.db.execute("INSERT INTO shards VALUES (?, ?, ?, ?, ?, ?)", (next_id, rel, len(rows), self.dtype, time.time(), b""))
            if windows is not None:
                self.db.execute("INSERT INTO windows VALUES (?, ?, ?, ?, ?, ?, ?)", (
                    next_id, wrel, len(windows.rows), np.asarray(windows.offsets, "<i8").tobytes(),
                    np.asarray(windows.start, "<f8").tobytes(), np.asarray(windows.end, "<f8").tobytes(),
                    np.asarray(windows.space, np.uint8).tobytes()))
            ids = [self.jobs.upsert(r, shard=next_id, row=i) for i, r in enumerate(records)]
            self.db.execute("UPDATE shards SET ids = ? WHERE id = ?", (np.asarray(ids, dtype="<i8").tobytes(), next_id))

    def _write(self, rel: str, rows: np.ndarray, point: str) -> None:
        """``rows`` as ``INDEX/rel``: written to a temporary name, fsynced, renamed."""
        final = self.path / rel
        tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(rows, dtype=self.dtype), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        crash_point(point)
        os.replace(tmp, final)
        fsync_dir(final.parent)

    def record_failures(self, records: list[VideoRecord]) -> None:
        """Commit videos that failed (their reasons are what ``index status`` shows)."""
        self._check_writer()
        self.jobs.record_failed(records)

    def prune(self, paths: list[str]) -> int:
        """Forget these videos (their rows become dead). Returns how many were removed."""
        self._check_writer()
        return self.jobs.prune(paths)

    def _check_writer(self) -> None:
        if self._lock is None:
            raise InputError(f"{self.path} | opened read-only | expected Index.open(..., writer=True) to write")


def _release(lock: WriterLock | None) -> None:
    if lock is not None:
        lock.release()


def _current_names(settings: dict[str, Any]) -> dict[str, Any]:
    """Indexes made before the backbone graphs took their features' names keyed them object/activity."""
    if isinstance(settings.get("backbones"), dict):
        return {**settings, "backbones": {OLD_GRAPH_NAMES.get(k, k): v for k, v in settings["backbones"].items()}}
    return settings
