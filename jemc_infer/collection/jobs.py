"""The one job store of a collection run: which videos are done, with which file identity, the
failure reason of those that failed, and the settings every result was made with.

It lives in an SQLite database that its owner may extend: an index's manifest (whose ``videos``
rows also point at shard rows) or a feature dataset's work folder (whose results sit beside it).
Video paths are stored relative to the database's folder, so a collection moved together with
it keeps its record.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jemc_infer.collection.faults import crash_point
from jemc_infer.errors import SettingsMismatchError

# The base ``videos`` table. An index's manifest creates the same table with two more columns
# (shard, row) before the store opens it; CREATE ... IF NOT EXISTS leaves an existing table alone.
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS videos (
    id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT UNIQUE NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, content_hash TEXT, duration REAL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')), reason TEXT, updated REAL NOT NULL);
"""
_COLUMNS = ("path", "size", "mtime_ns", "content_hash", "duration", "status", "reason")


def content_hash(path: Path, block: int = 1 << 20) -> str:
    """sha256 of the size and the first, middle and last MiB: cheap on multi-GB videos, and it
    tells an edited file from an untouched one whose mtime changed."""
    import hashlib  # here: a query does not hash videos, nor pay this import

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
    """One video's row in a job store."""

    path: str  # relative to the store's folder
    size: int
    mtime_ns: int
    content_hash: str | None
    duration: float | None
    status: str  # "ok" or "failed"
    reason: str | None = None  # why it failed
    id: int | None = None  # the store's id for the video (an index answers searches with it)


@dataclass(frozen=True)
class Job:
    """A video to process: where it is, its key in the store, and its file identity now."""

    path: Path  # absolute
    key: str  # the store's path for it (relative to the store's folder)
    size: int
    mtime_ns: int

    def record(self, status: str, duration: float | None = None, reason: str | None = None) -> VideoRecord:
        """The row to store once it is done (an ``ok`` row carries the content hash: a later
        touch without a change is then recognised)."""
        digest = content_hash(self.path) if status == "ok" else None
        return VideoRecord(self.key, self.size, self.mtime_ns, digest, duration, status, reason)


@dataclass(frozen=True)
class Plan:
    todo: list[Job]
    skipped: int  # done before, file unchanged


class JobStore:
    """The record of one collection job over an open SQLite connection (the caller owns it)."""

    def __init__(self, db: sqlite3.Connection, root: Path, result_columns: tuple[str, ...] = ()) -> None:
        """Args: db: the database (its tables are created if absent); root: the folder stored
        paths are relative to; result_columns: the owner's columns pointing at a video's result,
        cleared when it fails (an index's ``shard`` and ``row``)."""
        self.db, self.root, self.result_columns = db, root, result_columns
        db.executescript(SCHEMA)

    # -- settings ------------------------------------------------------------------------------
    def settings(self) -> dict[str, Any] | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'settings'").fetchone()
        return None if row is None else json.loads(row[0])

    def check_settings(self, settings: Mapping[str, Any], what: str, remedy: str) -> dict[str, Any]:
        """Store the settings results depend on, or refuse if those stored differ.

        Keys the store does not have yet are added (a run may learn some late, e.g. the hash of
        weight files loaded only when something needs them).

        Args:
            settings: JSON-able values.
            what: What the store holds, for the message ("embeddings", "features").
            remedy: What the user can do instead, in library terms ("start a new index").

        Returns:
            The stored settings after the merge.

        Raises:
            SettingsMismatchError: "ROOT | holds WHAT made with other K (stored) | expected the same … (given): REMEDY".
        """
        given = json.loads(json.dumps(dict(settings), sort_keys=True))
        stored = self.settings() or {}
        diff = sorted(k for k in given if k in stored and stored[k] != given[k])
        if diff:
            raise SettingsMismatchError(f"{self.root} | holds {what} made with other {', '.join(diff)} ({describe(stored, diff)}) | expected "
                             f"the same settings to add to it ({describe(given, diff)}): {remedy}")
        merged = {**stored, **given}
        if merged != stored:
            with self.db:
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('settings', ?)", (json.dumps(merged, sort_keys=True),))
        return merged

    # -- what is done --------------------------------------------------------------------------
    def records(self) -> dict[str, VideoRecord]:
        """path → its record, for every video the store knows."""
        rows = self.db.execute("SELECT id, path, size, mtime_ns, content_hash, duration, status, reason FROM videos")
        return {r[1]: VideoRecord(*r[1:], id=r[0]) for r in rows}

    def plan(self, files: list[Path], retry_failed: bool = False, redo: Collection[str] = ()) -> Plan:
        """Which of ``files`` need processing: those not in the store, changed since (size or
        mtime, unless only touched: same size and content hash), failed with ``retry_failed``, or
        whose store path is in ``redo``."""
        known = self.records()
        todo, skipped = [], 0
        for f in files:
            st = f.stat()
            job = Job(f, self.key(f), st.st_size, st.st_mtime_ns)
            rec = known.get(job.key)
            if rec is not None and job.key not in redo and (rec.status == "ok" or not retry_failed) and _unchanged(rec, job):
                skipped += 1
            else:
                todo.append(job)
        return Plan(todo, skipped)

    def key(self, path: Path) -> str:
        return os.path.relpath(path, self.root)

    # -- writing -------------------------------------------------------------------------------
    def upsert(self, rec: VideoRecord, **extra: Any) -> int:
        """Write one video's row inside the caller's transaction (``with store.db:``); ``extra``
        sets the owner's own columns (an index's shard and row). Returns the video's id."""
        cols = _COLUMNS + tuple(extra) + ("updated",)
        values = [getattr(rec, c) for c in _COLUMNS] + list(extra.values()) + [time.time()]
        sets = ", ".join(f"{c}=excluded.{c}" for c in cols if c != "path")
        self.db.execute(f"INSERT INTO videos ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
                        f"ON CONFLICT(path) DO UPDATE SET {sets}", values)
        crash_point("job-commit")
        return int(self.db.execute("SELECT id FROM videos WHERE path = ?", (rec.path,)).fetchone()[0])

    def record_failed(self, recs: list[VideoRecord]) -> None:
        """Commit videos that failed, each with its reason."""
        with self.db:
            for r in recs:
                self.upsert(r, **dict.fromkeys(self.result_columns))

    def prune(self, paths: list[str]) -> int:
        """Forget these videos. Returns how many were removed."""
        with self.db:
            return sum(self.db.execute("DELETE FROM videos WHERE path = ?", (p,)).rowcount for p in paths)

    def failures(self) -> list[tuple[str, str]]:
        """(path, reason) of every failed video, by path."""
        return list(self.db.execute("SELECT path, reason FROM videos WHERE status = 'failed' ORDER BY path"))


def _unchanged(rec: VideoRecord, job: Job) -> bool:
    if (rec.size, rec.mtime_ns) == (job.size, job.mtime_ns):
        return True
    # touched, not changed: same size and the same content
    return rec.content_hash is not None and rec.size == job.size and rec.content_hash == content_hash(job.path)


def describe(settings: Mapping[str, Any], keys: list[str]) -> str:
    """``k=v; …`` for the given keys, long values cut to 80 characters."""
    parts = []
    for k in keys:
        v = settings.get(k)
        if isinstance(v, dict):
            v = json.dumps(v, sort_keys=True)[:80]
        parts.append(f"{k}={v}")
    return "; ".join(parts)
