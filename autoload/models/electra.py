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
    padding_mask,
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
class ElectraEmbeddings(nn.Module):
    """BERT's embeddings at width ``embedding_size`` (E), which may be smaller than H."""

    def __init__(self, config: ElectraConfig):
        super().__init__()
        if getattr(config, "position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"position_embedding_type={config.position_embedding_type!r} is not supported; only 'absolute'")
        self.word_embeddings = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.embedding_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.embedding_size)
        self.LayerNorm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        input_ids: Optional[torch.Tensor],
        token_type_ids: Optional[torch.Tensor],
        position_ids: Optional[torch.Tensor],
        inputs_embeds: Optional[torch.Tensor],
    ) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)  # (B, T, E)
        batch, length = inputs_embeds.shape[:2]
        if position_ids is None:
            position_ids = torch.arange(length, device=inputs_embeds.device)[None, :]
        if token_type_ids is None:
            token_type_ids = torch.zeros((batch, length), dtype=torch.long, device=inputs_embeds.device)
        embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids) + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(embeddings))  # (B, T, E)


class ElectraPreTrainedModel(PreTrainedModel):
    config_class = ElectraConfig
    base_model_prefix = "electra"


class ElectraModel(ElectraPreTrainedModel):
    def __init__(self, config: ElectraConfig):
        super().__init__(config)
        self.embeddings = ElectraEmbeddings(config)
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
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        hidden = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)  # (B, T, E)
        if hasattr(self, "embeddings_project"):
            hidden = self.embeddings_project(hidden)  # (B, T, H)
        mask = padding_mask(attention_mask, hidden.shape[:2], hidden.device)
        hidden, all_hidden, all_probs = self.encoder(
            hidden,
            mask,
            self.config.output_hidden_states if output_hidden_states is None else output_hidden_states,
            self.config.output_attentions if output_attentions is None else output_attentions,
        )
        return BaseModelOutput(hidden, all_hidden, all_probs)

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments,
                     token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Unpadded inference: (N,) token ids of ``segments``' sequences back to back → (N, H)."""
        hidden = embed_flat(self, input_ids, segments, token_type_ids)  # (N, E)
        if hasattr(self, "embeddings_project"):
            hidden = self.embeddings_project(hidden)  # (N, H)
        return self.encoder.forward_flat(hidden, segments)


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


class ElectraForMaskedLM(ElectraPreTrainedModel):
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


class ElectraForCausalLM(ElectraForMaskedLM):
    """Causal LM: the generator head; attention is causal when the config says ``is_decoder``."""

    output_class = CausalLMOutput


def _classifier_dropout(config: ElectraConfig) -> float:
    return config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob


class ElectraClassificationHead(nn.Module):
    """First token → dense → gelu → out_proj; the reference uses gelu here (BERT's pooler uses tanh)."""

    def __init__(self, config: ElectraConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = activation("gelu")
        self.dropout = nn.Dropout(_classifier_dropout(config))
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        first = self.dropout(hidden[:, 0])  # (B, H)
        return self.out_proj(self.dropout(self.activation(self.dense(first))))  # (B, num_labels)


class ElectraForSequenceClassification(ElectraPreTrainedModel):
    def __init__(self, config: ElectraConfig):
        super().__init__(config)
        self.electra = ElectraModel(config)
        self.classifier = ElectraClassificationHead(config)

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        out = self.electra(input_ids, attention_mask, token_type_ids, position_ids, **kwargs)
        return SequenceClassifierOutput(self.classifier(out.last_hidden_state), out.hidden_states, out.attentions)

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments,
                     token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Unpadded inference: (N,) token ids → (B, num_labels) logits."""
        hidden = self.electra.forward_flat(input_ids, segments, token_type_ids)  # (N, H)
        return self.classifier(hidden.index_select(0, segments.first)[:, None])  # head reads [:, 0]


class ElectraForTokenClassification(ElectraPreTrainedModel):
    def __init__(self, config: ElectraConfig):
        super().__init__(config)
        self.electra = ElectraModel(config)
        self.dropout = nn.Dropout(_classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        **kwargs: Any,
    ) -> TokenClassifierOutput:
        out = self.electra(input_ids, attention_mask, token_type_ids, position_ids, **kwargs)
        logits = self.classifier(self.dropout(out.last_hidden_state))  # (B, T, num_labels)
        return TokenClassifierOutput(logits, out.hidden_states, out.attentions)


class ElectraForQuestionAnswering(ElectraPreTrainedModel):
    def __init__(self, config: ElectraConfig):
        super().__init__(config)
        self.electra = ElectraModel(config)
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        **kwargs: Any,
    ) -> QuestionAnsweringModelOutput:
        out = self.electra(input_ids, attention_mask, token_type_ids, position_ids, **kwargs)
        start, end = self.qa_outputs(out.last_hidden_state).split(1, dim=-1)  # (B, T, 1) each
        return QuestionAnsweringModelOutput(start.squeeze(-1), end.squeeze(-1), out.hidden_states, out.attentions)


CONTRACT = ModelContract(
    model_type="electra",
    config_class=ElectraConfig,
    heads={
        registry.BASE: ElectraModel,
        registry.PRETRAINING: ElectraForPreTraining,
        registry.MASKED_LM: ElectraForMaskedLM,
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
