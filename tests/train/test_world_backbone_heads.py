"""What the world's backbones learn from each example: every object of a two-object video is
labelled, and the colour+shape / size+shape heads say which colour and size go with which shape."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from jemc_infer.train import world as world_module  # noqa: E402
from jemc_infer.train.world_backbones import HEADS, _labels, _loss, _split  # noqa: E402


def _two_objects() -> world_module.VideoTruth:
    videos, _ = world_module.plan_world(60, seed=0)
    video = next(v for v in videos if len(v.objects) == 2 and v.objects[0].shape != v.objects[1].shape)
    first, second = video.objects
    # a small red triangle moving left on top of a large blue square that spins
    return dataclasses.replace(video, background="striped", sound="beeping", objects=(
        dataclasses.replace(first, shape="triangle", colour="red", size="small", activity="left"),
        dataclasses.replace(second, shape="square", colour="blue", size="large", activity="spinning")))


def _by_head(stream: str, truth: world_module.VideoTruth) -> dict[str, dict[tuple[str, ...], float]]:
    target = torch.from_numpy(_labels(stream, truth)[None])
    return {h.name: {c: float(p) for c, p in zip(h.classes, part[0], strict=True) if p}
            for h, part in zip(HEADS[stream], _split(target, HEADS[stream]), strict=True)}


def test_both_objects_are_labelled_and_bound() -> None:
    got = _by_head("object", _two_objects())
    assert got["shape"] == {("triangle",): 0.5, ("square",): 0.5}
    assert got["colour"] == {("red",): 0.5, ("blue",): 0.5}
    assert got["size"] == {("small",): 0.5, ("large",): 0.5}
    assert got["background"] == {("striped",): 1.0}
    # the pairs the video has, not the red square or the blue triangle its single attributes allow
    assert got["colour+shape"] == {("red", "triangle"): 1.0, ("blue", "square"): 1.0}
    assert got["size+shape"] == {("small", "triangle"): 1.0, ("large", "square"): 1.0}
    assert _by_head("activity", _two_objects()) == {"activity": {("left",): 1.0}}  # the captions' object
    assert _by_head("audio", _two_objects()) == {"sound": {("beeping",): 1.0}}


def test_one_object_and_two_alike_are_plain_one_hot() -> None:
    truth = _two_objects()
    alone = dataclasses.replace(truth, objects=truth.objects[:1])
    twins = dataclasses.replace(truth, objects=(truth.objects[0], dataclasses.replace(truth.objects[1], shape="triangle")))
    assert _by_head("object", alone)["shape"] == {("triangle",): 1.0}
    assert _by_head("object", alone)["colour+shape"] == {("red", "triangle"): 1.0}
    assert _by_head("object", twins)["shape"] == {("triangle",): 1.0}
    assert _by_head("object", twins)["size+shape"] == {("small", "triangle"): 1.0, ("large", "triangle"): 1.0}


def test_each_head_kind_has_its_loss() -> None:
    """A softmax head: cross-entropy with the (soft) target; a combination head: binary
    cross-entropy summed over its classes, averaged over the batch — zero only when right."""
    one, any_ = next(h for h in HEADS["object"] if h.kind == "one"), next(h for h in HEADS["object"] if h.kind == "any")
    target = torch.zeros(2, len(any_.classes))
    target[:, :2] = 1.0
    confident = (target * 2 - 1) * 30
    assert float(_loss(any_, confident, target)) < 1e-6
    assert float(_loss(any_, -confident, target)) == pytest.approx(any_.weight * 30 * len(any_.classes), rel=1e-3)
    soft = torch.full((1, len(one.classes)), 0.0)
    soft[0, :2] = 0.5
    logits = torch.zeros(1, len(one.classes))
    assert float(_loss(one, logits, soft)) == pytest.approx(one.weight * np.log(len(one.classes)), rel=1e-5)
