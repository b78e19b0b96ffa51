"""A ``query`` run leaves without the interpreter's teardown, and loses nothing on the way out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# A program that runs the command line as the console script does, with two probes: an atexit
# handler (must run either way) and an object whose finaliser runs only in the interpreter's
# teardown (must not run after a quick exit).
PROBE = """
import atexit, sys
class Probe:
    def __del__(self):
        sys.stderr.write("teardown ran\\n")
probe = Probe()
atexit.register(lambda: sys.stderr.write("atexit ran\\n"))
sys.argv = ["jemc-infer", *sys.argv[2:]]
from jemc_infer.cli import run
print("printed before the command", flush=False)
run(quick_exit=QUICK)
"""


def _run(tmp_path: Path, quick: bool, *args: str) -> subprocess.CompletedProcess[str]:
    code = PROBE.replace("QUICK", str(quick))
    return subprocess.run([sys.executable, "-c", code, "-", *args], capture_output=True, text=True, cwd=tmp_path)


def test_a_failed_query_keeps_its_status_message_output_and_atexit_handlers(tmp_path: Path) -> None:
    for quick in (True, False):
        done = _run(tmp_path, quick, "query", "a cat", "--index", str(tmp_path / "nothing"))
        assert done.returncode == 1, (quick, done.stderr)
        assert "no index here" in done.stderr and "atexit ran" in done.stderr, done.stderr
        assert done.stdout == "printed before the command\n"  # a buffered line still comes out
        assert ("teardown ran" in done.stderr) is not quick, (quick, done.stderr)  # the teardown is what is skipped


def test_other_commands_end_as_usual(tmp_path: Path) -> None:
    done = _run(tmp_path, True, "index", "status", "--index", str(tmp_path / "nothing"))
    assert done.returncode != 0 and "atexit ran" in done.stderr and "teardown ran" in done.stderr, done.stderr
