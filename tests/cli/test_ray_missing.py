"""``--ray`` on an install without Ray: one line naming the extra, before any work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support import TESTS, child_env


@pytest.mark.parametrize("command", [["query", "a dog"], ["embed", "videos"], ["serve"]])
def test_ray_missing_is_one_line_naming_the_extra(command: list[str], tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, TESTS / "support" / "block_imports.py", "ray", "-m", "jemc_infer", *command,
                          "--index", tmp_path / "none", "--ray", "local"], capture_output=True, text=True, env=child_env(),
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 1, out.stderr
    assert out.stderr == "error: ray | not installed | needed for --ray: pip install 'jemc-infer[ray]'\n"
