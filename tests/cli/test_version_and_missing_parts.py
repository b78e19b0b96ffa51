"""``jemc-infer --version [--json]``, and a missing optional part as one line naming what to install."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from jemc_infer import __version__
from jemc_infer.cli import _common, app
from jemc_infer.errors import INSTALL, BackendUnavailableError, missing_dependency

runner = CliRunner()


def test_version_plain_and_json() -> None:
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == f"jemc-infer {__version__}"
    r = runner.invoke(app, ["--version", "--json"])
    assert r.exit_code == 0
    report = json.loads(r.stdout)
    assert report["jemc_infer"] == __version__ and set(report["packages"]) >= {"numpy", "av", "onnxruntime", "torch", "tensorrt"}
    assert report["packages"]["tensorrt"] is None  # not installable here: reported, not imported


def test_version_flags_misplaced_are_one_line_errors() -> None:
    for args in (["--json"], ["--version", "index", "status"], ["--json", "index", "status"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 1 and r.stderr.startswith("error: --version/--json |") and len(r.stderr.strip().splitlines()) == 1, args
    r = runner.invoke(app, [])
    assert r.exit_code == 2 and "Usage" in r.stdout  # a bare command shows the help, as before


@pytest.mark.parametrize(("err", "expected"), [
    (ModuleNotFoundError("No module named 'torch'", name="torch"), "torch | not installed | needed here: pip install 'jemc-infer[train]'"),
    (ModuleNotFoundError("No module named 'onnxscript'", name="onnxscript"), "onnxscript | not installed | needed here: pip install 'jemc-infer[train]'"),
    (ImportError("libcuda.so.1: cannot open shared object file", name="pycuda._driver"),
     f"pycuda | not importable (libcuda.so.1: cannot open shared object file) | needed here: {INSTALL['pycuda']}"),
    (ModuleNotFoundError("No module named 'tensorrt'", name="tensorrt"), "tensorrt | not installed | needed here: pip install --extra-index-url"),
])
def test_missing_dependency_names_what_to_install(err: ImportError, expected: str) -> None:
    friendly = missing_dependency(err)
    assert isinstance(friendly, BackendUnavailableError) and str(friendly).startswith(expected)


def test_an_import_error_of_our_own_is_a_bug_and_keeps_its_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert missing_dependency(ModuleNotFoundError("No module named 'jemc_infer.index'", name="jemc_infer.index")) is None
    assert missing_dependency(ImportError("cannot import name 'x'")) is None

    @_common.handle_errors
    def broken() -> None:
        raise ModuleNotFoundError("No module named 'jemc_infer.index'", name="jemc_infer.index")

    with pytest.raises(ModuleNotFoundError):
        broken()

    @_common.handle_errors
    def needs_h5py() -> None:
        raise ModuleNotFoundError("No module named 'h5py'", name="h5py")

    with pytest.raises(typer.Exit) as exit_info:
        needs_h5py()
    assert exit_info.value.exit_code == 1
    assert capsys.readouterr().err == f"error: h5py | not installed | needed here: {INSTALL['h5py']}\n"
