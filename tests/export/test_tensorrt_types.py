"""Type-check the TensorRT modules against NVIDIA's API as ``tensorrt-stubs`` (10.13) describes it.

Nothing here can run TensorRT, so the type checker is what holds the code to the real API's names
and signatures. Two things stand between mypy and a plain ``mypy export/tensorrt.py``:

- the layout: ``export/`` and ``engines/`` are installed as ``jemc_infer.export`` / ``jemc_infer.engines``
  through setuptools' package-dir mapping, which mypy cannot follow (the editable install is an
  import hook). The check runs in a temporary tree where ``jemc_infer/`` holds links to the real
  files, so every module has its installed name.
- the stubs: tensorrt-stubs 10.13.0.35.1 installs ``tensorrt/*.pyi`` without a ``py.typed`` marker
  (mypy ignores them in site-packages), and its generated ``tensorrt_bindings/tensorrt.pyi`` has
  syntax errors (parameters named ``in``; a parameter without default after defaults) and imports
  a runtime-only module (``tensorrt_libs``). The check uses a patched copy on ``MYPYPATH``.

pycuda has no stubs: only ``pycuda.*`` gets ``ignore_missing_imports``. Other project modules are
followed silently (their own errors are not this check's).

Run by hand: ``.venv/bin/python tests/export/test_tensorrt_types.py`` prints mypy's report.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECKED = ("jemc_infer/export/tensorrt.py", "jemc_infer/engines/tensorrt.py")
MAPPED = {"export": REPO / "export", "engines": REPO / "engines", "train": REPO / "train"}  # pyproject's package-dir
MYPY_INI = """\
[mypy]
python_version = 3.11
follow_imports = silent
disallow_untyped_defs = True
disallow_incomplete_defs = True
check_untyped_defs = True
no_implicit_optional = True
warn_unused_ignores = True
warn_redundant_casts = True

[mypy-pycuda,pycuda.*]
ignore_missing_imports = True

# the generated stubs themselves are not checked (only used)
[mypy-tensorrt,tensorrt.*,tensorrt_bindings,tensorrt_bindings.*]
ignore_errors = True
"""


def _stub_files() -> list[Path]:
    """The installed tensorrt-stubs files (``tensorrt/__init__.pyi``, ``tensorrt_bindings/*.pyi``)."""
    try:
        dist = importlib.metadata.distribution("tensorrt-stubs")
    except importlib.metadata.PackageNotFoundError:
        raise AssertionError("tensorrt-stubs is not installed: pip install --no-deps tensorrt-stubs==10.13.0.35.1 "
                             "(--no-deps: it requires the tensorrt wheels, which only NVIDIA's index serves)") from None
    return [Path(dist.locate_file(f)) for f in dist.files or [] if str(f).endswith(".pyi")]


def _patch_stub(text: str) -> str:
    """Make a generated stub usable: rename ``in`` parameters, default parameters that follow defaults,
    drop the import of the runtime-only ``tensorrt_libs``, import the ``typing_extensions`` its
    annotations name (``Buffer``), and drop the module variable ``bool`` (``tensorrt.bool``, a
    DataType) that shadows the builtin in every ``-> bool`` of the stub."""
    text = re.sub(r"^import tensorrt_libs as tensorrt_libs\n", "", text, flags=re.M)
    text = re.sub(r"^bool: .*DataType.*\n", "", text, flags=re.M)
    text = re.sub(r"^import typing\n", "import typing\nimport typing_extensions\n", text, count=1, flags=re.M)
    text = re.sub(r"([(,]\s*)in:", r"\1in_:", text)
    lines = text.split("\n")
    for _ in range(50):
        try:
            ast.parse("\n".join(lines))
            return "\n".join(lines)
        except SyntaxError as err:
            i = (err.lineno or 1) - 1
            if "default argument" not in str(err.msg) and "default" not in str(err.msg):
                raise
            # give every parameter after the first default a default too (stubs: ``= ...``)
            head, sep, rest = lines[i].partition("(")
            params, seen = [], False
            for p in re.split(r",\s*(?![^\[]*\])", rest.rsplit(")", 1)[0]):
                seen = seen or "=" in p
                params.append(p if "=" in p or not seen or p.strip().startswith("*") else f"{p} = ...")
            lines[i] = f"{head}{sep}{', '.join(params)}){rest.rsplit(')', 1)[1]}"
    raise AssertionError("could not repair the tensorrt stubs")


def prepare(root: Path) -> tuple[Path, Path]:
    """The source tree (``jemc_infer`` with the mapped packages) and the patched stub directory under ``root``."""
    src, stubs = root / "src", root / "stubs"
    pkg = src / "jemc_infer"
    pkg.mkdir(parents=True)
    for entry in (REPO / "jemc_infer").iterdir():
        if entry.name not in MAPPED and entry.name != "__pycache__":
            (pkg / entry.name).symlink_to(entry)
    for name, target in MAPPED.items():
        if target.is_dir():
            (pkg / name).symlink_to(target)
    for f in _stub_files():
        dest = stubs / f.parent.name / f.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(_patch_stub(f.read_text(encoding="utf-8")), encoding="utf-8")
    (root / "mypy.ini").write_text(MYPY_INI)
    return src, stubs


def run_mypy(root: Path) -> subprocess.CompletedProcess[str]:
    src, stubs = prepare(root)
    env = {**os.environ, "MYPYPATH": str(stubs)}
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(root / "mypy.ini"), "--cache-dir", str(root / "cache"),
                           "--no-error-summary", *CHECKED], cwd=src, env=env, capture_output=True, text=True, timeout=300)


def test_tensorrt_modules_type_check_against_the_tensorrt_stubs(tmp_path: Path) -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed")
    result = run_mypy(tmp_path)
    assert result.returncode == 0, f"mypy found problems:\n{result.stdout}{result.stderr}"


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        done = run_mypy(Path(tmp))
        print(done.stdout + done.stderr or "mypy: no issues")
        sys.exit(done.returncode)
