"""The one renderer of a collection run (``embed`` and ``features``): a progress bar on stderr,
a line per failed video, and the exit code."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer

from jemc_infer.cli._common import echo_err

if TYPE_CHECKING:  # the collection's pipeline imports PyAV: every command's start-up would pay for it
    from jemc_infer.collection.run import Event, VideoDone

EXIT_SOME_FAILED = 3  # some videos failed; the others are done (0: all done; 1: bad input, nothing done)


class Progress:
    """Renders :mod:`jemc_infer.collection.run` events. Use as a context manager (it stops the bar).

    Args:
        label: The bar's name (the command).
        show_bar: Draw the bar (off with --quiet or --json).
        show_failures: Print ``failed: PATH: REASON`` lines (off with --json, whose output lists them).
        on_planned: The line to print once the work is known, from (todo, skipped), or None.
    """

    def __init__(self, label: str, show_bar: bool, show_failures: bool = True,
                 on_planned: Callable[[int, int], str | None] = lambda todo, skipped: None) -> None:
        self.show_failures, self.on_planned = show_failures, on_planned
        self.t0, self.done, self.frames, self.failed = time.monotonic(), 0, 0, 0
        self.bar: Any = None
        self.task: Any = None
        if show_bar:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self.bar = Bar(TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                           TimeRemainingColumn(), console=Console(stderr=True))

    def __call__(self, event: Event) -> None:
        from jemc_infer.collection.run import Planned, VideoDone

        if isinstance(event, Planned):
            line = self.on_planned(event.todo, event.skipped)
            if line:
                echo_err(line)
            if self.bar is not None and event.todo:
                self.bar.start()
                self.task = self.bar.add_task("run", total=event.todo, rate="")
        elif isinstance(event, VideoDone):
            self._video(event)

    def _video(self, event: VideoDone) -> None:
        self.done += 1
        self.frames += event.frames
        self.failed += not event.result.ok
        line = None if event.result.ok else f"failed: {event.result.path}: {event.result.reason}"
        if self.bar is not None and self.task is not None:
            dt = max(time.monotonic() - self.t0, 1e-9)
            self.bar.update(self.task, advance=1, rate=f"{self.done / dt:.2f} videos/s  {self.frames / dt:.0f} frames/s  "
                                                       f"{self.failed} failed")
            if line and self.show_failures:
                self.bar.console.print(line, markup=False, highlight=False)
        elif line and self.show_failures:
            echo_err(line)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def exit_for(failed: int) -> None:
    """Exit with :data:`EXIT_SOME_FAILED` if some videos failed."""
    if failed:
        raise typer.Exit(code=EXIT_SOME_FAILED)
