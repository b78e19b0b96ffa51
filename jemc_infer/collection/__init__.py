"""A collection of videos → per-video results, resumably: one scanner (:func:`scan`), one job
store (:class:`JobStore`), one pipeline (:func:`run_collection`: decode → batched backbones →
pooling, per-window outputs kept on request) feeding a sink — index rows for ``embed``
(``jemc_infer.embed``), a feature dataset for ``features`` (``jemc_infer.train.extract``)."""


from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from jemc_infer.collection.jobs import Job, JobStore, VideoRecord, content_hash
from jemc_infer.collection.scan import VIDEO_EXTENSIONS, Scan, scan

if TYPE_CHECKING:
    from jemc_infer.collection.run import Committed, Event, Options, Planned, RunSummary, Sink, VideoDone, run_collection

__all__ = ["VIDEO_EXTENSIONS", "Committed", "Event", "Job", "JobStore", "Options", "Planned", "RunSummary", "Scan", "Sink",
           "VideoDone", "VideoRecord", "content_hash", "run_collection", "scan"]

# The pipeline's names are imported on first use: ``run`` imports PyAV (~0.15 s), which ``query``
# (it reads the job store through the index) and every other command's start-up should not pay.
# (``scan`` and ``jobs`` stay eager: ``scan`` is both a submodule and a function, and the function
# must win the attribute.)
_LAZY = ("Committed", "Event", "Options", "Planned", "RunSummary", "Sink", "VideoDone", "run_collection")


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.run"), name)


def __dir__() -> list[str]:
    return sorted(__all__)
