"""``embed``: folders of videos → index rows, incrementally and crash-safely (torch-free runtime).

Configuration plus a sink over the collection pipeline (``jemc_infer.collection``): the backbones
and video heads run through engines (``jemc_infer.engines``: exported graphs, or torch), the
index's manifest is the job store, and :class:`IndexSink` commits a shard every ``flush_every``
videos. A video already embedded unchanged with the same model is skipped; a changed one is
re-embedded; ``prune`` drops videos whose files are gone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from jemc_infer.bundle import Bundle, read_bundle
from jemc_infer.collection import VIDEO_EXTENSIONS, Event, Job, Options, RunSummary, VideoRecord, run_collection, scan
from jemc_infer.engines import Engine, open_engine
from jemc_infer.errors import BundleError, InputError
from jemc_infer.index.store import MANIFEST, Index
from jemc_infer.manifest import graph_entry
from jemc_infer.query import resolve_model
from jemc_infer.specs import SOUNDNET_MIN_EXPORT_SAMPLES
from jemc_infer.video.pipeline import VideoResult
from jemc_infer.video.sampling import Sampling, i3d_input, resnet_input


class EngineEncoder:
    """The pipeline's ``FeatureEncoder`` over backbone engines (numpy normalisation, as exported)."""

    def __init__(self, engines: dict[str, Engine]) -> None:
        self.engines = engines

    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        return self.engines["resnet"].run({"frames": resnet_input(frames)})["features"]

    def encode_clips(self, clips: np.ndarray) -> np.ndarray:
        return self.engines["i3d"].run({"clips": i3d_input(clips)})["features"]

    def encode_audio(self, wave: np.ndarray) -> np.ndarray:
        if len(wave) < SOUNDNET_MIN_EXPORT_SAMPLES:  # too short for the exported graph: repeat it
            wave = np.resize(wave, SOUNDNET_MIN_EXPORT_SAMPLES)
        return self.engines["audio"].run({"wave": np.ascontiguousarray(wave[None], np.float32)})["features"][0]


class IndexSink:
    """The ``embed`` sink: pooled features → the video heads → index rows, committed as one
    shard every ``flush_every`` videos (a shard and its videos are one transaction)."""

    def __init__(self, index: Index, bundle: Bundle, heads: Engine, flush_every: int, batch_size: int) -> None:
        self.index, self.config, self.heads = index, bundle.config, heads
        self.flush_every, self.batch_size = flush_every, batch_size
        self.paired = sorted({f for s in self.config.spaces for f in s.paired})
        self.pending: list[tuple[VideoRecord, dict[str, np.ndarray]]] = []

    def add(self, job: Job, result: VideoResult) -> int:
        duration = result.stats.duration if result.stats else None
        self.pending.append((job.record("ok", duration), result.features))
        return self.flush() if len(self.pending) >= self.flush_every else 0

    def flush(self) -> int:
        if not self.pending:
            return 0
        config, pending = self.config, self.pending
        feats = {f: np.stack([p[1].get(f, np.zeros(config.feature_dims[f], np.float32)) for p in pending]).astype(np.float32)
                 for f in config.features}
        inputs = {**feats, **{f"{f}_mask": np.array([f in p[1] for p in pending]) for f in self.paired}}
        parts = []
        for a in range(0, len(pending), self.batch_size):  # within the engine's batch limits (TensorRT profiles)
            out = self.heads.run({name: v[a : a + self.batch_size] for name, v in inputs.items()})
            parts.append(np.concatenate([out[f"video_{s.name}"] for s in config.spaces], axis=1))
        self.index.add_shard(np.concatenate(parts), [p[0] for p in pending])
        self.pending = []
        return len(pending)


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

    Raises:
        InputError: Bad model or index (another model, another writer), nothing to scan.
        BackendUnavailableError: No engine can run a graph.
    """
    if dtype not in ("float32", "float16"):
        raise InputError(f"dtype | {dtype!r} | expected float32 or float16")
    bundle = read_bundle(model)
    if options.sampling == Sampling():
        options = replace(options, sampling=trained_sampling(bundle) or options.sampling)
    found = scan(inputs, extensions)
    streams = tuple(bundle.config.features)
    engines: dict[str, Engine] = {}
    summary = EmbedSummary(RunSummary(), problems=found.problems)
    try:
        for graph in [*streams, "video"]:
            engines[graph], why = open_engine(bundle.path, graph, backend=backend, device=device)
            summary.engines.append(why)
        _check_widths(bundle, engines)
        index_dir.mkdir(parents=True, exist_ok=True)
        with Index.open(index_dir, index_settings(bundle, options.sampling, dtype), writer=True) as index:
            summary.messages.extend(index.messages)
            index.set_model_path(bundle.path)
            if prune:
                summary.pruned = index.prune([p for p in index.videos() if not (index_dir / p).exists()])
            sink = IndexSink(index, bundle, engines["video"], flush_every, options.frame_batch)
            summary.run = run_collection(found.files, index.jobs, sink, lambda: EngineEncoder(engines),
                                         replace(options, streams=streams), on_event)
    finally:
        for e in engines.values():
            e.close()
    return summary


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
    for stream in bundle.config.features:
        out = engines[stream].spec.outputs[0].shape[-1]
        if out != bundle.config.feature_dims[stream]:
            raise InputError(f"{bundle.path} | {stream} backbone gives {out}-d features | expected "
                             f"{bundle.config.feature_dims[stream]}-d as the model was trained: train on features "
                             "from these backbones (jemc-infer features)")
