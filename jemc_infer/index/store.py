"""The index directory: embedding shards + an SQLite manifest, crash-safe, one writer at a time.

Layout::

    INDEX/
      manifest.sqlite     meta (format, settings), shards (file, rows, dtype, the video id of
                          each row), dead (rows whose video moved on), videos (one row per
                          video: path relative to INDEX, size, mtime, content hash, duration,
                          status ok/failed + reason, shard, row)
      shards/000001.npy   float16/float32 [n, D]: rows = [space 1 | space 2 | …] embeddings
      lock                the writer's pid (flock-ed while it writes)

A shard is written under a temporary name, fsynced, renamed, and only then committed to the
manifest together with its videos, in one transaction: a crash at any point leaves the old state
or the new one. Shard files the manifest does not know (a crash between rename and commit) and
temporary files are removed when a writer opens the index. A re-embedded video keeps its id and
points at its new row; its old row is dead and never returned.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jemc_infer.atomic import fsync_dir
from jemc_infer.errors import IndexCorruptError, InputError
from jemc_infer.index.source import Shard
from jemc_infer.specs import OLD_GRAPH_NAMES

INDEX_FORMAT = "jemc-index/1"
MANIFEST, SHARDS, LOCK = "manifest.sqlite", "shards", "lock"

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
CREATE TRIGGER IF NOT EXISTS row_left AFTER UPDATE OF shard, row, status ON videos
    WHEN OLD.shard IS NOT NULL AND (NEW.shard IS NOT OLD.shard OR NEW.row IS NOT OLD.row OR NEW.status != 'ok')
    BEGIN INSERT OR IGNORE INTO dead VALUES (OLD.shard, OLD.row); END;
CREATE TRIGGER IF NOT EXISTS row_deleted AFTER DELETE ON videos WHEN OLD.shard IS NOT NULL
    BEGIN INSERT OR IGNORE INTO dead VALUES (OLD.shard, OLD.row); END;
"""


def content_hash(path: Path, block: int = 1 << 20) -> str:
    """sha256 of the size and the first, middle and last MiB: cheap on multi-GB videos, and it
    tells an edited file from an untouched one whose mtime changed."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as f:
        for offset in sorted({0, max(0, size // 2 - block // 2), max(0, size - block)}):
            f.seek(offset)
            h.update(f.read(block))
    return h.hexdigest()[:32]


@dataclass(frozen=True)
class VideoRecord:
    """One video's manifest row (``shard``/``row`` are None for a failure)."""

    path: str  # relative to the index directory
    size: int
    mtime_ns: int
    content_hash: str | None
    duration: float | None
    status: str  # "ok" or "failed"
    reason: str | None = None


class Index:
    """An open index. Use :meth:`open`; close it (or use ``with``) to release the writer lock."""

    def __init__(self, path: Path, db: sqlite3.Connection, settings: dict[str, Any], lock_fd: int | None) -> None:
        self.path, self.db, self.settings, self._lock_fd = path, db, settings, lock_fd
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
            raise InputError(f"{path} | no index here ({MANIFEST} missing) | expected an index made by `jemc-infer embed VIDEOS --index {path}`")
        lock_fd = None
        if writer:
            (path / SHARDS).mkdir(parents=True, exist_ok=True)
            lock_fd = _acquire_lock(path / LOCK)
        try:
            db = sqlite3.connect(db_path, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as err:
            _release_lock(lock_fd)
            raise IndexCorruptError(f"{db_path} | unreadable ({err}) | expected an SQLite index manifest") from None
        if not meta:
            if not writer or settings is None:
                _release_lock(lock_fd)
                raise InputError(f"{path} | empty index | expected one made by `jemc-infer embed`")
            with db:
                db.executemany("INSERT INTO meta VALUES (?, ?)",
                               [("format", INDEX_FORMAT), ("settings", json.dumps(settings, sort_keys=True))])
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("format") != INDEX_FORMAT:
            _release_lock(lock_fd)
            raise IndexCorruptError(f"{db_path} | format {meta.get('format')!r} | expected {INDEX_FORMAT!r}")
        stored = _current_names(json.loads(meta["settings"]))
        if settings is not None:
            settings = _current_names(json.loads(json.dumps(settings, sort_keys=True)))
            diff = sorted(k for k in set(stored) | set(settings) if stored.get(k) != settings.get(k))
            if diff:
                _release_lock(lock_fd)
                raise InputError(
                    f"{path} | holds embeddings made with other {', '.join(diff)} ({_describe(stored, diff)}) | expected the "
                    f"same model and sampling ({_describe(settings, diff)}): start a new index with --index NEW_DIR")
        index = cls(path, db, stored, lock_fd)
        if lock_fd is not None:
            index.messages.extend(_LOCK_MESSAGES.pop(str(path / LOCK), []))
            index._clean_orphans()
        return index

    def close(self) -> None:
        """Close the manifest and release the writer lock. Idempotent."""
        if self.db is not None:
            self.db.close()
            self.db = None  # type: ignore[assignment]
        _release_lock(self._lock_fd, self.path / LOCK)
        self._lock_fd = None

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _clean_orphans(self) -> None:
        known = {r[0] for r in self.db.execute("SELECT file FROM shards")}
        removed = 0
        for p in (self.path / SHARDS).iterdir():
            if f"{SHARDS}/{p.name}" not in known:
                p.unlink(missing_ok=True)
                removed += 1
        if removed:
            fsync_dir(self.path / SHARDS)
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

    def videos(self) -> dict[str, tuple[int, int, int, str | None, str]]:
        """path → (id, size, mtime_ns, content_hash, status)."""
        return {r[0]: tuple(r[1:]) for r in self.db.execute("SELECT path, id, size, mtime_ns, content_hash, status FROM videos")}  # type: ignore[misc]

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
            try:
                data = np.load(self.path / file, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as err:
                raise IndexCorruptError(f"{self.path / file} | unreadable ({err}) | expected the shard the manifest lists") from None
            if data.shape != (rows, self.dim):
                raise IndexCorruptError(f"{self.path / file} | shape {list(data.shape)} | expected [{rows}, {self.dim}]")
            yield Shard(rows=data, ids=ids)

    def counts(self) -> dict[str, int]:
        out = dict(self.db.execute("SELECT status, COUNT(*) FROM videos GROUP BY status").fetchall())
        return {"ok": out.get("ok", 0), "failed": out.get("failed", 0),
                "shards": self.db.execute("SELECT COUNT(*) FROM shards").fetchone()[0]}

    def failures(self) -> list[tuple[str, str]]:
        return list(self.db.execute("SELECT path, reason FROM videos WHERE status = 'failed' ORDER BY path"))

    # -- writing (writer only) -------------------------------------------------------------------
    def add_shard(self, rows: np.ndarray, records: list[VideoRecord]) -> None:
        """Write ``rows`` as a new shard and commit it with its videos (row i ↔ records[i])."""
        self._check_writer()
        if len(rows) != len(records) or rows.ndim != 2 or rows.shape[1] != self.dim:
            raise InputError(f"shard | rows {list(rows.shape)} for {len(records)} videos | expected [{len(records)}, {self.dim}]")
        next_id = (self.db.execute("SELECT MAX(id) FROM shards").fetchone()[0] or 0) + 1
        rel = f"{SHARDS}/{next_id:06d}.npy"
        final = self.path / rel
        tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(rows, dtype=self.dtype), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        fsync_dir(final.parent)
        now = time.time()
        with self.db:  # one transaction: the shard and its videos appear together, or not at all
            self.db.execute("INSERT INTO shards VALUES (?, ?, ?, ?, ?, ?)", (next_id, rel, len(rows), self.dtype, now, b""))
            for i, r in enumerate(records):
                self._upsert(r, next_id, i, now)
            ids = [self.db.execute("SELECT id FROM videos WHERE path = ?", (r.path,)).fetchone()[0] for r in records]
            self.db.execute("UPDATE shards SET ids = ? WHERE id = ?", (np.asarray(ids, dtype="<i8").tobytes(), next_id))

    def record_failures(self, records: list[VideoRecord]) -> None:
        """Commit videos that failed (their reasons are what ``index status`` shows)."""
        self._check_writer()
        now = time.time()
        with self.db:
            for r in records:
                self._upsert(r, None, None, now)

    def prune(self, paths: list[str]) -> int:
        """Forget these videos (their rows become dead). Returns how many were removed."""
        self._check_writer()
        with self.db:
            return sum(self.db.execute("DELETE FROM videos WHERE path = ?", (p,)).rowcount for p in paths)

    def _upsert(self, r: VideoRecord, shard: int | None, row: int | None, now: float) -> None:
        self.db.execute(
            "INSERT INTO videos (path, size, mtime_ns, content_hash, duration, status, reason, shard, row, updated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET size=excluded.size, "
            "mtime_ns=excluded.mtime_ns, content_hash=excluded.content_hash, duration=excluded.duration, "
            "status=excluded.status, reason=excluded.reason, shard=excluded.shard, row=excluded.row, updated=excluded.updated",
            (r.path, r.size, r.mtime_ns, r.content_hash, r.duration, r.status, r.reason, shard, row, now))

    def _check_writer(self) -> None:
        if self._lock_fd is None:
            raise InputError(f"{self.path} | opened read-only | expected Index.open(..., writer=True) to write")


def _current_names(settings: dict[str, Any]) -> dict[str, Any]:
    """Indexes made before the backbone graphs took their features' names keyed them object/activity."""
    if isinstance(settings.get("backbones"), dict):
        settings["backbones"] = {OLD_GRAPH_NAMES.get(k, k): v for k, v in settings["backbones"].items()}
    return settings


def _describe(settings: dict[str, Any], keys: list[str]) -> str:
    parts = []
    for k in keys:
        v = settings.get(k)
        if k == "model" and isinstance(v, dict):
            v = f"{v.get('path')} [{v.get('fingerprint')}]"
        elif isinstance(v, dict):
            v = json.dumps(v, sort_keys=True)[:80]
        parts.append(f"{k}={v}")
    return "; ".join(parts)


# -- the writer lock: flock (released by the kernel if the holder dies) + the holder's pid ----------
_LOCK_MESSAGES: dict[str, list[str]] = {}


def _acquire_lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    previous = os.pread(fd, 200, 0).decode(errors="replace").split()
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        holder = f"pid {previous[0]}" if previous else "another process"
        raise InputError(f"{path.parent} | being written by {holder} | expected one writer at a time: wait for it to "
                         "finish, or stop it (a killed writer's lock is taken over automatically)") from None
    if previous and previous[0].isdigit() and int(previous[0]) != os.getpid():
        alive = _alive(int(previous[0]))
        # flock is free, so the pid left in the file is a writer that died without closing
        _LOCK_MESSAGES.setdefault(str(path), []).append(
            f"took over the lock left by pid {previous[0]} ({'not running' if not alive else 'no longer holding it'})")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode(), 0)
    os.fsync(fd)
    return fd


def _release_lock(fd: int | None, path: Path | None = None) -> None:
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)  # a clean exit leaves no pid behind
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
