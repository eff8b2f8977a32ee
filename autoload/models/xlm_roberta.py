"""XLM-RoBERTa: RoBERTa's architecture under its own config type and class names.

Checkpoints use the same keys as RoBERTa (body prefix ``roberta``), so every module, head and
checkpoint rule is RoBERTa's; only the config's ``model_type`` and vocabulary default differ.
"""
from __future__ import annotations

from .. import registry
from .roberta import (
    RobertaConfig,
    RobertaForCausalLM,
    RobertaForMaskedLM,
    RobertaForQuestionAnswering,
    RobertaForSequenceClassification,
    RobertaForTokenClassification,
    RobertaModel,
    RobertaPreTrainedModel,
)


class XLMRobertaConfig(RobertaConfig):
    model_type = "xlm-roberta"
    defaults = {**RobertaConfig.defaults, "vocab_size": 30522}


class XLMRobertaPreTrainedModel(RobertaPreTrainedModel):
    config_class = XLMRobertaConfig


class XLMRobertaModel(XLMRobertaPreTrainedModel, RobertaModel):
    pass


class XLMRobertaForMaskedLM(XLMRobertaPreTrainedModel, RobertaForMaskedLM):
    pass


class XLMRobertaForCausalLM(XLMRobertaPreTrainedModel, RobertaForCausalLM):
    pass


class XLMRobertaForSequenceClassification(XLMRobertaPreTrainedModel, RobertaForSequenceClassification):
    pass


class XLMRobertaForTokenClassification(XLMRobertaPreTrainedModel, RobertaForTokenClassification):
    pass


class XLMRobertaForQuestionAnswering(XLMRobertaPreTrainedModel, RobertaForQuestionAnswering):
    pass


CONFIG_CLASS = XLMRobertaConfig
HEADS = {
    registry.BASE: XLMRobertaModel,
    registry.PRETRAINING: XLMRobertaForMaskedLM,
    registry.MASKED_LM: XLMRobertaForMaskedLM,
    registry.CAUSAL_LM: XLMRobertaForCausalLM,
    registry.SEQUENCE_CLASSIFICATION: XLMRobertaForSequenceClassification,
    registry.TOKEN_CLASSIFICATION: XLMRobertaForTokenClassification,
    registry.QUESTION_ANSWERING: XLMRobertaForQuestionAnswering,
}
