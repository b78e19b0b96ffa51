"""What the service shares between requests: the text engine, the bundle and the index, opened once.

The index is read through snapshots. A snapshot is every live shard (read-only memory maps) and
every indexed video's record, read in one SQLite read transaction: in WAL mode that transaction
sees one committed state, and a shard file is complete before the manifest commits it, so a
search never sees half of an ``embed`` (no torn reads). ``PRAGMA data_version`` changes when
another connection commits; each request asks it (microseconds) and a new snapshot is read only
then. The text engine is called under a lock (onnxruntime sessions are thread-safe, but not every
engine says so). Searches go through one batcher thread: the questions of every request waiting
at that moment are searched together, in one pass over the rows (an exact search reads the whole
index per pass, so 8 questions cost little more than 1), and each request takes its own top k
back (the same videos as alone; a score may differ in its last bits, as the product of one
question is a matrix-vector one and a batch's a matrix-matrix one). Run side by side instead, concurrent searches fought over the cores and memory bandwidth:
on 2 cores, 8 concurrent clients got 3.4 requests/s against 15.5 for one client.
"""

from __future__ import annotations

import math
import os
import queue
import sqlite3
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jemc_infer.bundle import Bundle, read_bundle
from jemc_infer.engines import Engine, open_engine
from jemc_infer.errors import InputError, ModelMismatchError
from jemc_infer.index.search import search
from jemc_infer.index.source import InMemory
from jemc_infer.index.store import MANIFEST, Index
from jemc_infer.index.windows import best_window
from jemc_infer.query import Hit, Searcher, encode_queries, like_question, parse_space_weights, resolve_model
from jemc_infer.serve.thumbnail import frame_jpeg, video_details

if TYPE_CHECKING:
    from jemc_infer.cluster import Cluster
    from jemc_infer.cluster.search import ShardedSearch


@dataclass(frozen=True)
class Video:
    """One indexed video as the service shows it."""

    id: int
    path: str  # as stored: relative to the index directory
    duration: float | None
    size: int


@dataclass(frozen=True)
class Snapshot:
    """One committed state of the index."""

    source: InMemory  # every shard with live rows
    videos: dict[int, Video]  # id → video, the ``ok`` ones with a row
    roots: tuple[Path, ...]  # the collection's folders (resolved): files are served only from under them


class _Batcher:
    """One thread that searches the questions of every waiting request in one pass."""

    def __init__(self, device: str, max_queries: int = 256, searcher: Searcher | None = None) -> None:
        self.device, self.max_queries, self.searcher = device, max_queries, searcher
        self._inbox: queue.Queue[list | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="jemc-search", daemon=True)
        self._thread.start()

    def search(self, source: InMemory, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exactly :func:`jemc_infer.index.search.search` (``source``, ``queries``, ``k``), batched with others."""
        job: list = [source, queries, k, threading.Event(), None]
        self._inbox.put(job)
        job[3].wait()
        if isinstance(job[4], BaseException):
            raise job[4]
        return job[4]

    def close(self) -> None:
        self._inbox.put(None)
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        held: list[list] = []
        while True:
            job = held.pop(0) if held else self._inbox.get()
            if job is None:
                return
            batch, rows = [job], len(job[1])
            while rows < self.max_queries:
                try:
                    nxt = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if nxt is None or nxt[0] is not job[0]:  # another snapshot (or the end): after this batch
                    held.append(nxt)
                    if nxt is None:
                        break
                    continue
                batch.append(nxt)
                rows += len(nxt[1])
            try:
                # the top k of each is a prefix of the top max-k: the order (score, then id) is total
                queries, k = np.concatenate([j[1] for j in batch]), max(j[2] for j in batch)
                if self.searcher is None:
                    scores, ids = search(job[0], queries, k, device=self.device)
                else:  # on Ray: the snapshot's shards go to the actors once, when it is new
                    scores, ids = self.searcher(job[0], queries, k)
                at = 0
                for j in batch:
                    j[4] = (scores[at:at + len(j[1]), :j[2]], ids[at:at + len(j[1]), :j[2]])
                    at += len(j[1])
            except BaseException as exc:  # noqa: BLE001 - handed to the request that waits for it
                for j in batch:
                    j[4] = exc
            for j in batch:
                j[3].set()


class NotFound(InputError):
    """An id the index does not hold (the API answers 404)."""


class Forbidden(InputError):
    """A file the service will not serve (outside the collection; the API answers 403)."""


class Library:
    """The bundle, the text engine and the index of one ``serve`` process.

    Args:
        index_dir: The index (made by ``jemc-infer embed``).
        model: The bundle (else ``$JEMC_MODEL``, the index's model, the demo bundle).
        roots: Folders whose files may be served; None: the deepest folder that holds every indexed
            video (recomputed as ``embed`` adds videos).
        backend, device: The text engine's choice (:func:`jemc_infer.engines.open_engine`).
        thumbnail_cache: How many thumbnails to keep in memory.
        cluster: Search on Ray, the index's shards split across actors (``jemc_infer.cluster.search``:
            the same hits); each new snapshot is handed to the actors once. None: search here.

    Raises:
        InputError: No index, no model. ModelMismatchError: the index was made with another model.
        BackendUnavailableError: No engine can run the text graph.
    """

    def __init__(self, index_dir: Path, model: Path | None = None, roots: list[Path] | None = None, backend: str = "auto",
                 device: str = "auto", thumbnail_cache: int = 512, cluster: Cluster | None = None) -> None:
        self.index_dir = Path(index_dir)
        with Index.open(self.index_dir) as index:  # validates format and settings
            self.settings = index.settings
            self.bundle: Bundle = read_bundle(resolve_model(model, index))
        if self.bundle.fingerprint != self.settings["model"]:
            raise ModelMismatchError(self.index_dir, self.settings["model"], self.bundle.fingerprint, self.bundle.path)
        self.engine: Engine
        self.engine, self.engine_why = open_engine(self.bundle.path, "text", backend=backend, device=device)
        self.default_weights = {s.name: s.weight for s in self.bundle.config.spaces}
        self._sharded: ShardedSearch | None = None
        searcher: Searcher | None = None
        if cluster is not None:
            from jemc_infer.cluster.search import ShardedSearch  # Ray only when asked for

            try:
                self._sharded = on_ray = ShardedSearch(cluster, device="cuda" if device == "cuda" else "cpu")
            except BaseException:
                self.engine.close()
                raise
            searcher = lambda source, queries, k: on_ray.search(queries, k, source=source)  # noqa: E731
        self._batcher = _Batcher("cuda" if device == "cuda" else "cpu", searcher=searcher)  # cuda: the fused top-k kernel
        self._roots = tuple(Path(os.path.realpath(r)) for r in roots) if roots else None
        # one connection for the process: only ever used under self._lock
        self._db = sqlite3.connect(self.index_dir / MANIFEST, timeout=30, check_same_thread=False)
        self._index = Index(self.index_dir, self._db, self.settings, None)
        self._lock, self._engine_lock = threading.Lock(), threading.Lock()
        self._version: int | None = None
        self._snapshot: Snapshot | None = None
        self._thumbs: OrderedDict[tuple, bytes] = OrderedDict()
        self._thumbs_max = thumbnail_cache
        self._details: dict[tuple, dict] = {}

    def close(self) -> None:
        """Close the engine and the manifest. Idempotent."""
        with self._lock:
            if self._db is not None:
                self._batcher.close()
                if self._sharded is not None:
                    self._sharded.close()
                self.engine.close()
                self._db.close()
                self._db = None  # type: ignore[assignment]

    @property
    def ray_actors(self) -> int:
        """How many Ray actors hold the index's shards (0: searched in this process)."""
        return len(self._sharded.actors) if self._sharded is not None else 0

    # -- the index -----------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """The index as last committed (re-read only when another connection has committed)."""
        with self._lock:
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
            if self._snapshot is None or version != self._version:
                self._snapshot, self._version = self._read(), version
            return self._snapshot

    def _read(self) -> Snapshot:
        self._db.execute("BEGIN")  # one read transaction: one committed state (WAL)
        try:
            shards = tuple(self._index.shards())
            segments = tuple(self._index.segments())
            rows = self._db.execute("SELECT id, path, duration, size FROM videos WHERE status = 'ok' AND shard IS NOT NULL").fetchall()
        finally:
            self._db.rollback()
        videos = {r[0]: Video(r[0], r[1], r[2], r[3]) for r in rows}
        roots = self._roots or self._default_roots(videos)
        return Snapshot(InMemory(shards, segments), videos, roots)

    def _default_roots(self, videos: dict[int, Video]) -> tuple[Path, ...]:
        if not videos:
            return ()
        folders = {os.path.dirname(os.path.normpath(self.index_dir.absolute() / v.path)) for v in videos.values()}
        return (Path(os.path.realpath(os.path.commonpath(sorted(folders)))),)

    # -- searching -----------------------------------------------------------------------------
    def search(self, texts: list[str], k: int, weights: dict[str, float] | None = None) -> tuple[list[list[Hit]], list[str]]:
        """Rank the index's videos for each text.

        Args:
            texts: The sentences (checked against the service's limits by the caller).
            k: Results per text, >= 1.
            weights: Fusion weights by space name (unnamed spaces keep the bundle's).

        Returns:
            One list of hits per text (best first; fewer than ``k`` when the index holds fewer
            videos), and warnings (texts with no known word).

        Raises:
            SettingError: An unknown space or a negative weight. InputError: An empty text.
        """
        spec = ",".join(f"{name}={value!r}" for name, value in (weights or {}).items())
        fused = parse_space_weights(spec, self.bundle)
        with self._engine_lock:
            queries, warnings = encode_queries(self.bundle, self.engine, texts, fused)
        return self._rank(queries, k), warnings

    def like(self, video_id: int, k: int, weights: str | None = None) -> list[Hit]:
        """"More like this": the index ranked by an indexed video's own row (the video itself left out).

        Args:
            weights: ``"object=1,activity=0.5"`` as ``query --space-weights`` takes it; None: the bundle's.

        Raises:
            NotFound: No such video with a row. SettingError: Bad weights. InputError: A weight that is not finite.
        """
        fused = parse_space_weights(weights, self.bundle)
        if not all(math.isfinite(w) for w in fused.values()):
            raise InputError(f"weights | {weights} | expected finite numbers >= 0")
        self.video(video_id)  # 404 for an unknown id (never a path: the service reads no file a client names)
        with self._lock:
            question, vid = like_question(self._index, self.bundle, int(video_id), fused)
        return self._rank(question[None], k, exclude=vid)[0]

    def _rank(self, queries: np.ndarray, k: int, exclude: int | None = None) -> list[list[Hit]]:
        """Search the current snapshot; each hit with its best-matching moment where the index keeps windows."""
        snap = self.snapshot()
        if not snap.source.blocks:
            return [[] for _ in queries]
        scores, ids = self._batcher.search(snap.source, queries, k + (exclude is not None))
        with self._lock:  # a video's windows are committed with its row: read them in one statement
            windows = self._index.windows(ids) if self._index.has_moments else {}
        out = []
        for q, srow, irow in zip(queries, scores, ids, strict=True):
            hits: list[Hit] = []
            for s, i in zip(srow, irow, strict=True):
                video = snap.videos.get(int(i))
                if video is not None and int(i) != exclude and len(hits) < k:
                    moment = best_window(windows[int(i)], q) if int(i) in windows else None
                    hits.append(Hit(len(hits) + 1, float(s), video.path, video.duration, video.id, moment))
            out.append(hits)
        return out

    # -- videos --------------------------------------------------------------------------------
    def video(self, video_id: int) -> Video:
        """The indexed video with this id.

        Raises:
            NotFound: No such video in the index (or not embedded: failed videos have no row).
        """
        video = self.snapshot().videos.get(video_id)
        if video is None:
            raise NotFound(f"video {video_id} | not in the index | expected an id from a search's hits")
        return video

    def file(self, video_id: int) -> Path:
        """The video's file, symlinks resolved, checked to be inside the collection.

        Raises:
            NotFound: No such video, or its file is gone. Forbidden: The file (after resolving
                symlinks) is outside the collection's folders.
        """
        video, roots = self.video(video_id), self.snapshot().roots
        real = Path(os.path.realpath(self.index_dir.absolute() / video.path))
        if not any(real.is_relative_to(r) for r in roots):
            where = ", ".join(str(r) for r in roots) or "no folder"
            raise Forbidden(f"video {video_id} | its file resolves outside the collection | expected a file under {where}")
        if not real.is_file():
            raise NotFound(f"video {video_id} | file {video.path} is gone | expected the file `jemc-infer embed` indexed")
        return real

    def details(self, video_id: int) -> dict:
        """What the container says about the video (size, fps, codecs), cached per file version."""
        path = self.file(video_id)
        st = path.stat()
        key = (video_id, st.st_size, st.st_mtime_ns)
        if key not in self._details:
            self._details[key] = video_details(path)
        return self._details[key]

    def thumbnail(self, video_id: int, t: float, width: int) -> bytes:
        """A JPEG of the frame shown at ``t`` seconds, at most ``width`` pixels wide (cached).

        Raises:
            InputError: ``t`` past the end of the video, or the file cannot be decoded.
        """
        video, path = self.video(video_id), self.file(video_id)
        if video.duration is not None and t > video.duration:
            raise InputError(f"t | {t:g} | expected 0 to {video.duration:g} (the video's duration in seconds)")
        st = path.stat()
        key = (video_id, st.st_size, st.st_mtime_ns, round(t, 2), width)
        with self._lock:
            if key in self._thumbs:
                self._thumbs.move_to_end(key)
                return self._thumbs[key]
        jpeg = frame_jpeg(path, t, width)
        with self._lock:
            self._thumbs[key] = jpeg
            while len(self._thumbs) > self._thumbs_max:
                self._thumbs.popitem(last=False)
        return jpeg
