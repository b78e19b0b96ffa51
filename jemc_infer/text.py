"""Tokenizer and vocabulary (torch-free: the runtime encodes queries with them).

Captions are lower-cased and split into words; a caption becomes
``[<start>, w1, ..., wn, <end>]`` as in the official VSE++/JEMC code. Words seen fewer than
``min_count`` times in the training captions map to ``<unk>``. A vocabulary is stored as JSON,
never pickle.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jemc_infer.errors import InputError

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)  # ids 0, 1, 2, 3 in every vocabulary
VOCAB_FORMAT = "jemc-vocab/1"

# Letters/digits with inner apostrophes or hyphens ("it's", "t-shirt"); punctuation is dropped.
_WORD = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*")


def tokenize(text: str) -> list[str]:
    """Split a caption into lower-case words.

    Args:
        text: Any sentence.

    Returns:
        The words, punctuation removed (``"A man's cooking."`` → ``["a", "man's", "cooking"]``).
    """
    return _WORD.findall(text.lower().replace("’", "'"))


@dataclass(frozen=True)
class Vocabulary:
    """A word list whose index is the token id; ids 0-3 are ``<pad> <start> <end> <unk>``."""

    words: tuple[str, ...]  # words[i] is the word of id i
    min_count: int = 4  # the threshold the vocabulary was built with (recorded, not re-applied)

    def __post_init__(self) -> None:
        if tuple(self.words[:4]) != SPECIALS:
            raise InputError(f"vocabulary | starts with {list(self.words[:4])} | expected {list(SPECIALS)}")
        if len(set(self.words)) != len(self.words):
            dupes = sorted(w for w, n in Counter(self.words).items() if n > 1)[:5]
            raise InputError(f"vocabulary | duplicate words {dupes} | expected each word once")
        object.__setattr__(self, "_ids", {w: i for i, w in enumerate(self.words)})

    def __len__(self) -> int:
        return len(self.words)

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 4) -> Vocabulary:
        """Build a vocabulary from training captions.

        Args:
            captions: The training captions (raw text).
            min_count: Keep words seen at least this often (the official code uses 4).

        Returns:
            The specials followed by the kept words, most frequent first (ties alphabetical),
            so the same captions always give the same ids.
        """
        counts = Counter(w for c in captions for w in tokenize(c))
        kept = sorted((w for w, n in counts.items() if n >= min_count and w not in SPECIALS),
                      key=lambda w: (-counts[w], w))
        return cls(words=SPECIALS + tuple(kept), min_count=min_count)

    def ids(self, text: str) -> list[int]:
        """Token ids of one caption: ``<start>``, the words (unknown → ``<unk>``), ``<end>``."""
        table: dict[str, int] = self._ids  # type: ignore[attr-defined]
        return [1, *(table.get(w, 3) for w in tokenize(text)), 2]

    def known_words(self, text: str) -> int:
        """How many words of ``text`` are in the vocabulary (0 means the query is all ``<unk>``)."""
        table: dict[str, int] = self._ids  # type: ignore[attr-defined]
        return sum(w in table for w in tokenize(text))

    def encode_batch(self, texts: Sequence[str], max_len: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Right-padded token ids for a batch of captions.

        Args:
            texts: The captions.
            max_len: Truncate longer captions to this many tokens (keeping ``<start>``;
                the last kept token becomes ``<end>``). Defaults to no limit.

        Returns:
            ``ids`` int64 [batch, longest] padded with 0, and ``lengths`` int64 [batch] (>= 2).
        """
        seqs = [self.ids(t) for t in texts]
        if max_len is not None:
            if max_len < 2:
                raise InputError(f"max_len | got {max_len} | expected >= 2 (<start> and <end>)")
            seqs = [s if len(s) <= max_len else s[: max_len - 1] + [2] for s in seqs]
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        ids = np.zeros((len(seqs), int(lengths.max(initial=2))), dtype=np.int64)
        for row, s in enumerate(seqs):
            ids[row, : len(s)] = s
        return ids, lengths

    def to_json(self) -> dict:
        """The JSON form stored in a bundle (``vocab.json``)."""
        return {"format": VOCAB_FORMAT, "min_count": self.min_count, "words": list(self.words)}

    @classmethod
    def from_json(cls, data: dict, source: str = "vocabulary") -> Vocabulary:
        """Inverse of :meth:`to_json`.

        Raises:
            InputError: If ``data`` is not a vocabulary in this format.
        """
        if not isinstance(data, dict) or data.get("format") != VOCAB_FORMAT or not isinstance(data.get("words"), list):
            raise InputError(f"{source} | not a vocabulary | expected a JSON object with format {VOCAB_FORMAT!r} and a 'words' list")
        return cls(words=tuple(str(w) for w in data["words"]), min_count=int(data.get("min_count", 4)))

    def save(self, path: Path) -> None:
        """Write the vocabulary as JSON to ``path``."""
        path.write_text(json.dumps(self.to_json(), ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        """Read a vocabulary written by :meth:`save`.

        Raises:
            InputError: If the file is missing or not a vocabulary.
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"{path} | file not found | expected a vocabulary JSON") from None
        except json.JSONDecodeError as err:
            raise InputError(f"{path} | invalid JSON ({err.msg}, line {err.lineno}) | expected a vocabulary JSON") from None
        return cls.from_json(data, source=str(path))
