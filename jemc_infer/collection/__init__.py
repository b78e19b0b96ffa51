"""A collection of videos → per-video results, resumably: one scanner (:func:`scan`), one job
store (:class:`JobStore`), one pipeline (:func:`run_collection`: decode → batched backbones →
pooling, per-window outputs kept on request) feeding a sink — index rows for ``embed``
(``jemc_infer.embed``), a feature dataset for ``features`` (``jemc_infer.train.extract``)."""

from jemc_infer.collection.jobs import Job, JobStore, VideoRecord, content_hash
from jemc_infer.collection.run import Committed, Event, Options, Planned, RunSummary, Sink, VideoDone, run_collection
from jemc_infer.collection.scan import VIDEO_EXTENSIONS, Scan, scan

__all__ = ["VIDEO_EXTENSIONS", "Committed", "Event", "Job", "JobStore", "Options", "Planned", "RunSummary", "Scan", "Sink",
           "VideoDone", "VideoRecord", "content_hash", "run_collection", "scan"]
