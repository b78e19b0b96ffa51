"""Sharded exact search on Ray: an index's shards split across actors, merged exactly.

Each :class:`ShardActor` holds some of the index's shards — memory-mapped from the shard files
at the paths the driver read them from (on one machine, or a file system every node mounts),
or, for shards that are not files (arrays in memory), copied to it once — and answers
``search()`` for its part: its exact top k, ties by the lower id, dead rows skipped. The driver
merges the parts in the same order (score descending, then id ascending). Every global top-k row
is in its part's top k, and every shard is scored by the same BLAS calls as in a local search
(a shard is never split, and the actors' BLAS uses this process's thread count), so the result is
the local full scan's (``search(..., compact=False)``): the same ids and the same scores, bit for
bit (on nodes with the same BLAS and CPU kind; elsewhere a score may differ in its last bits).
Against a local search through the index's compact copy: the same ids, scores within float32
rounding (that path rounds float64 sums).

Per query, what crosses the network: the query vectors to every actor (nq × D × 4 bytes) and k
(score, id) pairs per query back from each. The rows never move after loading.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Sequence

import numpy as np

from jemc_infer.cluster.runtime import Cluster, actor_count, join, resources
from jemc_infer.errors import IndexCorruptError, InputShapeError
from jemc_infer.index.search import check_k, check_queries, search
from jemc_infer.index.source import InMemory, Shard, ShardSource


class ShardActor:
    """Some shards of an index, searched where they lie."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.source = InMemory(())

    def load(self, parts: list[tuple[str | None, np.ndarray, tuple[int, ...], str]], *arrays: np.ndarray) -> int:
        """Hold these shards from now on: (file, ids, shape, dtype) each, ``file`` the ``.npy`` to
        memory-map, or None for the next of ``arrays`` (Ray hands them over from its object store
        without a copy). Returns how many live rows it holds.

        Raises:
            IndexCorruptError: A shard file is unreadable here or not what the driver read.
        """
        blocks = []
        given = iter(arrays)
        for file, ids, shape, dtype in parts:
            if file is None:
                rows = next(given)
            else:
                try:
                    rows = np.load(file, mmap_mode="r", allow_pickle=False)
                except (OSError, ValueError) as err:
                    raise IndexCorruptError(f"{file} | unreadable on this Ray node ({err}) | expected the shard file "
                                            "the driver read (every node needs the index at the same path)") from None
                if rows.shape != tuple(shape) or str(rows.dtype) != dtype:
                    raise IndexCorruptError(f"{file} | {rows.dtype} {list(rows.shape)} on this Ray node | expected "
                                            f"{dtype} {list(shape)} as the driver read it")
            blocks.append(Shard(rows, ids))
        self.source = InMemory(tuple(blocks))
        return int(sum(np.count_nonzero(b.ids >= 0) for b in blocks))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """This part's exact top ``k`` (:func:`jemc_infer.index.search.search`)."""
        if not self.source.blocks:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        return search(self.source, queries, k, device=self.device)


class ShardedSearch:
    """A :class:`ShardSource`'s shards on Ray actors; ``search`` as the local one answers.

    Args:
        cluster: Which cluster; ``cluster.actors`` shard actors (None: one per GPU, else half the
            CPUs), spread over the cluster's nodes.
        device: Where each actor scores: ``"cpu"`` or ``"cuda"`` (the fused kernel of
            ``jemc_infer.index.gpu``, one GPU per actor).

    Use it as a context manager, or call :meth:`close` (it stops the actors, and the cluster if
    it started one).
    """

    def __init__(self, cluster: Cluster, device: str = "cpu") -> None:
        self.ray, self._owned = join(cluster)
        try:
            cpus, gpus = resources(self.ray)
            n = actor_count(cluster, cpus, gpus)
            gpu = device == "cuda"
            cls = self.ray.remote(num_cpus=0 if gpu else min(1.0, cpus / (2 * n)), num_gpus=1 if gpu else 0,
                                  scheduling_strategy="SPREAD", runtime_env=_same_blas_threads(cluster.runtime_env))(ShardActor)
            self.actors = [cls.remote(device) for _ in range(n)]
        except BaseException:
            self._shutdown()
            raise
        self.dim = 0
        self.live = 0
        self._loaded: ShardSource | None = None

    def __enter__(self) -> ShardedSearch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the actors (and the cluster, if this object started it). Idempotent."""
        for a in getattr(self, "actors", []):
            self.ray.kill(a)
        self.actors = []
        self._shutdown()

    def _shutdown(self) -> None:
        if self._owned:
            self.ray.shutdown()
            self._owned = False

    def load(self, source: ShardSource) -> None:
        """Hand ``source``'s shards to the actors (shard j to actor j mod n: every actor gets
        about as many rows when shards are of one size, as ``embed`` writes them).

        A shard that is a whole ``.npy`` memory map (an open index's) travels as its path; any
        other array is copied into Ray's object store once.

        Raises:
            IndexCorruptError: An actor cannot read a shard file.
        """
        parts: list[list] = [[] for _ in self.actors]
        arrays: list[list] = [[] for _ in self.actors]
        for j, shard in enumerate(source.shards()):
            rows, a = shard.rows, j % len(self.actors)
            file = _file_of(rows)
            if file is None:
                arrays[a].append(self.ray.put(np.asarray(rows)))
            parts[a].append((file, np.asarray(shard.ids, np.int64), tuple(rows.shape), str(rows.dtype)))
        self.live = int(sum(self.ray.get([actor.load.remote(p, *x) for actor, p, x in zip(self.actors, parts, arrays, strict=True)])))
        self.dim = source.dim
        self._loaded = source

    def search(self, queries: np.ndarray, k: int, source: ShardSource | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exactly :func:`jemc_infer.index.search.search` (``source``, ``queries``, ``k``).

        Args:
            queries: float32 [nq, D]. k: results per query, >= 1.
            source: What to search; loaded first unless it is the source already loaded (the
                same object: a server's snapshot). None: the one loaded.

        Returns:
            ``(scores, ids)`` float32 and int64 [nq, min(k, live rows)], best first, equal
            scores by ascending id; short rows padded with -inf and -1, as the local search does.

        Raises:
            InputShapeError: Bad queries or k (nothing loaded yet: load a source first).
        """
        if source is not None and source is not self._loaded:
            self.load(source)
        if self._loaded is None:
            raise InputShapeError("sharded search | nothing loaded | expected load(source) or search(..., source=...) first")
        k = check_k(k)
        q = check_queries(queries, self.dim)
        ref = self.ray.put(q)
        parts = self.ray.get([a.search.remote(ref, k) for a in self.actors])
        return merge(parts, k, self.live, len(q))


def merge(parts: Sequence[tuple[np.ndarray, np.ndarray]], k: int, live: int, nq: int) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` of the parts' top-k lists, in the local search's order (score descending,
    then id ascending); [nq, min(k, live)], places without a live row left as (-inf, -1)."""
    width = min(k, live)
    scores = np.concatenate([np.asarray(p[0], np.float32).reshape(nq, -1) for p in parts], axis=1)
    ids = np.concatenate([np.asarray(p[1], np.int64).reshape(nq, -1) for p in parts], axis=1)
    empty = ids < 0  # padding: after every real hit
    order = np.lexsort((np.where(empty, np.iinfo(np.int64).max, ids), -scores, empty), axis=1)[:, :width]
    out_scores, out_ids = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
    pad = out_ids < 0
    out_scores[pad], out_ids[pad] = -np.inf, -1
    return out_scores, out_ids


def _same_blas_threads(runtime_env: dict) -> dict:
    """``runtime_env`` with the actors' BLAS threads set to this process's.

    Ray sets OMP_NUM_THREADS to a worker's CPUs (1 for these actors), and OpenBLAS sums a
    matrix-matrix product (many queries) in another order with another thread count: the scores
    would differ from a local search's in their last bits, and a near-tie could swap. With the
    same count (and the same BLAS and CPU kind) they are equal bit for bit. A runtime_env that
    sets these variables itself keeps its own.
    """
    threads = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or str(os.cpu_count() or 1)
    blas = dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"), threads)
    return {**runtime_env, "env_vars": {**blas, **runtime_env.get("env_vars", {})}}


def _file_of(rows: np.ndarray) -> str | None:
    """The ``.npy`` file ``rows`` maps whole (an index's shard), else None (it must travel)."""
    name = getattr(rows, "filename", None)
    # np.load's own map sits directly on the mmap; a slice of it (a view) does not, and must travel
    if not isinstance(rows, np.memmap) or not isinstance(rows.base, mmap.mmap) or not str(name or "").endswith(".npy"):
        return None
    return str(name)

