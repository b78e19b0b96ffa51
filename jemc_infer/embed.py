"""``embed``: folders of videos → index rows, incrementally and crash-safely (torch-free runtime).

Configuration plus a sink over the collection pipeline (``jemc_infer.collection``): the backbones
and video heads run through engines (``jemc_infer.engines``: exported graphs, or torch), the
index's manifest is the job store, and :class:`IndexSink` commits a shard every ``flush_every``
videos. A video already embedded unchanged with the same model is skipped; a changed one is
re-embedded; ``prune`` drops videos whose files are gone.

Moments: a new index keeps each video's per-window rows beside its pooled row (one per sampled
frame and one per clip, ``jemc_infer.moments``), so that a hit can say where in the video it
matches. An index made before them has none; ``moments=True`` turns them on and re-embeds its
videos, so that an index has windows for every video or for none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jemc_infer.bundle import Bundle, read_bundle
from jemc_infer.collection import VIDEO_EXTENSIONS, Event, Job, Options, RunSummary, VideoRecord, run_collection, scan
from jemc_infer.config import ModelConfig
from jemc_infer.engines import Engine, open_engine
from jemc_infer.errors import BundleError, InputError
from jemc_infer.index.store import MANIFEST, Index
from jemc_infer.index.windows import WindowRows
from jemc_infer.manifest import graph_entry
from jemc_infer.moments import window_rows
from jemc_infer.query import resolve_model
from jemc_infer.specs import SOUNDNET_MIN_EXPORT_SAMPLES
from jemc_infer.video.pipeline import VideoResult, Windows, extract_features
from jemc_infer.video.sampling import Sampling, i3d_input, resnet_input

if TYPE_CHECKING:
    from jemc_infer.cluster import Cluster


class EngineEncoder:
    """The pipeline's ``FeatureEncoder`` over backbone engines (numpy normalisation, as exported)."""

    def __init__(self, engines: dict[str, Engine], why: Sequence[str] = ()) -> None:
        self.engines = engines
        self.why = list(why)  # which backend runs each graph, and why

    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        return self.engines["resnet"].run({"frames": resnet_input(frames)})["features"]

    def encode_clips(self, clips: np.ndarray) -> np.ndarray:
        return self.engines["i3d"].run({"clips": i3d_input(clips)})["features"]

    def encode_audio(self, wave: np.ndarray) -> np.ndarray:
        if len(wave) < SOUNDNET_MIN_EXPORT_SAMPLES:  # too short for the exported graph: repeat it
            wave = np.resize(wave, SOUNDNET_MIN_EXPORT_SAMPLES)
        return self.engines["audio"].run({"wave": np.ascontiguousarray(wave[None], np.float32)})["features"][0]


@dataclass(frozen=True)
class BackboneSpec:
    """The backbones of ``embed`` as a worker opens them itself: picklable, sent to Ray actors
    (``--ray``), which call it once. The bundle must be at ``model`` on every worker's machine."""

    model: Path
    backend: str = "auto"
    device: str = "auto"

    def __call__(self) -> EngineEncoder:
        """Raises: BundleError, BackendUnavailableError, InputError (as :func:`open_engines`)."""
        bundle = read_bundle(self.model)
        engines, why = open_engines(bundle, self.backend, self.device, graphs=tuple(bundle.config.features))
        return EngineEncoder(engines, why)


class IndexSink:
    """The ``embed`` sink: pooled features → the video heads → index rows, committed as one
    shard every ``flush_every`` videos (a shard and its videos are one transaction)."""

    def __init__(self, index: Index, bundle: Bundle, heads: Engine, flush_every: int, batch_size: int) -> None:
        self.index, self.config, self.heads = index, bundle.config, heads
        self.flush_every, self.batch_size = flush_every, batch_size
        self.moments = index.has_moments  # windows with every shard (results must carry them)
        self.pending: list[tuple[VideoRecord, dict[str, np.ndarray], dict[str, Windows]]] = []

    def add(self, job: Job, result: VideoResult) -> int:
        duration = result.stats.duration if result.stats else None
        self.pending.append((job.record("ok", duration), result.features, result.windows))
        return self.flush() if len(self.pending) >= self.flush_every else 0

    def flush(self) -> int:
        if not self.pending:
            return 0
        pending = self.pending
        rows = pooled_rows(self.config, self.heads, [p[1] for p in pending], self.batch_size)
        windows: WindowRows | None = None
        if self.moments:
            windows = window_rows(self.config, self.heads, rows, [p[1] for p in pending], [p[2] for p in pending],
                                  self.batch_size, self.index.dtype)
        self.index.add_shard(rows, [p[0] for p in pending], windows)
        self.pending = []
        return len(pending)


def pooled_rows(config: ModelConfig, heads: Engine, features: list[dict[str, np.ndarray]], batch_size: int) -> np.ndarray:
    """float32 [n, D]: the index rows ``[v_1 | v_2 | …]`` of videos given their pooled features
    (stream → float32 [d]; a feature a video lacks, e.g. the audio of a silent one, is zeros and
    its mask, for a paired feature, False). ``batch_size`` videos per head call."""
    paired = sorted({f for s in config.spaces for f in s.paired})
    feats = {f: np.stack([p.get(f, np.zeros(config.feature_dims[f], np.float32)) for p in features]).astype(np.float32)
             for f in config.features}
    inputs = {**feats, **{f"{f}_mask": np.array([f in p for p in features]) for f in paired}}
    parts = []
    for a in range(0, len(features), batch_size):  # within the engine's batch limits (TensorRT profiles)
        out = heads.run({name: v[a : a + batch_size] for name, v in inputs.items()})
        parts.append(np.concatenate([out[f"video_{s.name}"] for s in config.spaces], axis=1))
    return np.concatenate(parts)


@dataclass
class EmbedSummary:
    run: RunSummary  # what the collection pipeline did
    pruned: int = 0
    problems: list[str] = field(default_factory=list)  # scan problems
    engines: list[str] = field(default_factory=list)  # which backend runs each graph, and why
    messages: list[str] = field(default_factory=list)


def index_settings(bundle: Bundle, sampling: Sampling, dtype: str) -> dict[str, Any]:
    """What an index's rows depend on; an index refuses rows made with anything else."""
    backbones = {}
    for graph in bundle.config.features:  # each feature's backbone graph has the feature's name
        try:
            backbones[graph] = graph_entry(bundle.path, graph).sha256
        except BundleError:  # not exported: open_engine reports it with the command that fixes it
            backbones[graph] = None
    return {"model": bundle.fingerprint, "layout": [[s.name, bundle.config.embed_dim] for s in bundle.config.spaces],
            "sampling": sampling.to_json(), "backbones": backbones, "dtype": dtype}


def embed(
    inputs: Sequence[Path | str],
    index_dir: Path,
    model: Path,
    backend: str = "auto",
    device: str = "auto",
    options: Options = Options(),
    flush_every: int = 64,
    dtype: str = "float32",
    extensions: Iterable[str] = VIDEO_EXTENSIONS,
    prune: bool = False,
    on_event: Callable[[Event], None] | None = None,
    moments: bool | None = None,
    cluster: Cluster | None = None,
) -> EmbedSummary:
    """Embed every video under ``inputs`` into the index at ``index_dir``.

    Args:
        inputs: Files and folders (scanned recursively).
        index_dir: The index (created if absent).
        model: The model bundle; its backbone graphs must be exported (``jemc-infer export``).
        backend, device: Engine choice (``jemc_infer.engines.open_engine``).
        options: Sampling (part of the index's identity; left at the default, the sampling the
            model's training features were made with, when its bundle records it), decoder workers and time limit, batch
            sizes (``frame_batch`` frames per object-backbone call, also the video heads' batch).
        flush_every: Commit a shard every this many embedded videos.
        dtype: ``float32`` or ``float16`` rows.
        extensions: Which files are videos.
        prune: Drop indexed videos whose files no longer exist.
        on_event: Called with each progress event (``jemc_infer.collection.run``).
        moments: Keep each video's per-window rows (where in it a query matches). None: yes for
            a new index, as it was for an existing one. True on an index made without them turns
            them on and re-embeds its videos (those under ``inputs``; the others keep no moment
            until embedded again). False on an index with moments is refused.
        cluster: Run on Ray (``jemc_infer.cluster``): decoding in CPU tasks, the backbones in
            actors that open the bundle at ``model`` themselves; the video heads and the index
            stay here, in the one writer. None: in this process.

    Raises:
        InputError: Bad model or index (another model, another writer, ``moments=False`` on an
            index with moments), nothing to scan.
        BackendUnavailableError: No engine can run a graph.
    """
    if dtype not in ("float32", "float16"):
        raise InputError(f"dtype | {dtype!r} | expected float32 or float16")
    bundle = read_bundle(model)
    if options.sampling == Sampling():
        options = replace(options, sampling=trained_sampling(bundle) or options.sampling)
    found = scan(inputs, extensions)
    streams = tuple(bundle.config.features)
    summary = EmbedSummary(RunSummary(), problems=found.problems)
    # on Ray the backbones open on the actors: here only the heads, which the one writer runs
    engines, summary.engines = open_engines(bundle, backend, device, graphs=("video",) if cluster else None)
    try:
        index_dir.mkdir(parents=True, exist_ok=True)
        with Index.open(index_dir, index_settings(bundle, options.sampling, dtype), writer=True) as index:
            summary.messages.extend(index.messages)
            index.set_model_path(bundle.path)
            if prune:
                summary.pruned = index.prune([p for p in index.videos() if not (index_dir / p).exists()])
            summary.messages.extend(_settle_moments(index, moments))
            sink = IndexSink(index, bundle, engines["video"], flush_every, options.frame_batch)
            run_options = replace(options, streams=streams, keep_windows=index.has_moments)
            redo = index.without_moments() if index.has_moments else ()
            if cluster is None:
                summary.run = run_collection(found.files, index.jobs, sink, lambda: EngineEncoder(engines), run_options,
                                             on_event, redo=redo)
            else:
                from jemc_infer.cluster.collection import run_collection_ray

                summary.run, ran = run_collection_ray(found.files, index.jobs, sink, BackboneSpec(bundle.path.resolve(), backend, device),
                                                      cluster, run_options, on_event, redo=redo)
                summary.engines = ran.notes + summary.engines
                summary.messages.append(f"ray: {ran.actors} backbone actor(s), {ran.decode_slots} decoding task(s) at a time")
            index.compact()  # the int8 copy search scans first (jemc_infer.index.compact)
    finally:
        for e in engines.values():
            e.close()
    return summary


def _settle_moments(index: Index, moments: bool | None) -> list[str]:
    """Turn moments on for a new index (or when asked); refuse to turn them off. Returns messages."""
    if index.has_moments:
        if moments is False:
            raise InputError(f"moments | off | expected on: {index.path} keeps the moments of every video (an index has them "
                             "for all its videos or none): embed into another index to have none")
        return []
    if moments or (moments is None and index.is_new()):
        old = len(index.without_moments())
        index.keep_moments()
        return [f"{index.path}: adding moments: its {old} videos are embedded again"] if old else []
    if moments is False:  # asked for none
        return []
    return [f"{index.path} keeps no moments (made before them): embed with --with-moments to add them "
            "(every video is embedded again)"]


def embed_video(path: Path, bundle: Bundle, sampling: Sampling, engines: dict[str, Engine], batch_size: int = 16,
                time_limit: float = 600.0) -> np.ndarray:
    """One video file → its pooled row float32 [D], as ``embed`` would store it (``query --like``).

    Args:
        path: The video file.
        bundle: The model.
        sampling: The index's sampling (``Index.settings["sampling"]``).
        engines: The backbone engines by feature name and the heads as ``video`` (:func:`open_engines`).
        batch_size: Frames per backbone call and windows per head call.
        time_limit: Seconds of decoding before giving up.

    Raises:
        InputError: The file cannot be decoded (the decoder's reason).
    """
    streams = tuple(bundle.config.features)
    (result,) = extract_features([path], sampling, EngineEncoder(engines), streams=streams, workers=1, time_limit=time_limit,
                                 frame_batch=batch_size, clip_batch=max(1, batch_size // 4))
    if not result.ok:
        raise InputError(f"{path} | {result.reason} | expected a video FFmpeg can decode")
    return pooled_rows(bundle.config, engines["video"], [result.features], batch_size)[0]


def open_engines(bundle: Bundle, backend: str = "auto", device: str = "auto",
                 graphs: Sequence[str] | None = None) -> tuple[dict[str, Engine], list[str]]:
    """The engines ``embed`` runs: each backbone by its feature's name, and the heads as ``video``;
    and why each backend was chosen. The caller closes them (on error they are closed here).
    ``graphs``: only these (None: all of them).

    Raises:
        BackendUnavailableError: No engine can run a graph.
        InputError: A backbone's width differs from what the model was trained on.
    """
    engines: dict[str, Engine] = {}
    whys = []
    try:
        for graph in graphs if graphs is not None else [*bundle.config.features, "video"]:
            engines[graph], why = open_engine(bundle.path, graph, backend=backend, device=device)
            whys.append(why)
        _check_widths(bundle, engines)
    except BaseException:
        for e in engines.values():
            e.close()
        raise
    return engines, whys


def trained_sampling(bundle: Bundle) -> Sampling | None:
    """How the features the model was trained on were sampled (``jemc-infer features`` records
    it in the dataset, training in the bundle), or None where the bundle does not say."""
    recorded = bundle.meta.get("training", {}).get("dataset_source", {}).get("sampling")
    if not isinstance(recorded, dict):
        return None
    try:
        return Sampling(**recorded)
    except (TypeError, InputError):
        return None


def model_for_index(model: Path | None, index_dir: Path) -> Path:
    """The bundle to embed with: ``model``, else ``$JEMC_MODEL``, else the one an existing index at
    ``index_dir`` was built with, else the demo bundle.

    Raises:
        InputError: None of these exists.
    """
    if model is None and (index_dir / MANIFEST).exists():
        with Index.open(index_dir) as index:
            return resolve_model(None, index)
    return resolve_model(model)


def _check_widths(bundle: Bundle, engines: dict[str, Engine]) -> None:
    """The backbones must feed the heads the widths they were trained on."""
    for stream in [f for f in bundle.config.features if f in engines]:
        out = engines[stream].spec.outputs[0].shape[-1]
        if out != bundle.config.feature_dims[stream]:
            raise InputError(f"{bundle.path} | {stream} backbone gives {out}-d features | expected "
                             f"{bundle.config.feature_dims[stream]}-d as the model was trained: train on features "
                             "from these backbones (jemc-infer features)")
