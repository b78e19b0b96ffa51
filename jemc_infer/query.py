"""``query``: sentences → the best-matching videos of an index (torch-free runtime).

A query is tokenised, encoded by the text engine into one embedding per space, and fused into one
vector ``[w_1·t_1 | w_2·t_2 | …]``: its inner product with an index row ``[v_1 | v_2 | …]`` is
the model's score ``Σ_s w_s cos_s``, so fusion costs nothing at search time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jemc_infer.bundle import Bundle, read_bundle
from jemc_infer.engines import Engine, open_engine
from jemc_infer.errors import InputError, ModelMismatchError, SettingError
from jemc_infer.index.search import search
from jemc_infer.index.store import Index

MODEL_ENV = "JEMC_MODEL"
DEMO_MODEL = Path("demo/models/jemc")  # what `jemc-infer demo` (make demo) deploys
QUOTE_CHARS = 80  # how much of a query a warning quotes


def quote(text: str, limit: int = QUOTE_CHARS) -> str:
    """``repr(text)`` of at most ``limit`` characters of the text: a long one keeps its start and end
    and says its length (``'a man is cooking … in a kitchen' (25000 characters)``)."""
    if len(text) <= limit:
        return repr(text)
    tail = limit // 4
    return f"{text[:limit - tail] + ' … ' + text[-tail:]!r} ({len(text)} characters)"


@dataclass(frozen=True)
class Hit:
    rank: int
    score: float
    path: str  # as stored (relative to the index), resolved for display by the caller
    duration: float | None
    id: int
    moment: tuple[float, float] | None = None  # (start, end) seconds of the best-matching window, where the index keeps them


def resolve_model(model: Path | None, index: Index | None = None) -> Path:
    """``model``, else ``$JEMC_MODEL``, else the bundle the index was built with, else the demo bundle.

    Raises:
        SettingError: None of these exists (``setting`` "model"; the message lists where it looked).
    """
    looked = []
    for label, cand in (("the given model", model), (f"${MODEL_ENV}", os.environ.get(MODEL_ENV)),
                        ("the index's model", index.model_path if index is not None else None), ("the demo bundle", DEMO_MODEL)):
        if cand is None:
            continue
        if Path(cand).is_dir():
            return Path(cand)
        looked.append(f"{label} {cand}")
    raise SettingError("model", f"none found ({'; '.join(looked) or 'nothing given'})", f"a model bundle directory, or ${MODEL_ENV}")


def parse_space_weights(text: str | None, bundle: Bundle) -> dict[str, float]:
    """``"object=1,activity=0.5"`` → weights for every space (unnamed ones keep the bundle's).

    Raises:
        SettingError: An unknown space name or a value that is not a number >= 0 (``setting``
            "space_weights").
    """
    weights = {s.name: s.weight for s in bundle.config.spaces}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in weights:
            raise SettingError("space_weights", f"unknown space {name!r}", f"names from {sorted(weights)}")
        try:
            w = float(value)
            if not w >= 0:
                raise ValueError
        except ValueError:
            raise SettingError("space_weights", repr(part.strip()), "name=number with number >= 0") from None
        weights[name] = w
    return weights


def encode_queries(bundle: Bundle, engine: Engine, texts: list[str], weights: dict[str, float],
                   batch_size: int = 64) -> tuple[np.ndarray, list[str]]:
    """Fused query vectors float32 [len(texts), D], and warnings (texts with no known word).

    Raises:
        InputError: An empty text.
    """
    warnings = []
    for i, t in enumerate(texts):
        if not t.strip():
            raise InputError(f"query {i + 1} | empty text | expected words to search for")
        if bundle.vocab.known_words(t) == 0:
            warnings.append(f"no word of {quote(t)} is in the model's vocabulary: the results are a guess")
    out = []
    for start in range(0, len(texts), batch_size):
        ids, lengths = bundle.vocab.encode_batch(texts[start:start + batch_size])
        emb = engine.run({"ids": ids, "lengths": lengths})
        out.append(np.concatenate([weights[s.name] * emb[f"text_{s.name}"] for s in bundle.config.spaces], axis=1))
    return np.concatenate(out).astype(np.float32), warnings


def query(index_dir: Path, texts: list[str], k: int = 10, model: Path | None = None, space_weights: str | None = None,
          backend: str = "auto", device: str = "auto") -> tuple[list[list[Hit]], list[str]]:
    """Search an index with sentences.

    Returns:
        One list of hits per text (best first), and warnings for the user.

    Raises:
        SettingError: No model found, bad weights, no text, k < 1.
        ModelMismatchError: The index was made with another model.
        InputError: No index, an empty text.
    """
    if k < 1:
        raise SettingError("k", str(k), ">= 1")
    if not texts:
        raise SettingError("texts", "no text", "at least one sentence")
    with Index.open(index_dir) as index:
        bundle = read_bundle(resolve_model(model, index))
        if bundle.fingerprint != index.settings["model"]:
            raise ModelMismatchError(index_dir, index.settings["model"], bundle.fingerprint, bundle.path)
        engine, why = open_engine(bundle.path, "text", backend=backend, device=device)
        with engine:
            queries, warnings = encode_queries(bundle, engine, texts, parse_space_weights(space_weights, bundle))
        scores, ids = search(index, queries, k)
        info = index.describe(ids)
    hits = [[Hit(r + 1, float(s), info[int(i)][0], info[int(i)][1], int(i)) for r, (s, i) in enumerate(zip(srow, irow, strict=True))]
            for srow, irow in zip(scores, ids, strict=True)]
    return hits, warnings
