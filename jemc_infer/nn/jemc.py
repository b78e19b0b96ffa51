"""The JEMC model: per-space GRU text encoders and linear video heads, L2-normalised.

State-dict names are the contract in :func:`jemc_infer.config.expected_shapes`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jemc_infer.config import ModelConfig, SpaceConfig, TextPooling

EPS = 1e-12  # F.normalize's


def confidence_scale(h: Tensor, gamma: float) -> Tensor:
    """``h / |h| · |h|^γ`` per row (``ModelConfig.text_confidence``), as ``h · max(|h|, ε)^(γ-1)``."""
    return h * h.norm(dim=1, keepdim=True).clamp_min(EPS).pow(gamma - 1)


class TextEncoder(nn.Module):
    """Word embedding → 1-layer GRU over right-padded ids → output at ``length - 1`` (or the
    maximum over outputs ``0 … length - 1``, ``pooling="max"``) → L2-norm.

    No ``pack_padded_sequence``: it cannot be exported to ONNX. A GRU over the padded batch
    gives the same outputs up to the last real token, because the GRU is causal (padding comes
    after it); the maximum leaves the padded positions out. Lengths below 1 count as 1.
    """

    def __init__(self, vocab_size: int, word_dim: int, embed_dim: int, pooling: str = TextPooling.LAST) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, word_dim)
        self.rnn = nn.GRU(word_dim, embed_dim, num_layers=1, batch_first=True)
        self.pooling = TextPooling(pooling)
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)

    def forward(self, ids: Tensor, lengths: Tensor, normalize: bool = True) -> Tensor:
        """Encode captions.

        Args:
            ids: int64 [batch, seq], right-padded token ids.
            lengths: int64 [batch], real lengths (1..seq), any order.
            normalize: L2-normalise the output (the joint space is cosine).

        Returns:
            float32 [batch, embed_dim].
        """
        x = self.embed(ids)
        # An explicit initial state whose batch axis follows the input keeps the batch dynamic
        # in exported graphs (an implicit one is baked in at the export batch size).
        h0 = x.new_zeros(1, ids.shape[0], self.rnn.hidden_size)
        out, _ = self.rnn(x, h0)
        if self.pooling is TextPooling.MAX:
            real = torch.arange(out.shape[1], device=out.device).view(1, -1) < lengths.to(torch.int64).clamp(min=1).view(-1, 1)
            pooled = out.masked_fill(~real.unsqueeze(2), float("-inf")).amax(dim=1)
        else:
            idx = (lengths.to(torch.int64) - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, out.shape[2])
            pooled = out.gather(1, idx).squeeze(1)
        return F.normalize(pooled, dim=1) if normalize else pooled


class VideoHead(nn.Module):
    """Linear(d_in → embed_dim), Xavier-uniform weight, zero bias, then L2-normalise."""

    def __init__(self, in_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, embed_dim)
        bound = math.sqrt(6.0 / (in_dim + embed_dim))
        nn.init.uniform_(self.fc.weight, -bound, bound)
        nn.init.zeros_(self.fc.bias)

    def forward(self, features: Tensor, normalize: bool = True) -> Tensor:
        out = self.fc(features)
        return F.normalize(out, dim=1) if normalize else out


class JointSpace(nn.Module):
    """One joint space: a text encoder and a video head (plus a paired head in a shared space)."""

    def __init__(self, config: ModelConfig, space: SpaceConfig) -> None:
        super().__init__()
        self.space = space
        self.text = TextEncoder(config.vocab_size, config.word_dim, config.embed_dim, config.text_pooling)
        self.video = VideoHead(config.input_dim(space), config.embed_dim)
        self.paired = VideoHead(config.input_dim(space, paired=True), config.embed_dim) if space.paired else None

    def video_parts(self, features: dict[str, Tensor], masks: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """The main video embedding, the paired embedding (or None) and where the latter exists.

        Returns:
            ``(v, a, present)``: ``v`` [B, E] normalised; ``a`` [B, E] normalised or None;
            ``present`` bool [B] (all paired features present) or None.
        """
        v = self.video(torch.cat([features[f] for f in self.space.features], dim=1))
        if self.paired is None:
            return v, None, None
        a = self.paired(torch.cat([features[f] for f in self.space.paired], dim=1))
        present = torch.ones(v.shape[0], dtype=torch.bool, device=v.device)
        for f in self.space.paired:
            if masks is not None and f in masks:
                present = present & masks[f].to(torch.bool)
        return v, a, present

    def encode_video(self, features: dict[str, Tensor], masks: dict[str, Tensor] | None = None) -> Tensor:
        """[B, E] normalised; in a shared space, the mean of the main and paired embeddings."""
        v, a, present = self.video_parts(features, masks)
        return v if a is None else self.fuse(v, a, present)  # type: ignore[arg-type]

    @staticmethod
    def fuse(v: Tensor, a: Tensor, present: Tensor) -> Tensor:
        """A shared space's video embedding: ``normalize(v + a)`` where the paired features exist, else ``v``."""
        return F.normalize(v + a * present.unsqueeze(1).to(v.dtype), dim=1)


class JEMC(nn.Module):
    """A JEMC model: one :class:`JointSpace` per configured space."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.spaces = nn.ModuleDict({s.name: JointSpace(config, s) for s in config.spaces})

    def encode_text(self, ids: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        """Space name → [B, E] text embedding: L2-normalised, or with ``config.text_confidence`` γ
        the unit vector times the pooled GRU state's norm to the power γ (which weighs the space's cosine)."""
        gamma = self.config.text_confidence
        out = {name: sp.text(ids, lengths, normalize=not gamma) for name, sp in self.spaces.items()}
        if gamma and gamma != 1:  # γ = 1: the pooled state as it is
            out = {k: confidence_scale(h, gamma) for k, h in out.items()}
        return out

    def encode_video(self, features: dict[str, Tensor], masks: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Space name → [B, E] L2-normalised video embedding.

        Args:
            features: Feature name → float32 [B, dim]; missing features are zero rows.
            masks: Feature name → bool [B], True where the feature exists. Defaults to all present.
        """
        return {name: sp.encode_video(features, masks) for name, sp in self.spaces.items()}

    def similarity(self, text: dict[str, Tensor], video: dict[str, Tensor]) -> Tensor:
        """Fused similarity ``Σ_s w_s · text_s @ video_s.T``: [n_text, n_video]."""
        return sum(s.weight * (text[s.name] @ video[s.name].T) for s in self.config.spaces)  # type: ignore[return-value]
