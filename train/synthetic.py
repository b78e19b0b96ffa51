"""A synthetic feature dataset whose structure mirrors what JEMC exploits (numpy only).

Every video has latent concepts: an object with a colour in a place, which appearance features
see, an action that motion features see, and — for about half of the actions, the "noisy" ones —
a sound. Captions name the concepts with synonyms, sometimes leaving some out. So:

- ResNet-like features identify object, colour and place but barely the action;
- I3D-like features identify the action but barely the object;
- audio identifies only the sounding actions, and some videos have no audio track at all;
- only a model using both appearance and motion can tell "a red dog running" from "a red dog
  eating" — the fusion of two spaces should beat either one, and audio alone should be weakest.

Concepts act through a low-dimensional latent with per-video noise, mapped to the feature width
by a fixed random projection and a ReLU (like pooled CNN activations), so the noise cannot be
averaged away by the feature's width.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from jemc_infer.config import DEFAULT_FEATURE_DIMS
from jemc_infer.errors import InputError
from jemc_infer.train.data import FeatureDataset, write_dataset

OBJECTS = [
    ("man", "guy"), ("woman", "lady"), ("child", "kid"), ("dog", "puppy"), ("cat", "kitten"),
    ("car", "vehicle"), ("horse", "pony"), ("bird", "parrot"), ("chef", "cook"), ("girl", "teenager"),
    ("boy", "youngster"), ("robot", "machine"), ("player", "athlete"), ("band", "group"),
    ("monkey", "ape"), ("fish", "trout"), ("train", "locomotive"), ("baby", "infant"),
    ("soldier", "trooper"), ("dancer", "performer"), ("bear", "grizzly"), ("boat", "ship"),
    ("student", "pupil"), ("doctor", "surgeon"),
]
COLOURS = ["red", "blue", "green", "black", "white", "yellow", "brown", "grey"]
# (verb forms, sounding): sounding actions are what the audio stream can hear
ACTIONS = [
    (("cooking", "frying"), True), (("singing", "humming"), True), (("running", "jogging"), False),
    (("swimming", "diving"), False), (("talking", "speaking"), True), (("dancing", "twirling"), False),
    (("driving", "racing"), True), (("eating", "chewing"), False), (("playing guitar", "strumming"), True),
    (("jumping", "hopping"), False), (("laughing", "giggling"), True), (("sleeping", "napping"), False),
    (("barking", "howling"), True), (("climbing", "scaling"), False), (("drumming", "banging"), True),
    (("reading", "studying"), False), (("shouting", "yelling"), True), (("walking", "strolling"), False),
    (("typing", "clicking"), True), (("painting", "drawing"), False), (("clapping", "cheering"), True),
    (("sitting", "resting"), False), (("whistling", "tooting"), True), (("fighting", "wrestling"), False),
]
PLACES = ["in a kitchen", "on the street", "on a beach", "in a forest", "on stage", "in a park", "in an office", "in the snow"]


def _projection(rng: np.random.Generator, latent: int, dim: int) -> np.ndarray:
    return rng.standard_normal((latent, dim)).astype(np.float32) / np.sqrt(latent)


def _caption(rng: np.random.Generator, obj: int, colour: int, action: int, place: int) -> str:
    noun = OBJECTS[obj][rng.integers(2)]
    verb = ACTIONS[action][0][rng.integers(2)]
    adj = COLOURS[colour] + " " if rng.random() < 0.6 else ""
    where = PLACES[place] if rng.random() < 0.5 else ""
    form = rng.random()
    if form < 0.1:  # action only
        text = f"someone is {verb} {where}"
    elif form < 0.2:  # object only
        text = f"a {adj}{noun} is shown {where}"
    elif form < 0.6:
        text = f"a {adj}{noun} is {verb} {where}"
    else:
        text = f"there is a {adj}{noun} {verb} {where}"
    return " ".join(text.split())


def _check_settings(n_train: int, n_val: int, n_test: int, captions_per_video: int, dims: Mapping[str, int],
                    noise: float, missing_audio: float) -> None:
    problems = [f"{k}={v} (expected >= 1)" for k, v in
                (("n_train", n_train), ("n_val", n_val), ("captions_per_video", captions_per_video)) if v < 1]
    problems += [f"n_test={n_test} (expected >= 0)"] if n_test < 0 else []
    problems += [f"feature_dims[{k!r}]={v} (expected >= 1)" for k, v in dims.items() if v < 1]
    problems += [f"noise={noise} (expected >= 0)"] if not noise >= 0 else []
    problems += [f"missing_audio={missing_audio} (expected 0 to 1)"] if not 0 <= missing_audio <= 1 else []
    if problems:
        raise InputError("synthetic dataset | " + "; ".join(problems) + " | expected valid settings")


def synthesize(
    path: Path | str,
    n_train: int = 1000,
    n_val: int = 200,
    n_test: int = 1000,
    captions_per_video: int = 10,
    feature_dims: Mapping[str, int] | None = None,
    noise: float = 1.0,
    missing_audio: float = 0.1,
    seed: int = 0,
) -> FeatureDataset:
    """Generate and write a synthetic feature dataset (``resnet``, ``i3d``, ``audio``).

    Args:
        path: Output directory (see :mod:`jemc_infer.train.data` for the layout).
        n_train: Training videos. ``n_val`` and ``n_test`` likewise.
        captions_per_video: Captions per video (MSR-VTT has 20).
        feature_dims: Widths; defaults to the paper's 2048 / 1024 / 1024.
        noise: Standard deviation of the per-video latent noise (higher is harder).
        missing_audio: Fraction of videos without an audio track (zero features, mask False).
        seed: Everything is a function of the seed.

    Returns:
        The written dataset.

    Raises:
        InputError: Listing every setting out of range (counts, widths, noise, fraction).
    """
    dims = {**DEFAULT_FEATURE_DIMS, **(feature_dims or {})}
    _check_settings(n_train=n_train, n_val=n_val, n_test=n_test, captions_per_video=captions_per_video,
                    dims=dims, noise=noise, missing_audio=missing_audio)
    rng = np.random.default_rng(seed)
    n = n_train + n_val + n_test
    latent = 24
    # concept embeddings in each stream's latent space
    obj_r, col_r, act_r, place_r = (rng.standard_normal((k, latent)) for k in (len(OBJECTS), len(COLOURS), len(ACTIONS), len(PLACES)))
    act_i, obj_i = rng.standard_normal((len(ACTIONS), latent)), rng.standard_normal((len(OBJECTS), latent))
    act_a, silence = rng.standard_normal((len(ACTIONS), latent)), rng.standard_normal(latent)
    proj = {name: _projection(rng, latent, dims[name]) for name in ("resnet", "i3d", "audio")}

    obj = rng.integers(len(OBJECTS), size=n)
    col = rng.integers(len(COLOURS), size=n)
    act = rng.integers(len(ACTIONS), size=n)
    place = rng.integers(len(PLACES), size=n)
    sounding = np.array([s for _, s in ACTIONS])[act]

    def stream(z: np.ndarray, name: str) -> np.ndarray:
        z = z + noise * rng.standard_normal(z.shape)
        x = np.maximum(z @ proj[name] + 0.1 * rng.standard_normal((n, dims[name])), 0)
        return x.astype(np.float32)

    feats = {
        "resnet": stream(obj_r[obj] + 0.8 * col_r[col] + 0.6 * place_r[place] + 0.25 * act_r[act], "resnet"),
        "i3d": stream(act_i[act] + 0.25 * obj_i[obj], "i3d"),
        "audio": stream(np.where(sounding[:, None], act_a[act], silence[None, :]), "audio"),
    }
    has_audio = rng.random(n) >= missing_audio
    feats["audio"][~has_audio] = 0.0
    masks = {"resnet": np.ones(n, bool), "i3d": np.ones(n, bool), "audio": has_audio}

    videos = [f"video{i}" for i in range(n)]
    captions = [(videos[i], _caption(rng, obj[i], col[i], act[i], place[i])) for i in range(n) for _ in range(captions_per_video)]
    splits = {"train": videos[:n_train], "val": videos[n_train:n_train + n_val], "test": videos[n_train + n_val:]}
    source = {"synthetic": True, "seed": seed, "noise": noise, "missing_audio": missing_audio,
              "note": "generated by jemc_infer.train.synthetic; not real video features"}
    return write_dataset(path, videos, feats, captions, splits, masks=masks, name="synthetic", source=source)
