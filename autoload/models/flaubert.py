"""FlauBERT: XLM's body and heads (``xlm.py``) with two settings of its own.

``pre_norm`` moves each block's LayerNorms before the attention and the feed-forward (the
residual sums stay un-normalised); ``layerdrop`` skips whole blocks at random while training
(never in eval mode, so inference runs every block).  Checkpoint keys are XLM's, under the same
``transformer`` prefix; every head is the XLM head over this body.
"""
from __future__ import annotations

import torch

from ..modeling import Segments
from .. import registry
from ..contract import ModelContract
from .xlm import (
    XLMConfig,
    XLMForMultipleChoice,
    XLMForQuestionAnswering,
    XLMForQuestionAnsweringSimple,
    XLMForSequenceClassification,
    XLMForTokenClassification,
    XLMModel,
    XLMWithLMHeadModel,
)


class FlaubertConfig(XLMConfig):
    model_type = "flaubert"
    defaults = dict(XLMConfig.defaults, pre_norm=False, layerdrop=0.0)


class FlaubertModel(XLMModel):
    config_class = FlaubertConfig

    def block(self, i: int, hidden: torch.Tensor, mask, need_weights: bool):
        if not self.config.pre_norm:
            return super().block(i, hidden, mask, need_weights)
        attended, probs = self.attentions[i](self.layer_norm1[i](hidden), mask, need_weights)
        hidden = hidden + self.dropout(attended)
        return hidden + self.ffns[i](self.layer_norm2[i](hidden)), probs

    def block_flat(self, i: int, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        if not self.config.pre_norm:
            return super().block_flat(i, hidden, segments)
        hidden = hidden + self.attentions[i].forward_flat(self.layer_norm1[i](hidden), segments)
        return hidden + self.ffns[i](self.layer_norm2[i](hidden))  # (N, D)

    def skips(self, i: int) -> bool:
        """LayerDrop: while training, each block is skipped with probability ``layerdrop``."""
        return self.training and self.config.layerdrop > 0.0 and bool(torch.rand([]) < self.config.layerdrop)


class FlaubertWithLMHeadModel(XLMWithLMHeadModel):
    config_class = FlaubertConfig
    body_class = FlaubertModel


class FlaubertForSequenceClassification(XLMForSequenceClassification):
    config_class = FlaubertConfig
    body_class = FlaubertModel


class FlaubertForTokenClassification(XLMForTokenClassification):
    config_class = FlaubertConfig
    body_class = FlaubertModel


class FlaubertForQuestionAnsweringSimple(XLMForQuestionAnsweringSimple):
    config_class = FlaubertConfig
    body_class = FlaubertModel


class FlaubertForQuestionAnswering(XLMForQuestionAnswering):
    config_class = FlaubertConfig
    body_class = FlaubertModel


class FlaubertForMultipleChoice(XLMForMultipleChoice):
    config_class = FlaubertConfig
    body_class = FlaubertModel


CONTRACT = ModelContract(
    model_type="flaubert",
    config_class=FlaubertConfig,
    # As 5.24 maps FlauBERT (no causal LM), but question answering is the seed's SQuAD head, as
    # for XLM (FlaubertForQuestionAnsweringSimple is a class beside the mapping).
    heads={
        registry.BASE: FlaubertModel,
        registry.PRETRAINING: FlaubertWithLMHeadModel,
        registry.WITH_LM_HEAD: FlaubertWithLMHeadModel,
        registry.MASKED_LM: FlaubertWithLMHeadModel,
        registry.SEQUENCE_CLASSIFICATION: FlaubertForSequenceClassification,
        registry.TOKEN_CLASSIFICATION: FlaubertForTokenClassification,
        registry.QUESTION_ANSWERING: FlaubertForQuestionAnswering,
        registry.SPAN_QUESTION_ANSWERING: FlaubertForQuestionAnsweringSimple,
    },
    name_patterns=("flaubert",),
    input_names=("input_ids", "attention_mask", "langs"),
    tokenizer="flaubert",
    tokenizer_class="FlaubertTokenizer",
    rank=65,
)
