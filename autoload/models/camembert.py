"""CamemBERT: RoBERTa's architecture under its own config type and class names.

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


class CamembertConfig(RobertaConfig):
    model_type = "camembert"
    defaults = {**RobertaConfig.defaults, "vocab_size": 30522}


class CamembertPreTrainedModel(RobertaPreTrainedModel):
    config_class = CamembertConfig


class CamembertModel(CamembertPreTrainedModel, RobertaModel):
    pass


class CamembertForMaskedLM(CamembertPreTrainedModel, RobertaForMaskedLM):
    pass


class CamembertForCausalLM(CamembertPreTrainedModel, RobertaForCausalLM):
    pass


class CamembertForSequenceClassification(CamembertPreTrainedModel, RobertaForSequenceClassification):
    pass


class CamembertForTokenClassification(CamembertPreTrainedModel, RobertaForTokenClassification):
    pass


class CamembertForQuestionAnswering(CamembertPreTrainedModel, RobertaForQuestionAnswering):
    pass


CONTRACT = ModelContract(
    model_type="camembert",
    config_class=CamembertConfig,
    heads={
        registry.BASE: CamembertModel,
        registry.PRETRAINING: CamembertForMaskedLM,
        registry.MASKED_LM: CamembertForMaskedLM,
        registry.WITH_LM_HEAD: CamembertForMaskedLM,
        registry.CAUSAL_LM: CamembertForCausalLM,
        registry.SEQUENCE_CLASSIFICATION: CamembertForSequenceClassification,
        registry.TOKEN_CLASSIFICATION: CamembertForTokenClassification,
        registry.QUESTION_ANSWERING: CamembertForQuestionAnswering,
    },
    name_patterns=("camembert",),
    input_names=("input_ids", "attention_mask"),
    tokenizer="camembert",
    tokenizer_class="CamembertTokenizer",
    rank=40,
    max_length_rule=positions_after_padding,
)
