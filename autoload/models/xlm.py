"""XLM: Facebook's cross-lingual language model, loading reference checkpoints by their own key names.

What sets it apart from BERT: the body keeps its blocks as parallel lists (``attentions.<i>``,
``layer_norm1.<i>``, ``ffns.<i>``, ``layer_norm2.<i>``), tokens may carry a language
(``langs``, embedded when ``n_langs > 1`` and ``use_lang_emb``), token types are embedded with
the *word* table, positions are learned or sinusoidal, attention is bidirectional or causal,
and padded positions are zeroed after the embeddings and after every block.  Heads summarise
a sequence with the configurable ``SequenceSummary`` (first / last / mean / cls_index).

FlauBERT (``flaubert.py``) is this body with pre-norm blocks and LayerDrop; it subclasses these
classes, so each head exists once.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..configuration import PretrainedConfig
from ..modeling import (
    BaseModelOutput,
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
    check_flat_inputs,
    varlen_attention,
)
from ..layers import QuestionAnsweringHead, TokenClassificationHead, check_one_input
from .. import registry
from ..contract import ModelContract
from .distilbert import sinusoidal_table  # the same table (float64, sin even / cos odd columns) as the reference's

logger = logging.getLogger(__name__)


class XLMConfig(PretrainedConfig):
    model_type = "xlm"
    defaults = dict(
        vocab_size=30145,
        emb_dim=2048,
        n_layers=12,
        n_heads=16,
        dropout=0.1,
        attention_dropout=0.1,
        gelu_activation=True,
        sinusoidal_embeddings=False,
        causal=False,
        asm=False,
        n_langs=1,
        use_lang_emb=True,
        max_position_embeddings=512,
        embed_init_std=2048 ** -0.5,
        layer_norm_eps=1e-12,
        init_std=0.02,
        unk_index=3,
        mask_index=5,
        is_encoder=True,
        summary_type="first",
        summary_use_proj=True,
        summary_activation=None,
        summary_proj_to_labels=True,
        summary_first_dropout=0.1,
        start_n_top=5,
        end_n_top=5,
        mask_token_id=0,
        lang_id=0,
        pad_token_id=2,
        bos_token_id=0,
        eos_token_id=1,
        tie_word_embeddings=True,
    )
    attribute_map = {
        "hidden_size": "emb_dim",
        "num_attention_heads": "n_heads",
        "num_hidden_layers": "n_layers",
        "n_words": "vocab_size",
        "bos_index": "bos_token_id",
        "eos_index": "eos_token_id",
        "pad_index": "pad_token_id",
    }


def check_supported(config: XLMConfig) -> None:
    """Refuse, by name, the settings the reference offers that inference here does not."""
    if config.asm:
        raise ValueError(f"{config.model_type}: asm=True (adaptive softmax prediction layer) is not supported; "
                         "only the linear prediction layer (asm=False) is")
    if not config.is_encoder:
        raise ValueError(f"{config.model_type}: is_encoder=False is not supported: the reference too can only use "
                         "XLM as an encoder")
    if config.emb_dim % config.n_heads:
        raise ValueError(f"emb_dim {config.emb_dim} is not a multiple of n_heads {config.n_heads}")


# ---------------------------------------------------------------------------------------------
# Body
# ---------------------------------------------------------------------------------------------
class MultiHeadAttention(FusedQKV, nn.Module):
    qkv_names = ("q_lin", "k_lin", "v_lin")

    def __init__(self, config: XLMConfig):
        super().__init__()
        dim = config.emb_dim
        self.num_heads = config.n_heads
        self.head_dim = dim // config.n_heads
        self.causal = config.causal
        self.q_lin = nn.Linear(dim, dim)
        self.k_lin = nn.Linear(dim, dim)
        self.v_lin = nn.Linear(dim, dim)
        self.out_lin = nn.Linear(dim, dim)
        self.dropout_p = config.attention_dropout

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)  # (B, nH, T, d)

    def forward(self, hidden: torch.Tensor, mask: Optional[torch.Tensor], need_weights: bool):
        """``mask``: (B, 1, 1, T) keys to attend, or None for a causal model: the reference's
        causal mask is the triangle alone (padded keys come after a right-padded row's tokens)."""
        q, k, v = (self._heads(x) for x in self.qkv(hidden).chunk(3, dim=-1))
        context, probs = attention(q, k, v, mask, causal=self.causal, need_weights=need_weights,
                                   dropout_p=self.dropout_p if self.training else 0.0)
        batch, _, length, _ = context.shape
        return self.out_lin(context.transpose(1, 2).reshape(batch, length, -1)), probs  # (B, T, D)

    def forward_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        return self.out_lin(varlen_attention(self.qkv(hidden), segments, self.num_heads, causal=self.causal))  # (N, D)


class TransformerFFN(nn.Module):
    def __init__(self, config: XLMConfig):
        super().__init__()
        self.lin1 = nn.Linear(config.emb_dim, 4 * config.emb_dim)
        self.lin2 = nn.Linear(4 * config.emb_dim, config.emb_dim)
        self.act = activation("gelu" if config.gelu_activation else "relu")
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.lin2(self.act(self.lin1(hidden))))


class XLMPreTrainedModel(PreTrainedModel):
    config_class = XLMConfig
    base_model_prefix = "transformer"

    def init_weight(self, module: nn.Module, name: str, param: torch.Tensor) -> None:
        """The reference's: embeddings N(0, embed_init_std) with a zero padding row, linear
        weights N(0, init_std), a sinusoidal position table when asked for."""
        with torch.no_grad():
            if isinstance(module, nn.Embedding):
                if module is getattr(getattr(self, "transformer", self), "position_embeddings", None) \
                        and self.config.sinusoidal_embeddings:
                    param.copy_(sinusoidal_table(*param.shape))
                    return
                param.normal_(0.0, self.config.embed_init_std)
                if module.padding_idx is not None:
                    param[module.padding_idx].zero_()
                return
            if isinstance(module, nn.Linear) and name == "weight":
                param.normal_(0.0, self.config.init_std)
                return
        super().init_weight(module, name, param)


class XLMModel(XLMPreTrainedModel):
    def __init__(self, config: XLMConfig):
        super().__init__(config)
        check_supported(config)
        dim = config.emb_dim
        self.causal = config.causal
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, dim)
        if config.n_langs > 1 and config.use_lang_emb:
            self.lang_embeddings = nn.Embedding(config.n_langs, dim)
        self.embeddings = nn.Embedding(config.vocab_size, dim, padding_idx=config.pad_token_id)
        self.layer_norm_emb = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)
        self.attentions = nn.ModuleList(MultiHeadAttention(config) for _ in range(config.n_layers))
        self.layer_norm1 = nn.ModuleList(nn.LayerNorm(dim, eps=config.layer_norm_eps) for _ in range(config.n_layers))
        self.ffns = nn.ModuleList(TransformerFFN(config) for _ in range(config.n_layers))
        self.layer_norm2 = nn.ModuleList(nn.LayerNorm(dim, eps=config.layer_norm_eps) for _ in range(config.n_layers))

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    @property
    def uses_langs(self) -> bool:
        return hasattr(self, "lang_embeddings")

    def embed(self, input_ids: Optional[torch.Tensor], positions: torch.Tensor, langs: Optional[torch.Tensor],
              token_type_ids: Optional[torch.Tensor], inputs_embeds: Optional[torch.Tensor]) -> torch.Tensor:
        """Words + positions (+ languages) (+ token types, looked up in the word table as the
        reference does), LayerNorm, dropout: (B, T, D), or (N, D) for a flat batch."""
        if inputs_embeds is None:
            inputs_embeds = self.embeddings(input_ids)
        tensor = inputs_embeds + self.position_embeddings(positions).expand_as(inputs_embeds)
        if langs is not None and self.uses_langs:
            tensor = tensor + self.lang_embeddings(langs)
        if token_type_ids is not None:
            tensor = tensor + self.embeddings(token_type_ids)
        return self.dropout(self.layer_norm_emb(tensor))

    def block(self, i: int, hidden: torch.Tensor, mask: Optional[torch.Tensor], need_weights: bool):
        """Block ``i`` on padded (B, T, D) states, post-norm → (states, attention probabilities)."""
        attended, probs = self.attentions[i](hidden, mask, need_weights)
        hidden = self.layer_norm1[i](hidden + self.dropout(attended))
        return self.layer_norm2[i](hidden + self.ffns[i](hidden)), probs

    def block_flat(self, i: int, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        hidden = self.layer_norm1[i](hidden + self.attentions[i].forward_flat(hidden, segments))
        return self.layer_norm2[i](hidden + self.ffns[i](hidden))  # (N, D)

    def skips(self, i: int) -> bool:
        """Whether block ``i`` is skipped in this forward (FlauBERT's LayerDrop, training only)."""
        return False

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        langs: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        lengths: Optional[torch.Tensor] = None,
        *,
        inputs_embeds: Optional[torch.Tensor] = None,
        output_hidden_states: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
    ) -> BaseModelOutput:
        check_one_input(input_ids, inputs_embeds)
        output_hidden_states = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        reference = input_ids if input_ids is not None else inputs_embeds
        batch, length = reference.shape[:2]
        keep = self._keep_mask(input_ids, attention_mask, lengths, batch, length, reference.device)  # (B, T)
        if position_ids is None:
            position_ids = torch.arange(length, device=reference.device)[None, :]
        if langs is not None and langs.shape != (batch, length):
            raise ValueError(f"langs must be (batch, length) = {(batch, length)} like input_ids, got {tuple(langs.shape)}")
        tensor = self.embed(input_ids, position_ids, langs, token_type_ids, inputs_embeds)
        scale = keep[..., None].to(tensor.dtype)  # (B, T, 1): padded positions are zeroed, as in the reference
        tensor = tensor * scale
        mask = None if self.causal else keep.to(torch.bool)[:, None, None, :]  # (B, 1, 1, T)
        all_hidden: Optional[list] = [] if output_hidden_states else None
        all_probs: Optional[list] = [] if output_attentions else None
        for i in range(self.config.n_layers):
            if self.skips(i):
                continue
            if all_hidden is not None:
                all_hidden.append(tensor)
            tensor, probs = self.block(i, tensor, mask, output_attentions)
            tensor = tensor * scale
            if all_probs is not None:
                all_probs.append(probs)
        if all_hidden is not None:
            all_hidden.append(tensor)
        return BaseModelOutput(tensor, tuple(all_hidden) if all_hidden is not None else None,
                               tuple(all_probs) if all_probs is not None else None)

    def _keep_mask(self, input_ids: Optional[torch.Tensor], attention_mask: Optional[torch.Tensor],
                   lengths: Optional[torch.Tensor], batch: int, length: int, device: torch.device) -> torch.Tensor:
        """(B, T) real positions: the attention mask, else the first ``lengths`` positions, where
        ``lengths`` defaults (as the reference's) to each row's count of non-pad ids."""
        if attention_mask is not None:
            return attention_mask
        if lengths is None:
            if input_ids is not None:
                lengths = (input_ids != self.config.pad_token_id).sum(dim=1)
            else:
                lengths = torch.full((batch,), length, device=device)
        if lengths.shape != (batch,) or int(lengths.max()) > length:
            raise ValueError(f"lengths must be ({batch},) values of at most {length}, got {lengths.tolist()}")
        return (torch.arange(length, device=device)[None, :] < lengths[:, None]).long()

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments,
                     langs: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Unpadded inference: (N,) token ids of ``segments``' sequences back to back (and their
        (N,) languages) → (N, D) last hidden states.  No token types: the reference tokenizer
        never gives any (the padded forward still takes them, as the reference's)."""
        check_flat_inputs(self, input_ids, segments)
        hidden = self.embed(input_ids, segments.positions, langs, None, None)  # (N, D)
        for i in range(self.config.n_layers):
            hidden = self.block_flat(i, hidden, segments)
        return hidden


class XLMFlatHead:
    """A head on the flat layout: ``XLMModel.forward_flat``'s inputs, then the head's ``head_flat``."""

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments,
                     langs: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Unpadded inference: (N,) token ids → per-sequence (B, ...) or per-token (N, ...) outputs."""
        return self.head_flat(self.transformer.forward_flat(input_ids, segments, langs), segments)


class XLMHeadModel(XLMPreTrainedModel):
    """A head over ``body_class`` (XLM's body here, FlauBERT's in flaubert.py) under ``transformer``."""

    body_class: type = XLMModel

    def __init__(self, config: XLMConfig):
        super().__init__(config)
        self.transformer = self.body_class(config)

    def body(self, input_ids, attention_mask, langs, token_type_ids, position_ids, lengths, kwargs) -> BaseModelOutput:
        return self.transformer(input_ids, attention_mask, langs, token_type_ids, position_ids, lengths, **kwargs)


# ---------------------------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------------------------
class SequenceSummary(nn.Module):
    """One vector per sequence (the reference's ``SequenceSummary``): the first, last or mean
    state, or the state at ``cls_index``; then dropout, an optional projection (to
    ``num_labels`` or ``hidden_size``), an optional activation, dropout."""

    SUMMARY_TYPES = ("first", "last", "mean", "cls_index")

    def __init__(self, config: XLMConfig):
        super().__init__()
        self.summary_type = getattr(config, "summary_type", "last")
        if self.summary_type not in self.SUMMARY_TYPES:
            raise ValueError(f"summary_type={self.summary_type!r} is not supported; one of {self.SUMMARY_TYPES}")
        self.summary: nn.Module = nn.Identity()
        if getattr(config, "summary_use_proj", False):
            to_labels = getattr(config, "summary_proj_to_labels", False) and config.num_labels > 0
            self.summary = nn.Linear(config.hidden_size, config.num_labels if to_labels else config.hidden_size)
        name = getattr(config, "summary_activation", None)
        self.activation = activation(name) if name else (lambda x: x)
        self.first_dropout = nn.Dropout(getattr(config, "summary_first_dropout", 0.0) or 0.0)
        self.last_dropout = nn.Dropout(getattr(config, "summary_last_dropout", 0.0) or 0.0)

    def pick(self, hidden: torch.Tensor, cls_index: Optional[torch.Tensor]) -> torch.Tensor:
        """(B, T, H) padded states → (B, H), as the reference picks them (padding included: its
        "last" and "mean" read padded positions, which the body zeroed)."""
        if self.summary_type == "first":
            return hidden[:, 0]
        if self.summary_type == "last":
            return hidden[:, -1]
        if self.summary_type == "mean":
            return hidden.mean(dim=1)
        if cls_index is None:
            return hidden[:, -1]
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), cls_index.to(hidden.device)]

    def pick_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        """(N, H) flat states → (B, H), each sequence's as it gives alone (no padding to read):
        "cls_index" without indices is its last token, as in the reference."""
        if self.summary_type == "first":
            return hidden.index_select(0, segments.first)
        if self.summary_type == "mean":
            sums = hidden.new_zeros(segments.num_sequences, hidden.shape[1]).index_add_(0, segments.sequence, hidden)
            return sums / segments.lengths[:, None].to(hidden.dtype)
        return hidden.index_select(0, segments.last)

    def project(self, picked: torch.Tensor) -> torch.Tensor:
        return self.last_dropout(self.activation(self.summary(self.first_dropout(picked))))

    def forward(self, hidden: torch.Tensor, cls_index: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.project(self.pick(hidden, cls_index))


class XLMPredLayer(nn.Module):
    """The linear prediction layer (``asm=False``; the adaptive softmax is refused in the body)."""

    def __init__(self, config: XLMConfig):
        super().__init__()
        self.proj = nn.Linear(config.emb_dim, config.vocab_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(hidden)  # (..., V)


class XLMWithLMHeadModel(XLMFlatHead, XLMHeadModel):
    """Masked (or, with ``causal``, causal) language modelling over the tied word embeddings."""

    tied_keys = {"pred_layer.proj.weight": "transformer.embeddings.weight"}

    def __init__(self, config: XLMConfig):
        super().__init__(config)
        self.pred_layer = XLMPredLayer(config)

    def forward(self, input_ids: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
                langs: Optional[torch.Tensor] = None, token_type_ids: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.Tensor] = None, lengths: Optional[torch.Tensor] = None,
                **kwargs: Any) -> MaskedLMOutput:
        out = self.body(input_ids, attention_mask, langs, token_type_ids, position_ids, lengths, kwargs)
        return MaskedLMOutput(self.pred_layer(out.last_hidden_state), out.hidden_states, out.attentions)

    def head_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        """(N, D) → (N, V) vocabulary logits."""
        return self.pred_layer(hidden)


class XLMForSequenceClassification(XLMFlatHead, XLMHeadModel):
    def __init__(self, config: XLMConfig):
        super().__init__(config)
        self.sequence_summary = SequenceSummary(config)

    def forward(self, input_ids: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
                langs: Optional[torch.Tensor] = None, token_type_ids: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.Tensor] = None, lengths: Optional[torch.Tensor] = None,
                **kwargs: Any) -> SequenceClassifierOutput:
        # No cls_index, as the reference's forward: summary_type "cls_index" reads the last position.
        out = self.body(input_ids, attention_mask, langs, token_type_ids, position_ids, lengths, kwargs)
        logits = self.sequence_summary(out.last_hidden_state)  # (B, num_labels)
        return SequenceClassifierOutput(logits, out.hidden_states, out.attentions)

    def head_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        """(N, D) → (B, num_labels) logits from each sequence's summary."""
        return self.sequence_summary.project(self.sequence_summary.pick_flat(hidden, segments))


class XLMForTokenClassification(XLMFlatHead, TokenClassificationHead, XLMHeadModel):
    def __init__(self, config: XLMConfig):
        super().__init__(config)
        self.add_token_classifier(config, config.dropout)

    def forward(self, input_ids: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
                langs: Optional[torch.Tensor] = None, token_type_ids: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.Tensor] = None, lengths: Optional[torch.Tensor] = None,
                **kwargs: Any) -> TokenClassifierOutput:
        return self.token_classifier_output(
            self.body(input_ids, attention_mask, langs, token_type_ids, position_ids, lengths, kwargs))


class XLMForQuestionAnsweringSimple(XLMFlatHead, QuestionAnsweringHead, XLMHeadModel):
    """Start and end logits per token (``qa_outputs``): what AutoModelForQuestionAnswering loads."""

    def __init__(self, config: XLMConfig):
        super().__init__(config)
        self.add_span_classifier(config)

    def forward(self, input_ids: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
                langs: Optional[torch.Tensor] = None, token_type_ids: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.Tensor] = None, lengths: Optional[torch.Tensor] = None,
                **kwargs: Any) -> QuestionAnsweringModelOutput:
        return self.question_answering_output(
            self.body(input_ids, attention_mask, langs, token_type_ids, position_ids, lengths, kwargs))


# -- the SQuAD head with beam search over start/end (XLNet's), for XLMForQuestionAnswering ------
class PoolerStartLogits(nn.Module):
    def __init__(self, config: XLMConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, 1)

    def forward(self, hidden: torch.Tensor, p_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return _masked(self.dense(hidden).squeeze(-1), p_mask)  # (B, T)


class PoolerEndLogits(nn.Module):
    def __init__(self, config: XLMConfig):
        super().__init__()
        self.dense_0 = nn.Linear(config.hidden_size * 2, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dense_1 = nn.Linear(config.hidden_size, 1)

    def forward(self, hidden: torch.Tensor, start_states: torch.Tensor, p_mask: Optional[torch.Tensor] = None):
        x = self.LayerNorm(torch.tanh(self.dense_0(torch.cat([hidden, start_states], dim=-1))))
        return _masked(self.dense_1(x).squeeze(-1), p_mask)


class PoolerAnswerClass(nn.Module):
    def __init__(self, config: XLMConfig):
        super().__init__()
        self.dense_0 = nn.Linear(config.hidden_size * 2, config.hidden_size)
        self.dense_1 = nn.Linear(config.hidden_size, 1, bias=False)

    def forward(self, hidden: torch.Tensor, start_states: torch.Tensor, cls_index: Optional[torch.Tensor]):
        if cls_index is None:
            cls_state = hidden[:, -1]  # (B, H)
        else:
            cls_state = hidden[torch.arange(hidden.shape[0], device=hidden.device), cls_index]
        return self.dense_1(torch.tanh(self.dense_0(torch.cat([start_states, cls_state], dim=-1)))).squeeze(-1)


def _masked(logits: torch.Tensor, p_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Positions ``p_mask`` marks (1.0) pushed to -1e30 (-65500 in float16), as the reference."""
    if p_mask is None:
        return logits
    big = 65500 if p_mask.dtype == torch.float16 else 1e30
    return logits * (1 - p_mask) - big * p_mask


class SQuADHead(nn.Module):
    def __init__(self, config: XLMConfig):
        super().__init__()
        self.start_n_top = config.start_n_top
        self.end_n_top = config.end_n_top
        self.start_logits = PoolerStartLogits(config)
        self.end_logits = PoolerEndLogits(config)
        self.answer_class = PoolerAnswerClass(config)

    def forward(self, hidden: torch.Tensor, cls_index: Optional[torch.Tensor] = None,
                p_mask: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, ...]:
        """Inference: the top ``start_n_top`` starts, for each the top ``end_n_top`` ends, and the
        answerability logit, computed as the reference's beam search does."""
        batch, length, width = hidden.shape
        start_probs = F.softmax(self.start_logits(hidden, p_mask), dim=-1)  # (B, T)
        start_top_probs, start_top_index = torch.topk(start_probs, self.start_n_top, dim=-1)  # (B, k)
        start_states = hidden.gather(-2, start_top_index[..., None].expand(-1, -1, width))  # (B, k, H)
        start_states = start_states[:, None].expand(-1, length, -1, -1)  # (B, T, k, H)
        expanded = hidden[:, :, None].expand_as(start_states)
        end_mask = p_mask[..., None] if p_mask is not None else None
        end_probs = F.softmax(self.end_logits(expanded, start_states, end_mask), dim=1)  # (B, T, k)
        end_top_probs, end_top_index = torch.topk(end_probs, self.end_n_top, dim=1)  # (B, k_end, k)
        end_top_probs = end_top_probs.reshape(-1, self.start_n_top * self.end_n_top)
        end_top_index = end_top_index.reshape(-1, self.start_n_top * self.end_n_top)
        expected_start = torch.einsum("blh,bl->bh", hidden, start_probs)  # (B, H)
        cls_logits = self.answer_class(hidden, expected_start, cls_index)
        return start_top_probs, start_top_index, end_top_probs, end_top_index, cls_logits


@dataclass
class XLMForQuestionAnsweringOutput(ModelOutput):
    start_top_log_probs: Optional[torch.Tensor] = None
    start_top_index: Optional[torch.Tensor] = None
    end_top_log_probs: Optional[torch.Tensor] = None
    end_top_index: Optional[torch.Tensor] = None
    cls_logits: Optional[torch.Tensor] = None
    hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    attentions: Optional[tuple[torch.Tensor, ...]] = None


class XLMForQuestionAnswering(XLMHeadModel):
    """The seed's XLM question-answering class (what AutoModelForQuestionAnswering loads, as in
    transformers 2.x): a SQuAD 2.0 head, the top ``start_n_top`` starts, for each the top
    ``end_n_top`` ends, and an answerability logit.  Inference only (no training losses)."""

    def __init__(self, config: XLMConfig):
        super().__init__(config)
        self.qa_outputs = SQuADHead(config)

    def forward(self, input_ids: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
                langs: Optional[torch.Tensor] = None, token_type_ids: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.Tensor] = None, lengths: Optional[torch.Tensor] = None,
                cls_index: Optional[torch.Tensor] = None, p_mask: Optional[torch.Tensor] = None,
                **kwargs: Any) -> XLMForQuestionAnsweringOutput:
        out = self.body(input_ids, attention_mask, langs, token_type_ids, position_ids, lengths, kwargs)
        return XLMForQuestionAnsweringOutput(*self.qa_outputs(out.last_hidden_state, cls_index, p_mask),
                                             out.hidden_states, out.attentions)

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments,
                     langs: Optional[torch.Tensor] = None) -> XLMForQuestionAnsweringOutput:
        """Unpadded inference → each sequence's beam (B, ...) as it gives alone: positions past a
        sequence get ``p_mask`` and its CLS is its last token, so indices are positions within
        the sequence (a sequence needs at least ``start_n_top`` and ``end_n_top`` tokens, as alone)."""
        check_flat_inputs(self, input_ids, segments)
        real = segments.mask[:, 0, 0]  # (B, T)
        return self(_padded(input_ids, segments, self.config.pad_token_id), real.long(),
                    None if langs is None else _padded(langs, segments, 0),
                    p_mask=(~real).to(self.dtype), cls_index=segments.lengths - 1)


def _padded(values: torch.Tensor, segments: Segments, fill: int) -> torch.Tensor:
    """(N,) flat values → (B, T) right-padded with ``fill``."""
    padded = values.new_full((segments.num_sequences * segments.max_seqlen,), fill)
    return padded.index_copy_(0, segments.padded_index, values).view(segments.num_sequences, segments.max_seqlen)


@dataclass
class MultipleChoiceModelOutput(ModelOutput):
    logits: torch.Tensor
    hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    attentions: Optional[tuple[torch.Tensor, ...]] = None


class XLMForMultipleChoice(XLMHeadModel):
    """(B, C, T) choices → (B, C) logits: each choice summarised, then ``logits_proj``."""

    def __init__(self, config: XLMConfig):
        super().__init__(config)
        self.sequence_summary = SequenceSummary(config)
        self.logits_proj = nn.Linear(config.num_labels, 1)

    def forward(self, input_ids: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
                langs: Optional[torch.Tensor] = None, token_type_ids: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.Tensor] = None, *, inputs_embeds: Optional[torch.Tensor] = None,
                **kwargs: Any) -> MultipleChoiceModelOutput:
        reference = input_ids if input_ids is not None else inputs_embeds
        choices = reference.shape[1]

        def flat(x: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
            return None if x is None else x.reshape(-1, *x.shape[2:])

        out = self.transformer(flat(input_ids), flat(attention_mask), flat(langs), flat(token_type_ids),
                               flat(position_ids), inputs_embeds=flat(inputs_embeds), **kwargs)
        logits = self.logits_proj(self.sequence_summary(out.last_hidden_state)).view(-1, choices)
        return MultipleChoiceModelOutput(logits, out.hidden_states, out.attentions)


CONTRACT = ModelContract(
    model_type="xlm",
    config_class=XLMConfig,
    # The seed (transformers 2.x) maps AutoModelWithLMHead and AutoModelForPreTraining to
    # XLMWithLMHeadModel, and AutoModelForQuestionAnswering to the SQuAD-head
    # XLMForQuestionAnswering; 5.24 also maps AutoModelForMaskedLM and AutoModelForCausalLM to
    # the LM head, and question answering to the span head, XLMForQuestionAnsweringSimple (a
    # class beside the Auto mapping here, as XLMForMultipleChoice).
    heads={
        registry.BASE: XLMModel,
        registry.PRETRAINING: XLMWithLMHeadModel,
        registry.WITH_LM_HEAD: XLMWithLMHeadModel,
        registry.MASKED_LM: XLMWithLMHeadModel,
        registry.CAUSAL_LM: XLMWithLMHeadModel,
        registry.SEQUENCE_CLASSIFICATION: XLMForSequenceClassification,
        registry.TOKEN_CLASSIFICATION: XLMForTokenClassification,
        registry.QUESTION_ANSWERING: XLMForQuestionAnswering,
        registry.SPAN_QUESTION_ANSWERING: XLMForQuestionAnsweringSimple,
    },
    name_patterns=("xlm",),
    # Token types are no declared input: XLMTokenizer returns none (the model has no type table;
    # its forward looks them up in the word table).  Languages are: the tokenize stage fills them.
    input_names=("input_ids", "attention_mask", "langs"),
    tokenizer="xlm",
    tokenizer_class="XLMTokenizer",
    rank=120,
)
