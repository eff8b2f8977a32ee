"""OpenAI GPT: config, causal transformer and heads, loading reference checkpoints by their own key names.

Post-LayerNorm blocks (``ln_1(x + attn)``, ``ln_2(n + mlp)``), Conv1D projections whose weights
are stored ``(in, out)``, learned positions, no final LayerNorm. Token types, when given, are
looked up in the token embedding, as the reference does.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from .. import registry
from ..configuration import PretrainedConfig
from ..contract import ModelContract
from ..layers import Conv1D, DecoderFlatHead, check_one_input, last_token_states
from ..modeling import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    PastKeyValues,
    PreTrainedModel,
    Segments,
    SequenceClassifierOutput,
    activation,
    causal_mask,
    check_flat_inputs,
    varlen_attention,
)

KeyValue = tuple[torch.Tensor, torch.Tensor]  # one layer's cached (key, value), each (B, nH, T_past, d)


class OpenAIGPTConfig(PretrainedConfig):
    model_type = "openai-gpt"
    attribute_map = {"max_position_embeddings": "n_positions", "hidden_size": "n_embd",
                     "num_attention_heads": "n_head", "num_hidden_layers": "n_layer"}
    defaults = dict(
        vocab_size=40478,
        n_positions=512,
        n_embd=768,
        n_layer=12,
        n_head=12,
        afn="gelu",
        resid_pdrop=0.1,
        embd_pdrop=0.1,
        attn_pdrop=0.1,
        layer_norm_epsilon=1e-5,
        initializer_range=0.02,
        summary_type="cls_index",
        summary_use_proj=True,
        summary_activation=None,
        summary_proj_to_labels=True,
        summary_first_dropout=0.1,
    )


# The reference's own table: its "gelu" is the tanh approximation.
_ACTIVATIONS = {"relu": "relu", "silu": "silu", "swish": "silu", "gelu": "gelu_new"}
# The reference masks future keys with this score (not -inf), so a query that sees only padding
# still has a finite softmax; kept so padded positions match too.
_FUTURE_SCORE = -1e4


def _padding_scores(attention_mask: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    """(B, T_past + T) 0/1 mask → (B, 1, 1, T_past + T) scores to add: 0 to attend, dtype's min to mask."""
    if attention_mask is None:
        return None
    mask = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - mask) * torch.finfo(dtype).min


def past_length(past_key_values: Optional[PastKeyValues]) -> int:
    """Tokens already in the cache."""
    return 0 if past_key_values is None else past_key_values[0][0].shape[2]


class Attention(nn.Module):
    def __init__(self, config: OpenAIGPTConfig):
        super().__init__()
        if config.n_embd % config.n_head:
            raise ValueError(f"n_embd {config.n_embd} is not a multiple of n_head {config.n_head}")
        self.n_head = config.n_head
        self.split_size = config.n_embd
        self.c_attn = Conv1D(3 * config.n_embd, config.n_embd)
        self.c_proj = Conv1D(config.n_embd, config.n_embd)
        self.attn_dropout = nn.Dropout(config.attn_pdrop)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.n_head, -1).transpose(1, 2)  # (B, nH, T, d)

    def forward(self, hidden: torch.Tensor, padding: Optional[torch.Tensor], past: Optional[KeyValue],
                need_weights: bool) -> tuple[torch.Tensor, Optional[torch.Tensor], KeyValue]:
        """The reference's eager arithmetic (future keys scored -1e4, padding dtype's min)."""
        q, k, v = (self._heads(x) for x in self.c_attn(hidden).split(self.split_size, dim=2))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)  # (B, nH, T_past + T, d)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(v.shape[-1])  # (B, nH, T, T_past + T)
        allowed = causal_mask(None, q.shape[2], k.shape[2] - q.shape[2], q.device)  # (1, 1, T, T_past + T)
        scores = torch.where(allowed, scores, _FUTURE_SCORE)
        if padding is not None:
            scores = scores + padding
        probs = self.attn_dropout(scores.softmax(-1))
        context = (probs @ v).transpose(1, 2).reshape(hidden.shape)  # (B, T, H)
        return self.resid_dropout(self.c_proj(context)), probs if need_weights else None, (k, v)

    def forward_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        return self.c_proj(varlen_attention(self.c_attn(hidden), segments, self.n_head, causal=True))  # (N, H)


class MLP(nn.Module):
    def __init__(self, config: OpenAIGPTConfig):
        super().__init__()
        if config.afn not in _ACTIVATIONS:
            raise ValueError(f"afn={config.afn!r} is not one of the reference's {', '.join(_ACTIVATIONS)}")
        self.c_fc = Conv1D(4 * config.n_embd, config.n_embd)
        self.c_proj = Conv1D(config.n_embd, 4 * config.n_embd)
        self.act = activation(_ACTIVATIONS[config.afn])
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: OpenAIGPTConfig):
        super().__init__()
        self.attn = Attention(config)
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)

    def forward(self, hidden: torch.Tensor, padding: Optional[torch.Tensor], past: Optional[KeyValue],
                need_weights: bool) -> tuple[torch.Tensor, Optional[torch.Tensor], KeyValue]:
        attended, probs, present = self.attn(hidden, padding, past, need_weights)
        normed = self.ln_1(hidden + attended)
        return self.ln_2(normed + self.mlp(normed)), probs, present

    def forward_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        normed = self.ln_1(hidden + self.attn.forward_flat(hidden, segments))
        return self.ln_2(normed + self.mlp(normed))  # (N, H)


class OpenAIGPTPreTrainedModel(PreTrainedModel):
    config_class = OpenAIGPTConfig
    base_model_prefix = "transformer"
    # Old checkpoints saved each layer's causal-mask buffer.
    checkpoint_drop = PreTrainedModel.checkpoint_drop + (r"(^|\.)attn\.bias$",)


class OpenAIGPTModel(OpenAIGPTPreTrainedModel):
    def __init__(self, config: OpenAIGPTConfig):
        super().__init__(config)
        self.tokens_embed = nn.Embedding(config.vocab_size, config.n_embd)
        self.positions_embed = nn.Embedding(config.n_positions, config.n_embd)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))

    def get_input_embeddings(self) -> nn.Embedding:
        return self.tokens_embed

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        *,
        past_key_values: Optional[PastKeyValues] = None,
        use_cache: bool = False,
        inputs_embeds: Optional[torch.Tensor] = None,
        output_hidden_states: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
    ) -> BaseModelOutputWithPast:
        """Padded forward; with ``past_key_values`` (one ``(key, value)`` per layer, each
        ``(B, nH, T_past, d)``) the ids are the next tokens and ``attention_mask`` covers past and
        new tokens; ``use_cache`` returns every layer's keys and values, past ones first. Positions
        default to ``T_past ..``: pass ``position_ids`` for left padding."""
        check_one_input(input_ids, inputs_embeds)
        if inputs_embeds is None:
            inputs_embeds = self.tokens_embed(input_ids)  # (B, T, H)
        past = past_length(past_key_values)
        if position_ids is None:
            position_ids = torch.arange(past, past + inputs_embeds.shape[1], device=inputs_embeds.device)[None]
        hidden = inputs_embeds + self.positions_embed(position_ids)
        if token_type_ids is not None:
            hidden = hidden + self.tokens_embed(token_type_ids)
        hidden = self.drop(hidden)
        padding = _padding_scores(attention_mask, hidden.dtype)
        want_hidden = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        want_probs = self.config.output_attentions if output_attentions is None else output_attentions
        all_hidden, all_probs, presents = [hidden] if want_hidden else None, [] if want_probs else None, []
        for i, block in enumerate(self.h):
            hidden, probs, present = block(hidden, padding, None if past_key_values is None else past_key_values[i],
                                           want_probs)
            presents.append(present)
            if want_hidden:
                all_hidden.append(hidden)
            if want_probs:
                all_probs.append(probs)
        return BaseModelOutputWithPast(hidden, tuple(presents) if use_cache else None,
                                       None if all_hidden is None else tuple(all_hidden),
                                       None if all_probs is None else tuple(all_probs))

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments) -> torch.Tensor:
        """Unpadded inference: (N,) token ids of ``segments``' sequences back to back → (N, H)
        last hidden states, each sequence attending causally within itself."""
        check_flat_inputs(self, input_ids, segments)
        hidden = self.tokens_embed(input_ids) + self.positions_embed(segments.positions)  # (N, H)
        for block in self.h:
            hidden = block.forward_flat(hidden, segments)
        return hidden


# ---------------------------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------------------------
class OpenAIGPTLMHeadModel(DecoderFlatHead, OpenAIGPTPreTrainedModel):
    tied_keys = {"lm_head.weight": "transformer.tokens_embed.weight"}

    def __init__(self, config: OpenAIGPTConfig):
        super().__init__(config)
        self.transformer = OpenAIGPTModel(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                **kwargs) -> CausalLMOutputWithPast:
        out = self.transformer(input_ids, attention_mask, token_type_ids, position_ids, **kwargs)
        return CausalLMOutputWithPast(self.lm_head(out.last_hidden_state), out.past_key_values, out.hidden_states,
                                      out.attentions)

    def head_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        """(N, H) → (N, V) next-token logits."""
        return self.lm_head(hidden)


class OpenAIGPTForSequenceClassification(DecoderFlatHead, OpenAIGPTPreTrainedModel):
    def __init__(self, config: OpenAIGPTConfig):
        super().__init__(config)
        self.transformer = OpenAIGPTModel(config)
        self.score = nn.Linear(config.n_embd, config.num_labels, bias=False)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                **kwargs) -> SequenceClassifierOutput:
        out = self.transformer(input_ids, attention_mask, token_type_ids, position_ids, **kwargs)
        hidden = out.last_hidden_state
        logits = self.score(last_token_states(hidden, input_ids, self.config.pad_token_id))  # (B, num_labels)
        return SequenceClassifierOutput(logits, out.hidden_states, out.attentions)

    def head_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        """(N, H) → (B, num_labels) logits from each sequence's last token."""
        return self.score(hidden.index_select(0, segments.last))


CONTRACT = ModelContract(
    causal=True,
    model_type="openai-gpt",
    config_class=OpenAIGPTConfig,
    heads={
        registry.BASE: OpenAIGPTModel,
        registry.PRETRAINING: OpenAIGPTLMHeadModel,
        registry.WITH_LM_HEAD: OpenAIGPTLMHeadModel,
        registry.CAUSAL_LM: OpenAIGPTLMHeadModel,
        registry.SEQUENCE_CLASSIFICATION: OpenAIGPTForSequenceClassification,
    },
    name_patterns=("openai-gpt", "openai_gpt"),
    input_names=("input_ids", "attention_mask"),
    tokenizer="openai-gpt",
    tokenizer_class="OpenAIGPTTokenizer",
    rank=80,
)
