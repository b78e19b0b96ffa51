"""``jemc-infer export`` and ``jemc-infer doctor`` from the command line."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import warnings
from collections.abc import Iterator
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


@contextlib.contextmanager
def warnings_printed() -> Iterator[None]:
    """Warnings printed to stderr as a terminal shows them (pytest otherwise records them itself)."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield


def test_export_onnx_prints_one_line_per_graph(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "model"
    shutil.copytree(tiny_bundle, bundle)
    args = ["export", str(bundle), "--no-backbones", "--max-batch", "9", "--max-seq", "12"]
    with warnings_printed():
        r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [f"{bundle}: exported text, video (manifest: {bundle / 'manifest.json'})"]
    lines = r.stderr.splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["text", "video"] and all("max |diff|" in ln for ln in lines), r.stderr
    assert "Warning" not in r.output and "axis name" not in r.output
    m = json.loads((bundle / "manifest.json").read_text())
    assert set(m["graphs"]) == {"text", "video"} and all(g["parity"]["passed"] for g in m["graphs"].values())
    with warnings_printed():  # --debug: the exporter's own output too
        r = runner.invoke(app, ["--debug", *args, "--max-batch", "5"])
    assert r.exit_code == 0, r.output
    assert "Warning" in r.stderr and len(r.stderr.splitlines()) > 2


def test_a_refused_graph_shows_what_the_exporter_said(tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jemc_infer.export import onnx as onnx_export

    bundle = tmp_path / "model"
    shutil.copytree(tiny_bundle, bundle)
    real = onnx_export.check_parity

    def nothing_passes_for_video(module, path, spec, cases, tolerance, relative=False):  # noqa: ANN001, ANN202
        return real(module, path, spec, cases, 0.0 if spec.name == "video" else tolerance, relative)

    # The video graph is refused (text passes): a text export left last in this process makes the next text
    # export specialise its seq axis (a torch exporter quirk, seen at the base commit too), which the
    # session's later bundle fixtures would trip over.
    monkeypatch.setattr(onnx_export, "check_parity", nothing_passes_for_video)
    with warnings_printed():
        r = runner.invoke(app, ["export", str(bundle), "--no-backbones", "--max-batch", "9", "--max-seq", "12"])
    assert r.exit_code == 1, r.output
    lines = r.stderr.splitlines()
    assert lines[0].startswith("text: ") and lines[1] == "torch's exporter said:" and "Warning" in r.stderr
    assert lines[-1].startswith("error: video graph | max |torch - onnxruntime|") and not (bundle / "manifest.json").exists()


def test_export_refusals(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "model"
    shutil.copytree(tiny_bundle, bundle)
    _one_line_error(runner.invoke(app, ["export", str(bundle), "--fp16", "--no-backbones"]), "--eval-data")
    _one_line_error(runner.invoke(app, ["export", str(bundle), "--int8"]), "--to tensorrt")
    _one_line_error(runner.invoke(app, ["export", str(bundle), "--to", "openvino"]), "expected onnx, tensorrt or triton")
    _one_line_error(runner.invoke(app, ["export", str(bundle), "--to", "tensorrt", "--int8"]), "--int8", "--calibration DATA")
    _one_line_error(runner.invoke(app, ["export", str(bundle), "--to", "tensorrt"]), "no exported ONNX graph", "jemc-infer export")
    _one_line_error(runner.invoke(app, ["export", str(tmp_path / "nope")]), "not a directory")
    assert not (bundle / "manifest.json").exists()


def test_doctor() -> None:
    r = runner.invoke(app, ["doctor"])
    assert r.exit_code == 0
    for name in ("python", "onnxruntime", "torch", "tensorrt", "pycuda", "providers", "cuda"):
        assert name in r.stdout
    assert "int8 scan    exact here (NumKong's int8 product)" in r.stdout
    report = json.loads(runner.invoke(app, ["doctor", "--json"]).stdout)
    assert report["packages"]["numkong"]["ok"] is True
    assert report["packages"]["tensorrt"]["ok"] is False and report["packages"]["tensorrt"]["hint"]
