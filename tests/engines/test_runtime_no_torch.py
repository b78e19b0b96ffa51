"""The runtime path (load a bundle, encode text, encode video features) with torch impossible to import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")

SUPPORT = Path(__file__).resolve().parents[1] / "support"
BLOCKED = "torch,torchvision,tensorrt,pycuda"


def _run_blocked(*args: str | Path) -> subprocess.CompletedProcess:
    """Run ``support/block_imports.py BLOCKED ARGS`` (a module or script with torch impossible to import)."""
    return subprocess.run([sys.executable, SUPPORT / "block_imports.py", BLOCKED, *map(str, args)], capture_output=True, text=True)


def test_runtime_runs_without_torch(exported_bundle: Path) -> None:
    out = _run_blocked(SUPPORT / "runtime_no_torch.py", exported_bundle)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["torch_loaded"] is False
    assert result["text"] == {"text_object": [2, 32], "text_activity": [2, 32], "text_shared": [2, 32]}
    assert result["video"]["video_shared"] == [3, 32]
    assert all("onnxruntime on CPUExecutionProvider" in w for w in result["why"])


def test_cli_help_and_doctor_without_torch() -> None:
    out = _run_blocked("-m", "jemc_infer", "doctor", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["packages"]["torch"]["ok"] is False and "ModuleNotFoundError" in report["packages"]["torch"]["reason"]
    assert report["packages"]["onnxruntime"]["ok"] and "CPUExecutionProvider" in report["onnxruntime_providers"]
