"""The one renderer of collection runs (embed and features): planned line, failure lines, exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from jemc_infer.cli._progress import EXIT_SOME_FAILED, Progress, exit_for
from jemc_infer.collection import Job, Planned, VideoDone
from jemc_infer.video.pipeline import VideoResult


def _done(name: str, reason: str | None = None) -> VideoDone:
    return VideoDone(Job(Path("/v") / name, name, 1, 1), VideoResult(0, f"/v/{name}", reason=reason))


def test_renders_the_plan_and_each_failure_then_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    with Progress("embed", show_bar=False, on_planned=lambda todo, skipped: f"{skipped} skipped, {todo} to go") as progress:
        for event in (Planned(2, 5), _done("a.mp4"), _done("b.mp4", "empty file (0 bytes)")):
            progress(event)
    assert capsys.readouterr().err.splitlines() == ["5 skipped, 2 to go", "failed: /v/b.mp4: empty file (0 bytes)"]
    assert (progress.done, progress.failed) == (2, 1)
    with pytest.raises(typer.Exit) as err:
        exit_for(1)
    assert err.value.exit_code == EXIT_SOME_FAILED == 3
    exit_for(0)  # nothing failed: no exit


def test_json_mode_prints_no_failure_lines(capsys: pytest.CaptureFixture[str]) -> None:
    with Progress("embed", show_bar=False, show_failures=False) as progress:
        progress(_done("b.mp4", "truncated"))
    assert capsys.readouterr().err == ""
