"""Classify stage: sequence classification → label, label id, score (and every label's score,
the logits, or for multi-label models the set of labels above a threshold)."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import pyarrow as pa
import torch

from autoload import AutoModelForSequenceClassification
from autoload.modeling import Segments

from .common import fixed_size_list
from .model_stage import ModelStage, Results

FUNCTIONS = ("sigmoid", "softmax", "none")
# Every label whose score passes the threshold, best first (multi-label output).
LABEL_SCORE = pa.struct([("label", pa.string()), ("score", pa.float32())])
LABELS = pa.list_(LABEL_SCORE)


def default_function(config: Any) -> str:
    """The function transformers' text-classification pipeline applies when given none: none
    for regression, sigmoid for multi-label models and single-logit ones (a cross-encoder's
    relevance, a binary classifier with one output), softmax otherwise."""
    if config.problem_type == "regression":
        return "none"
    if config.problem_type == "multi_label_classification" or config.num_labels == 1:
        return "sigmoid"
    return "softmax"


class Classify(ModelStage):
    """Adds ``label`` (string from ``id2label``), ``label_id`` (int32), ``score`` (float32: the
    best label's score) and, when asked, ``probs`` (fixed_size_list<float32>[num_labels]: every
    label's score), ``logits`` (the same, before the function) and ``labels`` (list<struct<label,
    score>>: every label scoring above ``threshold``, best first); nulls for bad rows.

    Scores are the logits through ``function`` (default: as the reference pipeline decides
    from the config, see :func:`default_function`).
    """

    auto_class = AutoModelForSequenceClassification
    checkpoint_kind = "sequence-classification"

    def __init__(self, model: str, *, function: Optional[str] = None, threshold: float = 0.5,
                 multi_label: bool = False, return_probs: bool = False, return_logits: bool = False,
                 **kwargs: Any) -> None:
        if function is not None and function not in FUNCTIONS:
            raise ValueError(f"function must be one of {FUNCTIONS}, got {function!r}")
        self.return_probs = return_probs
        self.return_logits = return_logits
        self.threshold = threshold
        self.multi_label = multi_label
        super().__init__(model, **kwargs)
        config = self.model.config
        self.id2label = {int(k): str(v) for k, v in config.id2label.items()}
        self.function = function or default_function(config)

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"logits": self.model(**inputs).logits.float()}

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.model.forward_flat(input_ids, segments, **inputs).float()}

    def scores(self, logits: np.ndarray) -> np.ndarray:
        """(B, num_labels) float32 logits → scores, as the reference pipeline computes them."""
        if self.function == "sigmoid":
            return 1.0 / (1.0 + np.exp(-logits))
        if self.function == "softmax":
            shifted = np.exp(logits - logits.max(-1, keepdims=True))
            return shifted / shifted.sum(-1, keepdims=True)
        return logits

    def columns(self, results: Results) -> dict[str, pa.Array]:
        logits = results.per_row("logits", (int(self.model.config.num_labels),)).astype(np.float32)
        outputs = self.scores(logits)
        valid = results.valid
        label_ids = outputs.argmax(1)
        nulls = ~valid
        columns = {
            "label": pa.array([self.id2label[int(i)] for i in label_ids], type=pa.string(), mask=nulls),
            "label_id": pa.array(label_ids.astype(np.int32), mask=nulls),
            "score": pa.array(outputs[np.arange(len(outputs)), label_ids].astype(np.float32), mask=nulls),
        }
        if self.return_probs:
            columns["probs"] = fixed_size_list(outputs.astype(np.float32), valid, pa.float32())
        if self.return_logits:
            columns["logits"] = fixed_size_list(logits, valid, pa.float32())
        if self.multi_label:
            rows = []
            for ok, scores in zip(valid, outputs):
                order = [int(i) for i in np.argsort(-scores, kind="stable") if scores[i] > self.threshold]
                rows.append([{"label": self.id2label[i], "score": float(scores[i])} for i in order] if ok else None)
            columns["labels"] = pa.array(rows, type=LABELS)
        return columns
