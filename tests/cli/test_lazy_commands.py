"""``jemc-infer`` builds only the command a run names; ``app`` has them all."""

from __future__ import annotations

import subprocess
import sys

import typer

from jemc_infer.cli import COMMANDS, build


def _names(app: typer.Typer) -> set[str]:
    return set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def test_each_command_builds_alone_under_its_own_name() -> None:
    for name in COMMANDS:
        assert _names(build(name)) == {name}, name


def test_the_full_app_has_every_command_and_no_other() -> None:
    from jemc_infer.cli import app

    assert _names(build()) == set(COMMANDS) == _names(app)


def test_a_query_run_imports_no_other_command() -> None:
    code = ("import sys\nsys.argv = ['jemc-infer', '--debug', 'query', '--help']\nfrom jemc_infer.cli import run\n"
            "try:\n    run(quick_exit=False)\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
            "print(sorted(m for m in sys.modules if m.startswith('jemc_infer.cli.')), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "--index" in done.stdout  # query's own help
    loaded = eval(done.stderr.strip().splitlines()[-1])  # noqa: S307 - our own printed list
    assert set(loaded) <= {"jemc_infer.cli._common", "jemc_infer.cli._progress", "jemc_infer.cli.query"}, loaded


def test_an_unknown_command_is_matched_against_them_all() -> None:
    done = subprocess.run([sys.executable, "-m", "jemc_infer", "qurey"], capture_output=True, text=True)
    assert done.returncode == 2 and "No such command 'qurey'. Did you mean 'query'?" in done.stderr
