"""The index store: shards committed with their videos, dead rows, refusals, the writer lock, crash leftovers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import child_env

from jemc_infer.errors import InputError, SettingsMismatchError
from jemc_infer.index.store import Index, VideoRecord

SETTINGS = {"model": "abc123", "layout": [["object", 4], ["activity", 4]], "sampling": {"frame_rate": 1.0},
            "backbones": {"object": "f00"}, "dtype": "float32"}


def rec(path: str, status: str = "ok", reason: str | None = None, size: int = 10) -> VideoRecord:
    return VideoRecord(path, size, 1, "h", 2.0, status, reason)


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 8)).astype(np.float32)


def live(index: Index) -> dict[int, np.ndarray]:
    out = {}
    for shard in index.shards():
        for r, i in enumerate(shard.ids):
            if i >= 0:
                out[int(i)] = np.asarray(shard.rows[r])
    return out


def test_shards_videos_and_dead_rows(tmp_path: Path) -> None:
    with Index.open(tmp_path / "ix", SETTINGS, writer=True) as ix:
        a = rows(3)
        ix.add_shard(a, [rec("a.mp4"), rec("b.mp4"), rec("c.mp4")])
        ix.record_failures([rec("bad.mp4", "failed", "empty file (0 bytes)")])
        ids = {p: v.id for p, v in ix.videos().items()}
        b = rows(1, seed=1)
        ix.add_shard(b, [rec("b.mp4", size=11)])  # b re-embedded: same id, new row; the old row is dead
        assert {p: v.id for p, v in ix.videos().items()} == ids
        got = live(ix)
        assert set(got) == {ids["a.mp4"], ids["b.mp4"], ids["c.mp4"]}
        assert np.array_equal(got[ids["b.mp4"]], b[0]) and np.array_equal(got[ids["a.mp4"]], a[0])
        assert ix.counts() == {"ok": 3, "failed": 1, "shards": 2, "compact_shards": 0, "segments": 0}
        assert ix.failures() == [("bad.mp4", "empty file (0 bytes)")]
        assert ix.describe(np.array([ids["c.mp4"], -1])) == {ids["c.mp4"]: ("c.mp4", 2.0)}
        assert ix.prune(["a.mp4", "nope.mp4"]) == 1
        assert ids["a.mp4"] not in live(ix)
        ix.record_failures([rec("c.mp4", "failed", "truncated")])  # was ok, now fails: its row is dead too
        assert set(live(ix)) == {ids["b.mp4"]} and len(list(ix.shards())) == 1  # a shard with no live row is skipped
        assert ix.model_path is None
        ix.set_model_path(tmp_path / "model")
    with Index.open(tmp_path / "ix") as ro:  # readers need no lock
        assert ro.model_path == str((tmp_path / "model").resolve())
        assert ro.dim == 8 and ro.counts()["ok"] == 1
        with pytest.raises(InputError, match="read-only"):
            ro.add_shard(rows(1), [rec("x.mp4")])
    assert np.load(tmp_path / "ix" / "shards" / "000001.npy", allow_pickle=False).dtype == np.float32


def test_other_settings_are_refused_with_what_differs(tmp_path: Path) -> None:
    Index.open(tmp_path / "ix", SETTINGS, writer=True).close()
    other = {**SETTINGS, "model": "fff999", "sampling": {"frame_rate": 2.0}}
    with pytest.raises(SettingsMismatchError, match=r"other model, sampling \(model=abc123; sampling=.*\) \| expected .*start a new index"):
        Index.open(tmp_path / "ix", other, writer=True)
    with pytest.raises(InputError, match="no index here"):
        Index.open(tmp_path / "elsewhere")
    with pytest.raises(InputError, match=r"rows \[2, 8\] for 1 videos"), Index.open(tmp_path / "ix", SETTINGS, writer=True) as ix:
        ix.add_shard(rows(2), [rec("a.mp4")])


def test_one_writer_and_a_killed_writers_lock_is_taken_over(tmp_path: Path) -> None:
    Index.open(tmp_path / "ix", SETTINGS, writer=True).close()
    holder = subprocess.Popen([sys.executable, "-m", "support.lock_holder", str(tmp_path / "ix" / "lock")],
                              stdout=subprocess.PIPE, text=True, env=child_env())
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(InputError, match=rf"being written by pid {holder.pid} \| expected one writer at a time"):
        Index.open(tmp_path / "ix", SETTINGS, writer=True)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with Index.open(tmp_path / "ix", SETTINGS, writer=True) as ix:
        assert any(f"took over the lock left by pid {holder.pid}" in m for m in ix.messages)
    with Index.open(tmp_path / "ix", SETTINGS, writer=True) as ix:  # a clean close leaves nothing to take over
        assert not ix.messages


def test_leftovers_of_a_crash_are_removed(tmp_path: Path) -> None:
    with Index.open(tmp_path / "ix", SETTINGS, writer=True) as ix:
        ix.add_shard(rows(2), [rec("a.mp4"), rec("b.mp4")])
    shards = tmp_path / "ix" / "shards"
    np.save(shards / "000002.npy", rows(3))  # renamed but never committed
    (shards / ".000003.npy.tmp-123").write_bytes(b"half a shard")
    with Index.open(tmp_path / "ix", SETTINGS, writer=True) as ix:
        assert ix.messages == ["removed 2 file(s) left by an interrupted run"]
        assert sorted(p.name for p in shards.iterdir()) == ["000001.npy"]
        assert len(live(ix)) == 2
        ix.add_shard(rows(1), [rec("c.mp4")])  # the next shard takes the freed name safely
    assert sorted(p.name for p in shards.iterdir()) == ["000001.npy", "000002.npy"]
