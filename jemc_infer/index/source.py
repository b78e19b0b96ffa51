"""What the search reads: shards of embedding rows and the id of each row (torch-free)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Shard:
    """One block of index rows.

    ``rows`` is float16 or float32 [n, D] (usually a read-only memory map of a ``.npy``);
    ``ids`` is int64 [n]: the id each row answers with, or -1 for a dead row (a video that was
    re-embedded or pruned since) that search must skip.
    """

    rows: np.ndarray
    ids: np.ndarray


class ShardSource(Protocol):
    """Anything search can read: an open index, or shards in memory (tests, benchmarks)."""

    @property
    def dim(self) -> int:
        """D, the width of every row."""
        ...

    def shards(self) -> Iterator[Shard]:
        """The shards, in any order (ids, not positions, identify rows)."""
        ...


@dataclass(frozen=True)
class InMemory:
    """A :class:`ShardSource` over arrays already at hand."""

    blocks: tuple[Shard, ...]

    @property
    def dim(self) -> int:
        return int(self.blocks[0].rows.shape[1]) if self.blocks else 0

    def shards(self) -> Iterator[Shard]:
        yield from self.blocks
