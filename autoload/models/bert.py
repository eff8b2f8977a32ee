"""BERT: config, encoder and heads, loading reference checkpoints by their own key names."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from ..configuration import PretrainedConfig
from ..modeling import (
    BaseModelOutputWithPooling,
    CausalLMOutput,
    MaskedLMOutput,
    FusedQKV,
    ModelOutput,
    PreTrainedModel,
    Segments,
    SequenceClassifierOutput,
    activation,
    attention,
    embed_flat,
    varlen_attention,
)
from ..layers import (
    Embeddings,
    LayerStack,
    QuestionAnsweringHead,
    TokenClassificationHead,
    check_one_input,
    classifier_dropout,
    encode,
)
from .. import registry
from ..contract import ModelContract


class BertConfig(PretrainedConfig):
    model_type = "bert"
    defaults = dict(
        vocab_size=30522,
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
        pad_token_id=0,
        position_embedding_type="absolute",
        use_cache=True,
    )


# ---------------------------------------------------------------------------------------------
# Body
# ---------------------------------------------------------------------------------------------
class BertSelfAttention(FusedQKV, nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        if config.hidden_size % config.num_attention_heads:
            raise ValueError(f"hidden_size {config.hidden_size} is not a multiple of num_attention_heads {config.num_attention_heads}")
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob
        self.causal = bool(config.is_decoder)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)  # (B, nH, T, d)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, need_weights: bool):
        q, k, v = (self._heads(x) for x in self.qkv(hidden).chunk(3, dim=-1))
        context, probs = attention(q, k, v, mask, causal=self.causal, need_weights=need_weights,
                                   dropout_p=self.dropout_p if self.training else 0.0)
        batch, _, length, _ = context.shape
        return context.transpose(1, 2).reshape(batch, length, -1), probs  # (B, T, H)

    def forward_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        return varlen_attention(self.qkv(hidden), segments, self.num_heads, causal=self.causal)  # (N, H)


class BertSelfOutput(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, need_weights: bool):
        context, probs = self.self(hidden, mask, need_weights)
        return self.output(context, hidden), probs

    def forward_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        return self.output(self.self.forward_flat(hidden, segments), hidden)  # (N, H)


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = activation(config.hidden_act)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(hidden))


class BertOutput(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        if config.add_cross_attention:
            raise ValueError("add_cross_attention (encoder-decoder BERT) is not supported")
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, need_weights: bool):
        hidden, probs = self.attention(hidden, mask, need_weights)
        return self.output(self.intermediate(hidden), hidden), probs

    def forward_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        hidden = self.attention.forward_flat(hidden, segments)
        return self.output(self.intermediate(hidden), hidden)  # (N, H)


class BertEncoder(LayerStack):
    def __init__(self, config: BertConfig):
        super().__init__(BertLayer(config) for _ in range(config.num_hidden_layers))


class BertPooler(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.pool_first(hidden[:, 0])

    def pool_first(self, first: torch.Tensor) -> torch.Tensor:
        """(B, H) first-token states → (B, H) pooled."""
        return torch.tanh(self.dense(first))


class BertPreTrainedModel(PreTrainedModel):
    config_class = BertConfig
    base_model_prefix = "bert"
    # Old checkpoints keep the LM bias on the decoder; ours lives on the prediction head.
    checkpoint_renames = ((r"predictions\.decoder\.bias$", "predictions.bias"),)
    # ...and the reference reads it from the decoder when the embeddings are untied.
    checkpoint_aliases = {"cls.predictions.bias": "cls.predictions.decoder.bias"}


class BertModel(BertPreTrainedModel):
    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = Embeddings(config, config.hidden_size)
        self.encoder = BertEncoder(config)
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

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments,
                     token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Unpadded inference: (N,) token ids of ``segments``' sequences back to back → (N, H)
        last hidden states.  Linear layers and LayerNorms see only real tokens."""
        return self.encoder.forward_flat(embed_flat(self, input_ids, segments, token_type_ids), segments)


# ---------------------------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------------------------
class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = activation(config.hidden_act)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(hidden)))


class BertLMPredictionHead(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(hidden)) + self.bias  # (B, T, V)


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.predictions(hidden)


class BertPreTrainingHeads(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


@dataclass
class BertForPreTrainingOutput(ModelOutput):
    prediction_logits: torch.Tensor
    seq_relationship_logits: torch.Tensor
    hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    attentions: Optional[tuple[torch.Tensor, ...]] = None


_DECODER_TIE = {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight"}


class BertFlatHead:
    """A head on the flat layout: ``BertModel.forward_flat``'s inputs, then the head's ``head_flat``."""

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments,
                     token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Unpadded inference: (N,) token ids → per-sequence (B, ...) or per-token (N, ...) outputs."""
        return self.head_flat(self.bert.forward_flat(input_ids, segments, token_type_ids), segments)


class BertForPreTraining(BertPreTrainedModel):
    tied_keys = _DECODER_TIE

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config)
        self.cls = BertPreTrainingHeads(config)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, **kwargs):
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids, **kwargs)
        return BertForPreTrainingOutput(
            self.cls.predictions(out.last_hidden_state),
            self.cls.seq_relationship(out.pooler_output),
            out.hidden_states,
            out.attentions,
        )


class BertForMaskedLM(BertFlatHead, BertPreTrainedModel):
    tied_keys = _DECODER_TIE
    output_class = MaskedLMOutput

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, **kwargs):
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids, **kwargs)
        return self.output_class(self.cls(out.last_hidden_state), out.hidden_states, out.attentions)

    def head_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        """(N, H) → (N, V) vocabulary logits."""
        return self.cls(hidden)


class BertLMHeadModel(BertForMaskedLM):
    """Causal LM: the MLM head; attention is causal when the config says ``is_decoder``."""

    output_class = CausalLMOutput


class BertForSequenceClassification(BertFlatHead, BertPreTrainedModel):
    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config)
        self.dropout = nn.Dropout(classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, **kwargs):
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids, **kwargs)
        logits = self.classifier(self.dropout(out.pooler_output))  # (B, num_labels)
        return SequenceClassifierOutput(logits, out.hidden_states, out.attentions)

    def head_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        """(N, H) → (B, num_labels) logits from each sequence's pooled first token."""
        return self.classifier(self.dropout(self.bert.pooler.pool_first(hidden.index_select(0, segments.first))))


class BertForTokenClassification(BertFlatHead, TokenClassificationHead, BertPreTrainedModel):
    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.add_token_classifier(config, classifier_dropout(config))

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, **kwargs):
        return self.token_classifier_output(self.bert(input_ids, attention_mask, token_type_ids, position_ids, **kwargs))


class BertForQuestionAnswering(BertFlatHead, QuestionAnsweringHead, BertPreTrainedModel):
    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.add_span_classifier(config)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, **kwargs):
        return self.question_answering_output(self.bert(input_ids, attention_mask, token_type_ids, position_ids, **kwargs))


CONTRACT = ModelContract(
    model_type="bert",
    config_class=BertConfig,
    heads={
        registry.BASE: BertModel,
        registry.PRETRAINING: BertForPreTraining,
        registry.MASKED_LM: BertForMaskedLM,
        registry.WITH_LM_HEAD: BertForMaskedLM,
        registry.CAUSAL_LM: BertLMHeadModel,
        registry.SEQUENCE_CLASSIFICATION: BertForSequenceClassification,
        registry.TOKEN_CLASSIFICATION: BertForTokenClassification,
        registry.QUESTION_ANSWERING: BertForQuestionAnswering,
    },
    name_patterns=("bert",),
    input_names=("input_ids", "attention_mask", "token_type_ids"),
    tokenizer="bert",
    tokenizer_class="BertTokenizer",
    rank=70,
)
