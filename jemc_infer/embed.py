"""``embed``: folders of videos → index rows, incrementally and crash-safely (torch-free runtime).

Decoding runs in worker processes (``jemc_infer.video.pool``: bounded, per-file time limit), the
backbones and video heads run through engines (``jemc_infer.engines``: exported graphs, or torch),
frames and clips of many videos share batches, and rows are committed to the index every
``flush_every`` videos. A video already embedded unchanged with the same model is skipped; a
changed one is re-embedded; ``prune`` drops videos whose files are gone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jemc_infer.bundle import Bundle, read_bundle
from jemc_infer.engines import Engine, open_engine
from jemc_infer.errors import InputError
from jemc_infer.index.store import Index, VideoRecord, content_hash
from jemc_infer.manifest import graph_entry
from jemc_infer.specs import SOUNDNET_MIN_EXPORT_SAMPLES
from jemc_infer.video.pipeline import VideoResult, extract_features
from jemc_infer.video.sampling import Sampling, i3d_input, resnet_input

VIDEO_EXTENSIONS = ("mp4", "mkv", "webm", "avi", "mov", "m4v", "mpg", "mpeg", "flv", "wmv", "3gp", "ts", "ogv")


def scan(inputs: Sequence[Path | str], extensions: Iterable[str] = VIDEO_EXTENSIONS) -> tuple[list[Path], list[str]]:
    """Video files under ``inputs`` (files or folders, recursively, following symlinks once).

    Returns:
        ``(files, problems)``: absolute paths, sorted; and one line per entry that could not be
        read (permission denied, a symlink loop, a missing input) — reported, not fatal.
    """
    exts = {"." + e.lower().lstrip(".") for e in extensions}
    files: set[Path] = set()
    problems: list[str] = []
    seen_dirs: set[tuple[int, int]] = set()

    def walk(d: Path) -> None:
        try:
            st = d.stat()
        except OSError as err:
            problems.append(f"{d}: {err.strerror or err}")
            return
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:
            problems.append(f"{d}: symlink loop (already visited), skipped")
            return
        seen_dirs.add(key)
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as err:
            problems.append(f"{d}: {err.strerror or err}")
            return
        for e in entries:
            p = Path(e.path)
            try:
                is_dir = e.is_dir(follow_symlinks=True)
                is_file = e.is_file(follow_symlinks=True)
            except OSError as err:
                problems.append(f"{p}: {err.strerror or err}")
                continue
            if is_dir:
                walk(p)
            elif is_file and p.suffix.lower() in exts:
                files.add(p.absolute())
            elif e.is_symlink() and not p.exists():
                problems.append(f"{p}: broken symlink")

    for inp in inputs:
        p = Path(inp)
        if p.is_dir():
            walk(p)
        elif p.is_file():
            files.add(p.absolute())
        else:
            problems.append(f"{p}: no such file or folder")
    return sorted(files), problems


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


@dataclass
class EmbedSummary:
    embedded: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # path → reason
    pruned: int = 0
    problems: list[str] = field(default_factory=list)  # scan problems
    frames: int = 0
    seconds: float = 0.0
    engines: list[str] = field(default_factory=list)  # which backend runs each graph, and why
    messages: list[str] = field(default_factory=list)


def index_settings(bundle: Bundle, sampling: Sampling, dtype: str) -> dict[str, Any]:
    """What an index's rows depend on; an index refuses rows made with anything else."""
    backbones = {}
    for graph in bundle.config.features:  # each feature's backbone graph has the feature's name
        try:
            backbones[graph] = graph_entry(bundle.path, graph).sha256
        except Exception:  # noqa: BLE001 - reported by open_engine with the command that fixes it
            backbones[graph] = None
    return {"model": bundle.fingerprint, "layout": [[s.name, bundle.config.embed_dim] for s in bundle.config.spaces],
            "sampling": sampling.to_json(), "backbones": backbones, "dtype": dtype}


def embed(
    inputs: Sequence[Path | str],
    index_dir: Path,
    model: Path,
    backend: str = "auto",
    device: str = "auto",
    sampling: Sampling = Sampling(),
    workers: int = 2,
    time_limit: float = 600.0,
    batch_size: int = 16,
    flush_every: int = 64,
    dtype: str = "float32",
    extensions: Iterable[str] = VIDEO_EXTENSIONS,
    prune: bool = False,
    on_start: Callable[[int, int], None] | None = None,
    on_result: Callable[[VideoResult], None] | None = None,
) -> EmbedSummary:
    """Embed every video under ``inputs`` into the index at ``index_dir``.

    Args:
        inputs: Files and folders (scanned recursively).
        index_dir: The index (created if absent).
        model: The model bundle; its backbone graphs must be exported (``jemc-infer export``).
        backend, device: Engine choice (``jemc_infer.engines.open_engine``).
        sampling: Sampling settings (part of the index's identity).
        workers: Decoder processes. ``time_limit``: seconds of decoding per file.
        batch_size: Frames per object-backbone call (clips: a quarter of it).
        flush_every: Commit a shard every this many embedded videos.
        dtype: ``float32`` or ``float16`` rows.
        extensions: Which files are videos.
        prune: Drop indexed videos whose files no longer exist.
        on_start: Called with (videos to embed, videos skipped).
        on_result: Called with each finished video.

    Raises:
        InputError: Bad model or index (another model, another writer), nothing to scan.
        BackendUnavailableError: No engine can run a graph.
    """
    if dtype not in ("float32", "float16"):
        raise InputError(f"--dtype | {dtype!r} | expected float32 or float16")
    t0 = time.monotonic()
    bundle = read_bundle(model)
    summary = EmbedSummary()
    files, summary.problems = scan(inputs, extensions)
    streams = list(bundle.config.features)
    engines: dict[str, Engine] = {}
    try:
        for graph in [*streams, "video"]:
            engines[graph], why = open_engine(bundle.path, graph, backend=backend, device=device)
            summary.engines.append(why)
        for stream in streams:  # the backbones must feed the heads the widths they were trained on
            out = engines[stream].spec.outputs[0].shape[-1]
            if out != bundle.config.feature_dims[stream]:
                raise InputError(f"{bundle.path} | {stream} backbone gives {out}-d features | expected "
                                 f"{bundle.config.feature_dims[stream]}-d as the model was trained: train on features "
                                 "from these backbones (jemc-infer features)")
        index_dir.mkdir(parents=True, exist_ok=True)
        with Index.open(index_dir, index_settings(bundle, sampling, dtype), writer=True) as index:
            summary.messages.extend(index.messages)
            index.set_model_path(bundle.path)
            known = index.videos()
            if prune:
                gone = [p for p in known if not (index_dir / p).exists()]
                summary.pruned = index.prune(gone)
            todo: list[tuple[Path, str, os.stat_result]] = []
            for f in files:
                rel = os.path.relpath(f, index_dir)
                st = f.stat()
                rec = known.get(rel)
                if rec is not None and (rec[1], rec[2]) == (st.st_size, st.st_mtime_ns):
                    summary.skipped += 1
                    continue
                if rec is not None and rec[3] is not None and rec[1] == st.st_size and rec[3] == content_hash(f):
                    summary.skipped += 1  # touched, not changed
                    continue
                todo.append((f, rel, st))
            if on_start is not None:
                on_start(len(todo), summary.skipped)
            _run(todo, index, bundle, engines, sampling, workers, time_limit, batch_size, flush_every, summary, on_result)
    finally:
        for e in engines.values():
            e.close()
    summary.seconds = time.monotonic() - t0
    return summary


def _run(todo: list[tuple[Path, str, os.stat_result]], index: Index, bundle: Bundle, engines: dict[str, Engine],
         sampling: Sampling, workers: int, time_limit: float, batch_size: int, flush_every: int,
         summary: EmbedSummary, on_result: Callable[[VideoResult], None] | None) -> None:
    if not todo:
        return
    config = bundle.config
    paired = sorted({f for s in config.spaces for f in s.paired})
    pending: list[tuple[VideoRecord, dict[str, np.ndarray]]] = []

    def flush() -> None:
        if not pending:
            return
        feats = {f: np.stack([p[1].get(f, np.zeros(config.feature_dims[f], np.float32)) for p in pending]).astype(np.float32)
                 for f in config.features}
        masks = {f"{f}_mask": np.array([f in p[1] for p in pending]) for f in paired}
        inputs = {**feats, **masks}
        parts = []
        for a in range(0, len(pending), batch_size):  # within the engine's batch limits (TensorRT profiles)
            out = engines["video"].run({name: v[a : a + batch_size] for name, v in inputs.items()})
            parts.append(np.concatenate([out[f"video_{s.name}"] for s in config.spaces], axis=1))
        rows = np.concatenate(parts)
        index.add_shard(rows, [p[0] for p in pending])
        pending.clear()

    encoder = EngineEncoder(engines)
    streams = list(config.features)
    paths = [t[0] for t in todo]
    results = extract_features(paths, sampling, encoder, streams=streams, workers=workers, time_limit=time_limit,
                               frame_batch=batch_size, clip_batch=max(1, batch_size // 4))
    try:
        for result in results:
            f, rel, st = todo[result.index]
            if result.ok:
                rec = VideoRecord(rel, st.st_size, st.st_mtime_ns, content_hash(f), result.stats.duration if result.stats else None, "ok")
                pending.append((rec, result.features))
                summary.embedded += 1
                summary.frames += result.stats.decoded_frames if result.stats else 0
                if len(pending) >= flush_every:
                    flush()
            else:
                rec = VideoRecord(rel, st.st_size, st.st_mtime_ns, None, None, "failed", result.reason)
                index.record_failures([rec])
                summary.failed[rel] = result.reason or ""
            if on_result is not None:
                on_result(result)
    except KeyboardInterrupt:  # Ctrl-C: keep what is finished (a kill -9 loses at most flush_every videos)
        results.close()  # stops the decoder workers
        flush()
        raise
    flush()
