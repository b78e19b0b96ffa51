"""The video index (torch-free): embedding shards + an SQLite manifest, and exact top-k search.

- ``store``: the index directory (shards written crash-safely, one writer at a time, the
  model/sampling fingerprint that refuses mixing);
- ``search``: ``scores, ids = search(source, queries, k)`` over the shards.
"""

from jemc_infer.index.search import search
from jemc_infer.index.source import InMemory, Shard, ShardSource
from jemc_infer.index.store import Index, VideoRecord

__all__ = ["Index", "InMemory", "Shard", "ShardSource", "VideoRecord", "search"]
