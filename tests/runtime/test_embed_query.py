"""The main job: ``embed`` folders of videos, ``query`` them with sentences — incremental,
crash-safe, refusing what it cannot do, and without torch at query time."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support.corpus import write_video
from typer.testing import CliRunner

from jemc_infer.cli import app
from jemc_infer.collection import Options, VideoDone
from jemc_infer.index.store import Index

pytest.importorskip("onnxruntime")
runner = CliRunner()


def make_videos(root: Path, n: int = 5) -> Path:
    (root / "sub").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        folder = root / "sub" if i % 2 else root
        write_video(folder / f"v{i}.mp4", frames=25 + 5 * i, size=(64, 48), audio="aac" if i % 2 == 0 else None)
    return root


def run(*args: str | Path):  # noqa: ANN201
    return runner.invoke(app, [str(a) for a in args])


def embed(videos: Path, index: Path, model: Path, *extra: str):  # noqa: ANN201
    return run("embed", videos, "--index", index, "--model", model, "--workers", "1", "--flush-every", "2", "--quiet", *extra)


def index_rows(index: Path) -> dict[str, int]:
    with Index.open(index) as ix:
        live = {int(i) for s in ix.shards() for i in s.ids if i >= 0}
        return {p: v.id for p, v in ix.videos().items() if v.id in live}


def test_embed_then_query_round_trip(runtime_bundle: Path, tmp_path: Path) -> None:
    videos = make_videos(tmp_path / "videos")
    r = embed(videos, tmp_path / "ix", runtime_bundle, "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["embedded"] == 5 and summary["failed"] == {} and summary["skipped"] == 0
    assert all("onnxruntime on CPUExecutionProvider" in w for w in summary["engines"])
    rows = index_rows(tmp_path / "ix")
    assert sorted(rows) == ["../videos/sub/v1.mp4", "../videos/sub/v3.mp4", "../videos/v0.mp4", "../videos/v2.mp4", "../videos/v4.mp4"]
    r = run("query", "a man is cooking", "--index", tmp_path / "ix", "--model", runtime_bundle, "-k", "3", "--json")
    assert r.exit_code == 0, r.output
    hits = [json.loads(line) for line in r.stdout.splitlines()]
    assert [h["rank"] for h in hits] == [1, 2, 3] and hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    assert all(Path(h["path"]).exists() for h in hits) and all(h["duration"] > 0.9 for h in hits)
    r = run("query", "a man is cooking", "--index", tmp_path / "ix", "--model", runtime_bundle, "-k", "50")
    assert r.exit_code == 0 and len(r.stdout.strip().splitlines()) == 1 + 5  # k > index size returns all
    # the index moves with its videos: paths are relative to it
    shutil.move(tmp_path / "videos", tmp_path / "moved" / "videos")
    shutil.move(tmp_path / "ix", tmp_path / "moved" / "ix")
    r = run("query", "a dog", "--index", tmp_path / "moved" / "ix", "--model", runtime_bundle, "--json")
    assert all(Path(json.loads(line)["path"]).exists() for line in r.stdout.splitlines())


def test_incremental_changed_broken_and_prune(runtime_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JEMC_MODEL", raising=False)
    videos = make_videos(tmp_path / "videos", n=3)
    assert embed(videos, tmp_path / "ix", runtime_bundle).exit_code == 0
    before = index_rows(tmp_path / "ix")
    st = (videos / "v2.mp4").stat()
    os.utime(videos / "v2.mp4", ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))  # touched, not changed
    r = embed(videos, tmp_path / "ix", runtime_bundle, "--json")
    assert json.loads(r.stdout)["embedded"] == 0 and json.loads(r.stdout)["skipped"] == 3  # nothing to do
    r = run("embed", videos, "--index", tmp_path / "ix", "--workers", "1", "--json")  # no --model: the index's
    assert r.exit_code == 0 and json.loads(r.stdout)["skipped"] == 3, r.output
    write_video(videos / "v0.mp4", frames=60, size=(64, 48))  # changed content
    (videos / "broken.mp4").write_bytes(b"\x00" * 1000)
    r = embed(videos, tmp_path / "ix", runtime_bundle, "--json")
    assert r.exit_code == 3, r.output  # some failed: documented non-zero code
    s = json.loads(r.stdout)
    assert s["embedded"] == 1 and s["skipped"] == 2 and list(s["failed"]) == ["../videos/broken.mp4"]
    after = index_rows(tmp_path / "ix")
    assert after == before  # same ids, every video exactly once
    r = run("index", "status", "--index", tmp_path / "ix")
    assert "3 videos, 1 failed" in r.stdout and "broken.mp4: not a video FFmpeg can read" in r.stdout
    (videos / "sub" / "v1.mp4").unlink()
    s = json.loads(embed(videos, tmp_path / "ix", runtime_bundle, "--json", "--prune").stdout)
    assert s["pruned"] == 1 and len(index_rows(tmp_path / "ix")) == 2


EMBED = [sys.executable, "-m", "jemc_infer", "embed"]


def _embed_child(videos: Path, index: Path, model: Path) -> list[str | Path]:
    return [*EMBED, videos, "--index", index, "--model", model, "--workers", "1", "--flush-every", "2", "--quiet"]


def _check_each_video_once(index: Path, model: Path, n: int) -> None:
    rows = index_rows(index)
    assert len(rows) == n and len(set(rows.values())) == n  # every video exactly once
    with Index.open(index) as ix:
        assert ix.counts()["ok"] == n
        on_disk = sorted(p.name for p in (index / "shards").iterdir())
        assert on_disk == sorted(Path(f).name for (f,) in ix.db.execute("SELECT file FROM shards"))  # no orphans
    r = run("query", "someone is running", "--index", index, "--model", model, "-k", str(n), "--json")
    assert r.exit_code == 0 and len(r.stdout.splitlines()) == n


# The dangerous moments: after the 2nd committed shard; a shard written but not renamed; renamed
# but not committed; inside the manifest transaction of the 3rd video (its shard must not appear).
@pytest.mark.parametrize("point", ["committed:2", "shard-written:2", "shard-renamed:1", "job-commit:3"])
def test_kill_at_chosen_points_then_rerun(runtime_bundle: Path, tmp_path: Path, point: str) -> None:
    videos = make_videos(tmp_path / "videos", n=6)
    child = subprocess.run(_embed_child(videos, tmp_path / "ix", runtime_bundle), env={**os.environ, "JEMC_CRASH_AT": point},
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    r = embed(videos, tmp_path / "ix", runtime_bundle, "--json")
    assert r.exit_code == 0, r.output
    if point == "shard-renamed:1":  # the renamed shards (pooled and windows) the manifest never committed
        assert "removed 2 file(s) left by an interrupted run" in json.loads(r.stdout)["messages"]  # the shard and its windows
    _check_each_video_once(tmp_path / "ix", runtime_bundle, 6)


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(6))
def test_kill_at_random_times_then_rerun(runtime_bundle: Path, tmp_path: Path, trial: int) -> None:
    videos = make_videos(tmp_path / "videos", n=6)
    rng = random.Random(trial)
    for _ in range(2):
        child = subprocess.Popen(_embed_child(videos, tmp_path / "ix", runtime_bundle), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 8.0))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert embed(videos, tmp_path / "ix", runtime_bundle).exit_code == 0
    _check_each_video_once(tmp_path / "ix", runtime_bundle, 6)


def test_second_concurrent_embed_is_refused(runtime_bundle: Path, tmp_path: Path) -> None:
    videos = make_videos(tmp_path / "videos", n=6)
    child = subprocess.Popen(_embed_child(videos, tmp_path / "ix", runtime_bundle), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "ix" / "lock").exists() or not (tmp_path / "ix" / "lock").read_text().strip():
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.05)
        r = embed(videos, tmp_path / "ix", runtime_bundle)
        assert r.exit_code == 1 and f"being written by pid {child.pid}" in r.stderr
    finally:
        child.kill()
        child.wait()


def test_ctrl_c_keeps_the_finished_videos(runtime_bundle: Path, tmp_path: Path) -> None:
    from jemc_infer.embed import embed as run_embed

    videos = make_videos(tmp_path / "videos", n=4)
    seen = []

    def interrupt_after_two(event: object) -> None:
        if isinstance(event, VideoDone):
            seen.append(event.result.path)
            if len(seen) == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_embed([videos], tmp_path / "ix", runtime_bundle, options=Options(workers=1), flush_every=100, on_event=interrupt_after_two)
    assert sorted(Path(tmp_path / "ix", p).resolve() for p in index_rows(tmp_path / "ix")) == sorted(Path(p) for p in seen)
    s = json.loads(embed(videos, tmp_path / "ix", runtime_bundle, "--json").stdout)
    assert s["embedded"] == 2 and s["skipped"] == 2 and len(index_rows(tmp_path / "ix")) == 4


def test_model_mismatch_is_refused(runtime_bundle: Path, tmp_path: Path) -> None:
    videos = make_videos(tmp_path / "videos", n=1)
    assert embed(videos, tmp_path / "ix", runtime_bundle).exit_code == 0
    other = tmp_path / "other"
    shutil.copytree(runtime_bundle, other)
    from jemc_infer.bundle import read_bundle, write_bundle

    b = read_bundle(other)
    tensors = b.load_weights()
    tensors = {k: v + 0.01 for k, v in tensors.items()}
    write_bundle(other, b.config, b.vocab, tensors)
    shutil.copytree(runtime_bundle / "onnx", other / "onnx")
    shutil.copy(runtime_bundle / "manifest.json", other / "manifest.json")
    r = embed(videos, tmp_path / "ix", other)
    assert r.exit_code == 1 and "holds embeddings made with other model" in r.stderr and "--index NEW_DIR" in r.stderr
    r = run("query", "a cat", "--index", tmp_path / "ix", "--model", other)
    assert r.exit_code == 1 and "pass the --model the index was built with" in r.stderr


def test_query_refusals_and_warnings(runtime_bundle: Path, tmp_path: Path) -> None:
    videos = make_videos(tmp_path / "videos", n=2)
    assert embed(videos, tmp_path / "ix", runtime_bundle).exit_code == 0
    r = run("query", "   ", "--index", tmp_path / "ix", "--model", runtime_bundle)
    assert r.exit_code == 1 and "empty text" in r.stderr
    r = run("query", "zyxwv qwrtp", "--index", tmp_path / "ix", "--model", runtime_bundle)
    assert r.exit_code == 0 and "no word of 'zyxwv qwrtp' is in the model's vocabulary" in r.stderr
    r = run("query", "a cat", "--index", tmp_path / "nothing", "--model", runtime_bundle)
    assert r.exit_code == 1 and "no index here" in r.stderr
    r = run("query", "a cat", "--index", tmp_path / "ix", "--model", runtime_bundle, "--space-weights", "audio=1")
    assert r.exit_code == 1 and "unknown space 'audio'" in r.stderr
    q = tmp_path / "q.txt"
    q.write_text("a cat\n\na red car\n")
    r = run("--debug", "query", "--queries", q, "--index", tmp_path / "ix", "--model", runtime_bundle, "--json",
            "--space-weights", "object=1,activity=0")
    assert r.exit_code == 0 and {json.loads(ln)["query"] for ln in r.stdout.splitlines()} == {"a cat", "a red car"}


def test_query_without_torch(runtime_bundle: Path, tmp_path: Path) -> None:
    videos = make_videos(tmp_path / "videos", n=2)
    assert embed(videos, tmp_path / "ix", runtime_bundle).exit_code == 0
    block = Path(__file__).parents[1] / "support" / "block_imports.py"
    out = subprocess.run([sys.executable, block, "torch,torchvision", "-m", "jemc_infer", "query", "a man cooking", "--index",
                          tmp_path / "ix", "--model", runtime_bundle, "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(out.stdout.splitlines()) == 2  # answered, with torch impossible to import
    assert np.isfinite([json.loads(ln)["score"] for ln in out.stdout.splitlines()]).all()


@pytest.mark.gpu
def test_embed_and_query_on_the_gpu_equal_the_cpu(runtime_bundle: Path, tmp_path: Path) -> None:
    """The whole GPU path (scripts/gpu_check.sh): ``embed --device cuda`` (onnxruntime's CUDA
    provider, or the torch CUDA engine where it is absent) writes the rows the CPU writes, to
    rounding, and ``query --device cuda`` (the fused top-k kernel) answers what the CPU answers."""
    videos = make_videos(tmp_path / "videos", n=4)
    assert embed(videos, tmp_path / "cpu", runtime_bundle, "--device", "cpu").exit_code == 0
    r = embed(videos, tmp_path / "gpu", runtime_bundle, "--device", "cuda", "--json")
    assert r.exit_code == 0, r.output
    assert all("CPU" not in w for w in json.loads(r.stdout)["engines"]), r.stdout

    def rows(index: Path) -> dict[str, np.ndarray]:
        with Index.open(index) as ix:
            by_id = {int(i): np.asarray(s.rows[j], np.float32) for s in ix.shards() for j, i in enumerate(s.ids) if i >= 0}
            return {p: by_id[v.id] for p, v in ix.videos().items() if v.id in by_id}

    cpu, gpu = rows(tmp_path / "cpu"), rows(tmp_path / "gpu")
    assert sorted(cpu) == sorted(gpu) and len(cpu) == 4
    for path in cpu:
        np.testing.assert_allclose(gpu[path], cpu[path], atol=2e-2)
    answers = []
    for index, device in ((tmp_path / "cpu", "cpu"), (tmp_path / "cpu", "cuda")):
        r = run("query", "a man is cooking", "--index", index, "--model", runtime_bundle, "-k", "4", "--device", device, "--json")
        assert r.exit_code == 0, r.output
        answers.append([json.loads(line) for line in r.stdout.splitlines()])
    assert [h["path"] for h in answers[0]] == [h["path"] for h in answers[1]]
    np.testing.assert_allclose([h["score"] for h in answers[0]], [h["score"] for h in answers[1]], atol=1e-4)
