"""``features``: videos + annotations → feature dataset, with a status record and resume."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support import child_env
from support.corpus import write_video
from support.stub_encoder import Stub

from jemc_infer.collection import Options
from jemc_infer.errors import InputError, SettingsMismatchError
from jemc_infer.train.extract import STATUS_FILE, extract_dataset, work_dir_for
from jemc_infer.train.formats import load_captions_jsonl
from jemc_infer.video.sampling import Sampling

CHILD = [sys.executable, "-m", "support.features_child"]


@pytest.fixture()
def collection(tmp_path: Path) -> tuple[Path, Path]:
    vids = tmp_path / "videos"
    (vids / "nested").mkdir(parents=True)
    write_video(vids / "v1.mp4", frames=50, audio="aac")
    write_video(vids / "v2.mkv", frames=30)
    write_video(vids / "nested" / "v3.webm", codec="libvpx-vp9", frames=20, audio="libopus")
    (vids / "v4.mp4").write_bytes(b"\x00" * 100)
    (vids / "notes.txt").write_text("not a video")
    caps = tmp_path / "captions.jsonl"
    rows = [("v1", "train"), ("v2", "train"), ("v3", "val"), ("v4", "test"), ("v5", "test")]
    caps.write_text("".join(json.dumps({"video": v, "text": f"caption of {v}", "split": s}) + "\n" for v, s in rows))
    return vids, caps


def _run(vids: Path, caps: Path, out: Path, calls: list | None = None, restart: bool = False, **options):  # noqa: ANN202
    def factory() -> Stub:
        if calls is not None:
            calls.append(1)
        return Stub()
    opts = Options(**{"workers": 1, "frame_batch": 32, "clip_batch": 4, **options})
    return extract_dataset(vids, load_captions_jsonl(caps), out, factory, {"random_init": True}, options=opts, restart=restart)


def test_dataset_status_and_masks(collection: tuple[Path, Path], tmp_path: Path) -> None:
    vids, caps = collection
    summary = _run(vids, caps, tmp_path / "data")
    ds = summary.dataset
    assert ds.videos == ["v1", "v2", "v3", "v4", "v5"] and ds.feature_dims == {"resnet": 3, "i3d": 3, "audio": 1}
    assert ds.masks["resnet"].tolist() == [True, True, True, False, False]
    assert ds.masks["audio"].tolist() == [True, False, True, False, False]  # v2 has no audio track
    assert np.all(np.asarray(ds.features["i3d"])[3:] == 0)
    assert summary.failed == {"v4": "not a video FFmpeg can read (invalid data: corrupt, truncated, or not a media file)"}
    assert summary.missing == ["v5"] and summary.extracted == 4 and summary.skipped == 0
    assert ds.source["random_init"] is True and ds.source["videos_failed"] == 1 and ds.source["sampling"]["clip_fps"] == 25.0
    assert ds.split("train").captions == ("caption of v1", "caption of v2")
    rows = sqlite3.connect(work_dir_for(tmp_path / "data") / STATUS_FILE).execute(
        "SELECT v.path, v.status, r.frames, r.clips, r.has_audio FROM videos v LEFT JOIN results r ON r.path = v.path "
        "ORDER BY v.path").fetchall()
    assert rows == [("../videos/nested/v3.webm", "ok", 1, 1, 1), ("../videos/v1.mp4", "ok", 2, 3, 1),
                    ("../videos/v2.mkv", "ok", 2, 1, 0), ("../videos/v4.mp4", "failed", None, None, None)]


def test_rerun_skips_finished_and_redoes_changed(collection: tuple[Path, Path], tmp_path: Path) -> None:
    vids, caps = collection
    first = _run(vids, caps, tmp_path / "data")
    calls: list = []
    again = _run(vids, caps, tmp_path / "data", calls=calls)
    assert calls == [] and again.extracted == 0 and again.skipped == 4
    assert np.array_equal(np.asarray(again.dataset.features["resnet"]), np.asarray(first.dataset.features["resnet"]))
    write_video(vids / "v2.mkv", frames=60)  # changed content (size/mtime): redone
    changed = _run(vids, caps, tmp_path / "data", calls=calls)
    assert changed.extracted == 1 and calls == [1]
    retried = _run(vids, caps, tmp_path / "data", retry_failed=True)
    assert retried.extracted == 1 and "v4" in retried.failed
    with pytest.raises(SettingsMismatchError, match=r"other sampling .*restart the extraction"):
        _run(vids, caps, tmp_path / "data", sampling=Sampling(frame_rate=2.0))
    assert _run(vids, caps, tmp_path / "data", sampling=Sampling(frame_rate=2.0), restart=True).extracted == 4


def test_no_matching_file_is_a_clear_error(collection: tuple[Path, Path], tmp_path: Path) -> None:
    _, caps = collection
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no file named after an annotated video"):
        _run(tmp_path / "empty", caps, tmp_path / "data")
    with pytest.raises(InputError, match="not a directory"):
        _run(tmp_path / "absent", caps, tmp_path / "data")


def _crash_then_rerun(vids: Path, caps: Path, out: Path, crash_at: str, reference: dict) -> None:
    child = subprocess.run([*CHILD, vids, caps, out], env=child_env(JEMC_CRASH_AT=crash_at), capture_output=True, text=True,
                           timeout=120)
    assert child.returncode == -signal.SIGKILL, (crash_at, child.returncode, child.stderr[-2000:])
    assert not out.exists()  # the dataset is only published at the end
    summary = _run(vids, caps, out)
    assert summary.skipped + summary.extracted == 4, crash_at
    for k in ("resnet", "i3d", "audio"):
        assert np.allclose(np.asarray(summary.dataset.features[k]), reference[k], atol=1e-6), (crash_at, k)
    assert sqlite3.connect(work_dir_for(out) / STATUS_FILE).execute("SELECT COUNT(*) FROM videos").fetchone()[0] == 4


def test_kill_at_chosen_points_then_rerun_finishes_each_video_once(collection: tuple[Path, Path], tmp_path: Path) -> None:
    vids, caps = collection
    reference = {k: np.asarray(v) for k, v in _run(vids, caps, tmp_path / "reference").dataset.features.items()}
    # after the 2nd committed video; inside the 3rd job-store transaction (nothing of it may appear)
    for i, point in enumerate(("committed:2", "job-commit:3")):
        _crash_then_rerun(vids, caps, tmp_path / f"data{i}", point, reference)


def test_a_second_writer_is_refused_and_a_dead_ones_lock_taken_over(collection: tuple[Path, Path], tmp_path: Path) -> None:
    vids, caps = collection
    out = tmp_path / "data"
    child = subprocess.Popen([*CHILD, vids, caps, out, "0.5"], env=child_env(), stderr=subprocess.PIPE)
    try:
        lock = work_dir_for(out) / "lock"
        deadline = time.monotonic() + 60
        while not (lock.exists() and lock.read_text().strip()):
            assert time.monotonic() < deadline and child.poll() is None, child.stderr.read().decode()[-2000:]
            time.sleep(0.05)
        with pytest.raises(InputError, match=f"being written by pid {child.pid}"):
            _run(vids, caps, out)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        child.kill()
    summary = _run(vids, caps, out)  # the dead writer's lock is taken over
    assert summary.skipped + summary.extracted == 4
