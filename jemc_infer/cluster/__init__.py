"""The collection pipeline and the search on a Ray cluster (``--ray``): the same results as the
local path, spread over machines.

- ``runtime``: which cluster (:class:`Cluster`), connecting to it quietly, Ray imported lazily
  (the runtime imports and runs without Ray; a missing one is the one-line "pip install
  'jemc-infer[ray]'" error);
- ``collection``: videos → results with decoding in CPU tasks and the backbones in an actor
  pool, each result handed to the one writer (the driver's sink and job store);
- ``search``: an index's shards split across actors, each answering exact top-k for its part,
  merged exactly on the driver.
"""

from jemc_infer.cluster.runtime import Cluster

__all__ = ["Cluster"]
