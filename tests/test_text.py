from __future__ import annotations

import json

import numpy as np
import pytest

from jemc_infer.errors import InputError
from jemc_infer.text import SPECIALS, Vocabulary, tokenize


def test_tokenize_lowercases_and_drops_punctuation() -> None:
    assert tokenize("A man's Cooking, in a T-shirt!") == ["a", "man's", "cooking", "in", "a", "t-shirt"]
    assert tokenize("  ...  ") == []
    assert tokenize("Crème brûlée 42") == ["crème", "brûlée", "42"]


def test_build_applies_min_count_and_is_deterministic() -> None:
    caps = ["a dog runs", "a dog sits", "a cat runs", "a dog"]
    v = Vocabulary.build(caps, min_count=2)
    assert v.words[:4] == SPECIALS
    assert v.words[4:] == ("a", "dog", "runs")  # by count, then alphabetical; cat/sits dropped
    assert v.ids("A cat runs") == [1, v.words.index("a"), 3, v.words.index("runs"), 2]
    assert Vocabulary.build(list(reversed(caps)), min_count=2) == v


def test_encode_batch_pads_right_and_truncates() -> None:
    v = Vocabulary.build(["a b c d"], min_count=1)
    ids, lengths = v.encode_batch(["a b c d", "a"])
    assert ids.dtype == np.int64 and lengths.tolist() == [6, 3]
    assert ids[1].tolist() == [1, v.words.index("a"), 2, 0, 0, 0]
    ids, lengths = v.encode_batch(["a b c d"], max_len=4)
    assert lengths.tolist() == [4] and ids[0, -1] == 2 and ids[0, 0] == 1
    with pytest.raises(InputError, match="max_len"):
        v.encode_batch(["a"], max_len=1)


def test_known_words_counts_vocabulary_hits() -> None:
    v = Vocabulary.build(["a man cooking"], min_count=1)
    assert v.known_words("a man cooking pasta") == 3
    assert v.known_words("zebra xylophone") == 0


def test_json_round_trip_and_refusals(tmp_path) -> None:
    v = Vocabulary.build(["x y z"], min_count=1)
    v.save(tmp_path / "v.json")
    assert Vocabulary.load(tmp_path / "v.json") == v
    (tmp_path / "bad.json").write_text(json.dumps({"format": "jemc-vocab/1", "words": ["a", "b"]}))
    with pytest.raises(InputError, match="expected"):
        Vocabulary.load(tmp_path / "bad.json")
    (tmp_path / "pickle.json").write_text("\x80\x04not json")
    with pytest.raises(InputError, match="invalid JSON"):
        Vocabulary.load(tmp_path / "pickle.json")
    with pytest.raises(InputError, match="not found"):
        Vocabulary.load(tmp_path / "absent.json")
    with pytest.raises(InputError, match="duplicate"):
        Vocabulary(words=SPECIALS + ("a", "a"))
