"""``query``: sentences → the best-matching videos of an index (torch-free runtime).

A query is tokenised, encoded by the text engine into one embedding per space, and fused into one
vector ``[w_1·t_1 | w_2·t_2 | …]``: its inner product with an index row ``[v_1 | v_2 | …]`` is
the model's score ``Σ_s w_s cos_s``, so fusion costs nothing at search time.

Ranking is on the videos' pooled rows (the paper's model). Where the index keeps moments, each
hit also says which window of its video scores highest for the question (``Hit.moment``;
``jemc_infer.index.windows``). :func:`query_like` asks with a video instead of a sentence: its own
row is the question ("more like this").
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jemc_infer.bundle import Bundle, read_bundle
from jemc_infer.engines import Engine, open_engine
from jemc_infer.errors import InputError, ModelMismatchError, SettingError
from jemc_infer.index.search import search
from jemc_infer.index.source import ShardSource
from jemc_infer.index.store import Index
from jemc_infer.index.windows import best_window

if TYPE_CHECKING:
    from jemc_infer.cluster import Cluster

# search(source, queries, k) -> (scores, ids), as jemc_infer.index.search.search answers it
Searcher = Callable[[ShardSource, np.ndarray, int], tuple[np.ndarray, np.ndarray]]

MODEL_ENV = "JEMC_MODEL"
DEMO_MODEL = Path("demo/models/jemc")  # what `jemc-infer demo` (make demo) deploys
QUOTE_CHARS = 80  # how much of a query a warning quotes


def quote(text: str, limit: int = QUOTE_CHARS) -> str:
    """``repr(text)`` of at most ``limit`` characters of the text: a long one keeps its start and end
    and says its length (``'a man is cooking … in a kitchen' (25000 characters)``)."""
    if len(text) <= limit:
        return repr(text)
    tail = limit // 4
    return f"{text[:limit - tail] + ' … ' + text[-tail:]!r} ({len(text)} characters)"


@dataclass(frozen=True)
class Hit:
    rank: int
    score: float
    path: str  # as stored (relative to the index), resolved for display by the caller
    duration: float | None
    id: int
    moment: tuple[float, float] | None = None  # (start, end) seconds of the best-matching window, where the index keeps them


def resolve_model(model: Path | None, index: Index | None = None) -> Path:
    """``model``, else ``$JEMC_MODEL``, else the bundle the index was built with, else the demo bundle.

    Raises:
        SettingError: None of these exists (``setting`` "model"; the message lists where it looked).
    """
    looked = []
    for label, cand in (("the given model", model), (f"${MODEL_ENV}", os.environ.get(MODEL_ENV)),
                        ("the index's model", index.model_path if index is not None else None), ("the demo bundle", DEMO_MODEL)):
        if cand is None:
            continue
        if Path(cand).is_dir():
            return Path(cand)
        looked.append(f"{label} {cand}")
    raise SettingError("model", f"none found ({'; '.join(looked) or 'nothing given'})", f"a model bundle directory, or ${MODEL_ENV}")


def parse_space_weights(text: str | None, bundle: Bundle) -> dict[str, float]:
    """``"object=1,activity=0.5"`` → weights for every space (unnamed ones keep the bundle's).

    Raises:
        SettingError: An unknown space name or a value that is not a number >= 0 (``setting``
            "space_weights").
    """
    weights = {s.name: s.weight for s in bundle.config.spaces}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in weights:
            raise SettingError("space_weights", f"unknown space {name!r}", f"names from {sorted(weights)}")
        try:
            w = float(value)
            if not w >= 0:
                raise ValueError
        except ValueError:
            raise SettingError("space_weights", repr(part.strip()), "name=number with number >= 0") from None
        weights[name] = w
    return weights


def encode_queries(bundle: Bundle, engine: Engine, texts: list[str], weights: dict[str, float],
                   batch_size: int = 64) -> tuple[np.ndarray, list[str]]:
    """Fused query vectors float32 [len(texts), D], and warnings (texts with no known word).

    Raises:
        InputError: An empty text.
    """
    warnings = []
    for i, t in enumerate(texts):
        if not t.strip():
            raise InputError(f"query {i + 1} | empty text | expected words to search for")
        if bundle.vocab.known_words(t) == 0:
            warnings.append(f"no word of {quote(t)} is in the model's vocabulary: the results are a guess")
    out = []
    for start in range(0, len(texts), batch_size):
        ids, lengths = bundle.vocab.encode_batch(texts[start:start + batch_size])
        emb = engine.run({"ids": ids, "lengths": lengths})
        out.append(np.concatenate([weights[s.name] * emb[f"text_{s.name}"] for s in bundle.config.spaces], axis=1))
    return np.concatenate(out).astype(np.float32), warnings


def query(index_dir: Path, texts: list[str], k: int = 10, model: Path | None = None, space_weights: str | None = None,
          backend: str = "auto", device: str = "auto", precision: str = "auto",
          on_engine: Callable[[str], None] | None = None, cluster: Cluster | None = None) -> tuple[list[list[Hit]], list[str]]:
    """Search an index with sentences.

    Args:
        precision: The text graph's (:func:`jemc_infer.engines.open_engine`): ``auto`` takes the
            int8 text graph on the CPU where the bundle has one with its gates passed.
        on_engine: Gets the line saying which engine encodes the text, and why.
        cluster: Search on Ray, the index's shards split across actors (``jemc_infer.cluster.search``:
            the same hits as here). The text encoder runs here either way.

    Returns:
        One list of hits per text (best first), and warnings for the user.

    Raises:
        SettingError: No model found, bad weights, no text, k < 1.
        ModelMismatchError: The index was made with another model.
        InputError: No index, an empty text.
    """
    if k < 1:
        raise SettingError("k", str(k), ">= 1")
    if not texts:
        raise SettingError("texts", "no text", "at least one sentence")
    with Index.open(index_dir) as index:
        bundle = _bundle_for(index, model)
        engine, why = open_engine(bundle.path, "text", backend=backend, device=device, precision=precision)
        if on_engine is not None:
            on_engine(why)
        with engine:
            queries, warnings = encode_queries(bundle, engine, texts, parse_space_weights(space_weights, bundle))
        with sharded(cluster, device) as searcher:
            hits = rank(index, queries, k, device="cuda" if device == "cuda" else "cpu", searcher=searcher)
        warnings += moment_warnings(index)
    return hits, warnings


@contextlib.contextmanager
def sharded(cluster: Cluster | None, device: str = "cpu") -> Iterator[Searcher | None]:
    """A :data:`Searcher` on Ray actors for the duration (None without a cluster: search here)."""
    if cluster is None:
        yield None
        return
    from jemc_infer.cluster.search import ShardedSearch  # Ray only when asked for

    with ShardedSearch(cluster, device="cuda" if device == "cuda" else "cpu") as on_ray:
        yield lambda source, queries, k: on_ray.search(queries, k, source=source)


def rank(index: Index, queries: np.ndarray, k: int, exclude: int | None = None, device: str = "cpu",
         searcher: Searcher | None = None) -> list[list[Hit]]:
    """The top ``k`` videos for each fused query float32 [nq, D], with their best moments.

    Args:
        index: An open index.
        queries: Fused query vectors (:func:`encode_queries`, or video rows for :func:`query_like`).
        k: Hits per query (>= 1).
        exclude: A video id never to return (the question's own video).
        device: Where the search runs: ``"cpu"`` or ``"cuda"`` (the fused top-k kernel).
        searcher: Another search with the same answers (:func:`sharded`: on Ray); None: ``search`` here.

    Returns:
        One list of hits per query, best first; ``moment`` set where the index keeps the video's windows.
    """
    if searcher is None:
        scores, ids = search(index, queries, k + (exclude is not None), device=device)
    else:
        scores, ids = searcher(index, queries, k + (exclude is not None))
    info = index.describe(ids)
    windows = index.windows(ids) if index.has_moments else {}
    hits = []
    for q, srow, irow in zip(queries, scores, ids, strict=True):
        kept = [(float(s), int(i)) for s, i in zip(srow, irow, strict=True) if int(i) != exclude and i >= 0][:k]
        hits.append([Hit(r + 1, s, info[i][0], info[i][1], i, best_window(windows[i], q) if i in windows else None)
                     for r, (s, i) in enumerate(kept)])
    return hits


def moment_warnings(index: Index) -> list[str]:
    """One line where the index keeps no moments (made before them), saying how to add them."""
    if index.has_moments:
        return []
    return [f"{index.path} keeps no moments (built before them): results come without one; "
            f"`jemc-infer embed VIDEOS --index {index.path} --with-moments` adds them"]


def query_like(index_dir: Path, video: str | int | Path, k: int = 10, model: Path | None = None,
               space_weights: str | None = None, backend: str = "auto", device: str = "auto",
               exclude_self: bool = False, cluster: Cluster | None = None) -> tuple[list[Hit], list[str]]:
    """Search an index with a video: its own pooled row is the question ("more like this").

    Args:
        index_dir: The index.
        video: An indexed video's id (an int, or a string of digits), its path as stored (relative
            to the index, as ``Hit.path``), or a video file (an indexed one is not embedded again;
            any other is embedded on the fly with the engines ``embed`` uses, with the index's sampling).
        k: Hits (>= 1).
        model: The model bundle (else ``$JEMC_MODEL``, the index's, the demo bundle).
        space_weights: Fusion weights, as for :func:`query` (each space's part of the row is scaled).
        backend, device: Engine choice for a file that must be embedded.
        exclude_self: Leave the video itself out of the hits (when it is indexed).
        cluster: Search on Ray (as for :func:`query`).

    Returns:
        The hits, best first (the video itself first, with score ≈ Σ_s w_s, unless excluded), and
        warnings for the user.

    Raises:
        SettingError: k < 1, no model found, bad weights, ``video`` neither indexed nor a file
            (``setting`` "video").
        ModelMismatchError: The index was made with another model.
        InputError: No index; a file that cannot be decoded.
    """
    if k < 1:
        raise SettingError("k", str(k), ">= 1")
    with Index.open(index_dir) as index:
        bundle = _bundle_for(index, model)
        question, vid = like_question(index, bundle, video, parse_space_weights(space_weights, bundle), backend, device)
        with sharded(cluster, device) as searcher:
            (hits,) = rank(index, question[None], k, exclude=vid if exclude_self else None,
                           device="cuda" if device == "cuda" else "cpu", searcher=searcher)
        return hits, moment_warnings(index)


def like_question(index: Index, bundle: Bundle, video: str | int | Path, weights: dict[str, float],
                  backend: str = "auto", device: str = "auto") -> tuple[np.ndarray, int | None]:
    """The fused question float32 [D] that a video asks (its row, each space's part scaled by its
    weight), and its id where it is indexed. For callers that keep an index and a bundle open
    (a server): ``rank(index, question[None], k, exclude=vid)`` then answers it.

    Args:
        index: The open index; bundle: its model (checked by the caller); weights: per space
            (:func:`parse_space_weights`); the rest as for :func:`query_like`.

    Raises:
        SettingError: ``video`` is neither indexed (with a row) nor a file (``setting`` "video").
        InputError: A file that cannot be decoded.
    """
    vid = indexed_video(index, video)
    row = index.row(vid) if vid is not None else None
    if row is None:
        if not Path(str(video)).is_file():
            got = f"{video!r}: {'indexed, but it has no row (it failed to embed)' if vid is not None else 'no indexed video and no file'}"
            raise SettingError("video", got, "an indexed video's id or path, or a video file")
        row = _embed_file(Path(str(video)), bundle, index, backend, device)
    width = bundle.config.embed_dim
    question = np.concatenate([weights[s.name] * row[i * width:(i + 1) * width] for i, s in enumerate(bundle.config.spaces)])
    return question.astype(np.float32), vid


def indexed_video(index: Index, video: str | int | Path) -> int | None:
    """The id of the indexed video ``video`` names (an id, a stored path, or a file's path), or None."""
    text = str(video)
    if (isinstance(video, int) or text.isdigit()) and int(text) in index.describe(np.array([int(text)])):
        return int(text)
    records = index.videos()
    if text in records:
        return records[text].id
    if Path(text).exists():
        key = index.jobs.key(Path(text).absolute())
        if key in records:
            return records[key].id
        real = os.path.realpath(text)
        for path, rec in records.items():
            if os.path.realpath(index.path / path) == real:
                return rec.id
    return None


def _embed_file(path: Path, bundle: Bundle, index: Index, backend: str, device: str) -> np.ndarray:
    from jemc_infer.embed import embed_video, open_engines  # embed builds on this module: imported when used
    from jemc_infer.video.sampling import Sampling

    engines, _ = open_engines(bundle, backend, device)
    try:
        return embed_video(path, bundle, Sampling(**index.settings["sampling"]), engines)
    finally:
        for e in engines.values():
            e.close()


def _bundle_for(index: Index, model: Path | None) -> Bundle:
    bundle = read_bundle(resolve_model(model, index))
    if bundle.fingerprint != index.settings["model"]:
        raise ModelMismatchError(index.path, index.settings["model"], bundle.fingerprint, bundle.path)
    return bundle
