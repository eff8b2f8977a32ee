"""Embed stage: encoder forward → pooled sentence embeddings, through the model's
sentence-transformers modules after pooling (Dense, Normalize), optionally truncated
(Matryoshka), L2-normalised and quantised as retrieval stacks store them."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from autoload.modeling import Segments, pool_segments
from autoload.sources import FetchOptions, open_source

from .common import POOLINGS, fixed_size_list
from .heads import EncoderModel
from .model_stage import ModelStage, Results
from .sentence_modules import CALIBRATED, PRECISIONS, load_dense, quantize

# The embedding column's value type per precision (binary ones: bytes of packed sign bits).
ARROW_TYPES = {"float32": pa.float32(), "float16": pa.float16(), "int8": pa.int8(), "uint8": pa.uint8(),
               "binary": pa.int8(), "ubinary": pa.uint8()}


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
    """Adds ``embedding``: fixed_size_list<value type of ``precision``>[width], null for bad rows.

    Per row: pool the token states, run ``steps`` (the model's Dense modules, and a Normalize
    between them, from modules.json), keep the first ``dimensions`` values (Matryoshka
    truncation), L2-normalise when ``normalize`` (after truncating, so a truncated vector is a
    unit vector again), then quantise to ``precision`` as sentence-transformers'
    ``quantize_embeddings`` does (int8/uint8 with the per-dimension ``ranges``).
    """

    # The base model; an encoder-decoder's encoder alone (sentence-T5 / GTR checkpoints have no decoder).
    auto_class = EncoderModel
    unused_weights = ("pooler.",)
    checkpoint_kind = "encoder"

    def __init__(self, model: str, *, pooling: str = "mean", normalize: bool = False,
                 embedding_dtype: str = "float32", precision: Optional[str] = None,
                 dimensions: Optional[int] = None, steps: Sequence[dict] = (),
                 calibration_ranges: Optional[Sequence[Sequence[float]]] = None, **kwargs: Any) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        precision = precision or embedding_dtype
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if precision in CALIBRATED and calibration_ranges is None:
            raise ValueError(f"precision {precision} needs calibration_ranges")
        self.pooling = pooling
        self.normalize = normalize
        self.precision = precision
        self.embedding_type = ARROW_TYPES[precision]
        self.ranges = np.asarray(calibration_ranges, dtype=np.float32) if calibration_ranges is not None else None
        super().__init__(model, **kwargs)
        self.steps: list[Optional[torch.nn.Module]] = []  # Dense modules; None: a Normalize between them
        if any(step["type"] == "Dense" for step in steps):
            source = open_source(model, FetchOptions.pop_from({"storage_options": kwargs.get("storage_options") or {},
                                                               "cache_dir": kwargs.get("cache_dir")}))
            # The Dense modules run in float32 on the pooled vectors, as the pooling does.
            self.steps = [load_dense(step, source).to(self.device) if step["type"] == "Dense" else None
                          for step in steps]
        width = next((s["out_features"] for s in reversed(steps) if s["type"] == "Dense"),
                     int(self.model.config.hidden_size))
        if dimensions is not None and not 0 < dimensions <= width:
            raise ValueError(f"dimensions must be in 1..{width} (the embedding's width), got {dimensions}")
        self.dimension = dimensions or width

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        hidden = self.model(**inputs).last_hidden_state.float()  # (B, T, H); pool in float32
        return {"embedding": self._finish(pool(hidden, inputs["attention_mask"], self.pooling))}

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self.model.forward_flat(input_ids, segments, **inputs).float()  # (N, H); pool in float32
        return {"embedding": self._finish(pool_segments(hidden, segments, self.pooling))}

    def _finish(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, H) pooled → (B, dimension): the Dense / Normalize steps, truncation, L2 norm if asked."""
        for dense in self.steps:
            pooled = dense(pooled) if dense is not None else F.normalize(pooled, p=2, dim=1)
        pooled = pooled[:, :self.dimension]
        return F.normalize(pooled, p=2, dim=1) if self.normalize else pooled

    def columns(self, results: Results) -> dict[str, pa.Array]:
        values = results.per_row("embedding", (self.dimension,)).astype(np.float32)
        quantized = quantize(values, self.precision, self.ranges)  # (rows, output_width(dimension, precision))
        return {"embedding": fixed_size_list(quantized, results.valid, self.embedding_type)}
