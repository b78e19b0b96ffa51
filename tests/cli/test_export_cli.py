"""``jemc-infer export`` and ``jemc-infer doctor`` from the command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jemc_infer.cli import app

pytest.importorskip("torch")
pytest.importorskip("onnx")
runner = CliRunner()


def _one_line_error(result, *fragments: str) -> None:  # noqa: ANN001
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def test_export_onnx(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "model"
    shutil.copytree(tiny_bundle, bundle)
    r = runner.invoke(app, ["export", str(bundle), "--no-backbones", "--max-batch", "9", "--max-seq", "12"])
    assert r.exit_code == 0, r.output
    assert "exported text, video" in r.stdout and "max |diff|" in r.stderr
    m = json.loads((bundle / "manifest.json").read_text())
    assert set(m["graphs"]) == {"text", "video"} and all(g["parity"]["passed"] for g in m["graphs"].values())


def test_export_refusals(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "model"
    shutil.copytree(tiny_bundle, bundle)
    _one_line_error(runner.invoke(app, ["export", str(bundle), "--fp16", "--no-backbones"]), "--eval-data")
    _one_line_error(runner.invoke(app, ["export", str(bundle), "--int8"]), "--to tensorrt")
    _one_line_error(runner.invoke(app, ["export", str(bundle), "--to", "openvino"]), "expected onnx or tensorrt")
    _one_line_error(runner.invoke(app, ["export", str(tmp_path / "nope")]), "not a directory")
    assert not (bundle / "manifest.json").exists()


def test_doctor() -> None:
    r = runner.invoke(app, ["doctor"])
    assert r.exit_code == 0
    for name in ("python", "onnxruntime", "torch", "tensorrt", "pycuda", "providers", "cuda"):
        assert name in r.stdout
    report = json.loads(runner.invoke(app, ["doctor", "--json"]).stdout)
    assert report["packages"]["tensorrt"]["ok"] is False and report["packages"]["tensorrt"]["hint"]
