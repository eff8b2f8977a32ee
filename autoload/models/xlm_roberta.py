"""XLM-RoBERTa: RoBERTa's architecture under its own config type and class names.

Checkpoints use the same keys as RoBERTa (body prefix ``roberta``), so every module, head and
checkpoint rule is RoBERTa's; only the config's ``model_type`` and vocabulary default differ.
"""
from __future__ import annotations

from .. import registry
from ..contract import ModelContract, positions_after_padding
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


CONTRACT = ModelContract(
    model_type="xlm-roberta",
    config_class=XLMRobertaConfig,
    heads={
        registry.BASE: XLMRobertaModel,
        registry.PRETRAINING: XLMRobertaForMaskedLM,
        registry.MASKED_LM: XLMRobertaForMaskedLM,
        registry.WITH_LM_HEAD: XLMRobertaForMaskedLM,
        registry.CAUSAL_LM: XLMRobertaForCausalLM,
        registry.SEQUENCE_CLASSIFICATION: XLMRobertaForSequenceClassification,
        registry.TOKEN_CLASSIFICATION: XLMRobertaForTokenClassification,
        registry.QUESTION_ANSWERING: XLMRobertaForQuestionAnswering,
    },
    name_patterns=("xlm-roberta", "xlm_roberta"),
    input_names=("input_ids", "attention_mask"),
    tokenizer="xlm-roberta",
    tokenizer_class="XLMRobertaTokenizer",
    rank=50,
    max_length_rule=positions_after_padding,
)
