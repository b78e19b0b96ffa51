"""Export shape limits small enough to keep the parity gates fast (batch 1, 7, 9; up to 12 tokens)."""

from __future__ import annotations

from typing import Any


def small_limits_value() -> Any:
    from jemc_infer.export.specs import ShapeLimits

    return ShapeLimits(max_batch=9, max_seq=12, max_clips=2, max_frames=3, max_samples=22_050 * 2, opt_batch=4, opt_seq=6)
