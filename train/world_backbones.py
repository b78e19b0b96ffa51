"""Train the synthetic world's backbones on its training split, and save them as weight files.

A randomly initialised ResNet-152 or I3D gives nearly the same features for every video, and no
pretrained weight can be downloaded here. So the world trains backbones of the paper's families
(:mod:`jemc_infer.nn.compact`'s VGG- and C3D-style CNNs, and SoundNet-8 itself) as classifiers of what
each stream carries, on the **training split only**:

- frames (the object stream) → shape, colour, size, background, and which colour and which size
  go with which shape (both objects of a two-object video are labelled);
- 16-frame clips (the activity stream) → the main object's activity;
- the audio track → the sound.

Inputs are made exactly as the feature pipeline makes them (decoded by
:func:`jemc_infer.video.pool.decode_many`, resized and cropped to 224, normalised for each
backbone); the classifier heads are dropped and the backbones written as ``.safetensors`` files
in the names and shapes real weights have (``vgg_compact.safetensors``,
``c3d_compact.safetensors``, ``sound8.safetensors``), so ``--weights DIR`` loads them like any
other. The validation split measures each head's accuracy (``backbones.json``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jemc_infer.errors import InputError
from jemc_infer.nn.backbones import COMPACT_LAYOUT, ActivityBackbone, AudioBackbone, ObjectBackbone
from jemc_infer.nn.compact import ACTIVITY_POOL, OBJECT_POOL
from jemc_infer.nn.soundnet import MIN_SAMPLES, SMALLFLYINGPIG_LAYOUT
from jemc_infer.nn.weights import save_weights, to_checkpoint
from jemc_infer.train import world as world_module
from jemc_infer.video.pool import decode_many
from jemc_infer.video.sampling import Sampling, i3d_input, resnet_input

REPORT = "backbones.json"
FILES = {"object": "vgg_compact.safetensors", "activity": "c3d_compact.safetensors", "audio": "sound8.safetensors"}


@dataclass(frozen=True)
class Head:
    """One classifier head: what it predicts from a stream's example, and how it counts.

    ``kind`` "one": one value per example, a softmax; where the video has two objects (and
    ``main_only`` is false) each object's value gets half the target. ``kind`` "any": a multi-label
    head over value combinations (``attributes`` of one object, e.g. colour and shape): every
    object's combination is a positive, so the features must say which colour goes with which shape.
    """

    name: str
    attributes: tuple[str, ...]  # VideoTruth (background, sound) or ObjectTruth attribute names
    classes: tuple[tuple[str, ...], ...]  # one value tuple per class
    kind: str = "one"  # "one" or "any"
    weight: float = 1.0
    main_only: bool = False  # only the main object (objects[0]) is labelled


def _head(name: str, *vocabularies: dict[str, Any], **kw: Any) -> Head:
    attributes = tuple(name.split("+"))
    classes: list[tuple[str, ...]] = [()]
    for vocabulary in vocabularies:
        classes = [c + (v,) for c in classes for v in vocabulary]
    return Head(name, attributes, tuple(classes), **kw)


# What each stream's classifier learns. Measured with linear probes on the video features
# (max over frames) of a second, 400-video world (mean average precision of the object queries,
# colour+shape / size+shape / colour+size+shape; world seed 0's backbones): heads for shape,
# colour, size and background of the main object only, 10 epochs 76 / 79 / 63; every object
# labelled 79 / 82 / 61; with the colour+shape and size+shape heads 79 / 83 / 62; those and 30
# epochs 84-85 / 87-88 / 70-71, weighted 3x 86 / 90 / 75; and a fourth convolution (CompactVGG)
# 85 / 94-95 / 81. Shape counts three times: it is learnt last (colour and background first).
HEADS: dict[str, tuple[Head, ...]] = {
    "object": (_head("shape", world_module.SHAPES, weight=3.0), _head("colour", world_module.COLOURS), _head("size", world_module.SIZES),
               _head("background", world_module.BACKGROUNDS),
               _head("colour+shape", world_module.COLOURS, world_module.SHAPES, kind="any", weight=0.75),
               _head("size+shape", world_module.SIZES, world_module.SHAPES, kind="any", weight=0.75)),
    # The clip CNN's recipe was measured on the main object's activity (the captions' object).
    "activity": (_head("activity", world_module.ACTIVITIES, main_only=True),),
    "audio": (_head("sound", world_module.SOUNDS),),
}
# Clips at 10 frames/s (16 frames span 1.6 s: the world's motions are plain in that time), overlapping by half.
TRAIN_SAMPLING = Sampling(frame_rate=2.0, clip_fps=10.0, clip_stride=8)
AUDIO_CROP = 16_538  # 0.75 s: audio examples are random crops of each track


@dataclass(frozen=True)
class Recipe:
    """How long and how hard each backbone trains (the defaults were chosen by measurement)."""

    epochs: dict[str, int] = field(default_factory=lambda: {"object": 30, "activity": 16, "audio": 8})
    lr: float = 2e-3
    batch_size: int = 32
    seed: int = 0


@dataclass
class Examples:
    """One split's inputs, pooled as each compact network's first layer pools them, and labels."""

    frames: list[np.ndarray] = field(default_factory=list)  # float16 [3, 56, 56] each
    frame_labels: list[np.ndarray] = field(default_factory=list)  # float32 targets, every head's classes in turn
    clips: list[np.ndarray] = field(default_factory=list)  # float16 [3, 16, 56, 56]
    clip_labels: list[np.ndarray] = field(default_factory=list)
    waves: list[np.ndarray] = field(default_factory=list)  # float32 [L] at 22,050 Hz
    wave_labels: list[np.ndarray] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"object": len(self.frames), "activity": len(self.clips), "audio": len(self.waves)}


def _labels(stream: str, truth: world_module.VideoTruth) -> np.ndarray:
    """The targets of every head of ``stream`` for one of ``truth``'s examples, concatenated."""
    parts = []
    for head in HEADS[stream]:
        target = np.zeros(len(head.classes), np.float32)
        if head.attributes[0] in world_module.VIDEO_ATTRIBUTES:
            values = [tuple(getattr(truth, a) for a in head.attributes)]
        else:
            objects = truth.objects[:1] if head.main_only else truth.objects
            values = [tuple(getattr(o, a) for a in head.attributes) for o in objects]
        for v in values:
            target[head.classes.index(v)] += 1.0 if head.kind == "any" else 1.0 / len(values)
        parts.append(np.minimum(target, 1.0))
    return np.concatenate(parts)


def collect(videos: list[world_module.VideoTruth], root: Path, workers: int = 2) -> Examples:
    """Decode ``videos`` as the feature pipeline does and keep their (pooled) examples.

    Raises:
        InputError: If a video fails to decode (the world's own files should never).
    """
    paths = [root / "videos" / v.file for v in videos]
    per_video = [Examples() for _ in videos]  # kept per video, joined in video order: decoders finish in any order
    audio: dict[int, list[np.ndarray]] = {}
    with torch.inference_mode():
        for event in decode_many(paths, TRAIN_SAMPLING, workers=workers):
            truth, ex = videos[event.index], per_video[event.index]
            if event.kind == "failed":
                raise InputError(f"{paths[event.index]} | {event.reason} | expected a decodable world video")
            if event.kind == "done":
                wave = np.concatenate(audio.pop(event.index, [np.zeros(0, np.float32)]))
                if truth.has_audio and wave.size:
                    ex.waves.append(wave)
                    ex.wave_labels.append(_labels("audio", truth))
                continue
            chunk = event.chunk
            assert chunk is not None
            if len(chunk.frames):
                pooled = F.avg_pool2d(torch.from_numpy(resnet_input(chunk.frames)), OBJECT_POOL).half().numpy()
                ex.frames.extend(pooled)
                ex.frame_labels.extend([_labels("object", truth)] * len(pooled))
            if len(chunk.clips):
                pooled = F.avg_pool3d(torch.from_numpy(i3d_input(chunk.clips)), (1, ACTIVITY_POOL, ACTIVITY_POOL)).half().numpy()
                ex.clips.extend(pooled)
                ex.clip_labels.extend([_labels("activity", truth)] * len(pooled))
            if len(chunk.audio):
                audio.setdefault(event.index, []).append(chunk.audio)
    joined = Examples()
    for ex in per_video:
        for name in ("frames", "frame_labels", "clips", "clip_labels", "waves", "wave_labels"):
            getattr(joined, name).extend(getattr(ex, name))
    return joined


class _Classifier(nn.Module):
    """A backbone's body (its input already pooled) → one linear head per attribute."""

    def __init__(self, body: nn.Module, dim: int, classes: list[int], over_time: bool = False) -> None:
        super().__init__()
        self.body, self.over_time = body, over_time
        self.heads = nn.ModuleList(nn.Linear(dim, n) for n in classes)

    def forward(self, x: Tensor) -> list[Tensor]:
        h = self.body(x)
        if self.over_time:  # SoundNet: [N, T, D] → the mean over T, as the features are pooled
            h = h.mean(dim=1)
        return [head(h) for head in self.heads]


def _crop(waves: list[np.ndarray], rng: np.random.Generator, length: int) -> np.ndarray:
    out = np.empty((len(waves), length), np.float32)
    for i, w in enumerate(waves):
        if w.size < length:
            w = np.resize(w, length)  # repeats the track, as SoundNet's input is padded
        start = int(rng.integers(0, w.size - length + 1))
        out[i] = w[start:start + length]
    return out


def _batches(inputs: Any, labels: np.ndarray, batch: int, rng: np.random.Generator | None, audio: bool) -> Any:
    """(input, labels) batches: shuffled, cropped (audio) and augmented (pictures) when ``rng`` is given."""
    order = rng.permutation(len(labels)) if rng is not None else np.arange(len(labels))
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        if audio:
            x = torch.from_numpy(_crop([inputs[i] for i in idx], rng or np.random.default_rng(0),
                                       AUDIO_CROP if rng is not None else max(MIN_SAMPLES, min(inputs[i].size for i in idx))))
        else:
            x = torch.from_numpy(np.stack([inputs[i] for i in idx])).float()
            if rng is not None:
                x = _augment(x, rng, flips=x.dim() == 4)
        yield x, torch.from_numpy(labels[idx])


def _augment(x: Tensor, rng: np.random.Generator, flips: bool) -> Tensor:
    """Shift the picture by up to 6 pixels (wrapping around) and, for still frames, mirror it half
    the time: neither changes a shape, a colour, a size or a background (clips are not mirrored:
    that would turn "moving left" into "moving right"). Turning frames by 90 degrees was tried and
    cost 7 points of shape accuracy."""
    x = torch.roll(x, (int(rng.integers(-6, 7)), int(rng.integers(-6, 7))), dims=(-2, -1))
    return x.flip(-1) if flips and rng.random() < 0.5 else x


def _split(targets: Tensor, heads: tuple[Head, ...]) -> tuple[Tensor, ...]:
    return torch.split(targets, [len(h.classes) for h in heads], dim=1)


def _loss(head: Head, logits: Tensor, target: Tensor) -> Tensor:
    if head.kind == "any":  # summed over the combinations, averaged over the batch
        return head.weight * F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / len(target)
    return head.weight * F.cross_entropy(logits, target)


def _fit(model: _Classifier, inputs: Any, labels: np.ndarray, epochs: int, recipe: Recipe, audio: bool,
         heads: tuple[Head, ...]) -> None:
    rng = np.random.default_rng(recipe.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=1e-4)
    steps = max(1, epochs * -(-len(labels) // recipe.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=steps, pct_start=0.2)
    model.train()
    for _ in range(epochs):
        for x, y in _batches(inputs, labels, recipe.batch_size, rng, audio):
            if len(y) < 2:  # SoundNet's BatchNorm needs two examples
                continue
            loss = sum(_loss(head, logits, t) for head, logits, t in zip(heads, model(x), _split(y, heads), strict=True))
            opt.zero_grad()
            loss.backward()  # type: ignore[union-attr]
            opt.step()
            sched.step()
    model.eval()


def _accuracy(model: _Classifier, inputs: Any, labels: np.ndarray, heads: tuple[Head, ...], audio: bool) -> dict[str, float]:
    """Per head, the share of examples whose top class is one the video has (%)."""
    if not len(labels):
        return {}
    right = np.zeros(len(heads))
    with torch.inference_mode():
        for x, y in _batches(inputs, labels, 1 if audio else 64, None, audio):
            for k, (logits, target) in enumerate(zip(model(x), _split(y, heads), strict=True)):
                right[k] += float((target.gather(1, logits.argmax(dim=1, keepdim=True)) > 0).sum())
    return {h.name: round(100.0 * right[k] / len(labels), 1) for k, h in enumerate(heads)}


def train_backbones(world: Path | str, out: Path | str | None = None, recipe: Recipe = Recipe(), workers: int = 2,
                    echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the three backbones on ``world``'s training split and write them to ``out``.

    Args:
        world: A folder :func:`jemc_infer.train.world.make_world` wrote.
        out: Where the weight files go. Defaults to ``WORLD/weights``.
        recipe: Epochs, learning rate, batch size, seed.
        workers: Decoder processes.
        echo: Gets one line per stage.

    Returns:
        The report also written to ``OUT/backbones.json``: files and sha256s, example counts,
        validation accuracy per head (%), seconds.

    Raises:
        InputError: If the world has no training videos or a video does not decode.
    """
    w = world_module.load_world(world)
    out = Path(out) if out is not None else w.root / "weights"
    train, val = w.split("train"), w.split("val")
    if not train:
        raise InputError(f"{w.root} | no training videos | expected a world with a train split")
    torch.manual_seed(recipe.seed)
    t0 = time.monotonic()
    examples = {"train": collect(train, w.root, workers), "val": collect(val, w.root, workers)}
    echo(f"decoded {len(train)} training and {len(val)} validation videos: "
         + ", ".join(f"{n} {k} examples" for k, n in examples["train"].counts().items()) + f" ({time.monotonic() - t0:.0f} s)")
    nets: dict[str, Any] = {"object": ObjectBackbone(kind="vgg-compact"), "activity": ActivityBackbone("c3d-compact"),
                            "audio": AudioBackbone()}
    report: dict[str, Any] = {"world": str(w.root), "seed": w.seed, "format": world_module.BACKBONES_FORMAT, "trained_on": "train", "recipe": {
        "epochs": recipe.epochs, "lr": recipe.lr, "batch_size": recipe.batch_size, "seed": recipe.seed,
        "sampling": TRAIN_SAMPLING.to_json(), "audio_crop": AUDIO_CROP}, "streams": {}}
    for stream, backbone in nets.items():
        t = time.monotonic()
        net = backbone.net
        body = net.body if stream != "audio" else net
        heads = HEADS[stream]
        model = _Classifier(body, backbone.out_dim, [len(h.classes) for h in heads], over_time=stream == "audio")
        data = {split: (getattr(ex, {"object": "frames", "activity": "clips", "audio": "waves"}[stream]),
                        np.array(getattr(ex, {"object": "frame_labels", "activity": "clip_labels", "audio": "wave_labels"}[stream]),
                                 dtype=np.float32).reshape(-1, sum(len(h.classes) for h in heads)))
                for split, ex in examples.items()}
        _fit(model, *data["train"], recipe.epochs[stream], recipe, stream == "audio", heads)
        acc = _accuracy(model, *data["val"], heads, stream == "audio")
        layout = SMALLFLYINGPIG_LAYOUT if stream == "audio" else COMPACT_LAYOUT
        digest = save_weights(out / FILES[stream], to_checkpoint(net, layout),
                              {"jemc_infer": f"{backbone.weights} trained on the train split of synthetic world seed {w.seed}"})
        seconds = time.monotonic() - t
        report["streams"][stream] = {"backbone": backbone.weights, "file": FILES[stream], "sha256": digest,
                                     "examples": {s: len(d[1]) for s, d in data.items()}, "val_accuracy": acc,
                                     "seconds": round(seconds, 1)}
        echo(f"{stream}: {backbone.weights} on {len(data['train'][1])} examples, validation accuracy "
             + ", ".join(f"{h} {a:.0f}%" for h, a in acc.items()) + f" ({seconds:.0f} s) → {out / FILES[stream]}")
    report["seconds"] = round(time.monotonic() - t0, 1)
    (out / REPORT).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report
