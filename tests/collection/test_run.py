"""The collection pipeline as a component: events, per-window outputs, failures, Ctrl-C and kill -9
at chosen points (the commands' own crash tests are in tests/runtime and tests/train)."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import child_env
from support.collection_child import TableSink, run
from support.corpus import write_video
from support.stub_encoder import Stub

from jemc_infer.collection import Committed, JobStore, Options, Planned, VideoDone, run_collection, scan


@pytest.fixture()
def videos(tmp_path: Path) -> Path:
    root = tmp_path / "videos"
    root.mkdir()
    for i in range(5):
        write_video(root / f"v{i}.mp4", frames=20 + 10 * i, size=(64, 48), audio="aac" if i % 2 == 0 else None)
    (root / "broken.mp4").write_bytes(b"\x00" * 64)
    return root


def _store(tmp_path: Path) -> JobStore:
    return JobStore(sqlite3.connect(tmp_path / "jobs.sqlite"), tmp_path)


def _results(db: Path) -> dict[str, np.ndarray]:
    rows = sqlite3.connect(db).execute("SELECT path, resnet FROM results").fetchall()
    return {p: np.frombuffer(b, np.float32) for p, b in rows}


def test_events_failures_and_a_rerun_that_skips_what_is_done(videos: Path, tmp_path: Path) -> None:
    store, events = _store(tmp_path), []
    summary = run_collection(scan([videos]).files, store, TableSink(store), Stub, Options(workers=1), events.append)
    assert events[0] == Planned(todo=6, skipped=0)
    done = [e for e in events if isinstance(e, VideoDone)]
    assert len(done) == 6 and sum(e.result.ok for e in done) == 5
    assert sum(e.videos for e in events if isinstance(e, Committed)) == 5  # every success committed, in batches of 2
    assert summary.done == 5 and summary.failed == {"videos/broken.mp4": done[[e.job.key for e in done].index("videos/broken.mp4")].result.reason}
    assert store.failures() == [("videos/broken.mp4", summary.failed["videos/broken.mp4"])]
    again: list = []
    rerun = run_collection(scan([videos]).files, store, TableSink(store), lambda: pytest.fail("nothing to encode"),
                           Options(workers=1), again.append)
    assert again == [Planned(todo=0, skipped=6)] and rerun.skipped == 6
    retried = run_collection(scan([videos]).files, store, TableSink(store), Stub, Options(workers=1, retry_failed=True))
    assert retried.skipped == 5 and list(retried.failed) == ["videos/broken.mp4"]


def test_windows_are_kept_with_their_times_and_pool_to_the_features(videos: Path, tmp_path: Path) -> None:
    store, results = _store(tmp_path), []
    sink = TableSink(store)
    run_collection([videos / "v4.mp4"], store, sink, Stub, Options(workers=1, keep_windows=True),
                   lambda e: results.append(e.result) if isinstance(e, VideoDone) else None)
    (result,) = results
    duration = result.stats.duration
    assert set(result.windows) == {"resnet", "i3d", "audio"}
    for name, w in result.windows.items():
        assert len(w.start) == len(w.end) == len(w.features) >= 1, name
        assert np.all(np.diff(w.start) >= 0) and np.all(w.end >= w.start) and w.end[-1] <= duration + 1e-9, name
        np.testing.assert_allclose(w.features.mean(axis=0), result.features[name], rtol=1e-5, atol=1e-6, err_msg=name)
    frames = result.windows["resnet"]
    assert np.allclose(frames.start, np.arange(len(frames.start)))  # 1 fps sampling: frame k at k seconds
    assert np.allclose(frames.end[:-1], frames.start[1:])  # each frame stands until the next
    clips = result.windows["i3d"]
    assert np.allclose(clips.end - clips.start, 16 / 25)


def test_ctrl_c_commits_what_is_finished(videos: Path, tmp_path: Path) -> None:
    store, seen = _store(tmp_path), []

    def interrupt_after_three(event: object) -> None:
        if isinstance(event, VideoDone) and event.result.ok:
            seen.append(event.job.key)
            if len(seen) == 3:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_collection(scan([videos]).files, store, TableSink(store, every=100), Stub, Options(workers=1), interrupt_after_three)
    assert sorted(_results(tmp_path / "jobs.sqlite")) == sorted(seen)
    assert {p for p, r in store.records().items() if r.status == "ok"} == set(seen)


# job-commit counts every row written: the broken file (first by name), then the batches of two, so
# job-commit:4 dies inside the second batch's transaction, which must leave no trace
@pytest.mark.parametrize("point", ["committed:1", "committed:2", "job-commit:4"])
def test_kill_at_a_chosen_point_then_rerun_has_each_video_once(videos: Path, tmp_path: Path, point: str) -> None:
    reference = tmp_path / "reference" / "jobs.sqlite"
    reference.parent.mkdir()
    run(videos, reference)
    db = tmp_path / "run" / "jobs.sqlite"
    db.parent.mkdir()
    child = subprocess.run([sys.executable, "-m", "support.collection_child", videos, db], env=child_env(JEMC_CRASH_AT=point),
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    before = _results(db)
    assert len(before) == {"committed:1": 2, "committed:2": 4, "job-commit:4": 2}[point]  # nothing half-committed
    run(videos, db)
    after, want = _results(db), _results(reference)
    assert sorted(after) == sorted(want) and len(after) == 5
    for path, row in after.items():
        np.testing.assert_array_equal(row, want[path])
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM videos").fetchone()[0] == 6
