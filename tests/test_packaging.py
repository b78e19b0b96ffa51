"""The package as users install it.

The wheel and the sdist are built from a copy of exactly the files a clean clone has, and must
hold every file of the package trees (``jemc_infer/``, ``train/``, ``export/``, ``engines/``):
the next subpackage or data file cannot be forgotten. Then the wheel is installed with only
``[cpu]`` into a fresh virtual environment — no torch, no source tree on the path, as on an edge
box — where ``embed`` and ``query`` must give the development install's answers, and every
missing optional part must be one line naming what to install.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from jemc_infer import __version__
from jemc_infer.index.store import Index
from jemc_infer.video.samples import write_clip

REPO = Path(__file__).resolve().parents[1]
# source folder → where its files land in site-packages (pyproject.toml's package-dir mapping)
PACKAGE_TREES = {"jemc_infer": "jemc_infer", "train": "jemc_infer/train", "export": "jemc_infer/export", "engines": "jemc_infer/engines"}


def _sh(*cmd: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True)


def _checked(*cmd: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    out = _sh(*cmd, cwd=cwd, env=env)
    assert out.returncode == 0, f"{cmd} exited {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def clone_files() -> list[str]:
    """The files a clean clone of this checkout would have: tracked, plus new ones git does not ignore."""
    listed = _checked("git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", cwd=REPO)
    return sorted(f for f in set(listed.split("\0")) if f and (REPO / f).is_file())


def installed_paths(files: list[str]) -> set[str]:
    """Where each file of the package trees must land in site-packages."""
    out = set()
    for f in files:
        top, _, rest = f.partition("/")
        if top in PACKAGE_TREES and rest:
            out.add(f"{PACKAGE_TREES[top]}/{rest}")
    return out


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The wheel (``pip wheel --no-deps``, as the README says) and the sdist (``python -m build
    --sdist``), built from a copy of the clean-clone files, so that nothing stale can slip in."""
    root = tmp_path_factory.mktemp("dist")
    src = root / "src"
    for f in clone_files():
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, src / f)
    _checked(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", root / "wheel", src)
    _checked(sys.executable, "-m", "build", "--sdist", "--outdir", root / "sdist", src)
    (wheel,) = (root / "wheel").glob("jemc_infer-*.whl")
    (sdist,) = (root / "sdist").glob("jemc_infer-*.tar.gz")
    return {"wheel": wheel, "sdist": sdist, "root": root}


def test_wheel_holds_every_file_of_the_package_trees(dist: dict[str, Path]) -> None:
    names = set(zipfile.ZipFile(dist["wheel"]).namelist())
    expected = installed_paths(clone_files())
    assert {"jemc_infer/index/store.py", "jemc_infer/video/decode.py", "jemc_infer/py.typed"} <= expected
    missing = sorted(expected - names)
    assert not missing, f"in the tree but not in the wheel (add them to pyproject.toml's packages / package-data): {missing}"
    # nothing called train/export/engines lands at the top of site-packages
    assert {n.split("/")[0] for n in names} == {"jemc_infer", f"jemc_infer-{__version__}.dist-info"}
    info = f"jemc_infer-{__version__}.dist-info"
    assert f"{info}/licenses/LICENSE" in names
    with zipfile.ZipFile(dist["wheel"]) as z:
        assert z.read(f"{info}/licenses/LICENSE") == (REPO / "LICENSE").read_bytes()
        metadata = z.read(f"{info}/METADATA").decode()
        entry_points = z.read(f"{info}/entry_points.txt").decode()
    assert "License-Expression: Apache-2.0" in metadata and f"Version: {__version__}" in metadata
    assert "jemc-infer = jemc_infer.cli:run" in entry_points


def test_sdist_holds_every_file_and_builds_the_same_wheel(dist: dict[str, Path]) -> None:
    prefix = f"jemc_infer-{__version__}/"
    with tarfile.open(dist["sdist"]) as tar:
        names = {n.removeprefix(prefix) for n in tar.getnames()}
    files = clone_files()
    wanted = {f for f in files if f.partition("/")[0] in PACKAGE_TREES} | {"LICENSE", "README.md", "pyproject.toml"}
    missing = sorted(wanted - names)
    assert not missing, f"in the tree but not in the sdist: {missing}"
    # what a user building from the sdist gets is the same wheel
    _checked(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist["root"] / "from-sdist", dist["sdist"])
    (again,) = (dist["root"] / "from-sdist").glob("*.whl")
    assert sorted(zipfile.ZipFile(again).namelist()) == sorted(zipfile.ZipFile(dist["wheel"]).namelist())


@pytest.fixture(scope="module")
def edge_venv(dist: dict[str, Path]) -> Path:
    """A fresh virtual environment with the wheel and only ``[cpu]`` (pinned like the development
    one by constraints.txt): the torch-free runtime an edge box installs."""
    venv = dist["root"] / "venv"
    _checked(sys.executable, "-m", "venv", venv)
    _checked(venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check",
             "-c", REPO / "constraints.txt", f"{dist['wheel']}[cpu]")
    return venv


def _edge_env(venv: Path) -> dict[str, str]:
    """The environment of a user's shell: no PYTHONPATH that could reach the source tree."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def _main_job(cli: list[str | Path], videos: Path, index: Path, model: Path, cwd: Path, env: dict[str, str]) -> tuple[dict, list[dict]]:
    summary = json.loads(_checked(*cli, "embed", videos, "--index", index, "--model", model, "--workers", "1", "--quiet", "--json",
                                  cwd=cwd, env=env))
    hits = _checked(*cli, "query", "a man is cooking in a kitchen", "--index", index, "--model", model, "-k", "3", "--json",
                    cwd=cwd, env=env)
    return summary, [json.loads(line) for line in hits.splitlines()]


def _rows(index: Path) -> dict[str, np.ndarray]:
    with Index.open(index) as ix:
        where = {int(i): (s, r) for s in ix.shards() for r, i in enumerate(s.ids) if i >= 0}
        return {path: np.array(where[v.id][0].rows[where[v.id][1]]) for path, v in ix.videos().items() if v.id in where}


@pytest.fixture(scope="module")
def main_job(edge_venv: Path, runtime_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The same videos embedded and queried twice with the model the development install exported:
    by the edge install's ``jemc-infer`` and by the development install."""
    root = tmp_path_factory.mktemp("main-job")
    videos = root / "videos"
    videos.mkdir()
    for i in range(3):
        write_clip(videos / f"clip{i}.mp4", 1.2 + 0.4 * i, size=(96, 64), bitrate=200_000, audio=i != 1, seed=i)
    edge = _main_job([edge_venv / "bin" / "jemc-infer"], videos, root / "edge-index", runtime_bundle, root, _edge_env(edge_venv))
    dev = _main_job([sys.executable, "-m", "jemc_infer"], videos, root / "dev-index", runtime_bundle, root, dict(os.environ))
    return {"root": root, "edge": edge, "dev": dev}


def test_installed_package_is_torch_free_and_not_the_source_tree(edge_venv: Path, tmp_path: Path) -> None:
    where = _checked(edge_venv / "bin" / "python", "-c", "import importlib.util as u, jemc_infer; print(jemc_infer.__file__); "
                     "print(u.find_spec('torch'))", cwd=tmp_path, env=_edge_env(edge_venv))
    module_file, torch_spec = where.split()
    assert Path(module_file).is_relative_to(edge_venv), module_file
    assert torch_spec == "None"  # so nothing the edge install ran can have imported torch


def test_installed_wheel_embeds_and_queries_like_the_development_install(main_job: dict) -> None:
    (edge_summary, edge_hits), (dev_summary, dev_hits) = main_job["edge"], main_job["dev"]
    assert edge_summary["embedded"] == dev_summary["embedded"] == 3 and edge_summary["failed"] == {}
    assert all("onnxruntime on CPUExecutionProvider" in line for line in edge_summary["engines"])
    edge_rows, dev_rows = _rows(main_job["root"] / "edge-index"), _rows(main_job["root"] / "dev-index")
    assert sorted(edge_rows) == sorted(dev_rows) == [f"../videos/clip{i}.mp4" for i in range(3)]
    for path, row in edge_rows.items():
        np.testing.assert_allclose(row, dev_rows[path], atol=1e-6, err_msg=path)
    assert len(edge_hits) == 3
    assert [(h["rank"], h["path"]) for h in edge_hits] == [(h["rank"], h["path"]) for h in dev_hits]
    np.testing.assert_allclose([h["score"] for h in edge_hits], [h["score"] for h in dev_hits], atol=1e-6)


def _one_line(out: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert all(n in lines[0] for n in needles), (needles, lines[0])


def test_installed_wheel_says_what_to_install_in_one_line(edge_venv: Path, runtime_bundle: Path, main_job: dict, tmp_path: Path) -> None:
    env, cli = _edge_env(edge_venv), edge_venv / "bin" / "jemc-infer"
    assert _checked(cli, "--version", cwd=tmp_path, env=env).strip() == f"jemc-infer {__version__}"
    versions = json.loads(_checked(cli, "--version", "--json", cwd=tmp_path, env=env))
    assert versions["jemc_infer"] == __version__ and versions["packages"]["torch"] is None
    assert versions["packages"]["onnxruntime"] and versions["packages"]["av"]

    train_extra = "pip install 'jemc-infer[train]'"
    _one_line(_sh(cli, "train", "--data", tmp_path, "--preset", "jemc", "--out", tmp_path / "m", cwd=tmp_path, env=env),
              "torch | not installed", train_extra)
    _one_line(_sh(cli, "export", runtime_bundle, cwd=tmp_path, env=env), "torch | not installed", train_extra)
    _one_line(_sh(cli, "evaluate", "--model", runtime_bundle, "--data", tmp_path, cwd=tmp_path, env=env), train_extra)
    index = main_job["root"] / "edge-index"
    for backend, needle in (("torch", train_extra), ("tensorrt", "tensorrt-cu13")):
        _one_line(_sh(cli, "query", "a dog", "--index", index, "--model", runtime_bundle, "--backend", backend, cwd=tmp_path, env=env),
                  needle)
    _one_line(_sh(cli, "serve", "--index", index, "--model", runtime_bundle, cwd=tmp_path, env=env),
              "uvicorn | not installed", "pip install 'jemc-infer[serve]'")
    doctor = json.loads(_checked(cli, "doctor", "--json", cwd=tmp_path, env=env))
    assert doctor["packages"]["torch"]["hint"] == train_extra and doctor["packages"]["onnxruntime"]["ok"]
