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
from support.corpus import write_video

from jemc_infer.errors import InputError  # noqa: E402
from jemc_infer.train.extract import STATUS_FILE, extract_dataset, work_dir_for  # noqa: E402
from jemc_infer.train.formats import load_captions_jsonl  # noqa: E402
from jemc_infer.video.sampling import Sampling, i3d_input, resnet_input  # noqa: E402


class Stub:
    """Cheap numpy backbones (the real ones are tested in tests/nn): per-channel means."""

    provenance = {"object": {"backbone": "stub"}}

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    def encode_frames(self, x: np.ndarray) -> np.ndarray:
        time.sleep(self.delay)
        return resnet_input(x).mean(axis=(2, 3))

    def encode_clips(self, x: np.ndarray) -> np.ndarray:
        return i3d_input(x).mean(axis=(2, 3, 4))

    def encode_audio(self, wave: np.ndarray) -> np.ndarray:
        return np.abs(wave).mean(keepdims=True)[None]


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


def _run(vids: Path, caps: Path, out: Path, calls: list | None = None, **kw):  # noqa: ANN202
    def factory() -> Stub:
        if calls is not None:
            calls.append(1)
        return Stub()
    return extract_dataset(vids, load_captions_jsonl(caps), out, factory, {"random_init": True}, **kw)


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
        "SELECT id, status, frames, clips, has_audio FROM videos ORDER BY id").fetchall()
    assert rows == [("v1", "ok", 2, 3, 1), ("v2", "ok", 2, 1, 0), ("v3", "ok", 1, 1, 1), ("v4", "failed", None, None, 0)]


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
    with pytest.raises(InputError, match=r"other settings \(sampling\).*--restart"):
        _run(vids, caps, tmp_path / "data", sampling=Sampling(frame_rate=2.0))
    assert _run(vids, caps, tmp_path / "data", sampling=Sampling(frame_rate=2.0), restart=True).extracted == 4


def test_no_matching_file_is_a_clear_error(collection: tuple[Path, Path], tmp_path: Path) -> None:
    _, caps = collection
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no file named after an annotated video"):
        _run(tmp_path / "empty", caps, tmp_path / "data")
    with pytest.raises(InputError, match="not a directory"):
        _run(tmp_path / "absent", caps, tmp_path / "data")


_CHILD = """
import sys, json
sys.path.insert(0, sys.argv[4])
from test_extract import Stub
from jemc_infer.train.extract import extract_dataset
from jemc_infer.train.formats import load_captions_jsonl
from pathlib import Path
extract_dataset(Path(sys.argv[1]), load_captions_jsonl(sys.argv[2]), Path(sys.argv[3]), lambda: Stub(delay=0.4),
                {"random_init": True}, workers=1)
"""


def test_kill_mid_run_then_rerun_finishes_each_video_once(collection: tuple[Path, Path], tmp_path: Path) -> None:
    vids, caps = collection
    out = tmp_path / "data"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(vids), str(caps), str(out), str(Path(__file__).parent)],
                             stderr=subprocess.PIPE)
    status = work_dir_for(out) / STATUS_FILE
    deadline = time.monotonic() + 60
    done = 0
    while time.monotonic() < deadline and child.poll() is None:
        if status.exists():
            try:
                done = sqlite3.connect(status).execute("SELECT COUNT(*) FROM videos").fetchone()[0]
            except sqlite3.OperationalError:
                done = 0
            if done >= 1:
                break
        time.sleep(0.05)
    assert child.poll() is None, child.stderr.read().decode()[-2000:]
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert not out.exists()  # the dataset is only published at the end
    summary = _run(vids, caps, out)
    assert summary.skipped >= 1 and summary.skipped + summary.extracted == 4
    reference = _run(vids, caps, tmp_path / "reference")
    for k in ("resnet", "i3d", "audio"):
        assert np.allclose(np.asarray(summary.dataset.features[k]), np.asarray(reference.dataset.features[k]), atol=1e-6)
    assert sqlite3.connect(status).execute("SELECT COUNT(*) FROM videos").fetchone()[0] == 4
