"""Decoding in worker processes: every file ends once, hung files are stopped, the run goes on."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import numpy as np
import pytest
from support.corpus import make_fifo

from jemc_infer.errors import InputError
from jemc_infer.video.decode import VideoReader
from jemc_infer.video.pipeline import extract_features
from jemc_infer.video.pool import decode_many
from jemc_infer.video.sampling import Sampling, i3d_input, resnet_input


def _outcomes(paths, **kw) -> dict[int, tuple[str, str | None, int]]:  # noqa: ANN001
    chunks: dict[int, int] = {}
    out = {}
    for ev in decode_many(paths, Sampling(), **kw):
        assert ev.index not in out, "nothing arrives after a video's last event"
        if ev.kind == "chunk":
            chunks[ev.index] = chunks.get(ev.index, 0) + 1
        else:
            out[ev.index] = (ev.kind, ev.reason, chunks.get(ev.index, 0))
    return out


def test_every_file_ends_exactly_once(videos: dict[str, Path], broken: dict[str, Path]) -> None:
    paths = [videos["h264.mp4"], broken["zero_bytes.mp4"], videos["long.mkv"], broken["audio_only.mp4"], videos["vp9.webm"]]
    out = _outcomes(paths, workers=2)
    assert sorted(out) == [0, 1, 2, 3, 4]
    assert [out[i][0] for i in range(5)] == ["done", "failed", "done", "failed", "done"]
    assert out[1][1] == "empty file (0 bytes)" and out[3][1].startswith("no video stream")
    assert out[2][2] >= 7  # the long video came in windows


def test_a_hung_file_is_stopped_and_the_run_goes_on(videos: dict[str, Path], tmp_path: Path) -> None:
    hung = make_fifo(tmp_path / "stalled.mp4")  # opening it blocks: nobody ever writes
    t = time.monotonic()
    out = _outcomes([hung, videos["h264.mp4"], videos["h264.mkv"]], workers=1, time_limit=2.0)
    assert out[0][0] == "failed" and out[0][1].startswith("timed out: no progress for 2 s")
    assert out[1][0] == out[2][0] == "done"  # the replacement worker carried on
    assert time.monotonic() - t < 30
    assert not multiprocessing.active_children()


@pytest.mark.parametrize(("kw", "message"), [
    ({"workers": 0}, r"decoder workers \| 0 \| expected >= 1"),
    ({"time_limit": 0.0}, r"decode time limit \| 0 s \| expected > 0 seconds"),
])
def test_bad_settings_are_input_errors(videos: dict[str, Path], kw: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        next(decode_many([videos["h264.mp4"]], Sampling(), **kw))
    assert not multiprocessing.active_children()


def test_stopping_early_leaves_no_worker_behind(videos: dict[str, Path]) -> None:
    events = decode_many([videos["long.mkv"]] * 3, Sampling(), workers=2)
    next(events)
    events.close()
    deadline = time.monotonic() + 10
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not multiprocessing.active_children()


class MeanColour:
    """A stand-in for the backbones whose output follows from the pixels (the real ones are
    tested in tests/nn; here what matters is which samples reach them, batched how)."""

    def encode_frames(self, x: np.ndarray) -> np.ndarray:
        return resnet_input(x).mean(axis=(2, 3))

    def encode_clips(self, x: np.ndarray) -> np.ndarray:
        return i3d_input(x).mean(axis=(2, 3, 4))

    def encode_audio(self, wave: np.ndarray) -> np.ndarray:
        n = max(1, len(wave) // 2205)
        return np.abs(np.resize(wave, n * 2205)).reshape(n, 2205).mean(axis=1, keepdims=True)


def _expected(path: Path) -> dict[str, np.ndarray]:
    chunks = list(VideoReader(path, Sampling()))
    frames = np.concatenate([c.frames for c in chunks])
    clips = np.concatenate([c.clips for c in chunks])
    return {"resnet": resnet_input(frames).mean(axis=(0, 2, 3)), "i3d": i3d_input(clips).mean(axis=(0, 2, 3, 4))}


@pytest.mark.parametrize(("workers", "frame_batch", "clip_batch"), [(1, 3, 1), (2, 64, 16)])
def test_pipeline_means_are_independent_of_batching(videos: dict[str, Path], broken: dict[str, Path],
                                                    workers: int, frame_batch: int, clip_batch: int) -> None:
    paths = [videos["h264.mp4"], broken["random_bytes.mp4"], videos["long.mkv"], videos["fps60.mp4"], videos["one-frame.mp4"]]
    results = {r.index: r for r in extract_features(paths, Sampling(), MeanColour(), workers=workers,
                                                     frame_batch=frame_batch, clip_batch=clip_batch)}
    assert sorted(results) == [0, 1, 2, 3, 4]
    assert not results[1].ok and results[1].reason.startswith("not a video")
    for i in (0, 2, 3, 4):
        want = _expected(paths[i])
        got = results[i].features
        assert np.allclose(got["resnet"], want["resnet"], atol=1e-5) and np.allclose(got["i3d"], want["i3d"], atol=1e-5)
        assert ("audio" in got) == results[i].info.has_audio
    # mean |x| of the 0.3 tone, downmixed stereo → mono by FFmpeg at -3 dB per channel (x √2)
    assert results[0].features["audio"][0] == pytest.approx(0.3 * np.sqrt(2) * 2 / np.pi, rel=0.05)
    assert results[2].stats.object_frames == 60
