"""ALBERT: factorised embeddings and layers shared across depth, loading reference checkpoints by
their own key names.

Two things set it apart from BERT: tokens are embedded at ``embedding_size`` and projected to
``hidden_size`` once (``embedding_hidden_mapping_in``), and the encoder holds only
``num_hidden_groups`` groups of ``inner_group_num`` layers, which the ``num_hidden_layers`` steps
of depth reuse in order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Optional

import torch
from torch import nn

from ..configuration import PretrainedConfig
from ..modeling import (
    BaseModelOutputWithPooling,
    FusedQKV,
    MaskedLMOutput,
    ModelOutput,
    PreTrainedModel,
    QuestionAnsweringModelOutput,
    Segments,
    SequenceClassifierOutput,
    TokenClassifierOutput,
    activation,
    attention,
    embed_flat,
    varlen_attention,
)
from ..layers import (
    Embeddings,
    LayerOutputs,
    QuestionAnsweringHead,
    TokenClassificationHead,
    check_one_input,
    encode,
    run_layers,
    run_layers_flat,
)
from .. import registry
from ..contract import ModelContract


class AlbertConfig(PretrainedConfig):
    model_type = "albert"
    defaults = dict(
        vocab_size=30000,
        embedding_size=128,
        hidden_size=4096,
        num_hidden_layers=12,
        num_hidden_groups=1,
        num_attention_heads=64,
        intermediate_size=16384,
        inner_group_num=1,
        hidden_act="gelu_new",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=512,
        type_vocab_size=2,
        initializer_range=0.02,
        layer_norm_eps=1e-12,
        classifier_dropout_prob=0.1,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )


# ---------------------------------------------------------------------------------------------
# Body
# ---------------------------------------------------------------------------------------------
class AlbertAttention(FusedQKV, nn.Module):
    """Self-attention with its output projection and post-norm residual in one module, as the
    reference's checkpoint keys (``attention.query``, ``attention.dense``, ``attention.LayerNorm``)."""

    def __init__(self, config: AlbertConfig):
        super().__init__()
        if config.hidden_size % config.num_attention_heads:
            raise ValueError(f"hidden_size {config.hidden_size} is not a multiple of num_attention_heads {config.num_attention_heads}")
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout_p = config.attention_probs_dropout_prob
        self.output_dropout = nn.Dropout(config.hidden_dropout_prob)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)  # (B, nH, T, d)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, need_weights: bool):
        q, k, v = (self._heads(x) for x in self.qkv(hidden).chunk(3, dim=-1))
        context, probs = attention(q, k, v, mask, need_weights=need_weights,
                                   dropout_p=self.dropout_p if self.training else 0.0)
        batch, _, length, _ = context.shape
        context = context.transpose(1, 2).reshape(batch, length, -1)  # (B, T, H)
        return self.LayerNorm(hidden + self.output_dropout(self.dense(context))), probs

    def forward_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        context = varlen_attention(self.qkv(hidden), segments, self.num_heads)  # (N, H)
        return self.LayerNorm(hidden + self.dense(context))


class AlbertLayer(nn.Module):
    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.full_layer_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = AlbertAttention(config)
        self.ffn = nn.Linear(config.hidden_size, config.intermediate_size)
        self.ffn_output = nn.Linear(config.intermediate_size, config.hidden_size)
        self.act = activation(config.hidden_act)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, need_weights: bool):
        hidden, probs = self.attention(hidden, mask, need_weights)
        return self._feed_forward(hidden), probs

    def forward_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        return self._feed_forward(self.attention.forward_flat(hidden, segments))  # (N, H)

    def _feed_forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # The reference applies no dropout to the feed-forward output, so neither do we.
        return self.full_layer_layer_norm(self.ffn_output(self.act(self.ffn(hidden))) + hidden)


class AlbertLayerGroup(nn.Module):
    """``inner_group_num`` distinct layers run one after another; one group is one step of depth."""

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.albert_layers = nn.ModuleList(AlbertLayer(config) for _ in range(config.inner_group_num))


class AlbertTransformer(nn.Module):
    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.num_hidden_layers = config.num_hidden_layers
        self.num_hidden_groups = config.num_hidden_groups
        self.embedding_hidden_mapping_in = nn.Linear(config.embedding_size, config.hidden_size)
        self.albert_layer_groups = nn.ModuleList(AlbertLayerGroup(config) for _ in range(config.num_hidden_groups))

    def group_index(self, depth: int) -> int:
        """The group serving step ``depth``: consecutive steps share a group, in the reference's
        float arithmetic so uneven layer/group counts split exactly as it does."""
        return int(depth / (self.num_hidden_layers / self.num_hidden_groups))

    def schedule(self) -> Iterator[AlbertLayer]:
        """The layers in the order they run: each step of depth runs its group's inner layers.
        The reference records hidden states and attentions after every inner layer, so the
        padded outputs have num_hidden_layers * inner_group_num entries (plus the input state)."""
        for depth in range(self.num_hidden_layers):
            yield from self.albert_layer_groups[self.group_index(depth)].albert_layers

    def forward(self, embedded: torch.Tensor, mask: torch.Tensor, output_hidden_states: bool,
                output_attentions: bool) -> LayerOutputs:
        hidden = self.embedding_hidden_mapping_in(embedded)  # (B, T, E) → (B, T, H)
        return run_layers(self.schedule(), hidden, mask, output_hidden_states, output_attentions)

    def forward_flat(self, embedded: torch.Tensor, segments: Segments) -> torch.Tensor:
        hidden = self.embedding_hidden_mapping_in(embedded)  # (N, E) → (N, H)
        return run_layers_flat(self.schedule(), hidden, segments)


class AlbertPreTrainedModel(PreTrainedModel):
    config_class = AlbertConfig
    base_model_prefix = "albert"
    # The reference keeps a decoder bias tied to `predictions.bias`; ours is only `predictions.bias`.
    # The decoder's bias wins a clash (see apply_renames): equal to it when tied, and the one the
    # reference computes with when `tie_word_embeddings` is false; saving writes both names.
    checkpoint_renames = ((r"predictions\.decoder\.bias$", "predictions.bias"),)
    checkpoint_aliases = {"predictions.bias": "predictions.decoder.bias"}


class AlbertModel(AlbertPreTrainedModel):
    def __init__(self, config: AlbertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = Embeddings(config, config.embedding_size)  # (B, T, E): projected to H in the encoder
        self.encoder = AlbertTransformer(config)
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size) if add_pooling_layer else None

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
        embedded = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)  # (B, T, E)
        hidden, all_hidden, all_probs = encode(self.encoder, self.config, embedded, attention_mask,
                                               output_hidden_states, output_attentions)
        pooled = self.pool(hidden[:, 0]) if self.pooler is not None else None
        return BaseModelOutputWithPooling(hidden, pooled, all_hidden, all_probs)

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments,
                     token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Unpadded inference: (N,) token ids of ``segments``' sequences back to back → (N, H)
        last hidden states.  Linear layers and LayerNorms see only real tokens."""
        return self.encoder.forward_flat(embed_flat(self, input_ids, segments, token_type_ids), segments)

    def pool(self, first: torch.Tensor) -> torch.Tensor:
        """(B, H) first-token states → (B, H) pooled."""
        return torch.tanh(self.pooler(first))


class AlbertFlatHead:
    """A head on the flat layout: ``AlbertModel.forward_flat``'s inputs, then the head's ``head_flat``."""

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments,
                     token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Unpadded inference: (N,) token ids → per-sequence (B, ...) or per-token (N, ...) outputs."""
        return self.head_flat(self.albert.forward_flat(input_ids, segments, token_type_ids), segments)


# ---------------------------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------------------------
class AlbertMLMHead(nn.Module):
    """Hidden → embedding size → vocabulary through the (tied) word embeddings."""

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.LayerNorm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.dense = nn.Linear(config.hidden_size, config.embedding_size)
        self.decoder = nn.Linear(config.embedding_size, config.vocab_size, bias=False)
        self.act = activation(config.hidden_act)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.LayerNorm(self.act(self.dense(hidden)))) + self.bias  # (B, T, V)


class AlbertSOPHead(nn.Module):
    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.dropout = nn.Dropout(config.classifier_dropout_prob)
        # num_labels outputs, not a fixed 2: the reference sizes sentence-order logits this way.
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(pooled))  # (B, num_labels)


@dataclass
class AlbertForPreTrainingOutput(ModelOutput):
    prediction_logits: torch.Tensor
    sop_logits: torch.Tensor
    hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    attentions: Optional[tuple[torch.Tensor, ...]] = None


_DECODER_TIE = {"predictions.decoder.weight": "albert.embeddings.word_embeddings.weight"}


class AlbertForPreTraining(AlbertPreTrainedModel):
    tied_keys = _DECODER_TIE

    def __init__(self, config: AlbertConfig):
        super().__init__(config)
        self.albert = AlbertModel(config)
        self.predictions = AlbertMLMHead(config)
        self.sop_classifier = AlbertSOPHead(config)

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        **kwargs: Any,
    ) -> AlbertForPreTrainingOutput:
        out = self.albert(input_ids, attention_mask, token_type_ids, position_ids, **kwargs)
        return AlbertForPreTrainingOutput(
            self.predictions(out.last_hidden_state),
            self.sop_classifier(out.pooler_output),
            out.hidden_states,
            out.attentions,
        )


class AlbertForMaskedLM(AlbertFlatHead, AlbertPreTrainedModel):
    tied_keys = _DECODER_TIE

    def __init__(self, config: AlbertConfig):
        super().__init__(config)
        self.albert = AlbertModel(config, add_pooling_layer=False)
        self.predictions = AlbertMLMHead(config)

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        **kwargs: Any,
    ) -> MaskedLMOutput:
        out = self.albert(input_ids, attention_mask, token_type_ids, position_ids, **kwargs)
        return MaskedLMOutput(self.predictions(out.last_hidden_state), out.hidden_states, out.attentions)

    def head_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        """(N, H) → (N, V) vocabulary logits."""
        return self.predictions(hidden)


class AlbertForSequenceClassification(AlbertFlatHead, AlbertPreTrainedModel):
    def __init__(self, config: AlbertConfig):
        super().__init__(config)
        self.albert = AlbertModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        out = self.albert(input_ids, attention_mask, token_type_ids, position_ids, **kwargs)
        logits = self.classifier(self.dropout(out.pooler_output))  # (B, num_labels)
        return SequenceClassifierOutput(logits, out.hidden_states, out.attentions)

    def head_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        """(N, H) → (B, num_labels) logits from each sequence's pooled first token."""
        return self.classifier(self.dropout(self.albert.pool(hidden.index_select(0, segments.first))))


class AlbertForTokenClassification(AlbertFlatHead, TokenClassificationHead, AlbertPreTrainedModel):
    def __init__(self, config: AlbertConfig):
        super().__init__(config)
        self.albert = AlbertModel(config, add_pooling_layer=False)
        dropout = config.classifier_dropout_prob
        self.add_token_classifier(config, dropout if dropout is not None else config.hidden_dropout_prob)

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        **kwargs: Any,
    ) -> TokenClassifierOutput:
        return self.token_classifier_output(self.albert(input_ids, attention_mask, token_type_ids, position_ids, **kwargs))


class AlbertForQuestionAnswering(AlbertFlatHead, QuestionAnsweringHead, AlbertPreTrainedModel):
    def __init__(self, config: AlbertConfig):
        super().__init__(config)
        self.albert = AlbertModel(config, add_pooling_layer=False)
        self.add_span_classifier(config)

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        **kwargs: Any,
    ) -> QuestionAnsweringModelOutput:
        return self.question_answering_output(self.albert(input_ids, attention_mask, token_type_ids, position_ids, **kwargs))


CONTRACT = ModelContract(
    model_type="albert",
    config_class=AlbertConfig,
    heads={
        registry.BASE: AlbertModel,
        registry.PRETRAINING: AlbertForPreTraining,
        registry.MASKED_LM: AlbertForMaskedLM,
        registry.WITH_LM_HEAD: AlbertForMaskedLM,
        registry.SEQUENCE_CLASSIFICATION: AlbertForSequenceClassification,
        registry.TOKEN_CLASSIFICATION: AlbertForTokenClassification,
        registry.QUESTION_ANSWERING: AlbertForQuestionAnswering,
    },
    name_patterns=("albert",),
    input_names=("input_ids", "attention_mask", "token_type_ids"),
    tokenizer="albert",
    tokenizer_class="AlbertTokenizer",
    rank=30,
)
