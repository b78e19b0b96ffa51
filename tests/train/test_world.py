"""The synthetic world: real files that decode, ground truth that matches the pixels and the sound, captions."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import av
import numpy as np
import pytest

from jemc_infer.errors import InputError
from jemc_infer.train.formats import load_captions_jsonl
from jemc_infer.train.world import (
    CAPTIONS_PER_VIDEO,
    HELD_OUT_TEMPLATES,
    PARTIAL_TEMPLATES,
    RGB,
    TEMPLATES,
    TONE_BANDS,
    ObjectTruth,
    VideoTruth,
    World,
    load_world,
    make_world,
    matches,
    object_state,
    plan_world,
    tokens,
    write_video,
)

N_VIDEOS = 12


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return make_world(tmp_path_factory.mktemp("world"), n_videos=N_VIDEOS, seed=0)


def _decode(path: Path) -> tuple[list[np.ndarray], np.ndarray | None, dict]:
    """RGB frames, the mono audio as float in [-1, 1] (None without a track), and stream facts."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        facts = {"fps": float(vs.average_rate), "width": vs.codec_context.width, "height": vs.codec_context.height,
                 "has_audio": bool(c.streams.audio), "duration": c.duration / 1e6}
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    audio = None
    if facts["has_audio"]:
        with av.open(str(path)) as c:
            facts["sample_rate"] = c.streams.audio[0].codec_context.sample_rate
            chunks = []
            for f in c.decode(audio=0):
                a = f.to_ndarray()[0]
                chunks.append(a / np.iinfo(a.dtype).max if a.dtype.kind == "i" else a)
            audio = np.concatenate(chunks).astype(np.float64)
    return frames, audio, facts


def _object_pixels(img: np.ndarray) -> np.ndarray:
    """The saturated pixels [H, W] bool: backgrounds are grey, objects are not."""
    rgb = img.astype(np.int16)
    return (rgb.max(axis=2) - rgb.min(axis=2)) > 80


def _nearest_colour(img: np.ndarray) -> str:
    mean = img[_object_pixels(img)].mean(axis=0)
    return min(RGB, key=lambda c: float(np.sum((np.array(RGB[c]) - mean) ** 2)))


def _centroid(img: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(_object_pixels(img))
    return np.array([xs.mean(), ys.mean()])


def _check_motion(truth: VideoTruth, frames: list[np.ndarray]) -> None:
    first, last = _centroid(frames[0]), _centroid(frames[-1])
    dx, dy = (last - first) / np.array([truth.width, truth.height])
    expected = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "still": (0, 0)}[truth.activity]
    for moved, sign in ((dx, expected[0]), (dy, expected[1])):
        if sign == 0:
            assert abs(moved) < 0.02, (truth.id, truth.activity, dx, dy)
        else:
            assert moved * sign > 0.15, (truth.id, truth.activity, dx, dy)


def _dominant_hz(audio: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
    return float(np.fft.rfftfreq(audio.size, 1 / sample_rate)[np.argmax(spectrum)])


def test_files_decode_with_the_recorded_facts(world: World) -> None:
    assert len(world.videos) == N_VIDEOS
    for truth in world.videos:
        frames, audio, facts = _decode(world.path(truth))
        assert facts["fps"] == pytest.approx(truth.fps), truth.id
        assert (facts["width"], facts["height"]) == (truth.width, truth.height)
        assert abs(len(frames) - truth.n_frames) <= 1, truth.id
        assert facts["duration"] == pytest.approx(truth.duration, abs=0.15), truth.id
        assert facts["has_audio"] == truth.has_audio, truth.id
        assert 2.0 <= truth.duration <= 4.0
        if truth.has_audio:
            assert facts["sample_rate"] == truth.sample_rate
            assert audio.size >= 0.9 * truth.duration * truth.sample_rate


def test_main_object_colour_is_in_the_pixels(world: World) -> None:
    for truth in world.videos:
        if len(truth.objects) == 1:
            frames, _, _ = _decode(world.path(truth))
            assert _nearest_colour(frames[len(frames) // 2]) == truth.colour, truth.id


def _single(truth: VideoTruth, **changes) -> VideoTruth:
    """``truth`` with one object, changed as asked (object fields go to the object)."""
    obj_keys = {f.name for f in dataclasses.fields(ObjectTruth)}
    obj = dataclasses.replace(truth.objects[0], **{k: v for k, v in changes.items() if k in obj_keys})
    return dataclasses.replace(truth, objects=(obj,), **{k: v for k, v in changes.items() if k not in obj_keys})


@pytest.mark.parametrize(("activity", "x", "y"), [("left", 0.75, 0.5), ("right", 0.25, 0.5), ("up", 0.5, 0.75),
                                                  ("down", 0.5, 0.25), ("still", 0.4, 0.6)])
def test_activity_is_in_the_motion(tmp_path: Path, activity: str, x: float, y: float) -> None:
    base = plan_world(1, seed=3)[0][0]
    truth = _single(base, activity=activity, x=x, y=y, speed=0.35 / 2.5, onset=0.2, shape="square",
                    colour="blue", size="small", background="checkered", container="mp4", n_frames=60,
                    fps=20, duration=3.0)
    frames, _, _ = _decode(write_video(tmp_path / "v.mp4", truth))
    _check_motion(truth, frames)
    assert _nearest_colour(frames[0]) == "blue"


@pytest.mark.parametrize("activity", ["growing", "shrinking", "bouncing", "spinning"])
def test_other_activities_are_in_the_motion(tmp_path: Path, activity: str) -> None:
    base = plan_world(1, seed=3)[0][0]
    truth = _single(base, activity=activity, x=0.5, y=0.6, speed={"spinning": 2.0, "bouncing": 1.0}.get(activity, 0.3),
                    onset=0.0, phase=0.0, shape="star", colour="red", size="large", background="grey",
                    container="mp4", n_frames=60, fps=20, duration=3.0)
    frames, _, _ = _decode(write_video(tmp_path / "v.mp4", truth))
    masks = [_object_pixels(f) for f in frames]
    areas = np.array([m.sum() for m in masks])
    ys = np.array([_centroid(f)[1] for f in frames]) / truth.height
    if activity == "growing":
        assert areas[-1] > 2 * areas[0]
    elif activity == "shrinking":
        assert areas[-1] < 0.5 * areas[0]
    elif activity == "bouncing":
        assert ys.max() - ys.min() > 0.15 and np.ptp(areas) < 0.2 * areas.mean()
    else:  # the star turns in place: same area and centre, other pixels
        assert np.ptp(areas) < 0.2 * areas.mean() and np.ptp(ys) < 0.05
        overlap = (masks[0] & masks[5]).sum() / (masks[0] | masks[5]).sum()
        assert overlap < 0.8


def test_world_activities_are_in_the_motion(world: World) -> None:
    for truth in world.videos:
        if len(truth.objects) == 1 and truth.activity in ("left", "right", "up", "down", "still"):
            frames, _, _ = _decode(world.path(truth))
            _check_motion(truth, frames)


@pytest.mark.parametrize(("sound", "container", "suffix"), [("low", "mp4", "mp4"), ("high", "mp4", "mp4"),
                                                            ("low", "webm", "webm"), ("high", "matroska", "mkv"),
                                                            ("high", "avi", "avi"), ("beeping", "mp4", "mp4")])
def test_tone_is_in_its_band(tmp_path: Path, sound: str, container: str, suffix: str) -> None:
    base = plan_world(1, seed=5)[0][0]
    lo, hi = TONE_BANDS[sound]
    rate = 48000 if container in ("webm", "matroska") else 22050
    truth = _single(base, sound=sound, has_audio=True, container=container, sample_rate=rate,
                    tone_hz=(lo + hi) / 2 + 40.0, loudness=0.3)
    _, audio, facts = _decode(write_video(tmp_path / f"v.{suffix}", truth))
    hz = _dominant_hz(audio, facts["sample_rate"])
    assert lo <= hz <= hi
    assert hz == pytest.approx(truth.tone_hz, rel=0.02)


def test_world_tones_are_in_their_bands(world: World) -> None:
    for truth in world.videos:
        if truth.sound in TONE_BANDS:
            _, audio, facts = _decode(world.path(truth))
            lo, hi = TONE_BANDS[truth.sound]
            assert lo <= truth.tone_hz <= hi
            assert lo <= _dominant_hz(audio, facts["sample_rate"]) <= hi, truth.id


@pytest.mark.parametrize(("container", "suffix"), [("webm", "webm"), ("avi", "avi")])
def test_one_truth_writes_the_same_bytes_every_time(tmp_path: Path, container: str, suffix: str) -> None:
    """The Matroska muxer (WebM here) stamped a date and a random segment id in every file. (The
    H.264 containers are left out: x264, even single-threaded, now and then encodes a video of the
    world a little differently; README.)"""
    base = plan_world(300, seed=0)[0][13]
    rate = 48000 if container == "webm" else 22050
    truth = dataclasses.replace(base, container=container, file=f"v.{suffix}", sample_rate=rate if base.has_audio else 0)
    first = write_video(tmp_path / f"0.{suffix}", truth).read_bytes()
    for i in range(1, 4):
        assert write_video(tmp_path / f"{i}.{suffix}", truth).read_bytes() == first, i


def test_same_seed_same_world_and_different_seed_different() -> None:
    assert plan_world(40, seed=7) == plan_world(40, seed=7)
    assert plan_world(40, seed=7)[0] != plan_world(40, seed=8)[0]
    assert plan_world(40, seed=7)[1] != plan_world(40, seed=8)[1]


def test_written_world_is_the_planned_one_and_loads_back(world: World) -> None:
    videos, captions = plan_world(N_VIDEOS, seed=0)
    assert list(world.videos) == videos
    assert list(world.captions) == captions
    assert load_world(world.root) == world
    record = json.loads((world.root / "videos" / f"{videos[0].id}.json").read_text())
    for key in ("shape", "colour", "size", "background", "activity", "sound", "fps", "width", "height",
                "duration", "has_audio", "container"):
        assert key in record
    summary = json.loads((world.root / "world.json").read_text())
    assert summary["seed"] == 0 and summary["n_videos"] == N_VIDEOS
    assert summary["held_out_templates"] == list(HELD_OUT_TEMPLATES)


def test_world_varies_what_is_not_a_cue() -> None:
    videos, _ = plan_world(300, seed=0)
    assert len({v.fps for v in videos}) >= 4 and len({(v.width, v.height) for v in videos}) >= 4
    assert len({v.container for v in videos}) == 4 and sum(v.container == "mp4" for v in videos) > 150
    assert 15 <= sum(not v.has_audio for v in videos) <= 50
    assert 20 <= sum(len(v.objects) == 2 for v in videos) <= 100
    for attr in ("shape", "colour", "size", "activity", "background", "sound"):
        assert len({getattr(v, attr) for v in videos}) >= 2


def test_splits_are_disjoint_and_cover_every_video() -> None:
    videos, _ = plan_world(300, seed=1)
    counts = {s: sum(v.split == s for v in videos) for s in ("train", "val", "test")}
    assert counts == {"train": 210, "val": 30, "test": 60}
    assert len({v.id for v in videos}) == 300


def test_held_out_templates_only_in_test_with_training_words() -> None:
    videos, captions = plan_world(300, seed=2)
    split_of = {v.id: v.split for v in videos}
    train_words = {w for vid, text, _ in captions if split_of[vid] == "train" for w in tokens(text)}
    held = [(vid, text) for vid, text, t in captions if t in HELD_OUT_TEMPLATES]
    assert len(held) > 20
    for vid, text in held:
        assert split_of[vid] == "test"
        assert set(tokens(text)) <= train_words, text
    assert all(sum(c[0] == v.id for c in captions) == CAPTIONS_PER_VIDEO for v in videos)


def test_partial_captions_only_in_training_and_naming_a_subset() -> None:
    videos, captions = plan_world(300, seed=2)
    split_of = {v.id: v.split for v in videos}
    partial = [vid for vid, _, t in captions if t in PARTIAL_TEMPLATES]
    assert len(partial) > 400  # about 3 in 6 training captions
    assert all(split_of[vid] == "train" for vid in partial)
    others = {t for vid, _, t in captions if split_of[vid] != "train"}
    assert others <= set(TEMPLATES + HELD_OUT_TEMPLATES)  # val and test captions each pick out one video
    slots = {"object": ("{shape}", "{colour}", "{size}"), "activity": ("{act}", "{acting}"),
             "audio": ("{sound}", "{sounding}")}
    for t in PARTIAL_TEMPLATES:  # each names the cues of one or two streams, never all three
        assert 1 <= sum(any(x in t for x in names) for names in slots.values()) <= 2, t


@pytest.mark.parametrize("activity", ["growing", "shrinking"])
def test_growing_and_shrinking_keep_their_size_class(activity: str) -> None:
    """A small object that grows never gets as large as a large one that shrinks, and back."""
    radius = {}
    for size in ("small", "large"):
        o = ObjectTruth(shape="square", colour="red", size=size, activity=activity, x=0.5, y=0.5, speed=0.4,
                        onset=0.0, phase=0.0)
        radius[size] = [object_state(o, t, 320, 240)[2] for t in np.linspace(0, 4, 41)]
    assert max(radius["small"]) < min(radius["large"])
    assert max(radius["small"]) / min(radius["small"]) >= 1.4  # and the change is plain to see


def test_captions_load_with_the_captions_reader(world: World) -> None:
    ann = load_captions_jsonl(world.root / "captions.jsonl")
    assert sorted(ann.videos) == sorted(v.id for v in world.videos)
    assert len(ann.captions) == CAPTIONS_PER_VIDEO * N_VIDEOS
    for v in world.videos:
        assert v.id in ann.splits[v.split]


def test_matches_checks_every_attribute_on_one_object() -> None:
    videos, _ = plan_world(50, seed=4)
    two = next(v for v in videos if len(v.objects) == 2)
    a, b = two.objects
    assert matches(two, {"colour": a.colour, "shape": a.shape, "sound": two.sound})
    assert matches(two, {"colour": b.colour, "activity": b.activity})
    assert matches(two, {})
    assert not matches(two, {"colour": a.colour, "background": "none"})
    if a.shape != b.shape:
        assert not matches(two, {"colour": a.colour, "shape": b.shape})
    with pytest.raises(InputError, match="expected names in"):
        matches(two, {"hue": "red"})


def test_errors_say_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="expected at least 1"):
        plan_world(0)
    with pytest.raises(InputError, match="expected a world written by make_world"):
        load_world(tmp_path)
