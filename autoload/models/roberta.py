"""RoBERTa: config, encoder and heads, loading reference checkpoints by their own key names.

The encoder layers are BERT's (imported from ``.bert``); what makes RoBERTa differs here:
position ids count real tokens from ``pad_token_id + 1`` (fairseq's numbering), the LM head
is ``dense → gelu → layer_norm → decoder`` with a decoder bias tied to ``lm_head.bias``, and
sequence classification runs a small MLP on the ``<s>`` token instead of a pooler.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..configuration import PretrainedConfig
from ..modeling import (
    BaseModelOutputWithPooling,
    CausalLMOutput,
    MaskedLMOutput,
    PreTrainedModel,
    Segments,
    SequenceClassifierOutput,
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
from ..contract import ModelContract, positions_after_padding
from .bert import BertEncoder, BertPooler


class RobertaConfig(PretrainedConfig):
    model_type = "roberta"
    defaults = dict(
        vocab_size=50265,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=512,
        type_vocab_size=2,
        initializer_range=0.02,
        layer_norm_eps=1e-12,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        position_embedding_type="absolute",
        use_cache=True,
    )


# ---------------------------------------------------------------------------------------------
# Body
# ---------------------------------------------------------------------------------------------
def position_ids_from_input_ids(input_ids: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """Real tokens are numbered padding_idx+1, padding_idx+2, ...; padding keeps padding_idx.

    Counting only real tokens (fairseq's ``make_positions``) keeps a row's positions the same
    however much padding it carries; padding gets the embedding row reserved for it.
    """
    real = input_ids.ne(padding_idx).long()  # (B, T)
    return real.cumsum(dim=1) * real + padding_idx


def position_ids_from_inputs_embeds(inputs_embeds: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """Embeddings do not say which tokens are padding, so every position counts."""
    batch, length = inputs_embeds.shape[:2]
    positions = torch.arange(padding_idx + 1, length + padding_idx + 1, device=inputs_embeds.device)
    return positions[None, :].expand(batch, length)  # (B, T)


class RobertaEmbeddings(Embeddings):
    """BERT's embeddings with fairseq's position numbering (the position row of padding is reserved)."""

    def __init__(self, config: RobertaConfig):
        super().__init__(config, config.hidden_size, position_padding_idx=config.pad_token_id)
        self.padding_idx = config.pad_token_id

    def default_positions(self, input_ids: Optional[torch.Tensor], inputs_embeds: Optional[torch.Tensor]) -> torch.Tensor:
        if input_ids is not None:
            return position_ids_from_input_ids(input_ids, self.padding_idx)
        return position_ids_from_inputs_embeds(inputs_embeds, self.padding_idx)


class RobertaPreTrainedModel(PreTrainedModel):
    config_class = RobertaConfig
    base_model_prefix = "roberta"


class RobertaModel(RobertaPreTrainedModel):
    def __init__(self, config: RobertaConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = RobertaEmbeddings(config)
        self.encoder = BertEncoder(config)  # identical layers (and checkpoint keys) to BERT's
        self.pooler = BertPooler(config) if add_pooling_layer else None

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
    ) -> BaseModelOutputWithPooling:
        check_one_input(input_ids, inputs_embeds)
        hidden = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)  # (B, T, H)
        hidden, all_hidden, all_probs = encode(self.encoder, self.config, hidden, attention_mask,
                                               output_hidden_states, output_attentions)
        pooled = self.pooler(hidden) if self.pooler is not None else None
        return BaseModelOutputWithPooling(hidden, pooled, all_hidden, all_probs)

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments) -> torch.Tensor:
        """Unpadded inference: (N,) token ids of ``segments``' sequences back to back → (N, H).

        Every flat token is real, so positions count from ``pad_token_id + 1`` as in the padded
        path (which would number a pad id inside a sequence as padding; real inputs have none).
        No token types: RoBERTa declares none as inputs (released checkpoints have one type).
        """
        positions = segments.positions + self.embeddings.padding_idx + 1  # (N,)
        hidden = embed_flat(self, input_ids, segments, positions=positions)  # (N, H)
        return self.encoder.forward_flat(hidden, segments)


class RobertaFlatHead:
    """A head on the flat layout: ``RobertaModel.forward_flat``'s inputs, then the head's ``head_flat``."""

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments) -> torch.Tensor:
        """Unpadded inference: (N,) token ids → per-sequence (B, ...) or per-token (N, ...) outputs."""
        return self.head_flat(self.roberta.forward_flat(input_ids, segments), segments)


# ---------------------------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------------------------
class RobertaLMHead(nn.Module):
    def __init__(self, config: RobertaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        # Tied to decoder.bias (see ``tied_keys``); with untied embeddings the reference keeps it
        # as a separate, unused checkpoint key, so it stays here for strict loading.
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # Exact gelu whatever ``hidden_act`` says: the reference hard-codes it in this head.
        return self.decoder(self.layer_norm(F.gelu(self.dense(hidden))))  # (B, T, V)


_LM_HEAD_TIES = {
    "lm_head.decoder.weight": "roberta.embeddings.word_embeddings.weight",
    "lm_head.decoder.bias": "lm_head.bias",
}


class RobertaForMaskedLM(RobertaFlatHead, RobertaPreTrainedModel):
    tied_keys = _LM_HEAD_TIES
    output_class = MaskedLMOutput

    def __init__(self, config: RobertaConfig):
        super().__init__(config)
        self.roberta = RobertaModel(config, add_pooling_layer=False)
        self.lm_head = RobertaLMHead(config)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, **kwargs):
        out = self.roberta(input_ids, attention_mask, token_type_ids, position_ids, **kwargs)
        return self.output_class(self.lm_head(out.last_hidden_state), out.hidden_states, out.attentions)

    def head_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        """(N, H) → (N, V) vocabulary logits."""
        return self.lm_head(hidden)


class RobertaForCausalLM(RobertaForMaskedLM):
    """Causal LM: the MLM head; attention is causal when the config says ``is_decoder``."""

    output_class = CausalLMOutput


class RobertaForSequenceClassification(RobertaFlatHead, RobertaPreTrainedModel):
    def __init__(self, config: RobertaConfig):
        super().__init__(config)
        self.roberta = RobertaModel(config, add_pooling_layer=False)
        # No pooler: dense → tanh → out_proj on the <s> token stands in for BERT's.
        self.classifier = FirstTokenClassificationHead(config, "tanh")

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, **kwargs):
        out = self.roberta(input_ids, attention_mask, token_type_ids, position_ids, **kwargs)
        logits = self.classifier(out.last_hidden_state[:, 0])  # (B, num_labels)
        return SequenceClassifierOutput(logits, out.hidden_states, out.attentions)

    def head_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        """(N, H) → (B, num_labels) logits from each sequence's <s> token."""
        return self.classifier(hidden.index_select(0, segments.first))


class RobertaForTokenClassification(RobertaFlatHead, TokenClassificationHead, RobertaPreTrainedModel):
    def __init__(self, config: RobertaConfig):
        super().__init__(config)
        self.roberta = RobertaModel(config, add_pooling_layer=False)
        self.add_token_classifier(config, classifier_dropout(config))

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, **kwargs):
        return self.token_classifier_output(self.roberta(input_ids, attention_mask, token_type_ids, position_ids, **kwargs))


class RobertaForQuestionAnswering(RobertaFlatHead, QuestionAnsweringHead, RobertaPreTrainedModel):
    def __init__(self, config: RobertaConfig):
        super().__init__(config)
        self.roberta = RobertaModel(config, add_pooling_layer=False)
        self.add_span_classifier(config)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, **kwargs):
        return self.question_answering_output(self.roberta(input_ids, attention_mask, token_type_ids, position_ids, **kwargs))


CONTRACT = ModelContract(
    model_type="roberta",
    config_class=RobertaConfig,
    heads={
        registry.BASE: RobertaModel,
        # The reference pre-trains RoBERTa with masked LM only (no next-sentence head).
        registry.PRETRAINING: RobertaForMaskedLM,
        registry.MASKED_LM: RobertaForMaskedLM,
        registry.WITH_LM_HEAD: RobertaForMaskedLM,
        registry.CAUSAL_LM: RobertaForCausalLM,
        registry.SEQUENCE_CLASSIFICATION: RobertaForSequenceClassification,
        registry.TOKEN_CLASSIFICATION: RobertaForTokenClassification,
        registry.QUESTION_ANSWERING: RobertaForQuestionAnswering,
    },
    name_patterns=("roberta",),
    # Token types are not inputs: one-row type table, and the reference tokenizer returns none.
    input_names=("input_ids", "attention_mask"),
    tokenizer="roberta",
    tokenizer_class="RobertaTokenizer",
    rank=60,
    max_length_rule=positions_after_padding,
)
