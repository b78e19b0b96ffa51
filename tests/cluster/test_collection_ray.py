"""The collection pipeline on Ray equals the local one, and a worker killed mid-run loses and doubles nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from support.collection_child import TableSink
from support.corpus import make_fifo, write_video
from support.stub_encoder import Stub

from jemc_infer.cluster import Cluster
from jemc_infer.cluster.collection import run_collection_ray
from jemc_infer.collection import Committed, JobStore, Options, Planned, VideoDone, run_collection, scan


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    for i in range(6):
        write_video(root / f"v{i}.mp4", frames=20 + 10 * i, size=(64, 48), audio="aac" if i % 2 == 0 else None)
    (root / "broken.mp4").write_bytes(b"\x00" * 64)
    return root


def _store(folder: Path) -> JobStore:
    folder.mkdir(parents=True, exist_ok=True)
    return JobStore(sqlite3.connect(folder / "jobs.sqlite"), folder)


def _results(store: JobStore) -> dict[str, np.ndarray]:
    rows = store.db.execute("SELECT path, resnet FROM results").fetchall()
    return {p: np.frombuffer(b, np.float32) for p, b in rows}


def test_ray_run_equals_the_local_run(ray_cluster, videos: Path, tmp_path: Path) -> None:
    local = _store(tmp_path / "local")
    run_collection(scan([videos]).files, local, TableSink(local), Stub, Options(workers=1))
    store, events = _store(tmp_path / "ray"), []
    summary, ran = run_collection_ray(scan([videos]).files, store, TableSink(store), Stub, Cluster(actors=2), Options(), events.append)
    assert ran.actors == 2 and ran.decode_slots == 1
    assert events[0] == Planned(todo=7, skipped=0)
    assert sum(isinstance(e, VideoDone) for e in events) == 7
    assert sum(e.videos for e in events if isinstance(e, Committed)) == 6
    assert summary.done == 6 and [Path(p).name for p in summary.failed] == ["broken.mp4"]
    want, got = _results(local), _results(store)  # keys are relative to each store: compare by file name
    assert {Path(k).name: v.tobytes() for k, v in got.items()} == {Path(k).name: v.tobytes() for k, v in want.items()}
    assert [Path(p).name for p, _ in store.failures()] == ["broken.mp4"]
    assert store.failures()[0][1] == local.failures()[0][1]  # the same reason
    again = run_collection_ray(scan([videos]).files, store, TableSink(store), Stub, Cluster(actors=2))[0]
    assert again.skipped == 7 and again.done == 0  # resumable: the job store decides


def test_a_worker_killed_mid_run_loses_and_doubles_nothing(ray_cluster, videos: Path, tmp_path: Path) -> None:
    # the first actor to start a video dies by SIGKILL (once, across processes); Ray restarts it
    env = {"env_vars": {"JEMC_CRASH_AT": "ray-encode:1", "JEMC_CRASH_ONCE": str(tmp_path / "died"),
                        **ray_cluster.get_runtime_context().runtime_env.get("env_vars", {})}}
    store, events = _store(tmp_path / "ray"), []
    summary, _ = run_collection_ray(scan([videos]).files, store, TableSink(store), Stub, Cluster(actors=2, runtime_env=env),
                                    Options(), events.append)
    assert (tmp_path / "died").exists()  # a worker did die
    done = [e.job.key for e in events if isinstance(e, VideoDone)]
    assert len(done) == len(set(done)) == 7  # every video once
    assert summary.done == 6 and len(summary.failed) == 1
    assert len(_results(store)) == 6
    assert store.db.execute("SELECT COUNT(*), COUNT(DISTINCT path) FROM videos").fetchone() == (7, 7)


@pytest.mark.slow  # waits out a time limit; keeps the default run's Ray tests near 50 s
def test_a_hung_file_is_stopped_and_recorded_and_the_rest_go_on(ray_cluster, videos: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import jemc_infer.cluster.collection as on_ray

    monkeypatch.setattr(on_ray, "_STUCK_GRACE", 1.0)
    folder = tmp_path / "videos"
    folder.mkdir()
    hung = make_fifo(folder / "stalled.mp4")  # opening it blocks: nobody ever writes
    files = [hung, videos / "v0.mp4", videos / "v1.mp4"]
    store = _store(tmp_path / "ray")
    summary, _ = run_collection_ray(files, store, TableSink(store), Stub, Cluster(actors=1), Options(time_limit=2.0))
    assert summary.done == 2 and summary.failed == {"../videos/stalled.mp4": "timed out: no result for 2 s (stopped)"}


@pytest.mark.slow  # two drivers that each start their own Ray cluster: ~20 s here, kept out of the default run
def test_a_driver_killed_after_a_commit_loses_and_doubles_nothing(videos: Path, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    from support import child_env

    db = tmp_path / "jobs.sqlite"
    cmd = [sys.executable, "-m", "support.ray_child", str(videos), str(db)]
    first = subprocess.run(cmd, env=child_env(JEMC_CRASH_AT="committed:1"), capture_output=True, text=True, timeout=300)
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    store = JobStore(sqlite3.connect(db), tmp_path)
    assert len(_results(store)) == 2  # the first shard of two videos was committed before the kill
    second = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    done, skipped, failed = map(int, second.stdout.split())
    assert done == 4 and done + skipped + failed == 7  # the rest embedded; the two committed (and broken.mp4, if recorded) skipped
    assert len(_results(store)) == 6
    assert store.db.execute("SELECT COUNT(*), COUNT(DISTINCT path) FROM videos").fetchone() == (7, 7)


def test_a_model_the_actors_cannot_open_is_the_users_one_line_error(ray_cluster, videos: Path, tmp_path: Path) -> None:
    from jemc_infer.embed import BackboneSpec
    from jemc_infer.errors import JemcError

    store = _store(tmp_path / "ray")
    with pytest.raises(JemcError) as info:
        run_collection_ray([videos / "v0.mp4"], store, TableSink(store), BackboneSpec(tmp_path / "no-model"), Cluster(actors=1))
    assert "no-model" in str(info.value) and "Traceback" not in str(info.value) and len(str(info.value).splitlines()) == 1
    assert store.records() == {}  # nothing was recorded
