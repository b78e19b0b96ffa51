"""Model configuration: the architecture of a JEMC model, as frozen dataclasses stored as JSON.

A model is a list of joint spaces. Each space has its own text encoder (embedding → GRU → its state
at the last real token, or the maximum of its states over the real tokens → L2-normalise) and a
video head (Linear over the concatenation of the features it names → L2-normalise). The retrieval
score is ``Σ_s weight_s · cos_s`` (with ``text_confidence`` γ, each cosine also times the norm of
the space's text state to the power γ).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from jemc_infer.errors import InputError

# Feature dimensions of the paper's backbones: ResNet-152 pool5, I3D RGB avg-pool, SoundNet conv7.
DEFAULT_FEATURE_DIMS = {"resnet": 2048, "i3d": 1024, "audio": 1024}


class LossMode(StrEnum):
    """Hinge ranking loss variants (see ``jemc_infer.train.losses``)."""

    SUM = "sum"  # VSE: every negative in the batch
    HARDEST = "hardest"  # VSE++: the hardest negative per query
    WEIGHTED = "weighted"  # JEMC: hardest negative, weighted by the positive's rank


class TextPooling(StrEnum):
    """What a text encoder keeps of its GRU's states (see ``jemc_infer.nn.jemc.TextEncoder``)."""

    LAST = "last"  # the paper (as VSE++): the state at the last real token
    MAX = "max"  # each dimension's maximum over the real tokens' states (InferSent's pooling)


@dataclass(frozen=True)
class SpaceConfig:
    """One joint space."""

    name: str  # e.g. "object" or "activity"; also the prefix of its weights and outputs
    features: tuple[str, ...]  # video features concatenated (in this order) into the video head
    weight: float = 1.0  # fusion weight w_s of this space's cosine in the final score
    # A shared space (the paper's image-text-audio row): features embedded into this space by a
    # second head, tied to the video embedding by a pair loss, and averaged into the video
    # embedding where present. Empty for ordinary spaces.
    paired: tuple[str, ...] = ()

    @property
    def all_features(self) -> tuple[str, ...]:
        return self.features + self.paired


@dataclass(frozen=True)
class ModelConfig:
    """A JEMC model's architecture. Sizes default to the paper's."""

    spaces: tuple[SpaceConfig, ...]
    vocab_size: int  # rows of every word-embedding table (the vocabulary's length)
    feature_dims: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_FEATURE_DIMS))
    word_dim: int = 300  # word-embedding size
    embed_dim: int = 1024  # joint-space size (= GRU hidden size)
    # 0 (the paper): every space's text embedding is L2-normalised, the score Σ_s w_s·cos_s.
    # γ > 0: the text embedding is the unit vector times |h|^γ, h the GRU's pooled state
    # (text_pooling), so each space's cosine counts by that norm to the power γ: a space whose text
    # encoder responds weakly to a query ("a large star" in the activity space) counts less.
    # Training is unchanged (its losses use cosines); a bundle written when this was a yes/no
    # setting reads True as 1.
    text_confidence: float = 0.0
    # "last" (the paper): the GRU's state at the caption's last word. "max": each dimension's
    # maximum over every word's state, so a word early in a short query ("a small triangle") counts
    # as much as the last one. No weights of its own: the same tensors either way.
    text_pooling: str = TextPooling.LAST

    def __post_init__(self) -> None:
        problems = []
        names = [s.name for s in self.spaces]
        if not self.spaces:
            problems.append("no spaces")
        if len(set(names)) != len(names):
            problems.append(f"duplicate space names {names}")
        for s in self.spaces:
            if not s.name.isidentifier():
                problems.append(f"space name {s.name!r} is not an identifier")
            if not s.features:
                problems.append(f"space {s.name!r} has no features")
            for f in s.all_features:
                if f not in self.feature_dims:
                    problems.append(f"space {s.name!r} uses feature {f!r} with no dimension (known: {sorted(self.feature_dims)})")
            if not s.weight >= 0:
                problems.append(f"space {s.name!r} has weight {s.weight} (expected >= 0)")
        for key in ("vocab_size", "word_dim", "embed_dim"):
            if getattr(self, key) < 1:
                problems.append(f"{key}={getattr(self, key)} (expected >= 1)")
        if not 0 <= self.text_confidence <= 8:  # also refuses NaN
            problems.append(f"text_confidence={self.text_confidence} (expected 0, the paper, or a power in (0, 8])")
        if self.text_pooling not in set(TextPooling):
            problems.append(f"text_pooling={self.text_pooling!r} (expected one of {[p.value for p in TextPooling]})")
        if self.vocab_size < 4 and self.vocab_size >= 1:
            problems.append(f"vocab_size={self.vocab_size} (expected >= 4: the special tokens)")
        if problems:
            raise InputError("model config | " + "; ".join(problems) + " | expected a valid JEMC architecture")

    @property
    def features(self) -> tuple[str, ...]:
        """Every video feature the model reads, in first-use order."""
        return tuple(dict.fromkeys(f for s in self.spaces for f in s.all_features))

    def input_dim(self, space: SpaceConfig, paired: bool = False) -> int:
        """Width of a space's concatenated video features (or of its paired features)."""
        return sum(self.feature_dims[f] for f in (space.paired if paired else space.features))

    def to_json(self) -> dict[str, Any]:
        """The JSON form; ``text_pooling`` only when it is not the paper's (files stay as they were)."""
        d = dataclasses.asdict(self)
        if d["text_pooling"] == TextPooling.LAST:
            del d["text_pooling"]
        else:
            d["text_pooling"] = str(d["text_pooling"])
        return d

    @classmethod
    def from_json(cls, data: Any, source: str = "model config") -> ModelConfig:
        """Inverse of :meth:`to_json`.

        Raises:
            InputError: If a field is missing, unknown, or of the wrong type.
        """
        try:
            spaces = tuple(
                SpaceConfig(name=str(s["name"]), features=tuple(s["features"]),
                            weight=float(s.get("weight", 1.0)), paired=tuple(s.get("paired", ())))
                for s in data["spaces"]
            )
            extra = set(data) - {f.name for f in dataclasses.fields(cls)}
            if extra:
                raise InputError(f"{source} | unknown fields {sorted(extra)} | expected {[f.name for f in dataclasses.fields(cls)]}")
            return cls(
                spaces=spaces,
                vocab_size=int(data["vocab_size"]),
                feature_dims={str(k): int(v) for k, v in data.get("feature_dims", DEFAULT_FEATURE_DIMS).items()},
                word_dim=int(data.get("word_dim", 300)),
                embed_dim=int(data.get("embed_dim", 1024)),
                text_confidence=float(data.get("text_confidence", 0.0)),
                text_pooling=str(data.get("text_pooling", TextPooling.LAST)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            if isinstance(err, InputError):
                raise
            raise InputError(f"{source} | malformed ({type(err).__name__}: {err}) | expected the JSON of a ModelConfig") from None


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The name and shape of every weight tensor of a model with this config.

    This is the contract between the torch modules (``jemc_infer.nn``), the bundle loader, and
    the exporters: a bundle is valid when its tensors match this dict exactly.
    """
    E, W, V = config.embed_dim, config.word_dim, config.vocab_size
    shapes: dict[str, tuple[int, ...]] = {}
    for s in config.spaces:
        p = f"spaces.{s.name}"
        shapes[f"{p}.text.embed.weight"] = (V, W)
        shapes[f"{p}.text.rnn.weight_ih_l0"] = (3 * E, W)
        shapes[f"{p}.text.rnn.weight_hh_l0"] = (3 * E, E)
        shapes[f"{p}.text.rnn.bias_ih_l0"] = (3 * E,)
        shapes[f"{p}.text.rnn.bias_hh_l0"] = (3 * E,)
        shapes[f"{p}.video.fc.weight"] = (E, config.input_dim(s))
        shapes[f"{p}.video.fc.bias"] = (E,)
        if s.paired:
            shapes[f"{p}.paired.fc.weight"] = (E, config.input_dim(s, paired=True))
            shapes[f"{p}.paired.fc.bias"] = (E,)
    return shapes
