"""What the search reads: shards of embedding rows and the id of each row (torch-free)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from jemc_infer.index.compact import Segment


@dataclass(frozen=True)
class Shard:
    """One block of index rows.

    ``rows`` is float16 or float32 [n, D] (usually a read-only memory map of a ``.npy``);
    ``ids`` is int64 [n]: the id each row answers with, or -1 for a dead row (a video that was
    re-embedded or pruned since) that search must skip. ``key`` names the shard in its index
    (what a compact segment refers to); -1 where there is none.
    """

    rows: np.ndarray
    ids: np.ndarray
    key: int = -1


class ShardSource(Protocol):
    """Anything search can read: an open index, or shards in memory (tests, benchmarks)."""

    @property
    def dim(self) -> int:
        """D, the width of every row."""
        ...

    def shards(self) -> Iterator[Shard]:
        """The shards, in any order (ids, not positions, identify rows)."""
        ...

    def segments(self) -> Sequence[Segment]:
        """The compact int8 copies of the shards (:mod:`jemc_infer.index.compact`); may be empty."""
        ...


@dataclass(frozen=True)
class InMemory:
    """A :class:`ShardSource` over arrays already at hand (and their compact copies, if any)."""

    blocks: tuple[Shard, ...]
    compact: tuple[Segment, ...] = ()

    def with_compact(self) -> InMemory:
        """The same shards (keyed 0, 1, …) with one compact segment over all of them."""
        from jemc_infer.index.compact import segment_of

        blocks = tuple(Shard(b.rows, b.ids, i) for i, b in enumerate(self.blocks))
        return InMemory(blocks, (segment_of(blocks),) if blocks else ())

    def segments(self) -> Sequence[Segment]:
        return self.compact

    @property
    def dim(self) -> int:
        return int(self.blocks[0].rows.shape[1]) if self.blocks else 0

    def shards(self) -> Iterator[Shard]:
        yield from self.blocks
