"""Moments: per-window rows kept beside the pooled rows, and the window that holds the cue wins.

No trained model here: a fake video head whose output is known (the cue is a colour) makes the
cue meaningful, so the window rows, their storage and the choice of the best window are checked
against known answers, through the real decoder and collection pipeline."""

from __future__ import annotations

import fractions
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
from support.stub_encoder import Stub

from jemc_infer.collection import Options, run_collection
from jemc_infer.config import ModelConfig, SpaceConfig
from jemc_infer.embed import IndexSink
from jemc_infer.errors import InputError
from jemc_infer.index.store import Index, VideoRecord
from jemc_infer.index.windows import VideoWindows, WindowRows, best_window
from jemc_infer.moments import overlap_mean, window_rows
from jemc_infer.query import rank
from jemc_infer.video.pipeline import Windows

E = 3  # joint-space width of the fake model
CONFIG = ModelConfig(spaces=(SpaceConfig("object", ("resnet",)), SpaceConfig("activity", ("i3d", "audio"))), vocab_size=4,
                     feature_dims={"resnet": 3, "i3d": 3, "audio": 1}, embed_dim=E)
SETTINGS = {"model": "fake", "layout": [["object", E], ["activity", E]], "sampling": {}, "backbones": {}, "dtype": "float32"}


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class FakeHeads:
    """The ``video`` graph of a model that knows one cue: red. The stub backbones give per-channel
    means of the ImageNet-normalised pixels (red ≈ (2.2, -2.0, -1.8), grey ≈ (0.1, 0.2, 0.4)); this
    head maps them to (r − g, 1, ·): red points along the first axis, grey along the second."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        r, c = inputs["resnet"], inputs["i3d"]
        self.calls.append(len(r))
        ones = np.ones(len(r), np.float32)
        return {"video_object": _unit(np.stack([r[:, 0] - r[:, 1], ones, 0 * ones], axis=1)),
                "video_activity": _unit(np.stack([c[:, 0] - c[:, 1], ones, inputs["audio"][:, 0]], axis=1))}


RED = np.array([1, 0, 0, 1, 0, 0], np.float32)  # "something red": the cue direction in both spaces
GREY = np.array([0, 1, 0, 0, 1, 0], np.float32)


def write_cue_video(path: Path, seconds: float = 4.0, cue_from: float = 2.0, fps: int = 25) -> Path:
    """Grey frames, then red ones from ``cue_from`` seconds on, with a quiet tone (AAC)."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        aus = out.add_stream("aac", rate=22050, layout="mono")
        for k in range(int(seconds * fps)):
            img = np.full((48, 64, 3), 128, np.uint8)
            if k / fps >= cue_from:
                img[:] = (230, 10, 10)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = k, fractions.Fraction(1, fps)
            out.mux(vs.encode(frame))
        out.mux(vs.encode())
        t = np.arange(int(seconds * 22050)) / 22050
        wave = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for a in range(0, len(wave), 1024):
            chunk = av.AudioFrame.from_ndarray(wave[None, a:a + 1024], format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 22050, a
            out.mux(aus.encode(chunk))
        out.mux(aus.encode())
    return path


def _embed(paths: list[Path], index_dir: Path, moments: bool = True) -> FakeHeads:
    heads = FakeHeads()
    with Index.open(index_dir, SETTINGS, writer=True) as index:
        if moments:
            index.keep_moments()
        sink = IndexSink(index, SimpleNamespace(config=CONFIG), heads, flush_every=2, batch_size=4)  # type: ignore[arg-type]
        run_collection(paths, index.jobs, sink, Stub, Options(workers=1, keep_windows=index.has_moments))
    return heads


def test_the_window_that_holds_the_cue_wins(tmp_path: Path) -> None:
    videos = [write_cue_video(tmp_path / "cue.mp4"), write_cue_video(tmp_path / "early.mp4", cue_from=0.0)]
    heads = _embed(videos, tmp_path / "ix")
    assert max(heads.calls) <= 4  # the head saw batches within its limit
    with Index.open(tmp_path / "ix") as index:
        ids = {Path(p).name: r.id for p, r in index.videos().items()}
        windows = index.windows(np.array(list(ids.values())))
        cue = windows[ids["cue.mp4"]]
        assert np.all(np.diff(cue.start) >= 0) and np.all(cue.end >= cue.start) and set(cue.space.tolist()) == {0, 1}
        assert np.sum(cue.space == 0) == 4 and np.sum(cue.space == 1) == 6  # 1 frame/s; clips of 16/25 s
        pooled = index.row(ids["cue.mp4"])
        assert pooled is not None and np.allclose(cue.rows[cue.space == 0][:, E:], pooled[E:])  # the other space stays pooled
        (red_hits,) = rank(index, RED[None], k=2)
        (grey_hits,) = rank(index, GREY[None], k=2)
    red = {Path(h.path).name: h for h in red_hits}
    assert red_hits[0].path == "../early.mp4"  # ranking is on the pooled rows: the all-red video first
    start, end = red["cue.mp4"].moment
    assert 2.0 - 1e-6 <= start < end <= red["cue.mp4"].duration + 1e-6  # the cue's half
    assert red["cue.mp4"].score == pytest.approx(float(RED @ pooled), abs=1e-5)  # the pooled score, not the window's
    grey = {Path(h.path).name: h for h in grey_hits}
    assert grey["cue.mp4"].moment[1] <= 2.0 + 1e-6  # the grey half answers the grey question


def test_an_index_without_moments_answers_without_them(tmp_path: Path) -> None:
    _embed([write_cue_video(tmp_path / "cue.mp4")], tmp_path / "ix", moments=False)
    with sqlite3.connect(tmp_path / "ix" / "manifest.sqlite") as db:  # as an index made before moments: no trace of them
        db.execute("DROP TABLE windows")
    (tmp_path / "ix" / "windows").rmdir()
    with Index.open(tmp_path / "ix") as index:
        assert not index.has_moments and index.without_moments() == {"../cue.mp4"}
        (hits,) = rank(index, RED[None], k=1)
        assert hits[0].moment is None and hits[0].path == "../cue.mp4"
    with Index.open(tmp_path / "ix", SETTINGS, writer=True) as index:
        index.keep_moments()
        assert index.has_moments and index.without_moments() == {"../cue.mp4"}  # embed re-embeds these
        with pytest.raises(InputError, match=r"shard \| no windows for an index with moments \| expected windows with every shard"):
            index.add_shard(np.zeros((1, 2 * E), np.float32), [VideoRecord("x.mp4", 1, 1, "h", 1.0, "ok")])


def test_windows_are_committed_with_their_shard_and_checked(tmp_path: Path) -> None:
    rows = _unit(np.random.default_rng(0).standard_normal((2, 2 * E)))
    wins = WindowRows(rows=_unit(np.random.default_rng(1).standard_normal((3, 2 * E))), offsets=np.array([0, 2, 3]),
                      start=np.array([0.0, 1.0, 0.0]), end=np.array([1.0, 2.0, 0.5]), space=np.array([0, 1, 0], np.uint8))
    recs = [VideoRecord(f"{n}.mp4", 1, 1, "h", 2.0, "ok") for n in "ab"]
    with Index.open(tmp_path / "ix", SETTINGS, writer=True) as index:
        with pytest.raises(InputError, match=r"shard \| windows for an index without moments \| expected none"):
            index.add_shard(rows, recs, wins)
        index.keep_moments()
        bad = WindowRows(wins.rows, np.array([0, 2, 4]), wins.start, wins.end, wins.space)
        with pytest.raises(InputError, match=r"window rows \| offsets \[0, 2, 4\] \(expected 3 non-decreasing, 0 to 3\)"):
            index.add_shard(rows, recs, bad)
        index.add_shard(rows, recs, wins)
        ids = {p: r.id for p, r in index.videos().items()}
        got = index.windows(np.array([ids["a.mp4"], ids["b.mp4"], 999]))
        assert set(got) == {ids["a.mp4"], ids["b.mp4"]}
        np.testing.assert_array_equal(got[ids["a.mp4"]].rows, wins.rows[:2])
        assert got[ids["b.mp4"]].start.tolist() == [0.0] and got[ids["b.mp4"]].end.tolist() == [0.5]
        assert index.without_moments() == set()
    (tmp_path / "ix" / "windows" / "000009.npy").write_bytes(b"left by a crash")
    with Index.open(tmp_path / "ix", SETTINGS, writer=True) as index:
        assert index.messages == ["removed 1 file(s) left by an interrupted run"]


def test_best_window_is_the_highest_scoring_one_with_its_times() -> None:
    rows = np.eye(4, dtype=np.float32)
    w = VideoWindows(rows, np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0, 3.5]), np.zeros(4, np.uint8))
    assert best_window(w, np.array([0, 0, 1, 0.5], np.float32)) == (2.0, 3.0)
    assert best_window(w, np.array([0, 1, 0, 1], np.float32)) == (1.0, 2.0)  # a tie: the earlier window
    assert best_window(VideoWindows(rows[:0], np.zeros(0), np.zeros(0), np.zeros(0, np.uint8)), np.ones(4)) is None


def test_overlap_mean_weights_by_overlap_and_falls_back_to_the_nearest() -> None:
    audio = Windows(np.array([0.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0]), np.array([[0.0], [10.0], [20.0]], np.float32))
    got = overlap_mean(audio, np.array([0.5, 1.0, 2.5, 5.0]), np.array([1.5, 2.0, 2.5, 5.0]))
    np.testing.assert_allclose(got[:, 0], [5.0, 10.0, 20.0, 20.0])  # half/half; exact; a point inside; past the end


def test_window_rows_of_a_video_without_windows_are_empty() -> None:
    pooled = _unit(np.ones((2, 2 * E)))
    feats = [{"resnet": np.ones(3, np.float32), "i3d": np.ones(3, np.float32)}] * 2
    frames = Windows(np.array([0.0, 1.0]), np.array([1.0, 2.0]), np.array([[1, 0, 0], [3, 0, 0]], np.float32))
    out = window_rows(CONFIG, FakeHeads(), pooled, feats, [{}, {"resnet": frames}], batch_size=1)  # type: ignore[arg-type]
    out.check(2, 2 * E)
    assert out.offsets.tolist() == [0, 0, 2] and out.space.tolist() == [0, 0] and out.start.tolist() == [0.0, 1.0]
    np.testing.assert_allclose(out.rows[:, E:], pooled[1:, E:].repeat(2, axis=0))  # the activity part stays pooled
