"""DistilBERT: config, encoder and heads, loading reference checkpoints by their own key names."""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..configuration import PretrainedConfig
from ..modeling import (
    BaseModelOutput,
    FusedQKV,
    MaskedLMOutput,
    PreTrainedModel,
    QuestionAnsweringModelOutput,
    Segments,
    SequenceClassifierOutput,
    TokenClassifierOutput,
    activation,
    attention,
    check_flat_inputs,
    varlen_attention,
)
from ..layers import LayerStack, QuestionAnsweringHead, TokenClassificationHead, check_one_input, encode
from .. import registry
from ..contract import ModelContract

# The reference hard-codes this epsilon for every DistilBERT LayerNorm; it is not a config field.
LAYER_NORM_EPS = 1e-12


class DistilBertConfig(PretrainedConfig):
    model_type = "distilbert"
    defaults = dict(
        vocab_size=30522,
        max_position_embeddings=512,
        sinusoidal_pos_embds=False,
        n_layers=6,
        n_heads=12,
        dim=768,
        hidden_dim=4 * 768,
        dropout=0.1,
        attention_dropout=0.1,
        activation="gelu",
        initializer_range=0.02,
        qa_dropout=0.1,
        seq_classif_dropout=0.2,
        pad_token_id=0,
    )
    attribute_map = {"hidden_size": "dim", "num_attention_heads": "n_heads", "num_hidden_layers": "n_layers"}


# ---------------------------------------------------------------------------------------------
# Body
# ---------------------------------------------------------------------------------------------
def sinusoidal_table(n_pos: int, dim: int) -> torch.Tensor:
    """(n_pos, dim) sin on even columns, cos on odd, built in float64 as the reference does."""
    positions = torch.arange(n_pos, dtype=torch.float64)[:, None]  # (P, 1)
    pair = torch.arange(dim, dtype=torch.float64) // 2  # column j shares its frequency with j ^ 1
    angles = positions / torch.pow(10000.0, 2 * pair / dim)  # (P, D)
    table = torch.empty(n_pos, dim, dtype=torch.float64)
    table[:, 0::2] = angles[:, 0::2].sin()
    table[:, 1::2] = angles[:, 1::2].cos()
    return table.float()


class SinusoidalPositionEmbedding(nn.Embedding):
    """Position embeddings fixed to ``sinusoidal_table``: not trained, yet stored in checkpoints
    under the same key as learned ones, so loading stays a plain state-dict load."""

    def __init__(self, n_pos: int, dim: int):
        super().__init__(n_pos, dim)
        self.weight.requires_grad_(False)


class DistilBertEmbeddings(nn.Module):
    def __init__(self, config: DistilBertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.dim, padding_idx=config.pad_token_id)
        position_class = SinusoidalPositionEmbedding if config.sinusoidal_pos_embds else nn.Embedding
        self.position_embeddings = position_class(config.max_position_embeddings, config.dim)
        self.LayerNorm = nn.LayerNorm(config.dim, eps=LAYER_NORM_EPS)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        input_ids: Optional[torch.Tensor],
        position_ids: Optional[torch.Tensor],
        inputs_embeds: Optional[torch.Tensor],
    ) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)  # (B, T, D)
        if position_ids is None:
            position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device)[None, :]  # (1, T)
        return self.dropout(self.LayerNorm(inputs_embeds + self.position_embeddings(position_ids)))


class DistilBertSelfAttention(FusedQKV, nn.Module):
    qkv_names = ("q_lin", "k_lin", "v_lin")

    def __init__(self, config: DistilBertConfig):
        super().__init__()
        if config.dim % config.n_heads:
            raise ValueError(f"dim {config.dim} is not a multiple of n_heads {config.n_heads}")
        self.num_heads = config.n_heads
        self.head_dim = config.dim // config.n_heads
        self.q_lin = nn.Linear(config.dim, config.dim)
        self.k_lin = nn.Linear(config.dim, config.dim)
        self.v_lin = nn.Linear(config.dim, config.dim)
        self.out_lin = nn.Linear(config.dim, config.dim)
        self.dropout_p = config.attention_dropout

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)  # (B, nH, T, d)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, need_weights: bool):
        q, k, v = (self._heads(x) for x in self.qkv(hidden).chunk(3, dim=-1))
        context, probs = attention(q, k, v, mask, need_weights=need_weights,
                                   dropout_p=self.dropout_p if self.training else 0.0)
        batch, _, length, _ = context.shape
        return self.out_lin(context.transpose(1, 2).reshape(batch, length, -1)), probs  # (B, T, D)

    def forward_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        return self.out_lin(varlen_attention(self.qkv(hidden), segments, self.num_heads))  # (N, D)


class DistilBertFFN(nn.Module):
    def __init__(self, config: DistilBertConfig):
        super().__init__()
        self.lin1 = nn.Linear(config.dim, config.hidden_dim)
        self.lin2 = nn.Linear(config.hidden_dim, config.dim)
        self.act = activation(config.activation)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.lin2(self.act(self.lin1(hidden))))  # (B, T, D)


class DistilBertBlock(nn.Module):
    """Post-norm block: LayerNorm after each residual sum, as in BERT."""

    def __init__(self, config: DistilBertConfig):
        super().__init__()
        self.attention = DistilBertSelfAttention(config)
        self.sa_layer_norm = nn.LayerNorm(config.dim, eps=LAYER_NORM_EPS)
        self.ffn = DistilBertFFN(config)
        self.output_layer_norm = nn.LayerNorm(config.dim, eps=LAYER_NORM_EPS)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, need_weights: bool):
        attended, probs = self.attention(hidden, mask, need_weights)
        hidden = self.sa_layer_norm(attended + hidden)
        return self.output_layer_norm(self.ffn(hidden) + hidden), probs

    def forward_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        hidden = self.sa_layer_norm(self.attention.forward_flat(hidden, segments) + hidden)
        return self.output_layer_norm(self.ffn(hidden) + hidden)  # (N, D)


class DistilBertTransformer(LayerStack):
    def __init__(self, config: DistilBertConfig):
        super().__init__(DistilBertBlock(config) for _ in range(config.n_layers))


class DistilBertPreTrainedModel(PreTrainedModel):
    config_class = DistilBertConfig
    base_model_prefix = "distilbert"

    def init_weight(self, module: nn.Module, name: str, param: torch.Tensor) -> None:
        if isinstance(module, SinusoidalPositionEmbedding):
            with torch.no_grad():
                param.copy_(sinusoidal_table(*param.shape))
            return
        super().init_weight(module, name, param)


class DistilBertModel(DistilBertPreTrainedModel):
    def __init__(self, config: DistilBertConfig):
        super().__init__(config)
        self.embeddings = DistilBertEmbeddings(config)
        self.transformer = DistilBertTransformer(config)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        *,
        # Keyword-only: the reference's third positional argument is inputs_embeds, not position_ids.
        position_ids: Optional[torch.Tensor] = None,
        inputs_embeds: Optional[torch.Tensor] = None,
        output_hidden_states: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
    ) -> BaseModelOutput:
        check_one_input(input_ids, inputs_embeds)
        hidden = self.embeddings(input_ids, position_ids, inputs_embeds)  # (B, T, D)
        hidden, all_hidden, all_probs = encode(self.transformer, self.config, hidden, attention_mask,
                                               output_hidden_states, output_attentions)
        return BaseModelOutput(hidden, all_hidden, all_probs)

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments) -> torch.Tensor:
        """Unpadded inference: (N,) token ids of ``segments``' sequences back to back → (N, D)."""
        check_flat_inputs(self, input_ids, segments)
        hidden = self.embeddings(input_ids[None], segments.positions[None], None)[0]  # (N, D)
        return self.transformer.forward_flat(hidden, segments)


class DistilBertFlatHead:
    """A head on the flat layout: ``DistilBertModel.forward_flat``'s inputs (no token types), then
    the head's ``head_flat``."""

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments) -> torch.Tensor:
        """Unpadded inference: (N,) token ids → per-sequence (B, ...) or per-token (N, ...) outputs."""
        return self.head_flat(self.distilbert.forward_flat(input_ids, segments), segments)


# ---------------------------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------------------------
class DistilBertForMaskedLM(DistilBertFlatHead, DistilBertPreTrainedModel):
    tied_keys = {"vocab_projector.weight": "distilbert.embeddings.word_embeddings.weight"}

    def __init__(self, config: DistilBertConfig):
        super().__init__(config)
        self.distilbert = DistilBertModel(config)
        self.vocab_transform = nn.Linear(config.dim, config.dim)
        self.act = activation(config.activation)
        self.vocab_layer_norm = nn.LayerNorm(config.dim, eps=LAYER_NORM_EPS)
        self.vocab_projector = nn.Linear(config.dim, config.vocab_size)

    def forward(self, input_ids: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
                **kwargs: Any) -> MaskedLMOutput:
        out = self.distilbert(input_ids, attention_mask, **kwargs)
        return MaskedLMOutput(self.vocab_logits(out.last_hidden_state), out.hidden_states, out.attentions)

    def vocab_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., D) → (..., V), padded or flat."""
        return self.vocab_projector(self.vocab_layer_norm(self.act(self.vocab_transform(hidden))))

    def head_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        """(N, D) → (N, V) vocabulary logits."""
        return self.vocab_logits(hidden)


class DistilBertForSequenceClassification(DistilBertFlatHead, DistilBertPreTrainedModel):
    def __init__(self, config: DistilBertConfig):
        super().__init__(config)
        self.distilbert = DistilBertModel(config)
        self.pre_classifier = nn.Linear(config.dim, config.dim)
        self.classifier = nn.Linear(config.dim, config.num_labels)
        self.dropout = nn.Dropout(config.seq_classif_dropout)

    def forward(self, input_ids: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
                **kwargs: Any) -> SequenceClassifierOutput:
        out = self.distilbert(input_ids, attention_mask, **kwargs)
        # No pooler in DistilBERT: the head pools the first token itself.
        logits = self._classify_first(out.last_hidden_state[:, 0])
        return SequenceClassifierOutput(logits, out.hidden_states, out.attentions)

    def head_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        """(N, D) → (B, num_labels) logits from each sequence's first token."""
        return self._classify_first(hidden.index_select(0, segments.first))

    def _classify_first(self, first: torch.Tensor) -> torch.Tensor:
        """(B, D) first-token states → (B, num_labels) logits."""
        return self.classifier(self.dropout(F.relu(self.pre_classifier(first))))


class DistilBertForTokenClassification(DistilBertFlatHead, TokenClassificationHead, DistilBertPreTrainedModel):
    def __init__(self, config: DistilBertConfig):
        super().__init__(config)
        self.distilbert = DistilBertModel(config)
        self.add_token_classifier(config, config.dropout)

    def forward(self, input_ids: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
                **kwargs: Any) -> TokenClassifierOutput:
        return self.token_classifier_output(self.distilbert(input_ids, attention_mask, **kwargs))


class DistilBertForQuestionAnswering(DistilBertFlatHead, QuestionAnsweringHead, DistilBertPreTrainedModel):
    def __init__(self, config: DistilBertConfig):
        super().__init__(config)
        self.distilbert = DistilBertModel(config)
        self.add_span_classifier(config, config.qa_dropout)

    def forward(self, input_ids: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
                **kwargs: Any) -> QuestionAnsweringModelOutput:
        return self.question_answering_output(self.distilbert(input_ids, attention_mask, **kwargs))


CONTRACT = ModelContract(
    model_type="distilbert",
    config_class=DistilBertConfig,
    # No causal LM: the reference has none for DistilBERT; its pre-training class is the masked LM.
    heads={
        registry.BASE: DistilBertModel,
        registry.PRETRAINING: DistilBertForMaskedLM,
        registry.MASKED_LM: DistilBertForMaskedLM,
        registry.WITH_LM_HEAD: DistilBertForMaskedLM,
        registry.SEQUENCE_CLASSIFICATION: DistilBertForSequenceClassification,
        registry.TOKEN_CLASSIFICATION: DistilBertForTokenClassification,
        registry.QUESTION_ANSWERING: DistilBertForQuestionAnswering,
    },
    name_patterns=("distilbert",),
    # No token types: DistilBERT's embeddings have no token-type table.
    input_names=("input_ids", "attention_mask"),
    tokenizer="bert",
    tokenizer_class="DistilBertTokenizer",
    rank=20,
)
