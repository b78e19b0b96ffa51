"""The Triton Python-backend tokenizer: raw text → ``ids`` and ``lengths`` for the ``text`` model.

``jemc-infer export --to triton`` copies this file as ``REPO/tokenizer/1/model.py`` with the
bundle's ``vocab.json`` beside it. It is self-contained on purpose: Triton's Python backend runs it
in a stub process with its own interpreter, where jemc-infer is not installed — it needs only
the standard library, numpy and ``triton_python_backend_utils`` (which Triton provides). The
tokenisation rules are a copy of ``jemc_infer.text`` (lower-case, words with inner apostrophes or
hyphens, ``[<start>, words…, <end>]``, unknown → ``<unk>``, right-padded with ``<pad>``, truncated
to ``max_len`` keeping ``<end>``); tests/export/test_triton.py checks the copy against the
original on many strings.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import numpy as np

# The same pattern as jemc_infer.text._WORD: letters/digits with inner apostrophes or hyphens.
_WORD = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*")
START, END, UNK = 1, 2, 3  # ids of <start>, <end>, <unk>; <pad> is 0
VOCAB_FILE = "vocab.json"
VOCAB_FORMAT = "jemc-vocab/1"


def tokenize(text: str) -> list[str]:
    """Lower-case words, punctuation removed (as ``jemc_infer.text.tokenize``)."""
    return _WORD.findall(text.lower().replace("’", "'"))


def load_table(path: str) -> dict[str, int]:
    """word → id from a ``jemc-vocab/1`` JSON file.

    Raises:
        ValueError: If the file is not such a vocabulary.
    """
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or data.get("format") != VOCAB_FORMAT or not isinstance(data.get("words"), list):
        raise ValueError(f"{path} | not a vocabulary | expected a JSON object with format {VOCAB_FORMAT!r} and a 'words' list")
    return {str(w): i for i, w in enumerate(data["words"])}


def encode(texts: list[str], table: dict[str, int], max_len: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``ids`` int64 [n, longest] (0-padded) and ``lengths`` int64 [n] of captions.

    Args:
        texts: The captions.
        table: word → id (:func:`load_table`).
        max_len: Longest sequence kept, ``<start>`` and ``<end>`` included; None keeps all.
    """
    seqs = [[START, *(table.get(w, UNK) for w in tokenize(t)), END] for t in texts]
    if max_len is not None:
        seqs = [s if len(s) <= max_len else s[: max_len - 1] + [END] for s in seqs]
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    ids = np.zeros((len(seqs), int(lengths.max(initial=2))), dtype=np.int64)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = s
    return ids, lengths


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class TritonPythonModel:
    """Triton's Python-backend interface: ``initialize(args)``, ``execute(requests)``."""

    def initialize(self, args: dict[str, str]) -> None:
        """Read the vocabulary (``<model dir>/<version>/vocab.json``) and ``max_len`` (a config parameter)."""
        config = json.loads(args["model_config"])
        self.table = load_table(os.path.join(args["model_repository"], args["model_version"], VOCAB_FILE))
        raw = config.get("parameters", {}).get("max_len", {}).get("string_value", "")
        self.max_len = int(raw) if raw else None

    def execute(self, requests: list[Any]) -> list[Any]:
        """One response per request: ``text`` (TYPE_STRING [n, 1]) → ``ids`` [n, L], ``lengths`` [n, 1].

        A request with an empty text gets an error response (as ``jemc-infer query`` refuses it).
        """
        import triton_python_backend_utils as pb_utils  # provided by Triton's Python backend

        responses = []
        for request in requests:
            texts = [_text(v) for v in pb_utils.get_input_tensor_by_name(request, "text").as_numpy().reshape(-1)]
            empty = [i + 1 for i, t in enumerate(texts) if not t.strip()]
            if empty:
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(f"text {empty[0]} | empty | expected words to search for")))
                continue
            ids, lengths = encode(texts, self.table, self.max_len)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("ids", ids), pb_utils.Tensor("lengths", lengths.reshape(-1, 1))]))
        return responses
