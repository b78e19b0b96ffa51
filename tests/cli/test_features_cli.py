"""``jemc-infer features`` end to end with the real (random-init) backbones, then ``train`` on its output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support.corpus import write_video
from typer.testing import CliRunner

from jemc_infer.cli import app

pytest.importorskip("torch")
runner = CliRunner()


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("collection")
    vids = root / "videos"
    vids.mkdir()
    rows = [("dog", "train", "a dog runs"), ("cat", "train", "a cat sleeps"), ("car", "val", "a red car"), ("man", "test", "a man talks")]
    for i, (v, _, _) in enumerate(rows):
        write_video(vids / f"{v}.mp4", frames=20 + 5 * i, size=(64, 48), audio="aac" if i % 2 == 0 else None)
    caps = root / "captions.jsonl"
    caps.write_text("".join(json.dumps({"video": v, "text": t, "split": s}) + "\n" for v, s, t in rows))
    return vids, caps


def test_features_then_train(collection: tuple[Path, Path], tmp_path: Path) -> None:
    vids, caps = collection
    r = runner.invoke(app, ["features", str(vids), "--captions", str(caps), "--out", str(tmp_path / "data"),
                            "--random-init", "--device", "cpu", "--workers", "1", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "4 extracted now" in r.stdout and "resnet 2048-d (4 present), i3d 1024-d (4 present), audio 1024-d (2 present)" in r.stdout
    assert "random-init" in r.stdout
    source = json.loads((tmp_path / "data" / "dataset.json").read_text())["source"]
    assert source["random_init"] is True and source["backbones"]["activity"]["file"] == "random-init"
    r = runner.invoke(app, ["train", "--data", str(tmp_path / "data"), "--preset", "jemc", "--out", str(tmp_path / "m"),
                            "--epochs", "1", "--batch-size", "2", "--embed-dim", "8", "--word-dim", "4", "--min-count", "1", "--quiet"])
    assert r.exit_code == 0, r.output


def test_missing_weights_is_one_line(collection: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vids, caps = collection
    monkeypatch.delenv("JEMC_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    r = runner.invoke(app, ["features", str(vids), "--captions", str(caps), "--out", str(tmp_path / "data"),
                            "--weights", str(tmp_path), "--device", "cpu", "--quiet"])
    assert r.exit_code == 1, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "resnet152" in lines[0] and str(tmp_path) in lines[0] and "https://" in lines[0]
    assert not (tmp_path / "data").exists()


def test_bad_captions_argument(collection: tuple[Path, Path], tmp_path: Path) -> None:
    vids, _ = collection
    (tmp_path / "c.csv").write_text("a,b\n")
    r = runner.invoke(app, ["features", str(vids), "--captions", str(tmp_path / "c.csv"), "--out", str(tmp_path / "d")])
    assert r.exit_code == 1 and "expected MSR-VTT videodatainfo .json" in r.stderr


def test_kill_9_mid_run_then_the_same_command_resumes(collection: tuple[Path, Path], tmp_path: Path) -> None:
    vids, caps = collection
    args = ["features", str(vids), "--captions", str(caps), "--out", str(tmp_path / "data"), "--random-init", "--device", "cpu",
            "--workers", "1", "--quiet"]
    child = subprocess.run([sys.executable, "-m", "jemc_infer", *args], env={**os.environ, "JEMC_CRASH_AT": "committed:2"},
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    assert not (tmp_path / "data").exists()
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "2 extracted now, 2 from earlier runs" in r.stdout and "resuming: 2 videos done in earlier runs, 2 to go" in r.stderr
