"""Readers for the public datasets' annotation files and the official JEMC feature files.

- MSR-VTT: ``train_val_videodatainfo.json`` and ``test_videodatainfo.json`` (``videos`` with a
  ``split`` of train/validate/test — the standard 6513/497/2990 — and ``sentences``).
- MSVD: the caption list (``AllVideoDescriptions.txt``: ``<clip> <caption>`` per line, ``#``
  comments) and optionally ``youtube_mapping.txt`` (``<clip> vid<N>``); the standard split is the
  first 1200 videos for training, the next 100 for validation and the last 670 for testing.
- Official JEMC features: per-video ``.npy`` arrays [T, dim] (ResNet ``video<N>.npy``, I3D
  ``msr_vtt-I3D-RGBFeatures-video<N>.npy``) mean-pooled over time, and SoundNet ``.h5`` files
  (``video<N>.mp3.soundnet.h5``, dataset ``layer24`` [1024, T]) mean-pooled over time.

:func:`import_dataset` joins the two: annotations + feature folders → a feature dataset.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jemc_infer.errors import BackendUnavailableError, InputError, InputShapeError
from jemc_infer.train.data import FeatureDataset, check_finite, write_dataset

MSRVTT_SPLITS = {"train": "train", "validate": "val", "test": "test"}
MSVD_SPLIT_SIZES = (1200, 100, 670)
SOUNDNET_DATASET = "layer24"  # the conv7-level output the official code reads


@dataclass(frozen=True)
class Annotations:
    """Videos, captions and splits read from a dataset's annotation files."""

    videos: list[str]  # ids in a stable order
    captions: list[tuple[str, str]]  # (video id, caption)
    splits: dict[str, list[str]]  # split name → video ids
    aliases: dict[str, str] = field(default_factory=dict)  # file stem → video id, where they differ (MSVD clips)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path} | missing | expected an MSR-VTT annotation JSON") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path} | invalid JSON ({err.msg}, line {err.lineno}) | expected an MSR-VTT annotation JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list) or not isinstance(data.get("sentences"), list):
        raise InputError(f"{path} | top-level keys {sorted(data) if isinstance(data, dict) else type(data).__name__} | expected 'videos' and 'sentences' lists (MSR-VTT videodatainfo format)")
    return data


def load_msrvtt(*files: Path | str) -> Annotations:
    """Read MSR-VTT annotation files (``train_val_videodatainfo.json``, ``test_videodatainfo.json``).

    Args:
        files: One or more videodatainfo JSON files; their videos and sentences are merged.

    Returns:
        Annotations with splits ``train``, ``val`` and ``test`` from each video's ``split`` field.

    Raises:
        InputError: If a file is missing or a record lacks ``video_id``/``split``/``caption``.
    """
    videos: dict[str, str] = {}
    captions: list[tuple[str, str]] = []
    for file in files:
        data = _read_json(Path(file))
        for i, v in enumerate(data["videos"]):
            try:
                vid, split = str(v["video_id"]), MSRVTT_SPLITS[v["split"]]
            except (KeyError, TypeError):
                raise InputError(f"{file} | videos[{i}] = {str(v)[:80]} | expected video_id and split in {sorted(MSRVTT_SPLITS)}") from None
            videos[vid] = split
        for i, s in enumerate(data["sentences"]):
            if not isinstance(s, dict) or not isinstance(s.get("caption"), str) or "video_id" not in s:
                raise InputError(f"{file} | sentences[{i}] = {str(s)[:80]} | expected video_id and caption")
            vid = str(s["video_id"])
            if vid not in videos:
                raise InputError(f"{file} | sentences[{i}] names unknown video {vid!r} | expected a video listed in 'videos'")
            captions.append((vid, s["caption"]))
    order = sorted(videos, key=_natural_key)
    splits = {name: [v for v in order if videos[v] == name] for name in ("train", "val", "test")}
    return Annotations(videos=order, captions=captions, splits={k: v for k, v in splits.items() if v})


def _natural_key(vid: str) -> tuple:
    """video2 before video10."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", vid))


def load_msvd(captions_file: Path | str, mapping_file: Path | str | None = None,
              split_sizes: Sequence[int] = MSVD_SPLIT_SIZES) -> Annotations:
    """Read the MSVD caption list.

    Args:
        captions_file: Lines ``<clip id> <caption>``; blank lines and ``#`` comments are skipped.
        mapping_file: Optional ``youtube_mapping.txt`` (``<clip id> vid<N>``): videos are then
            named ``vid<N>`` and ordered by N, the standard order. Without it, videos keep their
            clip ids in order of first appearance.
        split_sizes: Videos in train, val and test, taken in order. Defaults to 1200/100/670.

    Returns:
        Annotations with splits ``train``, ``val``, ``test``.

    Raises:
        InputError: If a line has no caption, a clip is missing from the mapping, the split sizes
            are not three counts, or the number of videos differs from ``sum(split_sizes)``.
    """
    if len(split_sizes) != 3 or min(split_sizes) < 0:
        raise InputError(f"MSVD split sizes | {list(split_sizes)} | expected three counts >= 0 (train, val, test), like 1200, 100, 670")
    path = Path(captions_file)
    if not path.is_file():
        raise InputError(f"{path} | missing | expected the MSVD caption list (<clip id> <caption> per line)")
    mapping: dict[str, str] | None = None
    if mapping_file is not None:
        mapping = {}
        mpath = Path(mapping_file)
        if not mpath.is_file():
            raise InputError(f"{mpath} | missing | expected youtube_mapping.txt (<clip id> vid<N> per line)")
        for lineno, line in enumerate(mpath.read_text(encoding="utf-8").splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise InputError(f"{mpath}:{lineno} | {line[:60]!r} | expected '<clip id> vid<N>'")
            mapping[parts[0]] = parts[1]
    order: dict[str, None] = {}
    captions = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            clip, _, text = line.partition(" ")
            if not text.strip():
                raise InputError(f"{path}:{lineno} | {line[:60]!r} | expected '<clip id> <caption>'")
            if mapping is not None:
                if clip not in mapping:
                    raise InputError(f"{path}:{lineno} | clip {clip!r} not in {mapping_file} | expected every clip mapped to vid<N>")
                clip = mapping[clip]
            order.setdefault(clip)
            captions.append((clip, text.strip()))
    videos = sorted(order, key=_natural_key) if mapping is not None else list(order)
    if len(videos) != sum(split_sizes):
        raise InputError(
            f"{path} | {len(videos)} videos | expected {sum(split_sizes)} for the split {'/'.join(map(str, split_sizes))}; "
            "give split sizes that add up to the number of videos"
        )
    a, b, _ = split_sizes
    splits = {"train": videos[:a], "val": videos[a:a + b], "test": videos[a + b:]}
    return Annotations(videos=videos, captions=captions, splits=splits, aliases=dict(mapping or {}))


def load_captions_jsonl(path: Path | str) -> Annotations:
    """Read a custom collection's captions: one ``{"video": id, "text": caption, "split": name}`` per line.

    Raises:
        InputError: Naming the line that is not in this shape.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} | missing | expected JSON lines of {{\"video\": id, \"text\": caption, \"split\": name}}")
    captions, split_of = [], {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                vid, text, split = str(rec["video"]), rec["text"], str(rec["split"])
                if not isinstance(text, str) or not text.strip():
                    raise TypeError
            except (json.JSONDecodeError, KeyError, TypeError):
                raise InputError(f"{path}:{lineno} | {line.strip()[:60]!r} | expected {{\"video\": id, \"text\": caption, \"split\": name}}") from None
            if split_of.setdefault(vid, split) != split:
                raise InputError(f"{path}:{lineno} | video {vid!r} in splits {split_of[vid]!r} and {split!r} | expected one split per video")
            captions.append((vid, text))
    videos = list(split_of)
    splits: dict[str, list[str]] = {}
    for vid in videos:
        splits.setdefault(split_of[vid], []).append(vid)
    return Annotations(videos=videos, captions=captions, splits=splits)


def _file_index(directory: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """Map video ids to feature files in ``directory``.

    A file ``<prefix-><id><suffix>`` is found under both ``<prefix-><id>`` and every tail after
    a ``-`` (so ``msr_vtt-I3D-RGBFeatures-video7.npy`` is found as ``video7``).
    """
    if not directory.is_dir():
        raise InputError(f"{directory} | not a directory | expected a folder of per-video feature files ({', '.join(suffixes)})")
    index: dict[str, Path] = {}
    tails: dict[str, Path | None] = {}
    for p in directory.iterdir():
        name = p.name
        suffix = next((s for s in suffixes if name.endswith(s)), None)
        if suffix is None:
            continue
        key = name[: -len(suffix)]
        index[key] = p
        for i, ch in enumerate(key):
            if ch == "-" and i + 1 < len(key):
                tail = key[i + 1:]
                tails[tail] = None if tail in tails else p  # None marks an ambiguous tail
    for tail, p in tails.items():
        if p is not None:
            index.setdefault(tail, p)
    return index


def _pool(array: np.ndarray, dim: int | None, time_axis: int, source: Path) -> np.ndarray:
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 2:
        if array.shape[time_axis] == 0:
            raise InputShapeError(f"{source} | shape {list(array.shape)} | expected at least one time step")
        array = array.mean(axis=time_axis)
    if array.ndim != 1 or (dim is not None and array.shape[0] != dim):
        want = f"[{dim}]" if dim else "[dim]"
        raise InputShapeError(f"{source} | shape {list(array.shape)} | expected {want} or a time series of {want} vectors")
    check_finite(array[None], source)
    return array


def load_official_features(
    videos: Sequence[str], directory: Path | str, kind: str = "npy", dim: int | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read one feature stream in the official JEMC per-video layout.

    Args:
        videos: Video ids, in dataset row order.
        directory: The folder of per-video files.
        kind: ``"npy"`` (ResNet / I3D: [T, dim] or [dim], pooled over axis 0) or ``"soundnet"``
            (``.h5`` with dataset ``layer24`` [dim, T], pooled over axis 1; needs h5py).
        dim: Expected width; defaults to the first file's.

    Returns:
        ``(features float32 [n, dim], mask bool [n], missing ids)``. Videos without a file get a
        zero row and ``mask False`` (MSVD and some MSR-VTT videos have no audio).

    Raises:
        InputError: If the folder is missing, no video has a file, or a file is malformed.
    """
    directory = Path(directory)
    if kind == "npy":
        index = _file_index(directory, (".npy",))
    elif kind == "soundnet":
        try:
            import h5py
        except ImportError:
            raise BackendUnavailableError("h5py | not installed | needed to read SoundNet .h5 features: pip install 'jemc-infer[train]'") from None
        index = _file_index(directory, (".mp3.soundnet.h5", ".wav.soundnet.h5", ".soundnet.h5", ".h5"))
    else:
        raise InputError(f"feature kind | {kind!r} | expected 'npy' or 'soundnet'")
    rows: list[np.ndarray | None] = []
    for vid in videos:
        file = index.get(vid)
        if file is None:
            rows.append(None)
            continue
        if kind == "npy":
            try:
                raw = np.load(file, allow_pickle=False)
            except ValueError as err:
                raise InputError(f"{file} | unreadable ({err}) | expected a .npy array [T, dim]") from None
            vec = _pool(raw, dim, 0, file)
        else:
            try:
                with h5py.File(file, "r") as h5:
                    if SOUNDNET_DATASET not in h5:
                        raise InputError(f"{file} | datasets {sorted(h5.keys())} | expected {SOUNDNET_DATASET!r} (SoundNet conv7 [dim, T])")
                    raw = h5[SOUNDNET_DATASET][()]
            except OSError as err:
                raise InputError(f"{file} | unreadable ({err}) | expected an HDF5 file") from None
            vec = _pool(raw, dim, 1, file)
        dim = vec.shape[0] if dim is None else dim
        rows.append(vec)
    if dim is None:
        raise InputError(f"{directory} | no feature file for any of the {len(videos)} videos (e.g. {videos[0]!r}) | expected <id>.npy / <prefix>-<id>.npy / <id>.mp3.soundnet.h5")
    features = np.zeros((len(videos), dim), dtype=np.float32)
    mask = np.zeros(len(videos), dtype=bool)
    missing = []
    for i, (vid, vec) in enumerate(zip(videos, rows, strict=True)):
        if vec is None:
            missing.append(vid)
        else:
            features[i], mask[i] = vec, True
    return features, mask, missing


@dataclass(frozen=True)
class FeatureFolder:
    """A folder of per-video feature files in the official JEMC layout."""

    directory: Path
    kind: str = "npy"  # "npy" (ResNet / I3D) or "soundnet" (.h5): see load_official_features


@dataclass(frozen=True)
class Imported:
    """What :func:`import_dataset` wrote."""

    dataset: FeatureDataset
    missing: dict[str, list[str]]  # feature → ids of the videos without a file (zero features, mask False)


def import_dataset(out: Path | str, annotations: Annotations, folders: Mapping[str, FeatureFolder],
                   name: str) -> Imported:
    """Write a feature dataset from annotations and folders of official per-video feature files.

    Args:
        out: The dataset directory to write (see :func:`jemc_infer.train.data.write_dataset`).
        annotations: Videos, captions and splits, e.g. from :func:`load_msrvtt` or :func:`load_msvd`.
        folders: Feature name (``resnet``, ``i3d``, ``audio``) → its folder; at least one.
        name: The dataset's name.

    Returns:
        The written dataset, and per feature the videos that had no file.

    Raises:
        InputError: No folder given, or a folder or file as :func:`load_official_features` refuses.
    """
    if not folders:
        raise InputError(f"feature folders | none given | expected at least one of resnet, i3d, audio for {name!r}")
    feats, masks, missing = {}, {}, {}
    for feature, folder in folders.items():
        feats[feature], masks[feature], absent = load_official_features(annotations.videos, folder.directory, kind=folder.kind)
        if absent:
            missing[feature] = absent
    source = {"format": "official-jemc", "folders": {k: str(f.directory) for k, f in folders.items()}}
    ds = write_dataset(out, annotations.videos, feats, annotations.captions, annotations.splits, masks=masks,
                       name=name, source=source)
    return Imported(ds, missing)
