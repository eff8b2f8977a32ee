"""CTRL: config, causal transformer and heads, loading reference checkpoints by their own key names.

Token embeddings scaled by sqrt(d_model) plus fixed sinusoidal positions, pre-LayerNorm blocks
(``multi_head_attention.Wq/Wk/Wv/dense``, ``ffn.0`` → ReLU → ``ffn.2``), a final ``layernorm``.
Control codes are ordinary tokens at the start of the text. Token types, when given, are looked
up in the token embedding and scaled too, as the reference does.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .. import registry
from ..configuration import PretrainedConfig
from ..contract import ModelContract
from ..layers import DecoderFlatHead, check_one_input, last_token_states
from ..modeling import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    FusedQKV,
    PastKeyValues,
    PreTrainedModel,
    Segments,
    SequenceClassifierOutput,
    causal_mask,
    check_flat_inputs,
    varlen_attention,
)
from .openai_gpt import KeyValue, past_length


class CTRLConfig(PretrainedConfig):
    model_type = "ctrl"
    attribute_map = {"max_position_embeddings": "n_positions", "hidden_size": "n_embd",
                     "num_attention_heads": "n_head", "num_hidden_layers": "n_layer"}
    defaults = dict(
        vocab_size=246534,
        n_positions=256,
        n_embd=1280,
        dff=8192,
        n_layer=48,
        n_head=16,
        resid_pdrop=0.1,
        embd_pdrop=0.1,
        layer_norm_epsilon=1e-6,
        initializer_range=0.02,
        use_cache=True,
    )


# The blocks' LayerNorms use this whatever the config says (only the final one reads layer_norm_epsilon).
_BLOCK_EPS = 1e-6


def positional_encoding(positions: torch.Tensor, width: int) -> torch.Tensor:
    """(...,) positions → (..., width) float32 encodings: the sines of the even angles, then the
    cosines of the odd ones (not interleaved), computed as the reference builds its table."""
    dims = torch.arange(width, dtype=torch.int64, device=positions.device).to(torch.float32)
    rates = 1 / torch.pow(10000, (2 * (dims // 2)) / width)  # (width,)
    angles = positions.to(torch.float32)[..., None] * rates  # (..., width)
    return torch.cat([torch.sin(angles[..., 0::2]), torch.cos(angles[..., 1::2])], dim=-1)


def _mask_scores(attention_mask: Optional[torch.Tensor], queries: int, past: int, dtype: torch.dtype,
                 device: torch.device) -> torch.Tensor:
    """(B|1, 1, T, T_past + T) scores to add: 0 to attend, dtype's min for future keys and padding.
    Additive like the reference's eager mask, so a query that sees only padding attends uniformly
    (a boolean mask would leave it no key at all)."""
    allowed = causal_mask(attention_mask, queries, past, device)
    return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, torch.finfo(dtype).min)


class MultiHeadAttention(FusedQKV, nn.Module):
    qkv_names = ("Wq", "Wk", "Wv")

    def __init__(self, config: CTRLConfig):
        super().__init__()
        if config.n_embd % config.n_head:
            raise ValueError(f"n_embd {config.n_embd} is not a multiple of n_head {config.n_head}")
        self.num_heads = config.n_head
        self.Wq = nn.Linear(config.n_embd, config.n_embd)
        self.Wk = nn.Linear(config.n_embd, config.n_embd)
        self.Wv = nn.Linear(config.n_embd, config.n_embd)
        self.dense = nn.Linear(config.n_embd, config.n_embd)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, -1).transpose(1, 2)  # (B, nH, T, d)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, past: Optional[KeyValue],
                need_weights: bool) -> tuple[torch.Tensor, Optional[torch.Tensor], KeyValue]:
        q, k, v = (self._heads(x) for x in self.qkv(hidden).chunk(3, dim=-1))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)  # (B, nH, T_past + T, d)
        if need_weights:
            probs = ((q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5 + mask).softmax(-1)  # (B, nH, T, T_past + T)
            context = probs @ v
        else:
            probs, context = None, F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        context = context.transpose(1, 2).reshape(hidden.shape)  # (B, T, H)
        return self.dense(context), probs, (k, v)

    def forward_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        return self.dense(varlen_attention(self.qkv(hidden), segments, self.num_heads, causal=True))  # (N, H)


class EncoderLayer(nn.Module):
    def __init__(self, config: CTRLConfig):
        super().__init__()
        self.multi_head_attention = MultiHeadAttention(config)
        self.ffn = nn.Sequential(nn.Linear(config.n_embd, config.dff), nn.ReLU(), nn.Linear(config.dff, config.n_embd))
        self.layernorm1 = nn.LayerNorm(config.n_embd, eps=_BLOCK_EPS)
        self.layernorm2 = nn.LayerNorm(config.n_embd, eps=_BLOCK_EPS)
        self.dropout1 = nn.Dropout(config.resid_pdrop)
        self.dropout2 = nn.Dropout(config.resid_pdrop)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, past: Optional[KeyValue],
                need_weights: bool) -> tuple[torch.Tensor, Optional[torch.Tensor], KeyValue]:
        attended, probs, present = self.multi_head_attention(self.layernorm1(hidden), mask, past, need_weights)
        hidden = hidden + self.dropout1(attended)
        return hidden + self.dropout2(self.ffn(self.layernorm2(hidden))), probs, present

    def forward_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        hidden = hidden + self.multi_head_attention.forward_flat(self.layernorm1(hidden), segments)
        return hidden + self.ffn(self.layernorm2(hidden))  # (N, H)


class CTRLPreTrainedModel(PreTrainedModel):
    config_class = CTRLConfig
    base_model_prefix = "transformer"


class CTRLModel(CTRLPreTrainedModel):
    def __init__(self, config: CTRLConfig):
        super().__init__(config)
        self.w = nn.Embedding(config.vocab_size, config.n_embd)
        self.dropout = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(EncoderLayer(config) for _ in range(config.n_layer))
        self.layernorm = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.w

    def embed(self, inputs_embeds: torch.Tensor, positions: torch.Tensor,
              token_type_ids: Optional[torch.Tensor]) -> torch.Tensor:
        """Token embeddings (..., H) scaled, plus positions (...,), plus scaled token types."""
        scale = math.sqrt(self.config.n_embd)
        hidden = inputs_embeds * scale + positional_encoding(positions, self.config.n_embd).to(inputs_embeds.dtype)
        if token_type_ids is not None:
            hidden = hidden + self.w(token_type_ids) * scale
        return self.dropout(hidden)

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
            inputs_embeds = self.w(input_ids)  # (B, T, H)
        past, length = past_length(past_key_values), inputs_embeds.shape[1]
        if position_ids is None:
            position_ids = torch.arange(past, past + length, device=inputs_embeds.device)[None]
        hidden = self.embed(inputs_embeds, position_ids, token_type_ids)
        mask = _mask_scores(attention_mask, length, past, hidden.dtype, hidden.device)
        want_hidden = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        want_probs = self.config.output_attentions if output_attentions is None else output_attentions
        all_hidden, all_probs, presents = [hidden] if want_hidden else None, [] if want_probs else None, []
        for i, layer in enumerate(self.h):
            hidden, probs, present = layer(hidden, mask, None if past_key_values is None else past_key_values[i],
                                           want_probs)
            presents.append(present)
            if want_hidden:
                all_hidden.append(hidden)
            if want_probs:
                all_probs.append(probs)
        hidden = self.layernorm(hidden)
        if want_hidden:
            all_hidden[-1] = hidden  # the reference reports the last layer's states after the final LayerNorm
        return BaseModelOutputWithPast(hidden, tuple(presents) if use_cache else None,
                                       None if all_hidden is None else tuple(all_hidden),
                                       None if all_probs is None else tuple(all_probs))

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments) -> torch.Tensor:
        """Unpadded inference: (N,) token ids of ``segments``' sequences back to back → (N, H)
        last hidden states, each sequence attending causally within itself."""
        check_flat_inputs(self, input_ids, segments)
        hidden = self.embed(self.w(input_ids), segments.positions, None)  # (N, H)
        for layer in self.h:
            hidden = layer.forward_flat(hidden, segments)
        return self.layernorm(hidden)


# ---------------------------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------------------------
class CTRLLMHeadModel(DecoderFlatHead, CTRLPreTrainedModel):
    tied_keys = {"lm_head.weight": "transformer.w.weight"}

    def __init__(self, config: CTRLConfig):
        super().__init__(config)
        self.transformer = CTRLModel(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=True)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                **kwargs) -> CausalLMOutputWithPast:
        out = self.transformer(input_ids, attention_mask, token_type_ids, position_ids, **kwargs)
        return CausalLMOutputWithPast(self.lm_head(out.last_hidden_state), out.past_key_values, out.hidden_states,
                                      out.attentions)

    def head_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        """(N, H) → (N, V) next-token logits."""
        return self.lm_head(hidden)


class CTRLForSequenceClassification(DecoderFlatHead, CTRLPreTrainedModel):
    def __init__(self, config: CTRLConfig):
        super().__init__(config)
        self.transformer = CTRLModel(config)
        self.classifier = nn.Linear(config.n_embd, config.num_labels, bias=False)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                **kwargs) -> SequenceClassifierOutput:
        out = self.transformer(input_ids, attention_mask, token_type_ids, position_ids, **kwargs)
        hidden = out.last_hidden_state
        logits = self.classifier(last_token_states(hidden, input_ids, self.config.pad_token_id))  # (B, num_labels)
        return SequenceClassifierOutput(logits, out.hidden_states, out.attentions)

    def head_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        """(N, H) → (B, num_labels) logits from each sequence's last token."""
        return self.classifier(hidden.index_select(0, segments.last))


CONTRACT = ModelContract(
    causal=True,
    model_type="ctrl",
    config_class=CTRLConfig,
    heads={
        registry.BASE: CTRLModel,
        registry.PRETRAINING: CTRLLMHeadModel,
        registry.WITH_LM_HEAD: CTRLLMHeadModel,
        registry.CAUSAL_LM: CTRLLMHeadModel,
        registry.SEQUENCE_CLASSIFICATION: CTRLForSequenceClassification,
    },
    name_patterns=("ctrl",),
    # The reference tokenizer returns no token types (the model would embed them as tokens).
    input_names=("input_ids", "attention_mask"),
    tokenizer="ctrl",
    tokenizer_class="CTRLTokenizer",
    rank=130,
)
