"""T5: config, encoder-decoder stacks and heads, loading reference checkpoints by their own key names.

What sets T5 apart from the encoders and decoders elsewhere in autoload:

- No position table: the first layer of each stack owns a relative position bias (one scalar
  per head and distance bucket; buckets bidirectional in the encoder, causal in the decoder),
  and the stack adds that same bias to every layer's scores.  Scores are not scaled by
  1/sqrt(d) (the initialisation folds that into the query weights).
- RMS layer norm (no mean, no bias), pre-norm residual blocks, bias-free linear layers.
- A ``relu`` feed-forward (T5 v1.0) or a gated one (``gated-gelu``, T5 v1.1 / flan).
- The LM head is tied to the shared embedding and then reads the decoder states scaled by
  ``d_model ** -0.5``; untied heads (``tie_word_embeddings=False``) skip the rescale.

The decoder's key/value cache follows gpt2.py's conventions where they fit: per layer a tuple,
here ``(self_key, self_value, cross_key, cross_value)`` each ``(B, nH, T, d_kv)``; the
self-attention pair grows by the new tokens, the cross-attention pair is computed once from the
encoder states and reused.  ``attention_mask`` is the encoder's padding mask,
``decoder_attention_mask`` covers the cached and the new decoder tokens.

The flat (unpadded) path runs the linear layers on real tokens only; attention scatters each
sequence into a padded layout and adds the relative bias per sequence (every sequence's bias is
the top-left corner of one (T, T) table, since each sequence's positions start at 0).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..configuration import PretrainedConfig
from ..modeling import (
    BaseModelOutput,
    ModelOutput,
    PreTrainedModel,
    Segments,
    TokenClassifierOutput,
    activation,
    check_flat_inputs,
)
from .. import registry
from ..contract import ModelContract

logger = logging.getLogger(__name__)

# Per decoder layer: (self key, self value, cross key, cross value), each (B, nH, T, d_kv).
T5Cache = tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], ...]


class T5Config(PretrainedConfig):
    model_type = "t5"
    defaults = dict(
        vocab_size=32128,
        d_model=512,
        d_kv=64,
        d_ff=2048,
        num_layers=6,
        num_decoder_layers=None,
        num_heads=8,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        dropout_rate=0.1,
        layer_norm_epsilon=1e-6,
        initializer_factor=1.0,
        feed_forward_proj="relu",
        is_encoder_decoder=True,
        use_cache=True,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        classifier_dropout=0.0,
    )
    attribute_map = {"hidden_size": "d_model", "num_attention_heads": "num_heads",
                     "num_hidden_layers": "num_layers", "head_dim": "d_kv"}

    def __init__(self, **kwargs):
        # transformers 5.x writes `scale_decoder_outputs` beside a `tie_word_embeddings` it forces
        # to True; older configs say only `tie_word_embeddings`.  The rescale is what the LM head
        # does: given, it is kept; otherwise it follows tie_word_embeddings, as it always did.
        scale = kwargs.pop("scale_decoder_outputs", None)
        super().__init__(**kwargs)
        if self.num_decoder_layers is None:
            self.num_decoder_layers = self.num_layers
        parts = str(self.feed_forward_proj).split("-")
        if (len(parts) > 1 and parts[0] != "gated") or len(parts) > 2:
            raise ValueError(f"feed_forward_proj {self.feed_forward_proj!r} is not 'gated-<activation>' or "
                             "'<activation>' (e.g. 'gated-gelu' for T5 v1.1, 'relu' for the original T5)")
        self.is_gated_act = parts[0] == "gated"
        # The reference maps gated-gelu to the tanh approximation (gelu_new), as Mesh TensorFlow did.
        self.dense_act_fn = "gelu_new" if self.feed_forward_proj == "gated-gelu" else parts[-1]
        activation(self.dense_act_fn)  # an unknown name fails here, not at the first forward
        self.scale_decoder_outputs = bool(self.tie_word_embeddings) if scale is None else bool(scale)

    @property
    def max_position_embeddings(self) -> int:
        """T5 has no position table: relative buckets extend to any length.  The job's length
        limit is the released models' training length (512), as the reference tokenizer's
        ``model_max_length``; a config may set ``n_positions`` to say otherwise."""
        return int(getattr(self, "n_positions", None) or 512)

    @max_position_embeddings.setter
    def max_position_embeddings(self, value: int) -> None:
        self.n_positions = value


# ---------------------------------------------------------------------------------------------
# Outputs (the reference's Seq2Seq* containers; the first encoder-decoder here defines them)
# ---------------------------------------------------------------------------------------------
@dataclass
class Seq2SeqModelOutput(ModelOutput):
    last_hidden_state: torch.Tensor
    past_key_values: Optional[T5Cache] = None
    decoder_hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    decoder_attentions: Optional[tuple[torch.Tensor, ...]] = None
    cross_attentions: Optional[tuple[torch.Tensor, ...]] = None
    encoder_last_hidden_state: Optional[torch.Tensor] = None
    encoder_hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    encoder_attentions: Optional[tuple[torch.Tensor, ...]] = None


@dataclass
class Seq2SeqLMOutput(ModelOutput):
    loss: Optional[torch.Tensor] = None
    logits: Optional[torch.Tensor] = None
    past_key_values: Optional[T5Cache] = None
    decoder_hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    decoder_attentions: Optional[tuple[torch.Tensor, ...]] = None
    cross_attentions: Optional[tuple[torch.Tensor, ...]] = None
    encoder_last_hidden_state: Optional[torch.Tensor] = None
    encoder_hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    encoder_attentions: Optional[tuple[torch.Tensor, ...]] = None


@dataclass
class Seq2SeqSequenceClassifierOutput(ModelOutput):
    logits: torch.Tensor
    past_key_values: Optional[T5Cache] = None
    decoder_hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    decoder_attentions: Optional[tuple[torch.Tensor, ...]] = None
    cross_attentions: Optional[tuple[torch.Tensor, ...]] = None
    encoder_last_hidden_state: Optional[torch.Tensor] = None
    encoder_hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    encoder_attentions: Optional[tuple[torch.Tensor, ...]] = None


@dataclass
class Seq2SeqQuestionAnsweringModelOutput(ModelOutput):
    start_logits: torch.Tensor
    end_logits: torch.Tensor
    past_key_values: Optional[T5Cache] = None
    decoder_hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    decoder_attentions: Optional[tuple[torch.Tensor, ...]] = None
    cross_attentions: Optional[tuple[torch.Tensor, ...]] = None
    encoder_last_hidden_state: Optional[torch.Tensor] = None
    encoder_hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    encoder_attentions: Optional[tuple[torch.Tensor, ...]] = None


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------
class T5LayerNorm(nn.Module):
    """RMS norm: x / sqrt(mean(x^2) + eps) * weight, statistics in float32, no mean, no bias."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        variance = hidden.to(torch.float32).pow(2).mean(-1, keepdim=True)
        hidden = hidden * torch.rsqrt(variance + self.variance_epsilon)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            hidden = hidden.to(self.weight.dtype)
        return self.weight * hidden


class T5DenseActDense(nn.Module):
    def __init__(self, config: T5Config):
        super().__init__()
        self.wi = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout_rate)
        self.act = activation(config.dense_act_fn)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.wo(self.dropout(self.act(self.wi(hidden))).to(self.wo.weight.dtype))


class T5DenseGatedActDense(nn.Module):
    def __init__(self, config: T5Config):
        super().__init__()
        self.wi_0 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wi_1 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout_rate)
        self.act = activation(config.dense_act_fn)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        gated = self.act(self.wi_0(hidden)) * self.wi_1(hidden)
        return self.wo(self.dropout(gated).to(self.wo.weight.dtype))


class T5LayerFF(nn.Module):
    def __init__(self, config: T5Config):
        super().__init__()
        self.DenseReluDense = T5DenseGatedActDense(config) if config.is_gated_act else T5DenseActDense(config)
        self.layer_norm = T5LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.dropout(self.DenseReluDense(self.layer_norm(hidden)))


def relative_position_bucket(relative_position: torch.Tensor, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> torch.Tensor:
    """Mesh TensorFlow's buckets for ``memory position - query position``: half the buckets are
    exact small distances, the rest grow logarithmically up to ``max_distance``; bidirectional
    buckets split again by direction, causal ones see only keys at or before the query.  The
    reference's operations in its order, so every distance falls in the same bucket."""
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).to(torch.long) * num_buckets
        relative_position = torch.abs(relative_position)
    else:
        relative_position = -torch.min(relative_position, torch.zeros_like(relative_position))
    max_exact = num_buckets // 2
    is_small = relative_position < max_exact
    if_large = max_exact + (torch.log(relative_position.float() / max_exact) / math.log(max_distance / max_exact)
                            * (num_buckets - max_exact)).to(torch.long)
    if_large = torch.min(if_large, torch.full_like(if_large, num_buckets - 1))
    return buckets + torch.where(is_small, relative_position, if_large)


def additive_mask(bias: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Position bias (1|B, nH, T, S) with disallowed keys (``allowed`` broadcastable, True =
    attend) at the dtype's minimum: one float mask that SDPA adds to the scores."""
    return bias.masked_fill(~allowed, torch.finfo(bias.dtype).min)


class T5Attention(nn.Module):
    """Unscaled multi-head attention with an additive bias; the first layer of a stack also owns
    the relative position bias table."""

    def __init__(self, config: T5Config, has_relative_attention_bias: bool, causal: bool):
        super().__init__()
        self.n_heads = config.num_heads
        self.key_value_proj_dim = config.d_kv
        inner = config.num_heads * config.d_kv
        self.causal = causal
        self.num_buckets = config.relative_attention_num_buckets
        self.max_distance = config.relative_attention_max_distance
        self.dropout = config.dropout_rate
        self.q = nn.Linear(config.d_model, inner, bias=False)
        self.k = nn.Linear(config.d_model, inner, bias=False)
        self.v = nn.Linear(config.d_model, inner, bias=False)
        self.o = nn.Linear(inner, config.d_model, bias=False)
        if has_relative_attention_bias:
            self.relative_attention_bias = nn.Embedding(config.relative_attention_num_buckets, config.num_heads)

    def compute_bias(self, query_length: int, key_length: int, past_length: int = 0) -> torch.Tensor:
        """(1, nH, T, S): the bias of the query at ``past_length + i`` for the key at ``j``."""
        device = self.relative_attention_bias.weight.device
        context = torch.arange(query_length, dtype=torch.long, device=device)[:, None] + past_length
        memory = torch.arange(key_length, dtype=torch.long, device=device)[None, :]
        buckets = relative_position_bucket(memory - context, not self.causal, self.num_buckets, self.max_distance)
        return self.relative_attention_bias(buckets).permute(2, 0, 1).unsqueeze(0)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.n_heads, self.key_value_proj_dim).transpose(1, 2)  # (B, nH, T, d)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
               need_weights: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(B, nH, T, d) queries, (B, nH, S, d) keys/values, (1|B, nH|1, T, S) additive mask →
        (B, T, nH * d) context and, on request, the probabilities."""
        dropout = self.dropout if self.training else 0.0
        if need_weights:
            probs = F.dropout((q @ k.transpose(-1, -2) + mask).softmax(-1), p=dropout)
            context = probs @ v
        else:
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype), dropout_p=dropout,
                                                     scale=1.0)
            probs = None
        batch, _, length, _ = context.shape
        return context.transpose(1, 2).reshape(batch, length, -1), probs

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, key_value_states: Optional[torch.Tensor] = None,
                past: Optional[tuple[torch.Tensor, torch.Tensor]] = None, need_weights: bool = False):
        """Self-attention (``key_value_states`` None: the new keys follow ``past``) or attention
        over the encoder states (``past``, when given, are their keys and values, reused).
        → (B, T, H) output, this layer's (key, value), probabilities."""
        q = self._heads(self.q(hidden))
        if key_value_states is not None and past is not None:
            k, v = past  # cross-attention: computed once from the encoder states
        else:
            source = hidden if key_value_states is None else key_value_states
            k, v = self._heads(self.k(source)), self._heads(self.v(source))
            if past is not None:
                k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        context, probs = self.attend(q, k, v, mask, need_weights)
        return self.o(context), (k, v), probs

    def forward_flat(self, hidden: torch.Tensor, segments: Segments, mask: torch.Tensor,
                     key_value_states: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(N, H) tokens of ``segments`` → (N, H).  Keys and values come from ``key_value_states``
        (N, H) laid out by the same segments (an encoder-decoder head whose decoder runs on
        the shifted source) or from ``hidden``; ``mask`` (B, nH, T, T) additive, per sequence."""
        source = hidden if key_value_states is None else key_value_states
        batch, length = segments.num_sequences, segments.max_seqlen

        def padded(x: torch.Tensor) -> torch.Tensor:  # (N, nH * d) → (B, nH, T, d)
            full = x.new_zeros(batch * length, x.shape[1]).index_copy_(0, segments.padded_index, x)
            return self._heads(full.view(batch, length, -1))

        context, _ = self.attend(padded(self.q(hidden)), padded(self.k(source)), padded(self.v(source)), mask, False)
        return self.o(context.reshape(batch * length, -1).index_select(0, segments.padded_index))


class T5LayerSelfAttention(nn.Module):
    def __init__(self, config: T5Config, has_relative_attention_bias: bool, causal: bool):
        super().__init__()
        self.SelfAttention = T5Attention(config, has_relative_attention_bias, causal)
        self.layer_norm = T5LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, hidden, mask, past=None, need_weights=False):
        out, present, probs = self.SelfAttention(self.layer_norm(hidden), mask, None, past, need_weights)
        return hidden + self.dropout(out), present, probs

    def forward_flat(self, hidden, segments, mask):
        return hidden + self.SelfAttention.forward_flat(self.layer_norm(hidden), segments, mask)


class T5LayerCrossAttention(nn.Module):
    def __init__(self, config: T5Config):
        super().__init__()
        self.EncDecAttention = T5Attention(config, has_relative_attention_bias=False, causal=False)
        self.layer_norm = T5LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, hidden, encoder_states, mask, past=None, need_weights=False):
        out, present, probs = self.EncDecAttention(self.layer_norm(hidden), mask, encoder_states, past, need_weights)
        return hidden + self.dropout(out), present, probs

    def forward_flat(self, hidden, segments, mask, encoder_states):
        return hidden + self.EncDecAttention.forward_flat(self.layer_norm(hidden), segments, mask, encoder_states)


def _clamp_half(hidden: torch.Tensor) -> torch.Tensor:
    """The reference keeps float16 states finite after each sub-layer (T5 overflows in fp16)."""
    if hidden.dtype != torch.float16:
        return hidden
    big = torch.finfo(hidden.dtype).max
    limit = torch.where(torch.isinf(hidden).any(), big - 1000, big)
    return torch.clamp(hidden, min=-limit, max=limit)


class T5Block(nn.Module):
    """``layer.0`` self-attention, ``layer.1`` cross-attention (decoder only), then the feed-forward."""

    def __init__(self, config: T5Config, has_relative_attention_bias: bool, is_decoder: bool):
        super().__init__()
        self.is_decoder = is_decoder
        self.layer = nn.ModuleList([T5LayerSelfAttention(config, has_relative_attention_bias, causal=is_decoder)])
        if is_decoder:
            self.layer.append(T5LayerCrossAttention(config))
        self.layer.append(T5LayerFF(config))

    def forward(self, hidden, mask, encoder_states=None, encoder_mask=None, past=None, need_weights=False):
        """→ hidden, present (self k, v[, cross k, v]), self-attention probs, cross-attention probs."""
        hidden, present, self_probs = self.layer[0](hidden, mask, past[:2] if past is not None else None, need_weights)
        hidden = _clamp_half(hidden)
        cross_probs = None
        if self.is_decoder and encoder_states is not None:
            hidden, cross, cross_probs = self.layer[1](hidden, encoder_states, encoder_mask,
                                                       past[2:] if past is not None else None, need_weights)
            present = (*present, *cross)
            hidden = _clamp_half(hidden)
        return _clamp_half(self.layer[-1](hidden)), present, self_probs, cross_probs

    def forward_flat(self, hidden, segments, mask, encoder_states=None, encoder_mask=None):
        hidden = _clamp_half(self.layer[0].forward_flat(hidden, segments, mask))
        if self.is_decoder and encoder_states is not None:
            hidden = _clamp_half(self.layer[1].forward_flat(hidden, segments, encoder_mask, encoder_states))
        return _clamp_half(self.layer[-1](hidden))


class T5PreTrainedModel(PreTrainedModel):
    config_class = T5Config
    base_model_prefix = "transformer"
    # The decoder's cross-attention never has a relative bias; some old checkpoints carry one.
    checkpoint_drop = PreTrainedModel.checkpoint_drop + (
        r"(^|\.)decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight$",)
    # The stacks' token tables are the shared one, always; the LM head only when tied.
    embedding_ties: dict[str, str] = {}

    def tied_weights(self) -> dict[str, str]:
        return {**self.embedding_ties, **super().tied_weights()}

    def init_all_weights(self) -> None:
        """The reference's init: fan-in scaled normals (the query also folds in the 1/sqrt(d_kv)
        the scores leave out), unit-normal token table and untied LM head, RMS norms at 1,
        zero biases; then the ties."""
        factor = self.config.initializer_factor
        d_model, d_kv, d_ff, heads = self.config.d_model, self.config.d_kv, self.config.d_ff, self.config.num_heads
        stds: dict[str, float] = {}
        for owner_name, owner in self.named_modules():
            if isinstance(owner, T5Attention):
                stds.update({f"{owner_name}.q": (d_model * d_kv) ** -0.5, f"{owner_name}.k": d_model ** -0.5,
                             f"{owner_name}.v": d_model ** -0.5, f"{owner_name}.o": (heads * d_kv) ** -0.5,
                             f"{owner_name}.relative_attention_bias": d_model ** -0.5})
            elif isinstance(owner, (T5DenseActDense, T5DenseGatedActDense)):
                for child in ("wi", "wi_0", "wi_1"):
                    stds[f"{owner_name}.{child}"] = d_model ** -0.5
                stds[f"{owner_name}.wo"] = d_ff ** -0.5
            elif isinstance(owner, T5ClassificationHead):
                stds.update({f"{owner_name}.dense": d_model ** -0.5, f"{owner_name}.out_proj": d_model ** -0.5})
        stds["qa_outputs"] = d_model ** -0.5
        with torch.no_grad():
            for module_name, module in self.named_modules():
                for name, param in module.named_parameters(recurse=False):
                    if isinstance(module, T5LayerNorm):
                        param.fill_(factor)
                    elif name == "bias":
                        param.zero_()
                    else:  # shared, lm_head and the token classifier: unit normal, as the reference
                        param.normal_(0.0, factor * stds.get(module_name, 1.0))
        self.tie_weights()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """As every model's, then in float16 the feed-forwards' output projections (``wo``) go
        back to float32, as the reference's ``_keep_in_fp32_modules``: T5's feed-forward
        outputs overflow float16 (released checkpoints give inf / NaN without it)."""
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        if model.shared_dtype() == torch.float16:
            for module in model.modules():
                if isinstance(module, (T5DenseActDense, T5DenseGatedActDense)):
                    module.wo.float()
            logger.info("%s in float16: the feed-forward output projections (wo) stay float32", cls.__name__)
        return loaded

    def shared_dtype(self) -> torch.dtype:
        """The dtype the model was loaded in (its token table's; ``wo`` may differ)."""
        return next(m for m in self.modules() if isinstance(m, nn.Embedding)).weight.dtype

    def shift_right(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Decoder inputs for targets: the start token, then the targets but the last (-100 → pad)."""
        start, pad = self.config.decoder_start_token_id, self.config.pad_token_id
        if start is None or pad is None:
            raise ValueError("config.decoder_start_token_id and pad_token_id must be set to build decoder inputs "
                             "(T5 uses the pad id, 0, for both)")
        shifted = input_ids.new_zeros(input_ids.shape)
        shifted[..., 1:] = input_ids[..., :-1]
        shifted[..., 0] = start
        return shifted.masked_fill(shifted == -100, pad)

    _shift_right = shift_right  # the reference's name


class T5Stack(nn.Module):
    """One side of the model: ``embed_tokens`` (the shared table), ``block.<i>``, ``final_layer_norm``."""

    def __init__(self, config: T5Config, embed_tokens: nn.Embedding, is_decoder: bool):
        super().__init__()
        self.config = config
        self.is_decoder = is_decoder
        self.embed_tokens = embed_tokens
        layers = config.num_decoder_layers if is_decoder else config.num_layers
        self.block = nn.ModuleList(T5Block(config, i == 0, is_decoder) for i in range(layers))
        self.final_layer_norm = T5LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    @property
    def relative_bias(self) -> T5Attention:
        return self.block[0].layer[0].SelfAttention

    def forward(self, input_ids=None, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                inputs_embeds=None, past_key_values: Optional[T5Cache] = None, use_cache: bool = False,
                output_hidden_states: bool = False, output_attentions: bool = False):
        """Padded (B, T) → last states (B, T, H), the cache (decoder with ``use_cache``), every
        layer's input states plus the final ones, self- and cross-attention probabilities."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Give exactly one of input_ids and inputs_embeds")
        if use_cache and not self.is_decoder:
            raise ValueError("use_cache is for the decoder: the encoder runs once per input")
        embeds = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, H)
        batch, length = embeds.shape[:2]
        past_length = past_key_values[0][0].shape[2] if past_key_values is not None else 0
        keys = past_length + length
        allowed = torch.ones(length, keys, dtype=torch.bool, device=embeds.device)
        if self.is_decoder:
            allowed = allowed.tril(diagonal=past_length)
        allowed = allowed[None, None]
        if attention_mask is not None:
            allowed = allowed & attention_mask.to(torch.bool)[:, None, None, :]  # (B, 1, T, P + T)
        mask = additive_mask(self.relative_bias.compute_bias(length, keys, past_length).to(embeds.dtype), allowed)
        encoder_mask = None
        if self.is_decoder and encoder_hidden_states is not None:
            # Cross-attention has no relative bias: only the encoder's padding.
            enc_allowed = (torch.ones(batch, encoder_hidden_states.shape[1], dtype=torch.bool, device=embeds.device)
                           if encoder_attention_mask is None else encoder_attention_mask.to(torch.bool))
            encoder_mask = additive_mask(embeds.new_zeros(1, 1, 1, 1), enc_allowed[:, None, None, :])
        hidden = self.dropout(embeds)
        all_hidden, self_probs, cross_probs, presents = [], [], [], []
        for i, block in enumerate(self.block):
            all_hidden.append(hidden)
            hidden, present, probs, cross = block(hidden, mask, encoder_hidden_states, encoder_mask,
                                                  past_key_values[i] if past_key_values is not None else None,
                                                  output_attentions)
            if use_cache:
                presents.append(present)
            self_probs.append(probs)
            cross_probs.append(cross)
        hidden = self.dropout(self.final_layer_norm(hidden))
        return (hidden, tuple(presents) if use_cache else None,
                (*all_hidden, hidden) if output_hidden_states else None,
                tuple(self_probs) if output_attentions else None,
                tuple(cross_probs) if output_attentions and encoder_hidden_states is not None else None)

    def flat_mask(self, segments: Segments) -> torch.Tensor:
        """(B, nH, T, T) additive: the relative bias of each sequence's own positions, its padding
        keys (and, in the decoder, later tokens) masked."""
        length = segments.max_seqlen
        allowed = segments.mask  # (B, 1, 1, T)
        if self.is_decoder:
            allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=allowed.device).tril()
        weight = self.embed_tokens.weight
        return additive_mask(self.relative_bias.compute_bias(length, length).to(weight.dtype), allowed)

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments,
                     encoder_states: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(N,) ids → (N, H) final states; the decoder attends to ``encoder_states`` (N, H) of the
        same segments."""
        hidden = self.embed_tokens(input_ids)
        mask = self.flat_mask(segments)
        encoder_mask = None
        if encoder_states is not None:
            encoder_mask = additive_mask(hidden.new_zeros(1, 1, 1, 1), segments.mask)
        for block in self.block:
            hidden = block.forward_flat(hidden, segments, mask, encoder_states, encoder_mask)
        return self.final_layer_norm(hidden)


def _flags(config: T5Config, output_hidden_states: Optional[bool], output_attentions: Optional[bool]):
    return (config.output_hidden_states if output_hidden_states is None else output_hidden_states,
            config.output_attentions if output_attentions is None else output_attentions)


class T5EncoderDecoder:
    """Mixin of the classes with ``shared``, ``encoder`` and ``decoder`` (T5Model,
    T5ForConditionalGeneration, T5ForQuestionAnswering): the two stacks run in turn."""

    embedding_ties = {"encoder.embed_tokens.weight": "shared.weight", "decoder.embed_tokens.weight": "shared.weight"}

    def build_stacks(self, config: T5Config) -> None:
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = T5Stack(config, self.shared, is_decoder=False)
        self.decoder = T5Stack(config, self.shared, is_decoder=True)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.shared

    def get_encoder(self) -> T5Stack:
        return self.encoder

    def encode(self, input_ids=None, attention_mask=None, inputs_embeds=None, output_hidden_states=None,
               output_attentions=None) -> BaseModelOutput:
        """The encoder alone: what generation and scoring run once per source."""
        hidden_flag, attn_flag = _flags(self.config, output_hidden_states, output_attentions)
        hidden, _, states, probs, _ = self.encoder(input_ids, attention_mask, inputs_embeds=inputs_embeds,
                                                   output_hidden_states=hidden_flag, output_attentions=attn_flag)
        return BaseModelOutput(hidden, states, probs)

    def run_seq2seq(self, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs,
                    past_key_values, inputs_embeds, decoder_inputs_embeds, use_cache, output_hidden_states,
                    output_attentions):
        """Encoder (unless ``encoder_outputs`` are given: a BaseModelOutput or a tuple whose first
        item is the (B, S, H) states), then the decoder over it → (decoder states, encoder output,
        decoder stack's outputs)."""
        hidden_flag, attn_flag = _flags(self.config, output_hidden_states, output_attentions)
        if encoder_outputs is None:
            encoder_outputs = self.encode(input_ids, attention_mask, inputs_embeds, hidden_flag, attn_flag)
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = BaseModelOutput(*encoder_outputs[:3])
        decoded = self.decoder(decoder_input_ids, decoder_attention_mask, encoder_outputs.last_hidden_state,
                               attention_mask, decoder_inputs_embeds, past_key_values, use_cache, hidden_flag,
                               attn_flag)
        return encoder_outputs, decoded

    def flat_seq2seq(self, input_ids: torch.Tensor, segments: Segments) -> torch.Tensor:
        """Unpadded encoder, then the decoder on each sequence's own ids shifted right (what the
        classification and QA heads decode) → (N, H) decoder states."""
        check_flat_inputs(self, input_ids, segments)
        encoded = self.encoder.forward_flat(input_ids, segments)
        shifted = torch.roll(input_ids, 1).index_fill(0, segments.first, self.config.decoder_start_token_id)
        return self.decoder.forward_flat(shifted, segments, encoded)


class T5Model(T5EncoderDecoder, T5PreTrainedModel):
    def __init__(self, config: T5Config):
        super().__init__(config)
        self.build_stacks(config)

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                encoder_outputs=None, past_key_values: Optional[T5Cache] = None, inputs_embeds=None,
                decoder_inputs_embeds=None, use_cache: bool = False, output_hidden_states=None,
                output_attentions=None) -> Seq2SeqModelOutput:
        """Padded source (B, S) and decoder inputs (B, T) → the decoder's final states (B, T, H)."""
        enc, (hidden, cache, states, probs, cross) = self.run_seq2seq(
            input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs, past_key_values,
            inputs_embeds, decoder_inputs_embeds, use_cache, output_hidden_states, output_attentions)
        return Seq2SeqModelOutput(hidden, cache, states, probs, cross, enc.last_hidden_state, enc.hidden_states,
                                  enc.attentions)

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments) -> torch.Tensor:
        """(N,) source ids → (N, H) encoder states: without decoder inputs, the flat protocol's
        per-token output of a sequence-to-sequence body is its encoding (what embed pools)."""
        check_flat_inputs(self, input_ids, segments)
        return self.encoder.forward_flat(input_ids, segments)


class T5ForConditionalGeneration(T5EncoderDecoder, T5PreTrainedModel):
    tied_keys = {"lm_head.weight": "shared.weight"}

    def __init__(self, config: T5Config):
        super().__init__(config)
        self.build_stacks(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)

    def lm_logits(self, decoder_states: torch.Tensor) -> torch.Tensor:
        """(..., H) decoder states → (..., V); tied heads read them scaled by d_model ** -0.5."""
        if self.config.scale_decoder_outputs:
            decoder_states = decoder_states * (self.config.d_model ** -0.5)
        return self.lm_head(decoder_states)

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                encoder_outputs=None, past_key_values: Optional[T5Cache] = None, inputs_embeds=None,
                decoder_inputs_embeds=None, labels=None, use_cache: bool = False, output_hidden_states=None,
                output_attentions=None) -> Seq2SeqLMOutput:
        """As T5Model, then next-token logits (B, T, V); ``labels`` (B, T), -100 ignored, give the
        decoder inputs (shifted right) when none are passed and the mean cross-entropy loss."""
        if labels is not None and decoder_input_ids is None and decoder_inputs_embeds is None:
            decoder_input_ids = self.shift_right(labels)
        enc, (hidden, cache, states, probs, cross) = self.run_seq2seq(
            input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs, past_key_values,
            inputs_embeds, decoder_inputs_embeds, use_cache, output_hidden_states, output_attentions)
        logits = self.lm_logits(hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1).to(logits.device),
                                   ignore_index=-100)
        return Seq2SeqLMOutput(loss, logits, cache, states, probs, cross, enc.last_hidden_state, enc.hidden_states,
                               enc.attentions)

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments) -> torch.Tensor:
        """(N,) source ids → (N, H) encoder states (as T5Model's)."""
        check_flat_inputs(self, input_ids, segments)
        return self.encoder.forward_flat(input_ids, segments)


class T5EncoderModel(T5PreTrainedModel):
    """The encoder alone (sentence-T5 / GTR embeddings, the token classifier's body)."""

    embedding_ties = {"encoder.embed_tokens.weight": "shared.weight"}
    # A full encoder-decoder checkpoint loads into it: its decoder is not needed, not unexpected.
    checkpoint_drop = T5PreTrainedModel.checkpoint_drop + (r"^(transformer\.)?decoder\.", r"^lm_head\.")

    def __init__(self, config: T5Config):
        super().__init__(config)
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = T5Stack(config, self.shared, is_decoder=False)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.shared

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, output_hidden_states=None,
                output_attentions=None) -> BaseModelOutput:
        hidden_flag, attn_flag = _flags(self.config, output_hidden_states, output_attentions)
        hidden, _, states, probs, _ = self.encoder(input_ids, attention_mask, inputs_embeds=inputs_embeds,
                                                   output_hidden_states=hidden_flag, output_attentions=attn_flag)
        return BaseModelOutput(hidden, states, probs)

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments) -> torch.Tensor:
        check_flat_inputs(self, input_ids, segments)
        return self.encoder.forward_flat(input_ids, segments)


class T5ClassificationHead(nn.Module):
    def __init__(self, config: T5Config):
        super().__init__()
        self.dense = nn.Linear(config.d_model, config.d_model)
        self.dropout = nn.Dropout(p=config.classifier_dropout or 0.0)
        self.out_proj = nn.Linear(config.d_model, config.num_labels)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dropout(torch.tanh(self.dense(self.dropout(hidden)))))


class T5ForSequenceClassification(T5PreTrainedModel):
    """The reference's BART-style classifier: the source goes through the encoder and, shifted
    right, through the decoder; the decoder state at each row's last EOS is classified."""

    embedding_ties = {"transformer.encoder.embed_tokens.weight": "transformer.shared.weight",
                      "transformer.decoder.embed_tokens.weight": "transformer.shared.weight"}

    def __init__(self, config: T5Config):
        super().__init__(config)
        self.transformer = T5Model(config)
        self.classification_head = T5ClassificationHead(config)

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                encoder_outputs=None, inputs_embeds=None, decoder_inputs_embeds=None, use_cache: bool = False,
                output_hidden_states=None, output_attentions=None) -> Seq2SeqSequenceClassifierOutput:
        if input_ids is None:
            raise ValueError("T5ForSequenceClassification needs input_ids: it classifies at each row's EOS token")
        if decoder_input_ids is None and decoder_inputs_embeds is None:
            decoder_input_ids = self.shift_right(input_ids)
        out = self.transformer(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs,
                               None, inputs_embeds, decoder_inputs_embeds, use_cache, output_hidden_states,
                               output_attentions)
        hidden = out.last_hidden_state  # (B, T, H)
        eos = input_ids.eq(self.config.eos_token_id)
        counts = eos.sum(1)
        if bool((counts == 0).any()) or bool((counts != counts[0]).any()):
            raise ValueError(f"T5 sequence classification pools at the EOS token (id {self.config.eos_token_id}): "
                             f"every row needs one and all rows the same number; got {counts.tolist()}")
        last_eos = hidden[eos].view(hidden.shape[0], -1, hidden.shape[-1])[:, -1]  # (B, H)
        return Seq2SeqSequenceClassifierOutput(self.classification_head(last_eos), out.past_key_values,
                                               out.decoder_hidden_states, out.decoder_attentions,
                                               out.cross_attentions, out.encoder_last_hidden_state,
                                               out.encoder_hidden_states, out.encoder_attentions)

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments) -> torch.Tensor:
        """(N,) ids → (B, num_labels) from each sequence's last EOS (its last token, as the
        tokenizer appends it; a sequence without one is refused as in the padded forward)."""
        decoded = self.transformer.flat_seq2seq(input_ids, segments)  # (N, H)
        eos = input_ids.eq(self.config.eos_token_id)
        counts = torch.zeros(segments.num_sequences, dtype=torch.long, device=input_ids.device).index_add_(
            0, segments.sequence, eos.long())
        if bool((counts == 0).any()):
            raise ValueError(f"T5 sequence classification pools at the EOS token (id {self.config.eos_token_id}): "
                             f"every sequence needs one; counts {counts.tolist()}")
        index = torch.arange(input_ids.shape[0], device=input_ids.device)
        last = torch.full((segments.num_sequences,), -1, dtype=torch.long, device=input_ids.device).scatter_reduce_(
            0, segments.sequence, torch.where(eos, index, -1), "amax")
        return self.classification_head(decoded.index_select(0, last))


class T5ForTokenClassification(T5PreTrainedModel):
    embedding_ties = {"transformer.encoder.embed_tokens.weight": "transformer.shared.weight"}
    checkpoint_drop = T5EncoderModel.checkpoint_drop

    def __init__(self, config: T5Config):
        super().__init__(config)
        self.transformer = T5EncoderModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout or 0.0)
        self.classifier = nn.Linear(config.d_model, config.num_labels)

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, output_hidden_states=None,
                output_attentions=None) -> TokenClassifierOutput:
        out = self.transformer(input_ids, attention_mask, inputs_embeds, output_hidden_states, output_attentions)
        return TokenClassifierOutput(self.classifier(self.dropout(out.last_hidden_state)), out.hidden_states,
                                     out.attentions)

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments) -> torch.Tensor:
        """(N,) ids → (N, num_labels)."""
        return self.classifier(self.transformer.forward_flat(input_ids, segments))


class T5ForQuestionAnswering(T5EncoderDecoder, T5PreTrainedModel):
    """Span logits from the decoder states of the shifted source (the reference's design)."""

    def __init__(self, config: T5Config):
        super().__init__(config)
        self.build_stacks(config)
        self.qa_outputs = nn.Linear(config.d_model, config.num_labels)

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                encoder_outputs=None, inputs_embeds=None, decoder_inputs_embeds=None, use_cache: bool = False,
                output_hidden_states=None, output_attentions=None) -> Seq2SeqQuestionAnsweringModelOutput:
        if decoder_input_ids is None and decoder_inputs_embeds is None:
            if input_ids is None:
                raise ValueError("Give input_ids, or decoder_input_ids / decoder_inputs_embeds")
            decoder_input_ids = self.shift_right(input_ids)
        enc, (hidden, cache, states, probs, cross) = self.run_seq2seq(
            input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs, None,
            inputs_embeds, decoder_inputs_embeds, use_cache, output_hidden_states, output_attentions)
        start, end = self.qa_outputs(hidden).split(1, dim=-1)
        return Seq2SeqQuestionAnsweringModelOutput(start.squeeze(-1).contiguous(), end.squeeze(-1).contiguous(),
                                                   cache, states, probs, cross, enc.last_hidden_state,
                                                   enc.hidden_states, enc.attentions)

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments) -> torch.Tensor:
        """(N,) ids → (N, 2) start and end logits."""
        return self.qa_outputs(self.flat_seq2seq(input_ids, segments))


CONTRACT = ModelContract(
    model_type="t5",
    config_class=T5Config,
    heads={
        registry.BASE: T5Model,
        registry.PRETRAINING: T5ForConditionalGeneration,
        registry.WITH_LM_HEAD: T5ForConditionalGeneration,
        registry.ENCODER: T5EncoderModel,
        registry.SEQUENCE_CLASSIFICATION: T5ForSequenceClassification,
        registry.TOKEN_CLASSIFICATION: T5ForTokenClassification,
        registry.QUESTION_ANSWERING: T5ForQuestionAnswering,
    },
    name_patterns=("t5",),
    input_names=("input_ids", "attention_mask"),
    tokenizer="t5",
    tokenizer_class="T5Tokenizer",
    rank=10,
    padding_side="right",
    encoder_decoder=True,
)
