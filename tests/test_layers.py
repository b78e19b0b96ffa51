"""The one-way dependencies of DESIGN.md, checked by import-linter on the package as it installs.

The contracts live in pyproject.toml's ``[tool.importlinter]``. They are checked on the wheel's
layout, not the editable checkout: train/, export/ and engines/ become ``jemc_infer.train`` etc.
only through ``[tool.setuptools.package-dir]``, so grimp walking jemc_infer/ would not see them.
Imports inside functions count: a lazy import is still a dependency.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
# jemc_infer/ holds the core and these: the torch modules, the CLI and its `python -m` entry
NOT_CORE = {"nn", "cli", "__main__"}



def _contracts() -> dict[str, dict]:
    return {c["id"]: c for c in tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["importlinter"]["contracts"]}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project installed with ``pip install --no-deps --target`` from a copy of the files a clean
    clone has (so neither a stale build/ nor an untracked file can change the answer)."""
    root = tmp_path_factory.mktemp("layers")
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    for f in filter(None, listed.split("\0")):
        if (REPO / f).is_file():
            (root / "src" / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, root / "src" / f)
    out = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--target", root / "site", root / "src"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return root / "site"


def _lint(site: Path, config: Path = PYPROJECT) -> subprocess.CompletedProcess:
    # not a skip: the layers are a requirement, and the [dev] extra that runs the tests brings import-linter
    assert LINT_IMPORTS.exists(), f"{LINT_IMPORTS} | missing | expected import-linter: pip install -e '.[dev]'"
    env = {**os.environ, "PYTHONPATH": str(site)}  # ahead of the editable install
    return subprocess.run([LINT_IMPORTS, "--config", config, "--no-cache"], cwd=site, env=env, capture_output=True, text=True)


def test_the_installed_package_keeps_every_contract(installed: Path) -> None:
    out = _lint(installed)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert f"{len(_contracts())} kept, 0 broken" in out.stdout
    assert (installed / "jemc_infer" / "train" / "loop.py").is_file()  # the mapped packages were there to check


def test_the_core_contract_covers_every_core_module() -> None:
    """A new module of jemc_infer/ is core unless it is nn or cli: it must be in the contract."""
    folder = REPO / "jemc_infer"
    core = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"} | {p.parent.name for p in folder.glob("*/__init__.py")}
    listed = {m.removeprefix("jemc_infer.") for m in _contracts()["core"]["source_modules"]}
    assert listed == core - NOT_CORE


@pytest.mark.parametrize(("module", "line", "contract"), [
    ("text.py", "import torch", "core"),
    ("index/search.py", "from jemc_infer.train import loop", "core"),
    ("video/decode.py", "from jemc_infer.cli import app", "core"),
    ("query.py", "from jemc_infer.engines import torch as torch_engine", "runtime"),  # past the backend door
    ("embed.py", "import matplotlib.pyplot", "runtime"),
    ("engines/base.py", "from jemc_infer.export import onnx", "engines"),
    ("nn/io.py", "from jemc_infer.train import data", "nn"),
    ("train/metrics.py", "from jemc_infer.export import onnx", "train"),
])
def test_a_forbidden_import_breaks_its_contract(installed: Path, tmp_path: Path, module: str, line: str, contract: str) -> None:
    """The same check, on a copy with one forbidden (lazy) import added, fails and names the contract."""
    site = tmp_path / "site"
    shutil.copytree(installed / "jemc_infer", site / "jemc_infer")
    target = site / "jemc_infer" / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n\ndef _added():\n    {line}\n", encoding="utf-8")
    out = _lint(site)
    assert out.returncode == 1, out.stdout[-3000:]
    report = " ".join(out.stdout.split())  # contract names wrap over lines
    assert f"{_contracts()[contract]['name']} BROKEN" in report, out.stdout[-3000:]
    assert f"jemc_infer.{module.removesuffix('.py').replace('/', '.')} ->" in report
