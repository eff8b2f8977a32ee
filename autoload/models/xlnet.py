"""XLNet: config, two-stream relative-attention body and heads, loading reference checkpoints by their key names.

Every layer attends with relative positions (a sinusoid of the query-key distance, projected by
``r``) plus three learned biases: ``r_w_bias`` on the content score, ``r_r_bias`` on the
position score, ``r_s_bias`` on the segment score (``seg_embed``: same or different segment).
Hidden states of earlier segments (``mems``) can be prepended to the keys; ``attn_type="uni"``
adds a causal mask; ``perm_mask`` / ``target_mapping`` run the query stream (pretraining and
generation), whose queries start from ``mask_emb``.

Tensors run batch first, (B, T, H); ``mems`` in and out keep the reference's layout, per layer
(M, B, H), so they pass between this model and the reference unchanged.

Padding: the position scores depend only on query-key distances and padded keys are masked, so
a real token's states are the same whatever padding surrounds the row (left, as XLNet's
tokenizer pads, or right).  Only the summaries that look at pads differ from the row alone
in the padded forward, as in the reference: ``summary_type="first"`` on a left-padded row takes
a pad, ``"mean"`` averages the pads too.  The flat forward (the job's path) pools each
sequence over its own tokens, i.e. what the reference computes on the row alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import registry
from ..configuration import PretrainedConfig
from ..contract import ModelContract
from ..layers import check_one_input
from ..modeling import ModelOutput, PreTrainedModel, Segments, activation, check_flat_inputs, pool_segments

Mems = Sequence[torch.Tensor]  # per layer (M, B, H), the reference's layout


class XLNetConfig(PretrainedConfig):
    model_type = "xlnet"
    defaults = dict(
        vocab_size=32000,
        d_model=1024,
        n_layer=24,
        n_head=16,
        d_inner=4096,
        d_head=None,  # d_model // n_head; the reference refuses any other value
        ff_activation="gelu",
        attn_type="bi",
        initializer_range=0.02,
        layer_norm_eps=1e-12,
        dropout=0.1,
        mem_len=512,
        reuse_len=None,
        use_mems_eval=True,
        use_mems_train=False,
        bi_data=False,
        clamp_len=-1,
        same_length=False,
        summary_type="last",
        summary_use_proj=True,
        summary_activation="tanh",
        summary_last_dropout=0.1,
        start_n_top=5,
        end_n_top=5,
        pad_token_id=5,
        bos_token_id=1,
        eos_token_id=2,
    )
    attribute_map = {"n_token": "vocab_size", "hidden_size": "d_model", "num_attention_heads": "n_head",
                     "num_hidden_layers": "n_layer"}

    @property
    def max_position_embeddings(self) -> int:
        """-1, as the reference: there is no position table (see ``no_length_limit``)."""
        return -1

    @max_position_embeddings.setter
    def max_position_embeddings(self, value: int) -> None:
        raise ValueError(f"XLNet has no position table and no sequence length limit; max_position_embeddings={value} "
                         "cannot be set (drop it from the config)")


def no_length_limit(config: XLNetConfig) -> int:
    """XLNet has no position table: any length runs (memory grows with its square)."""
    return 1_000_000_000


def head_dim(config: XLNetConfig) -> int:
    if config.d_model % config.n_head:
        raise ValueError(f"d_model {config.d_model} is not a multiple of n_head {config.n_head}")
    dim = config.d_model // config.n_head
    if config.d_head not in (None, dim):
        raise ValueError(f"d_head {config.d_head} must be d_model // n_head = {dim}, as the reference requires")
    return dim


# ---------------------------------------------------------------------------------------------
# Body
# ---------------------------------------------------------------------------------------------
def relative_shift(scores: torch.Tensor, query_length: int, key_length: int) -> torch.Tensor:
    """Position scores per relative-position slot (..., T, R) → per key (..., T, K).

    Slot ``r`` holds distance ``beg - r`` (``beg = K``); query ``i`` sits at ``M + i`` among the
    keys, so key ``j`` is at distance ``M + i - j``: slot ``T - i + j``.  Slots past the table
    (only for keys after the query under ``attn_type="uni"``, which the causal mask hides) read
    the last slot."""
    i = torch.arange(query_length, device=scores.device)[:, None]
    j = torch.arange(key_length, device=scores.device)[None, :]
    index = (query_length - i + j).clamp(max=scores.shape[-1] - 1)  # (T, K)
    return scores.gather(-1, index.expand(*scores.shape[:-1], key_length))


class XLNetRelativeAttention(nn.Module):
    """Relative multi-head attention of one layer, shared by the content and query streams."""

    def __init__(self, config: XLNetConfig):
        super().__init__()
        self.n_head = config.n_head
        self.d_head = head_dim(config)
        self.scale = 1 / math.sqrt(self.d_head)
        shape = (config.d_model, self.n_head, self.d_head)
        self.q, self.k, self.v, self.o, self.r = (nn.Parameter(torch.empty(shape)) for _ in range(5))
        self.r_r_bias = nn.Parameter(torch.empty(self.n_head, self.d_head))
        self.r_s_bias = nn.Parameter(torch.empty(self.n_head, self.d_head))
        self.r_w_bias = nn.Parameter(torch.empty(self.n_head, self.d_head))
        self.seg_embed = nn.Parameter(torch.empty(2, self.n_head, self.d_head))
        self.layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_pos: torch.Tensor,
               other_segment: Optional[torch.Tensor], blocked: Optional[torch.Tensor],
               need_weights: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """q (B, nH, T, d), k and v (B, nH, K, d), k_pos (B|1, nH, R, d); ``other_segment`` (B, T, K)
        True where query and key lie in different segments; ``blocked`` (B|1, T, K) True where the
        query may not see the key → context (B, nH, T, d) and maybe probabilities (B, nH, T, K)."""
        length, keys = q.shape[2], k.shape[2]
        position = relative_shift((q + self.r_r_bias[:, None]) @ k_pos.transpose(-1, -2), length, keys)  # (B, nH, T, K)
        if other_segment is not None:
            segment = torch.einsum("bnid,snd->bnis", q + self.r_s_bias[:, None], self.seg_embed)  # (B, nH, T, 2)
            position = position + torch.where(other_segment[:, None], segment[..., 1:], segment[..., :1])
        bias = position * self.scale
        if blocked is not None:
            # The reference's floor (its scores minus 1e30, or 65500 in float16), not -inf: a query of
            # the query stream may see no key at all, and gets uniform weights rather than NaN.
            bias = bias.masked_fill(blocked[:, None], -65500.0 if bias.dtype == torch.float16 else -1e30)
        content_q = q + self.r_w_bias[:, None]
        dropout = self.dropout.p if self.training else 0.0
        if not need_weights:
            # The content score goes through SDPA; position, segment and mask ride along as its bias.
            return F.scaled_dot_product_attention(content_q, k, v, attn_mask=bias, dropout_p=dropout, scale=self.scale), None
        probs = F.dropout((content_q @ k.transpose(-1, -2) * self.scale + bias).softmax(-1), p=dropout)
        return probs @ v, probs

    def post_attention(self, residual: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """(B, nH, T, d) context → projected back by ``o``, residual, LayerNorm → (B, T, H)."""
        out = torch.einsum("bnid,hnd->bih", context, self.o)
        return self.layer_norm(self.dropout(out) + residual)

    def forward(self, h: torch.Tensor, g: Optional[torch.Tensor], blocked_h: Optional[torch.Tensor],
                blocked_g: Optional[torch.Tensor], pos_emb: torch.Tensor, other_segment: Optional[torch.Tensor],
                mem: Optional[torch.Tensor], target_mapping: Optional[torch.Tensor], need_weights: bool):
        """Content stream h (B, T, H) and query stream g (B, P, H) or None; ``mem`` (B, M, H) is
        prepended to the keys; ``target_mapping`` (B, P, T) places the P queries."""
        keys = h if mem is None else torch.cat([mem, h], dim=1)  # (B, K, H)
        k = torch.einsum("bjh,hnd->bnjd", keys, self.k)
        v = torch.einsum("bjh,hnd->bnjd", keys, self.v)
        k_pos = torch.einsum("brh,hnd->bnrd", pos_emb.to(self.r.dtype), self.r)  # (B|1, nH, R, d)
        q = torch.einsum("bih,hnd->bnid", h, self.q)
        context, probs_h = self.attend(q, k, v, k_pos, other_segment, blocked_h, need_weights)
        out_h = self.post_attention(h, context)
        if g is None:
            return out_h, None, probs_h
        q_g = torch.einsum("bph,hnd->bnpd", g, self.q)
        q_g = torch.einsum("bnpd,bpt->bntd", q_g, target_mapping)  # each prediction's query at its token
        context, probs_g = self.attend(q_g, k, v, k_pos, other_segment, blocked_g, need_weights)
        context = torch.einsum("bntd,bpt->bnpd", context, target_mapping)
        return out_h, self.post_attention(g, context), (probs_h, probs_g) if need_weights else None


class XLNetFeedForward(nn.Module):
    def __init__(self, config: XLNetConfig):
        super().__init__()
        self.layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.layer_1 = nn.Linear(config.d_model, config.d_inner)
        self.layer_2 = nn.Linear(config.d_inner, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.activation_function = activation(config.ff_activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inner = self.dropout(self.activation_function(self.layer_1(x)))
        return self.layer_norm(self.dropout(self.layer_2(inner)) + x)


class XLNetLayer(nn.Module):
    def __init__(self, config: XLNetConfig):
        super().__init__()
        self.rel_attn = XLNetRelativeAttention(config)
        self.ff = XLNetFeedForward(config)

    def forward(self, h, g, blocked_h, blocked_g, pos_emb, other_segment, mem, target_mapping, need_weights):
        h, g, probs = self.rel_attn(h, g, blocked_h, blocked_g, pos_emb, other_segment, mem, target_mapping,
                                    need_weights)
        return self.ff(h), (self.ff(g) if g is not None else None), probs


@dataclass
class XLNetModelOutput(ModelOutput):
    last_hidden_state: torch.Tensor
    mems: Optional[tuple[torch.Tensor, ...]] = None  # per layer (M, B, H)
    hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    attentions: Optional[tuple] = None


@dataclass
class XLNetLMHeadModelOutput(ModelOutput):
    logits: torch.Tensor
    mems: Optional[tuple[torch.Tensor, ...]] = None
    hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    attentions: Optional[tuple] = None


XLNetForSequenceClassificationOutput = XLNetForTokenClassificationOutput = XLNetLMHeadModelOutput
XLNetForMultipleChoiceOutput = XLNetLMHeadModelOutput


@dataclass
class XLNetForQuestionAnsweringSimpleOutput(ModelOutput):
    start_logits: torch.Tensor
    end_logits: torch.Tensor
    mems: Optional[tuple[torch.Tensor, ...]] = None
    hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    attentions: Optional[tuple] = None


@dataclass
class XLNetForQuestionAnsweringOutput(ModelOutput):
    """The beam of answers: ``start_n_top`` starts, for each ``end_n_top`` ends, and whether the
    question is answerable.  As in the reference, the "log_probs" are softmax probabilities."""

    start_top_log_probs: torch.Tensor  # (B, start_n_top)
    start_top_index: torch.Tensor  # (B, start_n_top)
    end_top_log_probs: torch.Tensor  # (B, start_n_top * end_n_top)
    end_top_index: torch.Tensor  # (B, start_n_top * end_n_top)
    cls_logits: torch.Tensor  # (B,)
    mems: Optional[tuple[torch.Tensor, ...]] = None
    hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    attentions: Optional[tuple] = None


class XLNetPreTrainedModel(PreTrainedModel):
    config_class = XLNetConfig
    base_model_prefix = "transformer"

    def init_weight(self, module: nn.Module, name: str, param: torch.Tensor) -> None:
        """The reference's: every attention parameter (the three biases included) and ``mask_emb``
        drawn from N(0, initializer_range); the rest as everywhere."""
        if isinstance(module, XLNetRelativeAttention) or name == "mask_emb":  # own parameters only (recurse=False)
            with torch.no_grad():
                param.normal_(mean=0.0, std=self.config.initializer_range)
            return
        super().init_weight(module, name, param)


class XLNetModel(XLNetPreTrainedModel):
    def __init__(self, config: XLNetConfig):
        super().__init__(config)
        if config.attn_type not in ("bi", "uni"):
            raise ValueError(f"attn_type must be 'bi' or 'uni', got {config.attn_type!r}")
        self.word_embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.mask_emb = nn.Parameter(torch.empty(1, 1, config.d_model))
        self.layer = nn.ModuleList(XLNetLayer(config) for _ in range(config.n_layer))
        self.dropout = nn.Dropout(config.dropout)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.word_embedding

    # -- positions and masks ----------------------------------------------------------------
    def relative_positions(self, query_length: int, key_length: int, batch: int, device: torch.device) -> torch.Tensor:
        """(B|1, R, H) sinusoids of the distances K, K-1, ... down to -T+1 (bi) or 0 (uni),
        clamped to ``clamp_len``.  With ``bi_data`` the first half of the batch gets them
        forward, the second half backward (the reference's pretraining input pipeline)."""
        config = self.config
        inv_freq = 1 / torch.pow(10000, torch.arange(0, config.d_model, 2, device=device).float() / config.d_model)
        end = -query_length if config.attn_type == "bi" else -1
        forward = torch.arange(key_length, end, -1, device=device).float()  # (R,)

        def sinusoid(distances: torch.Tensor) -> torch.Tensor:
            if config.clamp_len > 0:
                distances = distances.clamp(-config.clamp_len, config.clamp_len)
            angles = distances[:, None] * inv_freq  # (R, H/2)
            return torch.cat([angles.sin(), angles.cos()], dim=-1)  # (R, H)

        if not config.bi_data:
            return sinusoid(forward)[None]
        if batch % 2:
            raise ValueError(f"bi_data needs an even batch (half forward, half backward), got {batch} rows")
        half = batch // 2
        return torch.cat([sinusoid(forward)[None].expand(half, -1, -1), sinusoid(-forward)[None].expand(half, -1, -1)])

    def blocked_keys(self, query_length: int, mem_length: int, pad_keys: Optional[torch.Tensor],
                     perm_mask: Optional[torch.Tensor], device: torch.device
                     ) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Which keys each query may not see, (B|1, T, M + T) boolean or None (all visible), for
        the query stream and for the content stream (which always sees its own token)."""
        blocked = None
        if self.config.attn_type == "uni":
            keys = torch.arange(mem_length + query_length, device=device)[None, :]
            queries = torch.arange(query_length, device=device)[:, None] + mem_length
            blocked = keys > queries
            if self.config.same_length:  # each query sees the same number of keys
                blocked = blocked | (keys < queries - mem_length)
            blocked = blocked[None]  # (1, T, K)
        data = None
        if pad_keys is not None:
            data = pad_keys[:, None, :].expand(-1, query_length, -1)  # (B, T, T)
        if perm_mask is not None:
            data = perm_mask if data is None else data | perm_mask
        if data is not None:
            if mem_length:  # every memory slot may be attended
                data = torch.cat([data.new_zeros(data.shape[0], query_length, mem_length), data], dim=2)
            blocked = data if blocked is None else blocked | data
        if blocked is None:
            return None, None
        own = torch.arange(query_length, device=device)[:, None] + mem_length == torch.arange(
            mem_length + query_length, device=device)[None, :]
        return blocked, blocked & ~own

    def _new_mem(self, hidden: torch.Tensor, previous: Optional[torch.Tensor]) -> torch.Tensor:
        """The memory the next segment gets: (B, T, H) states (the first ``reuse_len``) after
        ``previous``, the last ``mem_len`` kept (all when ``mem_len`` is unset or 0)."""
        if self.config.reuse_len:
            hidden = hidden[:, :self.config.reuse_len]
        joined = hidden if previous is None else torch.cat([previous, hidden], dim=1)
        if self.config.mem_len:
            joined = joined[:, -self.config.mem_len:]
        return joined.detach()

    # -- forward ----------------------------------------------------------------------------
    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        mems: Optional[Mems] = None,
        perm_mask: Optional[torch.Tensor] = None,
        target_mapping: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        input_mask: Optional[torch.Tensor] = None,
        inputs_embeds: Optional[torch.Tensor] = None,
        use_mems: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
    ) -> XLNetModelOutput:
        """(B, T) tokens after ``mems`` (per layer (M, B, H)).  ``attention_mask`` (1 = real) or
        ``input_mask`` (1 = pad), not both; ``perm_mask`` (B, T, T) 1 where query i may not see
        token j; ``target_mapping`` (B, P, T) one-hot positions to predict (runs the query
        stream, whose states come out).  ``use_mems`` (default: the config's, for eval or
        training) returns each layer's memory for the next segment."""
        config = self.config
        check_one_input(input_ids, inputs_embeds)
        if attention_mask is not None and input_mask is not None:
            raise ValueError("pass one of attention_mask (1 for real tokens) or input_mask (1 for padding), not both")
        use_mems = (config.use_mems_train if self.training else config.use_mems_eval) if use_mems is None else use_mems
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states

        embeds = self.word_embedding(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, H)
        batch, length = embeds.shape[:2]
        device = embeds.device
        layer_mems = [None] * len(self.layer) if mems is None else [
            None if m is None else m.transpose(0, 1) for m in mems]  # (B, M, H)
        mem_length = 0 if mems is None or mems[0] is None else mems[0].shape[0]

        pad_keys = None
        if attention_mask is not None:
            pad_keys = attention_mask.to(device) == 0
        elif input_mask is not None:
            pad_keys = input_mask.to(device) > 0
        blocked_g, blocked_h = self.blocked_keys(length, mem_length, pad_keys,
                                                 None if perm_mask is None else perm_mask.to(device) > 0, device)
        other_segment = None
        if token_type_ids is not None:  # memory slots count as segment 0
            key_types = F.pad(token_type_ids, (mem_length, 0), value=0)
            other_segment = token_type_ids[:, :, None] != key_types[:, None, :]  # (B, T, K)
        pos_emb = self.dropout(self.relative_positions(length, mem_length + length, batch, device).to(embeds.dtype))

        h = self.dropout(embeds)
        g = None
        if target_mapping is not None:
            target_mapping = target_mapping.to(embeds.dtype)
            g = self.dropout(self.mask_emb.expand(batch, target_mapping.shape[1], -1))  # (B, P, H)
        new_mems, all_hidden, all_probs = [], [], []
        for layer, mem in zip(self.layer, layer_mems):
            if use_mems:
                new_mems.append(self._new_mem(h, mem).transpose(0, 1))  # (M', B, H)
            all_hidden.extend((h, g) if g is not None else (h,))
            h, g, probs = layer(h, g, blocked_h, blocked_g, pos_emb, other_segment, mem, target_mapping,
                                output_attentions)
            all_probs.append(probs)
        all_hidden.extend((h, g) if g is not None else (h,))
        return XLNetModelOutput(
            self.dropout(g if g is not None else h),
            tuple(new_mems) if use_mems else None,
            tuple(all_hidden) if output_hidden_states else None,
            tuple(all_probs) if output_attentions else None,
        )

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments) -> torch.Tensor:
        """Unpadded inference: (N,) token ids of ``segments``' sequences back to back → (N, H)
        final states, each sequence on its own (no memory from or to another row).

        Relative attention has no position table to pad around, so the rows are scattered into
        a right-padded (B, T) layout with pad keys masked: every real token's states are then
        those of its row alone."""
        check_flat_inputs(self, input_ids, segments)
        if self.config.bi_data:
            raise ValueError("bi_data=True mixes rows (half the batch runs its positions backward): the flat path "
                             "runs each row alone; set bi_data=False for inference")
        out = self(_scatter(input_ids, segments), segments.mask[:, 0, 0].long(), use_mems=False,
                   output_attentions=False, output_hidden_states=False)
        return out.last_hidden_state.reshape(-1, out.last_hidden_state.shape[-1]).index_select(0, segments.padded_index)


def _scatter(values: torch.Tensor, segments: Segments) -> torch.Tensor:
    """(N,) flat values → (B, T) right-padded, zeros after each sequence."""
    padded = values.new_zeros(segments.num_sequences * segments.max_seqlen)
    return padded.index_copy_(0, segments.padded_index, values).view(segments.num_sequences, segments.max_seqlen)


# ---------------------------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------------------------
class XLNetFlatHead:
    """A head on the flat layout: ``XLNetModel.forward_flat``'s inputs, then the head's ``head_flat``."""

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments) -> torch.Tensor:
        """Unpadded inference: (N,) token ids → per-sequence (B, ...) or per-token (N, ...) outputs."""
        return self.head_flat(self.transformer.forward_flat(input_ids, segments), segments)


class XLNetLMHeadModel(XLNetFlatHead, XLNetPreTrainedModel):
    tied_keys = {"lm_loss.weight": "transformer.word_embedding.weight"}

    def __init__(self, config: XLNetConfig):
        super().__init__(config)
        self.transformer = XLNetModel(config)
        self.lm_loss = nn.Linear(config.d_model, config.vocab_size)

    def forward(self, input_ids=None, attention_mask=None, mems=None, perm_mask=None, target_mapping=None,
                token_type_ids=None, input_mask=None, inputs_embeds=None, **kwargs) -> XLNetLMHeadModelOutput:
        out = self.transformer(input_ids, attention_mask, mems, perm_mask, target_mapping, token_type_ids, input_mask,
                               inputs_embeds, **kwargs)
        return XLNetLMHeadModelOutput(self.lm_loss(out.last_hidden_state), out.mems, out.hidden_states,
                                      out.attentions)  # (B, T|P, V)

    def head_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        """(N, H) → (N, V) per-token logits."""
        return self.lm_loss(hidden)


class XLNetSequenceSummary(nn.Module):
    """One vector per sequence (``summary_type``: its last token, first token, mean, or the token
    at ``cls_index``), then the optional projection (``summary_use_proj``), activation
    (``summary_activation``) and dropouts, under the reference's key ``summary``."""

    def __init__(self, config: XLNetConfig):
        super().__init__()
        self.summary_type = config.summary_type
        if self.summary_type not in ("last", "first", "mean", "cls_index"):
            raise ValueError(f"summary_type must be last, first, mean or cls_index, got {self.summary_type!r} "
                             "(the reference does not implement 'attn' either)")
        self.summary = nn.Identity()
        if config.summary_use_proj:
            to_labels = getattr(config, "summary_proj_to_labels", False) and config.num_labels > 0
            self.summary = nn.Linear(config.d_model, config.num_labels if to_labels else config.d_model)
        name = getattr(config, "summary_activation", None)
        self.activation = activation(name) if name else nn.Identity()
        self.first_dropout = nn.Dropout(getattr(config, "summary_first_dropout", 0.0) or 0.0)
        self.last_dropout = nn.Dropout(getattr(config, "summary_last_dropout", 0.0) or 0.0)

    def forward(self, hidden: torch.Tensor, cls_index: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, T, H) → (B, H'): the reference's pick, pads included (see the module docstring)."""
        if self.summary_type == "last":
            picked = hidden[:, -1]
        elif self.summary_type == "first":
            picked = hidden[:, 0]
        elif self.summary_type == "mean":
            picked = hidden.mean(dim=1)
        elif cls_index is None:  # cls_index: the last position unless told
            picked = hidden[:, -1]
        else:
            picked = hidden.gather(-2, cls_index[..., None, None].expand(*cls_index.shape, 1, hidden.shape[-1])).squeeze(-2)
        return self.project(picked)

    def forward_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        """(N, H) → (B, H'): each sequence summarised over its own tokens (as the row alone)."""
        mode = {"first": "cls", "mean": "mean"}.get(self.summary_type, "last")
        return self.project(pool_segments(hidden, segments, mode))

    def project(self, picked: torch.Tensor) -> torch.Tensor:
        return self.last_dropout(self.activation(self.summary(self.first_dropout(picked))))


class XLNetForSequenceClassification(XLNetFlatHead, XLNetPreTrainedModel):
    def __init__(self, config: XLNetConfig):
        super().__init__(config)
        self.transformer = XLNetModel(config)
        self.sequence_summary = XLNetSequenceSummary(config)
        self.logits_proj = nn.Linear(config.d_model, config.num_labels)

    def forward(self, input_ids=None, attention_mask=None, mems=None, perm_mask=None, target_mapping=None,
                token_type_ids=None, input_mask=None, inputs_embeds=None, **kwargs):
        out = self.transformer(input_ids, attention_mask, mems, perm_mask, target_mapping, token_type_ids, input_mask,
                               inputs_embeds, **kwargs)
        logits = self.logits_proj(self.sequence_summary(out.last_hidden_state))  # (B, num_labels)
        return XLNetForSequenceClassificationOutput(logits, out.mems, out.hidden_states, out.attentions)

    def head_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        """(N, H) → (B, num_labels) logits of each sequence's summary."""
        return self.logits_proj(self.sequence_summary.forward_flat(hidden, segments))


class XLNetForTokenClassification(XLNetFlatHead, XLNetPreTrainedModel):
    def __init__(self, config: XLNetConfig):
        super().__init__(config)
        self.transformer = XLNetModel(config)
        self.classifier = nn.Linear(config.d_model, config.num_labels)  # no dropout before it, as the reference

    def forward(self, input_ids=None, attention_mask=None, mems=None, perm_mask=None, target_mapping=None,
                token_type_ids=None, input_mask=None, inputs_embeds=None, **kwargs):
        out = self.transformer(input_ids, attention_mask, mems, perm_mask, target_mapping, token_type_ids, input_mask,
                               inputs_embeds, **kwargs)
        return XLNetForTokenClassificationOutput(self.classifier(out.last_hidden_state), out.mems, out.hidden_states,
                                                 out.attentions)

    def head_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        """(N, H) → (N, num_labels) per-token logits."""
        return self.classifier(hidden)


class XLNetForQuestionAnsweringSimple(XLNetFlatHead, XLNetPreTrainedModel):
    """Start and end logits per token (today's reference maps AutoModelForQuestionAnswering here)."""

    def __init__(self, config: XLNetConfig):
        super().__init__(config)
        if config.num_labels != 2:
            raise ValueError(f"{type(self).__name__} needs num_labels=2 (start and end logits), got {config.num_labels}")
        self.transformer = XLNetModel(config)
        self.qa_outputs = nn.Linear(config.d_model, 2)

    def forward(self, input_ids=None, attention_mask=None, mems=None, perm_mask=None, target_mapping=None,
                token_type_ids=None, input_mask=None, inputs_embeds=None, **kwargs):
        out = self.transformer(input_ids, attention_mask, mems, perm_mask, target_mapping, token_type_ids, input_mask,
                               inputs_embeds, **kwargs)
        start, end = self.qa_outputs(out.last_hidden_state).split(1, dim=-1)  # (B, T, 1) each
        return XLNetForQuestionAnsweringSimpleOutput(start.squeeze(-1), end.squeeze(-1), out.mems, out.hidden_states,
                                                     out.attentions)

    def head_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        """(N, H) → (N, 2): each token's start logit, then its end logit."""
        return self.qa_outputs(hidden)


def _masked(logits: torch.Tensor, p_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Logits with positions ``p_mask`` marks (1.0) pushed to -1e30, as the reference writes it."""
    if p_mask is None:
        return logits
    floor = 65500 if p_mask.dtype == torch.float16 else 1e30
    return logits * (1 - p_mask) - floor * p_mask


class XLNetPoolerStartLogits(nn.Module):
    def __init__(self, config: XLNetConfig):
        super().__init__()
        self.dense = nn.Linear(config.d_model, 1)

    def forward(self, hidden: torch.Tensor, p_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return _masked(self.dense(hidden).squeeze(-1), p_mask)  # (B, T)


class XLNetPoolerEndLogits(nn.Module):
    def __init__(self, config: XLNetConfig):
        super().__init__()
        self.dense_0 = nn.Linear(config.d_model * 2, config.d_model)
        self.activation = nn.Tanh()
        self.LayerNorm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.dense_1 = nn.Linear(config.d_model, 1)

    def forward(self, hidden: torch.Tensor, start_states: torch.Tensor, p_mask: Optional[torch.Tensor] = None
                ) -> torch.Tensor:
        """End logits of every token (..., T, H) given the start's states beside it (same shape)."""
        x = self.LayerNorm(self.activation(self.dense_0(torch.cat([hidden, start_states], dim=-1))))
        return _masked(self.dense_1(x).squeeze(-1), p_mask)


class XLNetPoolerAnswerClass(nn.Module):
    def __init__(self, config: XLNetConfig):
        super().__init__()
        self.dense_0 = nn.Linear(config.d_model * 2, config.d_model)
        self.activation = nn.Tanh()
        self.dense_1 = nn.Linear(config.d_model, 1, bias=False)

    def forward(self, start_states: torch.Tensor, cls_states: torch.Tensor) -> torch.Tensor:
        """(B, H) expected start state and CLS state → (B,) answerability logit."""
        return self.dense_1(self.activation(self.dense_0(torch.cat([start_states, cls_states], dim=-1)))).squeeze(-1)


class XLNetForQuestionAnswering(XLNetPreTrainedModel):
    """The seed's XLNet QA head (SQuAD 2.0): top ``start_n_top`` starts, for each the top
    ``end_n_top`` ends, and an answerability logit from the CLS token.  Inference only (no
    start/end positions: the losses are for training)."""

    def __init__(self, config: XLNetConfig):
        super().__init__(config)
        self.start_n_top = config.start_n_top
        self.end_n_top = config.end_n_top
        self.transformer = XLNetModel(config)
        self.start_logits = XLNetPoolerStartLogits(config)
        self.end_logits = XLNetPoolerEndLogits(config)
        self.answer_class = XLNetPoolerAnswerClass(config)

    def forward(self, input_ids=None, attention_mask=None, mems=None, perm_mask=None, target_mapping=None,
                token_type_ids=None, input_mask=None, inputs_embeds=None, cls_index=None, p_mask=None,
                **kwargs) -> XLNetForQuestionAnsweringOutput:
        """``p_mask`` (B, T) 1.0 where no answer may start or end (question, specials, pads);
        ``cls_index`` (B,) the CLS position (default: the last one)."""
        out = self.transformer(input_ids, attention_mask, mems, perm_mask, target_mapping, token_type_ids, input_mask,
                               inputs_embeds, **kwargs)
        hidden = out.last_hidden_state  # (B, T, H)
        width = hidden.shape[-1]
        start_probs = self.start_logits(hidden, p_mask).softmax(-1)  # (B, T)
        start_top, start_index = start_probs.topk(self.start_n_top, dim=-1)  # (B, k)
        start_states = hidden.gather(-2, start_index[..., None].expand(-1, -1, width))  # (B, k, H)
        start_states = start_states[:, None].expand(-1, hidden.shape[1], -1, -1)  # (B, T, k, H)
        end_logits = self.end_logits(hidden[:, :, None].expand_as(start_states), start_states,
                                     None if p_mask is None else p_mask[..., None])  # (B, T, k)
        end_top, end_index = end_logits.softmax(1).topk(self.end_n_top, dim=1)  # (B, k_end, k)
        expected_start = torch.einsum("blh,bl->bh", hidden, start_probs)  # the start's expected state
        if cls_index is None:
            cls_states = hidden[:, -1]
        else:
            cls_states = hidden.gather(-2, cls_index[:, None, None].expand(-1, -1, width)).squeeze(-2)
        cls_logits = self.answer_class(expected_start, cls_states)
        flat = self.start_n_top * self.end_n_top
        return XLNetForQuestionAnsweringOutput(start_top, start_index, end_top.reshape(-1, flat),
                                               end_index.reshape(-1, flat), cls_logits, out.mems, out.hidden_states,
                                               out.attentions)

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments) -> XLNetForQuestionAnsweringOutput:
        """Unpadded inference → the per-sequence (B, ...) beam of each row alone: positions past
        a sequence get ``p_mask`` and its CLS is its last token, so indices are positions
        within the sequence (rows need at least ``start_n_top`` and ``end_n_top`` tokens, as
        alone)."""
        check_flat_inputs(self, input_ids, segments)
        real = segments.mask[:, 0, 0]  # (B, T)
        return self(_scatter(input_ids, segments), real.long(), use_mems=False,
                    p_mask=(~real).to(self.dtype), cls_index=segments.lengths - 1)


class XLNetForMultipleChoice(XLNetPreTrainedModel):
    """Scores each of C choices by its sequence summary: (B, C, T) inputs → (B, C) logits.  The
    seed has no multiple-choice Auto class: load it by class."""

    def __init__(self, config: XLNetConfig):
        super().__init__(config)
        self.transformer = XLNetModel(config)
        self.sequence_summary = XLNetSequenceSummary(config)
        self.logits_proj = nn.Linear(config.d_model, 1)

    def forward(self, input_ids=None, token_type_ids=None, input_mask=None, attention_mask=None, mems=None,
                perm_mask=None, target_mapping=None, inputs_embeds=None, **kwargs) -> XLNetForMultipleChoiceOutput:
        choices = (input_ids if input_ids is not None else inputs_embeds).shape[1]

        def rows(x: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
            return None if x is None else x.flatten(0, 1)  # (B, C, ...) → (B * C, ...): each choice a row

        out = self.transformer(rows(input_ids), rows(attention_mask), mems, perm_mask, target_mapping,
                               rows(token_type_ids), rows(input_mask), rows(inputs_embeds), **kwargs)
        logits = self.logits_proj(self.sequence_summary(out.last_hidden_state)).view(-1, choices)  # (B, C)
        return XLNetForMultipleChoiceOutput(logits, out.mems, out.hidden_states, out.attentions)


CONTRACT = ModelContract(
    model_type="xlnet",
    config_class=XLNetConfig,
    heads={
        registry.BASE: XLNetModel,
        registry.PRETRAINING: XLNetLMHeadModel,
        registry.WITH_LM_HEAD: XLNetLMHeadModel,
        registry.CAUSAL_LM: XLNetLMHeadModel,  # today's reference maps AutoModelForCausalLM here too
        registry.SEQUENCE_CLASSIFICATION: XLNetForSequenceClassification,
        registry.TOKEN_CLASSIFICATION: XLNetForTokenClassification,
        # The seed's (transformers 2.x) mapping; today's reference maps XLNetForQuestionAnsweringSimple.
        registry.QUESTION_ANSWERING: XLNetForQuestionAnswering,
        registry.SPAN_QUESTION_ANSWERING: XLNetForQuestionAnsweringSimple,
    },
    name_patterns=("xlnet",),
    # The forward takes token_type_ids (segments A, B and <cls> tell apart through seg_embed), but
    # today's reference XLNetTokenizer emits none (model_input_names: ids and mask): the job passes
    # what the reference pipeline gives the model.
    input_names=("input_ids", "attention_mask"),
    tokenizer="xlnet",
    tokenizer_class="XLNetTokenizer",
    rank=110,
    padding_side="left",  # XLNetTokenizer's: the "last" summary reads the final position, <cls>
    max_length_rule=no_length_limit,
)
