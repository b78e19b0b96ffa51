"""A synthetic multimodal world: real video files whose cues are split across three streams.

Every video shows one (sometimes two) coloured shape(s) over a background, doing an activity,
with a sound. The cues are split on purpose so retrieval can be checked end to end:

- colour, shape, size and background are visible in any still frame (the object stream);
- the activity is visible only in motion (the activity stream);
- the sound is audible only in the audio track (the audio stream).

Everything that is not a cue (position, speed, onset, frame rate, resolution, bitrate, the exact
tone frequency, loudness, container) varies with the seed. Captions name the cues with synonyms
and varied word order; some sentence templates are held out and used only for test captions,
built from words that also occur in training captions. As people describing a video do, some
training captions name only what one or two streams carry ("something bouncing", "a small red
star"): a model that has only seen captions naming everything answers a query that names one cue
with whatever its other spaces make of the missing words.

Layout written by :func:`make_world`::

    out/videos/<id>.<ext>   the video (mp4 mostly; mkv, webm, avi; ~10% without audio)
    out/videos/<id>.json    its ground truth (:class:`VideoTruth`)
    out/captions.jsonl      {"video", "text", "split"} per line (``load_captions_jsonl`` reads it)
    out/world.json          seed, counts, attribute vocabularies, held-out templates
"""

from __future__ import annotations

import fractions
import json
import multiprocessing
import re
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import av
import numpy as np

from jemc_infer.errors import InputError

# Attribute vocabularies: value → caption synonyms. The first synonym is the canonical word.
SHAPES = {"circle": ("circle", "ball", "disc"), "square": ("square", "box", "block"),
          "triangle": ("triangle", "wedge"), "star": ("star",), "diamond": ("diamond", "rhombus")}
COLOURS = {"red": ("red", "scarlet"), "yellow": ("yellow", "golden"), "green": ("green",),
           "cyan": ("cyan", "turquoise"), "blue": ("blue",), "purple": ("purple", "violet")}
# Hues 60 degrees apart at full saturation; backgrounds are grey, so colour never leaks into them.
RGB = {"red": (230, 30, 30), "yellow": (235, 225, 30), "green": (30, 200, 40),
       "cyan": (30, 215, 225), "blue": (40, 60, 235), "purple": (200, 40, 220)}
SIZES = {"small": ("small", "little", "tiny"), "large": ("large", "big", "huge")}
BACKGROUNDS = {"black": ("black", "dark"), "grey": ("grey", "gray"), "gradient": ("gradient", "fading"),
               "checkered": ("checkered", "checkerboard"), "striped": ("striped",)}
# Activity → (third person forms, gerund forms).
ACTIVITIES = {
    "left": (("moves left", "slides to the left", "drifts left"), ("moving left", "sliding to the left")),
    "right": (("moves right", "slides to the right", "drifts right"), ("moving right", "sliding to the right")),
    "up": (("moves up", "rises", "floats up"), ("moving up", "rising")),
    "down": (("moves down", "falls", "sinks"), ("moving down", "falling", "sinking")),
    "bouncing": (("bounces", "jumps", "hops"), ("bouncing", "jumping", "hopping")),
    "spinning": (("spins", "rotates", "turns around"), ("spinning", "rotating")),
    "growing": (("grows", "gets bigger", "expands"), ("growing", "expanding")),
    "shrinking": (("shrinks", "gets smaller", "contracts"), ("shrinking", "contracting")),
    "still": (("stays still", "rests", "does not move"), ("staying still", "resting")),
}
# Sound → (noun phrases, short forms).
SOUNDS = {
    "low": (("a low tone", "a deep hum"), ("low tone", "humming")),
    "high": (("a high tone", "a high whistle"), ("high tone", "whistling")),
    "beeping": (("a beeping sound", "a series of beeps"), ("beeping",)),
    "chirp": (("a rising chirp", "a rising sweep"), ("chirping",)),
    "noise": (("a burst of noise", "crackling static"), ("hissing", "static")),
    "clicks": (("a clicking sound", "a ticking sound"), ("clicking", "ticking")),
    "silence": (("silence", "no sound"), ("silent", "quiet")),
}
TONE_BANDS = {"low": (150.0, 350.0), "high": (1500.0, 3000.0), "beeping": (700.0, 1200.0)}  # Hz
# Container → (file suffix, video codec, audio codec, share of videos).
CONTAINERS = {"mp4": ("mp4", "libx264", "aac", 0.7), "matroska": ("mkv", "libx264", "libopus", 0.1),
              "webm": ("webm", "libvpx-vp9", "libopus", 0.1), "avi": ("avi", "mpeg4", "libmp3lame", 0.1)}
FRAME_SIZES = ((160, 120), (192, 144), (240, 180), (256, 192), (320, 240), (320, 180))
FPS_CHOICES = (15, 20, 24, 25, 30)
SPLIT_SHARES = (0.7, 0.1)  # train, val; test takes the rest
NO_AUDIO_SHARE = 0.1
# The compact backbones' layers (jemc_infer.nn.compact) as of this version: weights trained for an
# older one do not load, so a backbones report of another format is trained again.
BACKBONES_FORMAT = 3  # 2: c3d-compact sees frame differences; 3: vgg-compact's fourth convolution
GROWTH = 0.5  # a growing (shrinking) object's radius goes from 0.75 to 1.25 (1.25 to 0.75) times its size

# Slots: {size} {colour} {shape} {act} (3rd person) {acting} (gerund) {sound} (noun phrase)
# {sounding} (short) {bg}. Held-out templates use only connective words the others use too.
TEMPLATES = (
    "a {size} {colour} {shape} {act} while {sound} plays",
    "{colour} {shape} {acting}, {sounding}",
    "a {shape} that is {colour} and {size} {act} on a {bg} background",
    "on a {bg} background a {colour} {shape} is {acting}",
    "{sound} plays as a {size} {colour} {shape} {act}",
    "a {colour} {shape} {acting} over a {bg} background with {sound}",
    "the {size} {shape} is {colour} and it {act}",
    "there is a {colour} {shape} {acting}, {sounding}",
)
# Training captions that name the cues of one or two streams only (never used for test captions,
# whose job is to pick out one video). A query naming one cue ("something beeping") then lands
# where the model has learned that the unnamed cues do not matter: in the demo (300 videos, seed 0)
# fusion's held-out precision@5 went from 62.5/65.7/56.7% (object/activity/sound queries) to 78.3/65.7/93.3%
# (the backbones of the time).
PARTIAL_TEMPLATES = (
    "a {size} {colour} {shape}",
    "a {size} {shape}",
    "a {colour} {shape} on a {bg} background",
    "something {colour} {acting}",
    "something {acting}",
    "a {colour} {shape} {acting}",
    "something {sounding}",
    "{sound} plays",
    "something {acting}, {sounding}",
    "something {colour} with {sound}",
)
HELD_OUT_TEMPLATES = (
    "with {sound} the {colour} {shape} {act}",
    "a {bg} background and a {size} {colour} {shape} {acting}",
)
CAPTIONS_PER_VIDEO = 8


@dataclass(frozen=True)
class ObjectTruth:
    """One object in a video: its cues and how it moves."""

    shape: str  # a key of SHAPES
    colour: str  # a key of COLOURS
    size: str  # "small" or "large"
    activity: str  # a key of ACTIVITIES
    x: float  # start centre, as a fraction of the width
    y: float  # start centre, as a fraction of the height
    speed: float  # frame widths/heights per second (moves); bounces/s; rad/s (spins); scale/s (grows)
    onset: float  # seconds before the activity starts
    phase: float  # start angle (rad) of a spinning object; a tilt of 0.26·sin(phase) for the others


@dataclass(frozen=True)
class VideoTruth:
    """The ground truth of one video; ``objects[0]`` is the main object the captions describe."""

    id: str
    split: str  # "train", "val" or "test"
    objects: tuple[ObjectTruth, ...]
    background: str  # a key of BACKGROUNDS
    sound: str  # a key of SOUNDS; "silence" for videos without an audio track
    has_audio: bool
    container: str  # a key of CONTAINERS
    file: str  # the file name inside videos/
    fps: int
    width: int
    height: int
    n_frames: int
    duration: float  # seconds, n_frames / fps
    bitrate: int  # video bits per second
    sample_rate: int  # Hz (0 without audio)
    tone_hz: float  # the tone's frequency for low/high/beeping, else 0
    loudness: float  # peak amplitude in [0, 1]
    seed: int  # the seed of this video's rendering noise

    @property
    def shape(self) -> str:
        return self.objects[0].shape

    @property
    def colour(self) -> str:
        return self.objects[0].colour

    @property
    def size(self) -> str:
        return self.objects[0].size

    @property
    def activity(self) -> str:
        return self.objects[0].activity

    def to_json(self) -> dict:
        """A JSON-ready dict: every field, plus the main object's cues at the top level."""
        d = asdict(self)
        d.update(shape=self.shape, colour=self.colour, size=self.size, activity=self.activity)
        return d

    @classmethod
    def from_json(cls, d: Mapping) -> VideoTruth:
        """Rebuild from :meth:`to_json`'s dict (the top-level main-object keys are ignored)."""
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["objects"] = tuple(ObjectTruth(**o) for o in d["objects"])
        return cls(**kw)


@dataclass(frozen=True)
class World:
    """A written world: its videos' ground truth and captions."""

    root: Path  # the folder make_world wrote
    seed: int
    videos: tuple[VideoTruth, ...]
    captions: tuple[tuple[str, str, str], ...]  # (video id, text, template) in file order

    def path(self, truth: VideoTruth) -> Path:
        """The video file of ``truth``."""
        return self.root / "videos" / truth.file

    def split(self, name: str) -> list[VideoTruth]:
        """The videos of split ``name`` ("train", "val" or "test")."""
        return [v for v in self.videos if v.split == name]


VIDEO_ATTRIBUTES = ("background", "sound")
OBJECT_ATTRIBUTES = ("shape", "colour", "size", "activity")


def matches(truth: VideoTruth, attributes: Mapping[str, str]) -> bool:
    """Whether a video has every named attribute.

    Video attributes (background, sound) must equal the video's; object attributes (shape, colour,
    size, activity) must all hold for one and the same object.

    Args:
        truth: The video.
        attributes: Attribute name → value, like ``{"colour": "red", "activity": "bouncing"}``.

    Returns:
        True if the video has them all (an empty mapping matches every video).

    Raises:
        InputError: If an attribute name is not one of the six above.
    """
    unknown = sorted(set(attributes) - set(VIDEO_ATTRIBUTES) - set(OBJECT_ATTRIBUTES))
    if unknown:
        raise InputError(f"world attributes | {unknown} | expected names in {sorted(VIDEO_ATTRIBUTES + OBJECT_ATTRIBUTES)}")
    if any(getattr(truth, k) != v for k, v in attributes.items() if k in VIDEO_ATTRIBUTES):
        return False
    wanted = {k: v for k, v in attributes.items() if k in OBJECT_ATTRIBUTES}
    return any(all(getattr(o, k) == v for k, v in wanted.items()) for o in truth.objects)


# --- planning: ground truth and captions, no files ---------------------------------------------

def _plan_object(rng: np.random.Generator, taken: set[str], duration: float) -> ObjectTruth:
    colour = str(rng.choice([c for c in COLOURS if c not in taken]))
    shape = str(rng.choice(list(SHAPES)))
    # A spinning circle looks still: circles do anything else.
    activity = str(rng.choice([a for a in ACTIVITIES if not (shape == "circle" and a == "spinning")]))
    x, y = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7)
    if activity in ("left", "right"):
        x = rng.uniform(0.65, 0.8) if activity == "left" else rng.uniform(0.2, 0.35)
    if activity in ("up", "down"):
        y = rng.uniform(0.65, 0.8) if activity == "up" else rng.uniform(0.2, 0.35)
    onset = rng.uniform(0.0, 0.4)
    # Moves cross 30-45% of the frame in the time left, so the object never leaves it.
    # Growing and shrinking, like the moves, last until the video ends: an object that had stopped
    # growing would look still in every clip after that.
    # (Every draw is made whatever the activity, so one seed's worlds differ only where they must.)
    speeds = {"spinning": rng.uniform(1.5, 4.0), "growing": rng.uniform(0.25, 0.4), "shrinking": rng.uniform(0.25, 0.4),
              "bouncing": rng.uniform(1.0, 2.0), "move": rng.uniform(0.3, 0.45) / (duration - onset)}
    speeds["growing"] = speeds["shrinking"] = GROWTH / (duration - onset)
    speed = speeds.get(activity, speeds["move"])
    return ObjectTruth(shape=shape, colour=colour, size=str(rng.choice(list(SIZES))), activity=activity,
                       x=round(float(x), 4), y=round(float(y), 4), speed=round(float(speed), 4),
                       onset=round(float(onset), 3), phase=round(float(rng.uniform(0, 2 * np.pi)), 4))


def _plan_video(rng: np.random.Generator, vid: str, split: str) -> VideoTruth:
    fps = int(rng.choice(FPS_CHOICES))
    n_frames = int(round(rng.uniform(2.0, 4.0) * fps))
    n_obj = 2 if rng.random() < 0.2 else 1
    objects: list[ObjectTruth] = []
    for _ in range(n_obj):
        objects.append(_plan_object(rng, {o.colour for o in objects}, n_frames / fps))
    names = list(CONTAINERS)
    container = str(rng.choice(names, p=[CONTAINERS[c][3] for c in names]))
    has_audio = bool(rng.random() >= NO_AUDIO_SHARE)
    sound = str(rng.choice([s for s in SOUNDS if s != "silence"] + ["silence"])) if has_audio else "silence"
    width, height = FRAME_SIZES[int(rng.integers(len(FRAME_SIZES)))]
    band = TONE_BANDS.get(sound)
    sample_rate = 0 if not has_audio else 48000 if CONTAINERS[container][2] == "libopus" else int(rng.choice([22050, 44100]))
    return VideoTruth(
        id=vid, split=split, objects=tuple(objects), background=str(rng.choice(list(BACKGROUNDS))),
        sound=sound, has_audio=has_audio, container=container, file=f"{vid}.{CONTAINERS[container][0]}",
        fps=fps, width=width, height=height, n_frames=n_frames, duration=round(n_frames / fps, 6),
        bitrate=int(rng.integers(150, 600)) * 1000, sample_rate=sample_rate,
        tone_hz=round(float(rng.uniform(*band)), 1) if band and has_audio else 0.0,
        loudness=round(float(rng.uniform(0.15, 0.5)), 3) if has_audio else 0.0,
        seed=int(rng.integers(2**31)))


def _split_names(n: int, rng: np.random.Generator) -> list[str]:
    n_train = int(round(SPLIT_SHARES[0] * n))
    n_val = max(1, int(round(SPLIT_SHARES[1] * n))) if n >= 3 else 0
    names = ["train"] * n_train + ["val"] * n_val + ["test"] * (n - n_train - n_val)
    return [names[i] for i in rng.permutation(n)]


def tokens(text: str) -> list[str]:
    """The lower-case words of a caption (what "uses only training words" is checked on)."""
    return re.findall(r"[a-z]+", text.lower())


def _render(template: str, truth: VideoTruth, rng: np.random.Generator, allowed: set[str] | None) -> str | None:
    """Fill ``template``; with ``allowed``, use only synonyms whose words are all allowed (or None)."""
    o = truth.objects[0]
    options = {"size": SIZES[o.size], "colour": COLOURS[o.colour], "shape": SHAPES[o.shape],
               "act": ACTIVITIES[o.activity][0], "acting": ACTIVITIES[o.activity][1],
               "sound": SOUNDS[truth.sound][0], "sounding": SOUNDS[truth.sound][1],
               "bg": BACKGROUNDS[truth.background]}
    slots = {}
    for name, words in options.items():
        ok = [w for w in words if allowed is None or set(tokens(w)) <= allowed]
        if not ok:
            if "{" + name + "}" in template:
                return None
            continue
        slots[name] = ok[int(rng.integers(len(ok)))]
    text = template.format(**slots)
    if allowed is not None and not set(tokens(text)) <= allowed:
        return None
    return text


def _plan_captions(videos: list[VideoTruth], rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """CAPTIONS_PER_VIDEO captions each; held-out templates only in test, from training words;
    partial templates only in train (val and test captions each pick out one video)."""
    captions: list[tuple[str, str, str]] = []
    for v in videos:
        if v.split != "test":
            seen = TEMPLATES + PARTIAL_TEMPLATES if v.split == "train" else TEMPLATES
            for t in rng.choice(len(seen), CAPTIONS_PER_VIDEO, replace=False):
                captions.append((v.id, _render(seen[t], v, rng, None), seen[t]))
    train_ids = {v.id for v in videos if v.split == "train"}
    train_words = {w for vid, text, _ in captions if vid in train_ids for w in tokens(text)}
    everything = TEMPLATES + HELD_OUT_TEMPLATES
    for v in videos:
        if v.split != "test":
            continue
        for t in rng.choice(len(everything), CAPTIONS_PER_VIDEO, replace=False):
            template = everything[t]
            text = _render(template, v, rng, train_words) if template in HELD_OUT_TEMPLATES else None
            if text is None:
                # A held-out template needs a word training never used: fall back to a seen one.
                template = TEMPLATES[t % len(TEMPLATES)]
                text = _render(template, v, rng, None)
            captions.append((v.id, text, template))
    return captions


def plan_world(n_videos: int = 300, seed: int = 0) -> tuple[list[VideoTruth], list[tuple[str, str, str]]]:
    """The ground truth and captions of a world, without writing anything.

    Args:
        n_videos: How many videos. Defaults to 300.
        seed: Everything follows from it. Defaults to 0.

    Returns:
        ``(videos, captions)``: the videos in id order, and ``(video id, text, template)`` triples.

    Raises:
        InputError: If ``n_videos`` < 1.
    """
    if n_videos < 1:
        raise InputError(f"world size | {n_videos} videos | expected at least 1")
    truth_rng, caption_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    splits = _split_names(n_videos, truth_rng)
    width = max(4, len(str(n_videos - 1)))
    videos = [_plan_video(truth_rng, f"world{i:0{width}d}", splits[i]) for i in range(n_videos)]
    return videos, _plan_captions(videos, caption_rng)


# --- rendering: pixels and samples ---------------------------------------------------------------

def _background(truth: VideoTruth, rng: np.random.Generator) -> np.ndarray:
    """A grey (unsaturated) background image [H, W, 3] uint8."""
    h, w = truth.height, truth.width
    yy, xx = np.mgrid[0:h, 0:w]
    base = rng.uniform(0.8, 1.2)
    kind = truth.background
    if kind == "black":
        grey = np.full((h, w), 20.0 * base)
    elif kind == "grey":
        grey = np.full((h, w), 120.0 * base)
    elif kind == "gradient":
        grey = 30 + 150 * (xx if rng.random() < 0.5 else yy) / max(h, w) * base
    elif kind == "checkered":
        cell = int(rng.integers(8, 24))
        grey = np.where((xx // cell + yy // cell) % 2 == 0, 60.0, 120.0) * base
    else:  # striped
        cell = int(rng.integers(6, 16))
        grey = np.where((xx // cell) % 2 == 0, 50.0, 110.0) * base
    return np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def _polygon(shape: str) -> np.ndarray:
    """Unit-radius vertices [K, 2] of a polygonal shape."""
    if shape == "star":
        angles = np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    if shape == "diamond":  # a rhombus, taller than wide: no turn of a square looks like it
        return np.array([[0.0, 1.0], [0.6, 0.0], [0.0, -1.0], [-0.6, 0.0]])
    k, start = {"square": (4, np.pi / 4), "triangle": (3, np.pi / 2)}[shape]
    angles = start + np.arange(k) * 2 * np.pi / k
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _mask(shape: str, cx: float, cy: float, r: float, angle: float, grid: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Pixels [H, W] bool inside a shape of radius ``r`` px centred at (cx, cy), turned by ``angle``."""
    yy, xx = grid
    if shape == "circle":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    c, s = np.cos(angle), np.sin(angle)
    v = _polygon(shape) @ np.array([[c, s], [-s, c]]) * r
    px, py = v[:, 0] + cx, cy - v[:, 1]  # image y grows downwards
    inside = np.zeros(xx.shape, dtype=bool)
    for i in range(len(px)):  # even-odd rule, one edge at a time
        x0, y0, x1, y1 = px[i - 1], py[i - 1], px[i], py[i]
        if y0 == y1:
            continue
        crosses = (y0 > yy) != (y1 > yy)
        inside ^= crosses & (xx < x0 + (yy - y0) * (x1 - x0) / (y1 - y0))
    return inside


def object_state(o: ObjectTruth, t: float, width: int, height: int) -> tuple[float, float, float, float]:
    """Where an object is at ``t`` seconds: ``(cx, cy, radius, angle)`` in pixels and radians."""
    base = (0.12 if o.size == "small" else 0.22) * min(width, height)
    # Upright but for a tilt of up to 15 degrees; only spinning turns a shape further.
    angle = o.phase if o.activity == "spinning" else 0.26 * np.sin(o.phase)
    cx, cy, r = o.x * width, o.y * height, base
    m = max(0.0, t - o.onset)  # seconds of activity so far
    if o.activity in ("left", "right"):
        cx += o.speed * width * m * (-1 if o.activity == "left" else 1)
    elif o.activity in ("up", "down"):
        cy += o.speed * height * m * (-1 if o.activity == "up" else 1)
    elif o.activity == "bouncing":
        cy -= 0.25 * height * abs(np.sin(np.pi * o.speed * m))
    elif o.activity == "spinning":
        angle += o.speed * m
    elif o.activity in ("growing", "shrinking"):
        # Between 0.75 and 1.25 times its size: a growing small object never becomes a large one.
        low, high = 1.0 - GROWTH / 2, 1.0 + GROWTH / 2
        r = base * (min(high, low + o.speed * m) if o.activity == "growing" else max(low, high - o.speed * m))
    return cx, cy, r, angle


def render_frames(truth: VideoTruth, rng: np.random.Generator):
    """Yield the video's frames [H, W, 3] uint8 RGB, one per 1/fps seconds."""
    bg = _background(truth, rng)
    grid = np.mgrid[0:truth.height, 0:truth.width]
    colours = [np.clip(np.array(RGB[o.colour]) + rng.integers(-15, 16, 3), 0, 255).astype(np.uint8)
               for o in truth.objects]
    for k in range(truth.n_frames):
        img = bg.copy()
        # The main object last, so it is drawn on top.
        for o, colour in reversed(list(zip(truth.objects, colours, strict=True))):
            cx, cy, r, angle = object_state(o, k / truth.fps, truth.width, truth.height)
            img[_mask(o.shape, cx, cy, r, angle, grid)] = colour
        yield img


def render_audio(truth: VideoTruth, rng: np.random.Generator) -> np.ndarray:
    """The sound track [N] float32 in [-1, 1] at ``truth.sample_rate``."""
    sr = truth.sample_rate
    t = np.arange(int(round(truth.duration * sr))) / sr
    kind = truth.sound
    if kind in ("low", "high"):
        wave = np.sin(2 * np.pi * truth.tone_hz * t + rng.uniform(0, 2 * np.pi))
    elif kind == "beeping":
        rate = rng.uniform(2.0, 5.0)
        wave = np.sin(2 * np.pi * truth.tone_hz * t) * ((t * rate + rng.random()) % 1.0 < 0.5)
    elif kind == "chirp":
        period, f0, f1 = rng.uniform(0.5, 1.0), rng.uniform(200, 400), rng.uniform(1500, 3000)
        tau = t % period
        # Exponential sweep f0 → f1 over each period: phase is the integral of the frequency.
        k = np.log(f1 / f0) / period
        wave = np.sin(2 * np.pi * f0 * (np.exp(k * tau) - 1) / k)
    elif kind == "noise":
        gate = np.zeros_like(t, dtype=bool)
        for start in rng.uniform(0, truth.duration, max(2, int(truth.duration * 3))):
            gate |= (t >= start) & (t < start + rng.uniform(0.1, 0.3))
        wave = rng.uniform(-1, 1, t.size) * gate
    elif kind == "clicks":
        rate = rng.uniform(4.0, 10.0)
        since = (t * rate + rng.random()) % 1.0 / rate  # seconds since the last click
        wave = np.exp(-since / 0.002) * np.sign(np.sin(2 * np.pi * 3000 * t))
    else:  # silence: the track is there, but quiet
        wave = np.zeros_like(t)
    return (truth.loudness * wave).astype(np.float32)


# --- writing ------------------------------------------------------------------------------------

_SAMPLE_DTYPES = {"flt": np.float32, "fltp": np.float32, "s16": np.int16, "s16p": np.int16,
                  "s32": np.int32, "s32p": np.int32}


def _audio_frames(wave: np.ndarray, stream) -> list:
    """Cut ``wave`` into AudioFrames in the encoder's own sample format and frame size."""
    ctx = stream.codec_context
    fmt, size = ctx.format.name, ctx.frame_size or 1024
    dtype = _SAMPLE_DTYPES[fmt]
    scale = 1.0 if dtype == np.float32 else float(np.iinfo(dtype).max)
    frames = []
    for start in range(0, wave.size, size):
        chunk = (wave[start:start + size] * scale).astype(dtype)
        if chunk.size < size:  # encoders with a fixed frame size refuse a short last frame
            chunk = np.pad(chunk, (0, size - chunk.size))
        frame = av.AudioFrame.from_ndarray(chunk[None], format=fmt, layout="mono")
        frame.sample_rate, frame.pts = ctx.sample_rate, start
        frames.append(frame)
    return frames


def write_video(path: Path, truth: VideoTruth) -> Path:
    """Encode one video of the world with PyAV (written to a sibling, then renamed).

    Args:
        path: The file to write; its suffix should match ``truth.container``.
        truth: What to draw and play.

    Returns:
        ``path``.
    """
    rng = np.random.default_rng(truth.seed)
    _, vcodec, acodec, _ = CONTAINERS[truth.container]
    tmp = path.with_name(path.name + ".part")
    # bitexact: no muxing date or random segment id (Matroska, WebM), so one seed writes the same bytes
    with av.open(str(tmp), "w", format=truth.container, options={"fflags": "+bitexact"}) as out:
        vs = out.add_stream(vcodec, rate=truth.fps)
        vs.width, vs.height, vs.pix_fmt, vs.bit_rate = truth.width, truth.height, "yuv420p", truth.bitrate
        # The fastest settings: these tiny videos are many, and quality is not the point.
        # One x264 thread: threaded, it wrote different pixels for one video on each of four runs
        # (single-threaded, 2 of 300 files still differed between two worlds made under load).
        vs.options = {"libx264": {"preset": "veryfast", "threads": "1"},
                      "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"}}.get(vcodec, {})
        ast = out.add_stream(acodec, rate=truth.sample_rate, layout="mono") if truth.has_audio else None
        for k, img in enumerate(render_frames(truth, rng)):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = k, fractions.Fraction(1, truth.fps)
            out.mux(vs.encode(frame))
        out.mux(vs.encode())
        if ast is not None:
            for frame in _audio_frames(render_audio(truth, rng), ast):
                out.mux(ast.encode(frame))
            out.mux(ast.encode())
    tmp.replace(path)
    return path


def _write_one(out: Path, truth: VideoTruth) -> None:
    write_video(out / "videos" / truth.file, truth)
    (out / "videos" / f"{truth.id}.json").write_text(json.dumps(truth.to_json(), indent=1) + "\n", encoding="utf-8")


def make_world(out: Path | str, n_videos: int = 300, seed: int = 0, workers: int = 1,
               on_video: Callable[[], None] | None = None) -> World:
    """Write a synthetic world: videos, their ground truth, captions and a summary.

    Args:
        out: The folder to write (created; files already there are overwritten).
        n_videos: How many videos. Defaults to 300.
        seed: Everything (truth, captions, pixels, samples) follows from it. Defaults to 0.
        workers: Processes encoding videos (what they write does not depend on it, but for x264's
            rare differences: README). Defaults to 1.
        on_video: Called after each video is written (progress).

    Returns:
        The world as written.

    Raises:
        InputError: If ``n_videos`` < 1.
    """
    out = Path(out)
    videos, captions = plan_world(n_videos, seed)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for done in as_completed([pool.submit(_write_one, out, truth) for truth in videos]):
                done.result()
                if on_video is not None:
                    on_video()
    else:
        for truth in videos:
            _write_one(out, truth)
            if on_video is not None:
                on_video()
    split_of = {v.id: v.split for v in videos}
    with open(out / "captions.jsonl", "w", encoding="utf-8") as f:
        for vid, text, _ in captions:
            f.write(json.dumps({"video": vid, "text": text, "split": split_of[vid]}) + "\n")
    summary = {
        "seed": seed, "n_videos": n_videos,
        "splits": {s: sum(v.split == s for v in videos) for s in ("train", "val", "test")},
        "n_captions": len(captions), "no_audio": sum(not v.has_audio for v in videos),
        "containers": {c: sum(v.container == c for v in videos) for c in CONTAINERS},
        "vocabularies": {"shape": SHAPES, "colour": COLOURS, "size": SIZES, "background": BACKGROUNDS,
                         "activity": ACTIVITIES, "sound": SOUNDS},
        "templates": list(TEMPLATES), "partial_templates": list(PARTIAL_TEMPLATES), "held_out_templates": list(HELD_OUT_TEMPLATES),
        "caption_templates": [t for _, _, t in captions],
    }
    (out / "world.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return World(root=out, seed=seed, videos=tuple(videos), captions=tuple(captions))


def load_world(out: Path | str) -> World:
    """Read a world :func:`make_world` wrote.

    Raises:
        InputError: If ``world.json``, ``captions.jsonl`` or a video's JSON is missing.
    """
    out = Path(out)
    try:
        summary = json.loads((out / "world.json").read_text(encoding="utf-8"))
        lines = (out / "captions.jsonl").read_text(encoding="utf-8").splitlines()
        videos = tuple(VideoTruth.from_json(json.loads(p.read_text(encoding="utf-8")))
                       for p in sorted((out / "videos").glob("*.json")))
    except FileNotFoundError as err:
        raise InputError(f"{out} | {Path(err.filename).name} missing | expected a world written by make_world") from None
    records = [json.loads(line) for line in lines if line.strip()]
    captions = tuple((r["video"], r["text"], t) for r, t in zip(records, summary["caption_templates"], strict=True))
    return World(root=out, seed=summary["seed"], videos=videos, captions=captions)
