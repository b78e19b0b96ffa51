"""The runtime path (load a bundle, encode text, encode video features) with torch impossible to import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")

BLOCK_TORCH = """
import builtins, sys
real = builtins.__import__
def guard(name, *a, **k):
    if name.split('.')[0] in ('torch', 'torchvision', 'tensorrt', 'pycuda'):
        raise ModuleNotFoundError('No module named ' + repr(name), name=name)
    return real(name, *a, **k)
builtins.__import__ = guard
"""

RUNTIME = BLOCK_TORCH + """
import json
import numpy as np
from jemc_infer.bundle import read_bundle
from jemc_infer.engines import open_engine
bundle = read_bundle(sys.argv[1])
text, why_text = open_engine(bundle.path, "text")
ids, lengths = bundle.vocab.encode_batch(["a red dog is running", "someone is cooking"])
t = text.run({"ids": ids, "lengths": lengths})
video, why_video = open_engine(bundle.path, "video")
feats = {i.name: (np.ones(3, bool) if i.dtype == "bool" else np.ones((3, i.shape[1]), np.float32)) for i in video.spec.inputs}
v = video.run(feats)
print(json.dumps({"text": {k: list(x.shape) for k, x in t.items()}, "video": {k: list(x.shape) for k, x in v.items()},
                  "why": [why_text, why_video], "torch_loaded": "torch" in sys.modules}))
"""


def test_runtime_runs_without_torch(exported_bundle: Path) -> None:
    out = subprocess.run([sys.executable, "-c", RUNTIME, str(exported_bundle)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["torch_loaded"] is False
    assert result["text"] == {"text_object": [2, 32], "text_activity": [2, 32], "text_shared": [2, 32]}
    assert result["video"]["video_shared"] == [3, 32]
    assert all("onnxruntime on CPUExecutionProvider" in w for w in result["why"])


def test_cli_help_and_doctor_without_torch() -> None:
    code = BLOCK_TORCH + "sys.argv = ['jemc-infer', 'doctor', '--json']\nfrom jemc_infer.cli import app\napp()\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["packages"]["torch"]["ok"] is False and "ModuleNotFoundError" in report["packages"]["torch"]["reason"]
    assert report["packages"]["onnxruntime"]["ok"] and "CPUExecutionProvider" in report["onnxruntime_providers"]
