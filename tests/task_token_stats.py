"""A task that lives in the test tree only: it proves the task seam (jobs/task.py) is real.

Per row: the token count and the first token id (per-row scalars), the row's token ids and
the norm of each token's last hidden state (per-token lists, through the stage's ragged
outputs), with an option of its own.  Nothing in jobs/ names it.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import torch

from actors.model_stage import ModelStage, Results, unpad
from autoload import AutoModel
from autoload.modeling import Segments
from jobs.options import Option, positive
from jobs.task import Task


class TokenStats(ModelStage):
    auto_class = AutoModel
    unused_weights = ("pooler.",)
    checkpoint_kind = "encoder"
    per_token = ("ids", "norms")

    def __init__(self, model: str, *, norm_scale: float = 1.0, **kwargs: Any) -> None:
        self.norm_scale = norm_scale
        super().__init__(model, **kwargs)

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        hidden = self.model(**inputs).last_hidden_state.float()  # (B, T, H)
        mask = inputs["attention_mask"]
        return {"first": inputs["input_ids"][:, 0], "ids": unpad(inputs["input_ids"], mask),
                "norms": unpad(hidden.norm(dim=-1), mask) * self.norm_scale}

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self.model.forward_flat(input_ids, segments, **inputs).float()  # (N, H)
        return {"first": input_ids[segments.first], "ids": input_ids, "norms": hidden.norm(dim=-1) * self.norm_scale}

    def columns(self, results: Results) -> dict[str, pa.Array]:
        nulls = ~results.valid
        first = results.per_row("first")
        ids: list = [None] * results.num_rows
        norms: list = [None] * results.num_rows
        for sequence, row in enumerate(results.sequences.row):
            ids[row] = results.per_token["ids"][sequence].astype(np.int32)
            norms[row] = results.per_token["norms"][sequence].astype(np.float32)
        return {
            "tokens": pa.array(results.tokens_per_row(), type=pa.int32(), mask=nulls),
            "first_token": pa.array(first.astype(np.int32), mask=nulls),
            "token_ids": pa.array(ids, type=pa.list_(pa.int32())),
            "token_norms": pa.array(norms, type=pa.list_(pa.float32())),
        }


class TokenStatsTask(Task):
    name = "token-stats"
    help = "per row: token count, first token id, token ids, per-token hidden-state norms"
    stage = TokenStats
    takes_pairs = False
    options = (Option("norm_scale", "multiply the norms by this", positive(float), default=1.0, flag={"metavar": "X"}),)

    def output_schema(self, settings: Mapping[str, Any], model: Any) -> pa.Schema:
        return pa.schema([("tokens", pa.int32()), ("first_token", pa.int32()), ("token_ids", pa.list_(pa.int32())),
                          ("token_norms", pa.list_(pa.float32()))])
