"""The command line: the train → evaluate → table1 path, and one-line errors with exit code 1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from jemc_infer.cli import app

pytest.importorskip("torch")

runner = CliRunner()
TINY = ["--embed-dim", "24", "--word-dim", "12"]


def _run(*args: str):  # noqa: ANN202
    return runner.invoke(app, [str(a) for a in args])


def _one_line_error(result, *fragments: str) -> None:  # noqa: ANN001
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def test_help_teaches_the_commands() -> None:
    result = _run("--help")
    assert result.exit_code == 0
    for cmd in ("data", "train", "evaluate", "table1"):
        assert cmd in result.stdout
    assert "--preset" in _run("train", "--help").stdout


def test_train_evaluate_table1(tiny_data: Path, tmp_path: Path) -> None:
    r = _run("train", "--data", tiny_data, "--preset", "fusion-resnet-i3d", "--out", tmp_path / "m", "--epochs", 2,
             "--batch-size", 32, "--lr", 2e-3, "--min-count", 1, *TINY, "--quiet")
    assert r.exit_code == 0, r.output
    assert "best validation rsum" in r.stdout and "epoch 2/2" not in r.stderr  # --quiet: the log keeps them
    assert len((tmp_path / "m.run" / "log.jsonl").read_text().splitlines()) == 2
    r = _run("evaluate", "--model", tmp_path / "m", "--data", tiny_data, "--split", "test", "--json")
    assert r.exit_code == 0, r.output
    metrics = json.loads(r.stdout)
    assert set(metrics) == {"t2v", "v2t", "rsum"} and metrics["t2v"]["n"] == 120 and metrics["v2t"]["n"] == 40
    r = _run("evaluate", "--model", tmp_path / "m", "--data", tiny_data)
    assert r.exit_code == 0 and "text→video" in r.stdout and "MedR" in r.stdout
    r = _run("table1", "--data", tiny_data, "--out", tmp_path / "t1", "--epochs", 1, "--presets", "audio,jemc",
             "--batch-size", 32, *TINY, "--quiet")
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("| # | Method | T→V R1") and len(lines) == 4
    assert "Audio" in lines[2] and "JEMC" in lines[3]
    saved = json.loads((tmp_path / "t1" / "table1.json").read_text())
    assert [row["preset"] for row in saved["rows"]] == ["audio", "jemc"]
    # one loss (and margin) for every row instead of each preset's own: named in the rows and the saved config
    r = _run("table1", "--data", tiny_data, "--out", tmp_path / "t1-sum", "--epochs", 1, "--presets", "audio",
             "--batch-size", 32, *TINY, "--quiet", "--loss", "sum", "--margin", 0.4)
    assert r.exit_code == 0, r.output
    assert "Audio, sum loss" in r.stdout
    config = json.loads((tmp_path / "t1-sum" / "table1.json").read_text())["config"]
    assert config["loss"] == "sum" and config["margin"] == 0.4
    _one_line_error(_run("table1", "--data", tiny_data, "--loss", "nope"), "--loss | 'nope' | expected one of sum, hardest, weighted")


def test_a_run_with_other_settings_names_restart(tiny_data: Path, tmp_path: Path) -> None:
    args = ["train", "--data", tiny_data, "--preset", "i3d", "--out", tmp_path / "m", "--epochs", 1, "--batch-size", 64,
            "--min-count", 1, *TINY, "--quiet"]
    assert _run(*args).exit_code == 0
    _one_line_error(_run(*args, "--lr", "1e-3"), "different settings (train)", "pass --restart to discard it or choose another --out")
    assert _run(*args, "--lr", "1e-3", "--restart").exit_code == 0


def test_query_names_its_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The library's errors name query()'s arguments; the command names its own options."""
    import jemc_infer.query as library

    def refuse(error: Exception):  # noqa: ANN202
        def run(*args: object, **kwargs: object) -> None:
            raise error
        return run

    monkeypatch.setattr(library, "query", refuse(library.SettingError("space_weights", "unknown space 'audio'", "names from ['object']")))
    _one_line_error(_run("query", "a cat", "--index", tmp_path), "error: --space-weights | unknown space 'audio' | expected names")
    monkeypatch.setattr(library, "query", refuse(library.SettingError("model", "none found (nothing given)", "a model bundle directory")))
    _one_line_error(_run("query", "a cat", "--index", tmp_path), "error: --model | none found")
    monkeypatch.setattr(library, "query", refuse(library.ModelMismatchError(tmp_path / "ix", "aaaa", "bbbb", tmp_path / "m")))
    _one_line_error(_run("query", "a cat", "--index", tmp_path), "built with model aaaa", "got bbbb",
                    "pass the --model the index was built with")


def test_data_synth_and_info(tmp_path: Path) -> None:
    r = _run("data", "synth", "--out", tmp_path / "d", "--train", 20, "--val", 5, "--test", 5, "--resnet-dim", 8,
             "--i3d-dim", 4, "--audio-dim", 4)
    assert r.exit_code == 0, r.output
    assert "30 videos (train 20, val 5, test 5)" in r.stdout
    assert _run("data", "info", tmp_path / "d").stdout == r.stdout


def test_data_msrvtt_import(tmp_path: Path) -> None:
    ann = {"videos": [{"video_id": f"video{i}", "split": s} for i, s in enumerate(["train", "validate", "test"])],
           "sentences": [{"video_id": f"video{i}", "caption": f"a thing {i}"} for i in range(3)]}
    (tmp_path / "a.json").write_text(json.dumps(ann))
    (tmp_path / "r").mkdir()
    for i in range(3):
        np.save(tmp_path / "r" / f"video{i}.npy", np.ones((4, 6)) * i)
    r = _run("data", "msrvtt", "--annotations", tmp_path / "a.json", "--resnet", tmp_path / "r", "--out", tmp_path / "d")
    assert r.exit_code == 0, r.output
    assert "3 videos (train 1, val 1, test 1), 3 captions; features: resnet 6-d (3/3 present)" in r.stdout
    r = _run("data", "msrvtt", "--annotations", tmp_path / "a.json", "--out", tmp_path / "d2")
    _one_line_error(r, "no feature folders")


def test_missing_data_is_one_line_exit_1(tmp_path: Path) -> None:
    r = _run("train", "--data", tmp_path / "nowhere", "--preset", "jemc", "--out", tmp_path / "m")
    _one_line_error(r, str(tmp_path / "nowhere"), "expected a feature dataset")
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.run").exists()


def test_unknown_preset_lists_choices(tiny_data: Path, tmp_path: Path) -> None:
    r = _run("train", "--data", tiny_data, "--preset", "best", "--out", tmp_path / "m")
    _one_line_error(r, "'best'", "jemc", "weighted-resnet")


def test_evaluate_refusals(tiny_data: Path, tmp_path: Path) -> None:
    _one_line_error(_run("evaluate", "--model", tmp_path / "none", "--data", tiny_data), "not a directory")
    _one_line_error(_run("evaluate", "--model", tmp_path, "--data", tiny_data, "--ties", "coin"), "--ties")


def test_feature_width_mismatch_between_bundle_and_data(tiny_data: Path, tmp_path: Path) -> None:
    r = _run("train", "--data", tiny_data, "--preset", "weighted-resnet", "--out", tmp_path / "m", "--epochs", 1,
             "--batch-size", 64, "--min-count", 1, *TINY, "--quiet")
    assert r.exit_code == 0, r.output
    _run("data", "synth", "--out", tmp_path / "wide", "--train", 10, "--val", 5, "--test", 5, "--resnet-dim", 64)
    r = _run("evaluate", "--model", tmp_path / "m", "--data", tmp_path / "wide")
    _one_line_error(r, "dataset.json", "feature 'resnet' has 64 dims", "expected 48")


def test_nan_features_are_one_line_exit_1(tiny_data: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(tiny_data, tmp_path / "d")
    arr = np.load(tmp_path / "d" / "i3d.npy")
    arr[7, 0] = np.inf
    np.save(tmp_path / "d" / "i3d.npy", arr)
    r = _run("train", "--data", tmp_path / "d", "--preset", "i3d", "--out", tmp_path / "m")
    _one_line_error(r, "i3d.npy", "row 7", "expected finite features")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    r = _run("--debug", "data", "info", tmp_path)
    assert r.exit_code == 1 and r.exception is not None


def test_help_does_not_import_torch() -> None:
    blocked = [sys.executable, Path(__file__).resolve().parents[1] / "support" / "block_imports.py", "torch,onnxruntime", "-m", "jemc_infer"]
    out = subprocess.run([*blocked, "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "train" in out.stdout
    out = subprocess.run([*blocked, "train", "--data", "x", "--preset", "jemc", "--out", "y"], capture_output=True, text=True)
    assert out.returncode == 1 and out.stderr.strip().splitlines() == [
        "error: torch | not installed | needed here: pip install 'jemc-infer[train]'"], out.stderr


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the refusal where there is no GPU")
def test_cuda_without_a_gpu_is_one_line_exit_1(tiny_data: Path, tmp_path: Path) -> None:
    r = _run("train", "--data", tiny_data, "--preset", "i3d", "--out", tmp_path / "m", "--device", "cuda")
    _one_line_error(r, "device | 'cuda' | not available here")
    r = _run("train", "--data", tiny_data, "--preset", "i3d", "--out", tmp_path / "m", "--device", "tpu")
    _one_line_error(r, "expected auto, cpu, cuda or cuda:N")
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.run").exists()
