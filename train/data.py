"""The feature dataset: precomputed video features + captions + splits in one directory (numpy only).

Layout (no pickle anywhere)::

    DATA_DIR/
      dataset.json        {"format": "jemc-features/1", "name": ..., "videos": [id, ...],
                           "features": {"resnet": {"dim": 2048, "file": "resnet.npy",
                                                   "mask": "resnet.mask.npy"}, ...},
                           "captions": "captions.jsonl",
                           "splits": {"train": [id, ...], "val": [...], "test": [...]},
                           "source": {...how the features were made...}}
      resnet.npy          float32 [n_videos, dim], row i = videos[i] (mean over time)
      resnet.mask.npy     bool [n_videos], False where the video has no such feature (row is 0)
      captions.jsonl      one {"video": id, "text": caption} per line

:func:`write_dataset` writes one. ``jemc-infer data msrvtt`` and ``jemc-infer data msvd`` write it
from MSR-VTT/MSVD annotations and the official per-video feature files
(:func:`jemc_infer.train.formats.import_dataset`), ``jemc-infer data synth`` from the synthetic
generator (:mod:`jemc_infer.train.synthetic`), and ``jemc-infer features`` from raw videos.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jemc_infer.atomic import staged_dir
from jemc_infer.bundle import sha256_file
from jemc_infer.errors import InputError, InputShapeError

DATASET_FORMAT = "jemc-features/1"
DATASET_FILE = "dataset.json"
CAPTIONS_FILE = "captions.jsonl"


@dataclass(frozen=True)
class Split:
    """The videos and captions of one split."""

    name: str
    videos: np.ndarray  # int64 [n]: dataset rows of this split's videos
    captions: tuple[str, ...]  # caption texts
    caption_video: np.ndarray  # int64 [n_captions]: index into ``videos`` of each caption's video


@dataclass
class FeatureDataset:
    """An opened, validated feature dataset. Feature arrays are memory-mapped."""

    path: Path
    name: str
    videos: list[str]
    features: dict[str, np.ndarray]  # name → float32 [n_videos, dim]
    masks: dict[str, np.ndarray]  # name → bool [n_videos]
    captions: list[tuple[int, str]]  # (video row, text)
    splits: dict[str, list[str]]
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def feature_dims(self) -> dict[str, int]:
        return {k: int(v.shape[1]) for k, v in self.features.items()}

    def fingerprint(self) -> str:
        """sha256 (16 hex digits) of every file of the dataset: a resumed training run checks that
        its data did not change underneath it."""
        files = sorted(p for p in self.path.iterdir() if p.is_file())
        listing = "\n".join(f"{p.name} {sha256_file(p)}" for p in files)
        return hashlib.sha256(listing.encode()).hexdigest()[:16]

    def has_feature(self, name: str) -> bool:
        """True when the feature exists for at least one video."""
        return name in self.masks and bool(self.masks[name].any())

    def split(self, name: str) -> Split:
        """The videos and captions of split ``name``.

        Raises:
            InputError: If the dataset has no such split.
        """
        if name not in self.splits:
            raise InputError(f"{self.path / DATASET_FILE} | no split {name!r} | expected one of {sorted(self.splits)}")
        index = {v: i for i, v in enumerate(self.videos)}
        rows = np.array([index[v] for v in self.splits[name]], dtype=np.int64)
        local = {int(r): i for i, r in enumerate(rows)}
        pairs = [(local[row], text) for row, text in self.captions if row in local]
        return Split(
            name=name,
            videos=rows,
            captions=tuple(t for _, t in pairs),
            caption_video=np.array([i for i, _ in pairs], dtype=np.int64),
        )

    def gather(self, rows: np.ndarray, names: Iterable[str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Features and masks of the given video rows, loaded into memory."""
        names = list(names)
        missing = [n for n in names if n not in self.features]
        if missing:
            raise InputError(
                f"{self.path / DATASET_FILE} | no feature {missing} | expected the model's features "
                f"{names}; the dataset has {sorted(self.features)}"
            )
        return ({n: np.asarray(self.features[n][rows], dtype=np.float32) for n in names},
                {n: np.asarray(self.masks[n][rows], dtype=bool) for n in names})


def _fail(path: Path, got: str, expected: str) -> InputError:
    return InputError(f"{path} | {got} | expected {expected}")


def _read_captions(path: Path, index: Mapping[str, int]) -> list[tuple[int, str]]:
    if not path.is_file():
        raise _fail(path, "missing", "the captions file (JSON lines of {\"video\": id, \"text\": caption})")
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{where} | invalid JSON ({err.msg}) | expected {{\"video\": id, \"text\": caption}}") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("video"), str) or not isinstance(rec.get("text"), str):
                raise InputError(f"{where} | {line.strip()[:60]!r} | expected {{\"video\": id, \"text\": caption}} with string values")
            if rec["video"] not in index:
                raise InputError(f"{where} | unknown video {rec['video']!r} | expected an id listed in {DATASET_FILE} 'videos'")
            if not rec["text"].strip():
                raise InputError(f"{where} | empty caption | expected a non-empty text")
            out.append((index[rec["video"]], rec["text"]))
    if not out:
        raise _fail(path, "no captions", "at least one caption")
    return out


def check_finite(array: np.ndarray, source: Path | str, chunk: int = 4096) -> None:
    """Raise :class:`InputShapeError` naming ``source`` and the first bad row if any value is NaN/inf."""
    for start in range(0, len(array), chunk):
        block = np.asarray(array[start:start + chunk])
        bad = ~np.isfinite(block)
        if bad.any():
            row = start + int(np.argwhere(bad)[0][0])
            raise InputShapeError(f"{source} | non-finite value (NaN/inf) in row {row} | expected finite features")


def open_dataset(path: Path | str) -> FeatureDataset:
    """Open and validate a feature dataset directory.

    Raises:
        InputError: Naming the file and what was expected, if anything is missing, mis-shaped,
            non-finite, or inconsistent.
    """
    path = Path(path)
    meta_path = path / DATASET_FILE
    if not path.is_dir():
        raise _fail(path, "not a directory", f"a feature dataset directory with {DATASET_FILE}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _fail(meta_path, "missing", "a feature dataset (made by `jemc-infer data synth`, `data msrvtt`, `data msvd` "
                    "or `features`)") from None
    except json.JSONDecodeError as err:
        raise _fail(meta_path, f"invalid JSON ({err.msg}, line {err.lineno})", "a dataset description") from None
    if not isinstance(meta, dict) or meta.get("format") != DATASET_FORMAT:
        raise _fail(meta_path, f"format {meta.get('format') if isinstance(meta, dict) else None!r}", repr(DATASET_FORMAT))
    videos = meta.get("videos")
    if not isinstance(videos, list) or not videos or not all(isinstance(v, str) for v in videos):
        raise _fail(meta_path, "no 'videos' list of strings", "the video ids in row order")
    if len(set(videos)) != len(videos):
        raise _fail(meta_path, "duplicate video ids", "each video once")
    index = {v: i for i, v in enumerate(videos)}

    features: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    specs = meta.get("features")
    if not isinstance(specs, dict) or not specs:
        raise _fail(meta_path, "no 'features'", "a mapping of feature name → {dim, file, mask}")
    for name, spec in specs.items():
        try:
            dim, file, mask_file = int(spec["dim"]), path / spec["file"], spec.get("mask")
        except (KeyError, TypeError, ValueError):
            raise _fail(meta_path, f"feature {name!r}: {spec!r}", "{\"dim\": int, \"file\": str, \"mask\": str}") from None
        try:
            arr = np.load(file, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise _fail(file, "missing", f"the {name!r} features, float32 [{len(videos)}, {dim}]") from None
        except ValueError as err:
            raise _fail(file, f"unreadable ({err})", f"a .npy float array [{len(videos)}, {dim}]") from None
        if arr.shape != (len(videos), dim) or arr.dtype.kind != "f":
            raise InputShapeError(f"{file} | {arr.dtype} {list(arr.shape)} | expected float [{len(videos)}, {dim}] (one row per video)")
        check_finite(arr, file)
        features[name] = arr
        if mask_file is None:
            masks[name] = np.ones(len(videos), dtype=bool)
        else:
            try:
                m = np.load(path / mask_file, allow_pickle=False)
            except (FileNotFoundError, ValueError) as err:
                raise _fail(path / mask_file, f"unreadable ({type(err).__name__})", f"bool [{len(videos)}]") from None
            if m.shape != (len(videos),) or m.dtype != bool:
                raise InputShapeError(f"{path / mask_file} | {m.dtype} {list(m.shape)} | expected bool [{len(videos)}]")
            masks[name] = m

    captions = _read_captions(path / meta.get("captions", CAPTIONS_FILE), index)
    splits = meta.get("splits")
    if not isinstance(splits, dict) or not splits:
        raise _fail(meta_path, "no 'splits'", "a mapping of split name → list of video ids")
    for split, ids in splits.items():
        if not isinstance(ids, list):
            raise _fail(meta_path, f"split {split!r} is {type(ids).__name__}", "a list of video ids")
        unknown = [v for v in ids if v not in index]
        if unknown:
            raise _fail(meta_path, f"split {split!r} names unknown videos {unknown[:3]}", "ids listed in 'videos'")
    return FeatureDataset(path=path, name=str(meta.get("name", path.name)), videos=videos, features=features,
                          masks=masks, captions=captions, splits=splits, source=dict(meta.get("source", {})))


def write_dataset(
    path: Path | str,
    videos: list[str],
    features: Mapping[str, np.ndarray],
    captions: Iterable[tuple[str, str]],
    splits: Mapping[str, list[str]],
    masks: Mapping[str, np.ndarray] | None = None,
    name: str | None = None,
    source: Mapping[str, Any] | None = None,
) -> FeatureDataset:
    """Write a feature dataset atomically (temporary sibling directory, fsync, rename).

    Args:
        path: The dataset directory (replaced if it holds an older dataset).
        videos: Video ids; row i of every feature array belongs to ``videos[i]``.
        features: Feature name → float [n_videos, dim]; stored float32.
        captions: ``(video id, text)`` pairs.
        splits: Split name → video ids.
        masks: Feature name → bool [n_videos]; defaults to all present.
        name: The dataset's name. Defaults to the directory name.
        source: Provenance recorded in dataset.json (e.g. ``{"random_init": true}``).

    Returns:
        The written dataset, re-opened and validated.
    """
    path = Path(path)
    masks = dict(masks or {})
    with staged_dir(path, marker=DATASET_FILE) as tmp:
        specs = {}
        for fname, arr in features.items():
            arr = np.asarray(arr, dtype=np.float32)
            if arr.ndim != 2 or arr.shape[0] != len(videos):
                raise InputShapeError(f"feature {fname!r} | shape {list(arr.shape)} | expected [{len(videos)}, dim]")
            check_finite(arr, f"feature {fname!r}")
            mask = np.asarray(masks.get(fname, np.ones(len(videos), dtype=bool)), dtype=bool)
            np.save(tmp / f"{fname}.npy", arr)
            np.save(tmp / f"{fname}.mask.npy", mask)
            specs[fname] = {"dim": int(arr.shape[1]), "file": f"{fname}.npy", "mask": f"{fname}.mask.npy"}
        with open(tmp / CAPTIONS_FILE, "w", encoding="utf-8") as f:
            for vid, text in captions:
                f.write(json.dumps({"video": vid, "text": text}, ensure_ascii=False) + "\n")
        meta = {"format": DATASET_FORMAT, "name": name or path.name, "videos": list(videos), "features": specs,
                "captions": CAPTIONS_FILE, "splits": {k: list(v) for k, v in splits.items()}, "source": dict(source or {})}
        (tmp / DATASET_FILE).write_text(json.dumps(meta) + "\n", encoding="utf-8")
        open_dataset(tmp)  # refuse to publish what we could not read back
    return open_dataset(path)
