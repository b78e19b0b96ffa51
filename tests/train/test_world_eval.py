"""Scoring against a world's ground truth: attribute queries and precision@5."""

from __future__ import annotations

import numpy as np

from jemc_infer.train import world as world_module
from jemc_infer.train import world_eval


def test_attribute_queries_need_enough_right_answers_and_use_caption_words() -> None:
    videos, captions = world_module.plan_world(120, seed=2)
    words = {w for _, text, _ in captions for w in world_module.tokens(text)}
    queries = world_eval.attribute_queries(videos, min_relevant=5)
    assert {q.stream for q in queries} == {"object", "activity", "audio"}
    for q in queries:
        assert sum(world_module.matches(v, q.attributes) for v in videos) >= 5
        assert 1 <= len(q.attributes) <= 3
        assert set(world_module.tokens(q.text)) - {"something"} <= words, q.text


def test_precision_at_5_counts_the_top_five() -> None:
    scores = np.array([[5, 4, 3, 2, 1, 0], [0, 1, 2, 3, 4, 5]], dtype=np.float32)
    relevant = np.array([[1, 1, 1, 0, 1, 1], [1, 1, 1, 1, 1, 0]], dtype=bool)
    np.testing.assert_allclose(world_eval.precision_at(scores, relevant), [80.0, 80.0])
