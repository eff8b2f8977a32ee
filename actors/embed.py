"""Embed stage: encoder forward → pooled (and optionally L2-normalised) sentence embeddings."""
from __future__ import annotations

from typing import Any

import pyarrow as pa
import torch
import torch.nn.functional as F

from autoload import AutoModel
from autoload.modeling import Segments, pool_segments

from .common import POOLINGS, fixed_size_list
from .model_stage import ModelStage, Results

ARROW_TYPES = {"float32": pa.float32(), "float16": pa.float16()}


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """(B, T, H) hidden states, (B, T) 0/1 mask → (B, H), as sentence-transformers pools."""
    if mode == "cls":
        return hidden[:, 0]
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    if mode == "mean":
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    if mode == "max":
        return hidden.masked_fill(weights == 0, -1e9).max(1).values
    if mode == "last":
        # Rows are right-padded: the last real token sits at length - 1.
        last = mask.sum(1) - 1  # (B,)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"pooling must be one of {POOLINGS}, got {mode!r}")


class Embed(ModelStage):
    """Adds ``embedding``: fixed_size_list<float32 | float16>[hidden size], null for bad rows."""

    auto_class = AutoModel
    unused_weights = ("pooler.",)
    checkpoint_kind = "encoder"

    def __init__(self, model: str, *, pooling: str = "mean", normalize: bool = False,
                 embedding_dtype: str = "float32", **kwargs: Any) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if embedding_dtype not in ARROW_TYPES:
            raise ValueError(f"embedding_dtype must be one of {sorted(ARROW_TYPES)}, got {embedding_dtype!r}")
        self.pooling = pooling
        self.normalize = normalize
        self.embedding_type = ARROW_TYPES[embedding_dtype]
        super().__init__(model, **kwargs)

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        hidden = self.model(**inputs).last_hidden_state.float()  # (B, T, H); pool in float32
        return {"embedding": self._finish(pool(hidden, inputs["attention_mask"], self.pooling))}

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self.model.forward_flat(input_ids, segments, **inputs).float()  # (N, H); pool in float32
        return {"embedding": self._finish(pool_segments(hidden, segments, self.pooling))}

    def _finish(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, H) pooled → (B, H) output, L2-normalised if asked."""
        return F.normalize(pooled, p=2, dim=1) if self.normalize else pooled

    def columns(self, results: Results) -> dict[str, pa.Array]:
        values = results.per_row("embedding", (int(self.model.config.hidden_size),))
        return {"embedding": fixed_size_list(values, results.valid, self.embedding_type)}
