"""Classify stage: sequence classification → label, label id, score (and all probabilities)."""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import torch

from autoload import AutoModelForSequenceClassification
from autoload.modeling import Segments

from .common import fixed_size_list
from .model_stage import ModelStage, Results


class Classify(ModelStage):
    """Adds ``label`` (string from ``id2label``), ``label_id`` (int32), ``score`` (float32) and,
    with ``return_probs``, ``probs`` (fixed_size_list<float32>[num_labels]); nulls for bad rows.

    Scores are softmax probabilities, sigmoid ones for multi-label models, and the raw value
    for single-output (regression) models.
    """

    auto_class = AutoModelForSequenceClassification
    checkpoint_kind = "sequence-classification"

    def __init__(self, model: str, *, return_probs: bool = False, **kwargs: Any) -> None:
        self.return_probs = return_probs
        super().__init__(model, **kwargs)
        config = self.model.config
        self.id2label = {int(k): str(v) for k, v in config.id2label.items()}
        self.regression = config.num_labels == 1 or config.problem_type == "regression"
        self.multi_label = config.problem_type == "multi_label_classification"

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"scores": self._scores(self.model(**inputs).logits.float())}

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"scores": self._scores(self.model.forward_flat(input_ids, segments, **inputs).float())}

    def _scores(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, num_labels) logits → probabilities (or the raw value for regression)."""
        if self.regression:
            return logits
        return logits.sigmoid() if self.multi_label else logits.softmax(-1)

    def columns(self, results: Results) -> dict[str, pa.Array]:
        outputs = results.per_row("scores", (int(self.model.config.num_labels),))
        valid = results.valid
        label_ids = outputs.argmax(1)
        nulls = ~valid
        columns = {
            "label": pa.array([self.id2label[int(i)] for i in label_ids], type=pa.string(), mask=nulls),
            "label_id": pa.array(label_ids.astype(np.int32), mask=nulls),
            "score": pa.array(outputs[np.arange(len(outputs)), label_ids].astype(np.float32), mask=nulls),
        }
        if self.return_probs:
            columns["probs"] = fixed_size_list(outputs, valid, pa.float32())
        return columns
