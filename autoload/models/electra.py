"""ELECTRA: config, body and heads, loading reference checkpoints by their own key names.

The encoder layers are BERT's (same keys, same maths); ELECTRA differs in the embeddings,
which may be narrower than the encoder (``embedding_size`` projected up by
``embeddings_project``), in having no pooler, and in its heads.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from ..configuration import PretrainedConfig
from ..modeling import (
    BaseModelOutput,
    CausalLMOutput,
    MaskedLMOutput,
    ModelOutput,
    PreTrainedModel,
    QuestionAnsweringModelOutput,
    Segments,
    SequenceClassifierOutput,
    TokenClassifierOutput,
    activation,
    embed_flat,
)
from ..layers import (
    Embeddings,
    FirstTokenClassificationHead,
    QuestionAnsweringHead,
    TokenClassificationHead,
    check_one_input,
    classifier_dropout,
    encode,
)
from .. import registry
from ..contract import ModelContract
from .bert import BertEncoder


class ElectraConfig(PretrainedConfig):
    model_type = "electra"
    defaults = dict(
        vocab_size=30522,
        embedding_size=128,
        hidden_size=256,
        num_hidden_layers=12,
        num_attention_heads=4,
        intermediate_size=1024,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=512,
        type_vocab_size=2,
        initializer_range=0.02,
        layer_norm_eps=1e-12,
        # The reference's multiple-choice summary settings: kept so configs round-trip unchanged.
        summary_type="first",
        summary_use_proj=True,
        summary_activation="gelu",
        summary_last_dropout=0.1,
        pad_token_id=0,
        use_cache=True,
    )


# ---------------------------------------------------------------------------------------------
# Body
# ---------------------------------------------------------------------------------------------
class ElectraPreTrainedModel(PreTrainedModel):
    config_class = ElectraConfig
    base_model_prefix = "electra"


class ElectraModel(ElectraPreTrainedModel):
    def __init__(self, config: ElectraConfig):
        super().__init__(config)
        # BERT's embeddings at width ``embedding_size`` (E), which may be smaller than H.
        self.embeddings = Embeddings(config, config.embedding_size)
        # Only present when the widths differ, as in the reference (its checkpoints have the key then only).
        if config.embedding_size != config.hidden_size:
            self.embeddings_project = nn.Linear(config.embedding_size, config.hidden_size)
        self.encoder = BertEncoder(config)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        *,
        inputs_embeds: Optional[torch.Tensor] = None,
        output_hidden_states: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
    ) -> BaseModelOutput:
        check_one_input(input_ids, inputs_embeds)
        hidden = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)  # (B, T, E)
        if hasattr(self, "embeddings_project"):
            hidden = self.embeddings_project(hidden)  # (B, T, H)
        hidden, all_hidden, all_probs = encode(self.encoder, self.config, hidden, attention_mask,
                                               output_hidden_states, output_attentions)
        return BaseModelOutput(hidden, all_hidden, all_probs)

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments,
                     token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Unpadded inference: (N,) token ids of ``segments``' sequences back to back → (N, H)."""
        hidden = embed_flat(self, input_ids, segments, token_type_ids)  # (N, E)
        if hasattr(self, "embeddings_project"):
            hidden = self.embeddings_project(hidden)  # (N, H)
        return self.encoder.forward_flat(hidden, segments)


class ElectraFlatHead:
    """A head on the flat layout: ``ElectraModel.forward_flat``'s inputs, then the head's ``head_flat``."""

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments,
                     token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Unpadded inference: (N,) token ids → per-sequence (B, ...) or per-token (N, ...) outputs."""
        return self.head_flat(self.electra.forward_flat(input_ids, segments, token_type_ids), segments)


# ---------------------------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------------------------
class ElectraDiscriminatorPredictions(nn.Module):
    """Per-token "was this token replaced?" score: dense → hidden_act → one logit."""

    def __init__(self, config: ElectraConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = activation(config.hidden_act)
        self.dense_prediction = nn.Linear(config.hidden_size, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.dense_prediction(self.activation(self.dense(hidden))).squeeze(-1)  # (B, T)


class ElectraGeneratorPredictions(nn.Module):
    """H → E before the tied LM head; the reference fixes gelu here whatever ``hidden_act`` says."""

    def __init__(self, config: ElectraConfig):
        super().__init__()
        self.activation = activation("gelu")
        self.LayerNorm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)
        self.dense = nn.Linear(config.hidden_size, config.embedding_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.activation(self.dense(hidden)))  # (B, T, E)


@dataclass
class ElectraForPreTrainingOutput(ModelOutput):
    logits: torch.Tensor
    hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    attentions: Optional[tuple[torch.Tensor, ...]] = None


class ElectraForPreTraining(ElectraPreTrainedModel):
    """The discriminator: one replaced-token logit per position."""

    def __init__(self, config: ElectraConfig):
        super().__init__(config)
        self.electra = ElectraModel(config)
        self.discriminator_predictions = ElectraDiscriminatorPredictions(config)

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        **kwargs: Any,
    ) -> ElectraForPreTrainingOutput:
        out = self.electra(input_ids, attention_mask, token_type_ids, position_ids, **kwargs)
        logits = self.discriminator_predictions(out.last_hidden_state)  # (B, T)
        return ElectraForPreTrainingOutput(logits, out.hidden_states, out.attentions)


class ElectraForMaskedLM(ElectraFlatHead, ElectraPreTrainedModel):
    """The generator: vocabulary logits through an LM head tied to the (E-wide) word embeddings."""

    tied_keys = {"generator_lm_head.weight": "electra.embeddings.word_embeddings.weight"}
    output_class = MaskedLMOutput

    def __init__(self, config: ElectraConfig):
        super().__init__(config)
        self.electra = ElectraModel(config)
        self.generator_predictions = ElectraGeneratorPredictions(config)
        self.generator_lm_head = nn.Linear(config.embedding_size, config.vocab_size)

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        **kwargs: Any,
    ) -> MaskedLMOutput:
        out = self.electra(input_ids, attention_mask, token_type_ids, position_ids, **kwargs)
        logits = self.generator_lm_head(self.generator_predictions(out.last_hidden_state))  # (B, T, V)
        return self.output_class(logits, out.hidden_states, out.attentions)

    def head_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        """(N, H) → (N, V) vocabulary logits."""
        return self.generator_lm_head(self.generator_predictions(hidden))


class ElectraForCausalLM(ElectraForMaskedLM):
    """Causal LM: the generator head; attention is causal when the config says ``is_decoder``."""

    output_class = CausalLMOutput


class ElectraForSequenceClassification(ElectraFlatHead, ElectraPreTrainedModel):
    def __init__(self, config: ElectraConfig):
        super().__init__(config)
        self.electra = ElectraModel(config)
        # No pooler: dense → gelu → out_proj on the first token (gelu, where BERT's pooler has tanh).
        self.classifier = FirstTokenClassificationHead(config, "gelu")

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        out = self.electra(input_ids, attention_mask, token_type_ids, position_ids, **kwargs)
        logits = self.classifier(out.last_hidden_state[:, 0])  # (B, num_labels)
        return SequenceClassifierOutput(logits, out.hidden_states, out.attentions)

    def head_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        """(N, H) → (B, num_labels) logits from each sequence's first token."""
        return self.classifier(hidden.index_select(0, segments.first))


class ElectraForTokenClassification(ElectraFlatHead, TokenClassificationHead, ElectraPreTrainedModel):
    def __init__(self, config: ElectraConfig):
        super().__init__(config)
        self.electra = ElectraModel(config)
        self.add_token_classifier(config, classifier_dropout(config))

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        **kwargs: Any,
    ) -> TokenClassifierOutput:
        return self.token_classifier_output(self.electra(input_ids, attention_mask, token_type_ids, position_ids, **kwargs))


class ElectraForQuestionAnswering(ElectraFlatHead, QuestionAnsweringHead, ElectraPreTrainedModel):
    def __init__(self, config: ElectraConfig):
        super().__init__(config)
        self.electra = ElectraModel(config)
        self.add_span_classifier(config)

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        **kwargs: Any,
    ) -> QuestionAnsweringModelOutput:
        return self.question_answering_output(self.electra(input_ids, attention_mask, token_type_ids, position_ids, **kwargs))


CONTRACT = ModelContract(
    model_type="electra",
    config_class=ElectraConfig,
    heads={
        registry.BASE: ElectraModel,
        registry.PRETRAINING: ElectraForPreTraining,
        registry.MASKED_LM: ElectraForMaskedLM,
        registry.WITH_LM_HEAD: ElectraForMaskedLM,
        registry.CAUSAL_LM: ElectraForCausalLM,
        registry.SEQUENCE_CLASSIFICATION: ElectraForSequenceClassification,
        registry.TOKEN_CLASSIFICATION: ElectraForTokenClassification,
        registry.QUESTION_ANSWERING: ElectraForQuestionAnswering,
    },
    name_patterns=("electra",),
    input_names=("input_ids", "attention_mask", "token_type_ids"),
    tokenizer="bert",
    tokenizer_class="ElectraTokenizer",
    rank=140,
)
