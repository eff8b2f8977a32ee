"""Transformer-XL: config, body with segment memories, adaptive softmax LM head, loading the
reference checkpoints (transformers <= 4.37) by their own key names.

Adaptive input embeddings (``word_emb``: one table for the whole vocabulary with ``div_val``
1, else one smaller table and projection per cutoff cluster), relative positional attention
(``r_w_bias`` / ``r_r_bias`` per layer, or shared with ``untie_r`` false; sinusoids of the
distance, ``clamp_len``), post- or pre-LayerNorm layers, and per-layer memories: the states
each layer read in the previous segment, ``mem_len`` of them, which the next segment attends
to. As in the reference, a forward without memories attends to ``mem_len`` zero states
(``init_mems``) when ``mem_len`` > 0. The tensors keep the reference's layouts at the API:
ids and outputs (B, T, ...), memories (mem_len, B, d_model).

The LM head (``crit``) is the projected adaptive log-softmax: the head cluster's logits over
the shortlist plus one logit per tail cluster, each tail's log-probabilities added to its
cluster's. It gives log-probabilities, not logits (``prediction_scores``); ``target_logprobs``
scores given next tokens without building the (tokens, vocabulary) array, for the score task.
There is no attention mask: the model is causal, so a right-padded row's real tokens are what
they are alone; a padded row's memories hold its padding, so memories are per row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .. import registry
from ..configuration import PretrainedConfig
from ..contract import ModelContract
from ..layers import check_one_input
from ..modeling import ModelOutput, PreTrainedModel

Mems = list[torch.Tensor]  # per layer (mem_len, B, d_model)

# With no position table, the context a job gives one sequence (attention is quadratic in it).
DEFAULT_CONTEXT = 1024


class TransfoXLConfig(PretrainedConfig):
    model_type = "transfo-xl"
    attribute_map = {"n_token": "vocab_size", "hidden_size": "d_model", "num_attention_heads": "n_head",
                     "num_hidden_layers": "n_layer"}
    defaults = dict(
        vocab_size=267735,
        cutoffs=[20000, 40000, 200000],
        d_model=1024,
        d_embed=1024,
        n_head=16,
        d_head=64,
        d_inner=4096,
        div_val=4,
        pre_lnorm=False,
        n_layer=18,
        mem_len=1600,
        clamp_len=1000,
        same_length=True,
        attn_type=0,
        sample_softmax=-1,
        adaptive=True,
        dropout=0.1,
        dropatt=0.0,
        untie_r=True,
        init="normal",
        init_range=0.01,
        proj_init_std=0.01,
        init_std=0.02,
        layer_norm_epsilon=1e-5,
        eos_token_id=0,
    )

    def __init__(self, **kwargs):
        # The reference derives tie_projs from proj_share_all_but_first (and saves only tie_projs).
        share = kwargs.pop("proj_share_all_but_first", True)
        super().__init__(**kwargs)
        self.cutoffs = list(self.cutoffs)
        if getattr(self, "tie_projs", None) is None:
            self.tie_projs = [False] + [bool(share)] * len(self.cutoffs)

    @property
    def max_position_embeddings(self) -> int:
        """-1, as the reference: relative positions have no table, so no length limit."""
        return -1


def context_length(config: TransfoXLConfig) -> int:
    """Tokens a job gives one sequence: ``n_ctx`` or ``tgt_len`` when the config sets one (old
    configs carry the training segment length), else DEFAULT_CONTEXT."""
    for name in ("n_ctx", "tgt_len"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_CONTEXT


@dataclass
class TransfoXLModelOutput(ModelOutput):
    last_hidden_state: torch.Tensor = None  # (B, T, d_model)
    mems: Optional[Mems] = None
    hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    attentions: Optional[tuple[torch.Tensor, ...]] = None


@dataclass
class TransfoXLLMHeadModelOutput(ModelOutput):
    losses: Optional[torch.Tensor] = None  # (B, T - 1) with labels, in the reference's order
    prediction_scores: Optional[torch.Tensor] = None  # (B, T, V) log-probabilities, without labels
    mems: Optional[Mems] = None
    hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    attentions: Optional[tuple[torch.Tensor, ...]] = None
    loss: Optional[torch.Tensor] = None

    @property
    def logits(self) -> Optional[torch.Tensor]:
        """The reference's alias: the log-probabilities (what generation ranks)."""
        return self.prediction_scores


@dataclass
class TransfoXLSequenceClassifierOutputWithPast(ModelOutput):
    logits: torch.Tensor = None  # (B, num_labels)
    mems: Optional[Mems] = None
    hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    attentions: Optional[tuple[torch.Tensor, ...]] = None


def check_supported(config: TransfoXLConfig) -> None:
    """What the reference itself never ran, refused before any weight is built."""
    if config.attn_type != 0:
        raise ValueError(f"attn_type {config.attn_type}: only 0 (relative positional attention) exists in the "
                         "reference and its checkpoints")
    if config.sample_softmax > 0:
        raise ValueError(f"sample_softmax {config.sample_softmax}: the sampled softmax is a training shortcut the "
                         "reference never implemented; set sample_softmax to -1")
    if list(config.cutoffs) != sorted(config.cutoffs) or any(not 0 < c < config.vocab_size for c in config.cutoffs):
        raise ValueError(f"cutoffs {config.cutoffs} must increase and lie within the vocabulary (1..{config.vocab_size - 1})")


def check_right_padded(attention_mask: Optional[torch.Tensor]) -> None:
    """A mask whose rows are real tokens then pads, else a clear error: with no attention mask
    in the model, a pad before a real token would be attended to."""
    if attention_mask is not None and bool((attention_mask[:, 1:] > attention_mask[:, :-1]).any()):
        raise ValueError("Transformer-XL has no attention mask: a padded batch must be right-padded (each row's "
                         "tokens first, then its pads); this attention_mask has a pad before a real token")


# ---------------------------------------------------------------------------------------------
# Adaptive input embeddings
# ---------------------------------------------------------------------------------------------
def cluster_bounds(config: TransfoXLConfig) -> list[tuple[int, int]]:
    """[start, end) of each cluster: the shortlist, then one per cutoff."""
    ends = [0, *config.cutoffs, config.vocab_size]
    return list(zip(ends[:-1], ends[1:]))


class AdaptiveEmbedding(nn.Module):
    """Token ids → (..., d_model) embeddings scaled by sqrt(d_model). With ``div_val`` > 1 the
    i-th cluster has a table of width d_embed / div_val**i, projected up to d_model."""

    def __init__(self, config: TransfoXLConfig):
        super().__init__()
        self.d_embed, self.d_proj, self.div_val = config.d_embed, config.d_model, config.div_val
        self.bounds = cluster_bounds(config)
        self.emb_scale = config.d_model ** 0.5
        self.emb_layers = nn.ModuleList()
        self.emb_projs = nn.ParameterList()
        if self.div_val == 1:
            self.emb_layers.append(nn.Embedding(config.vocab_size, self.d_embed))
            if self.d_proj != self.d_embed:
                self.emb_projs.append(nn.Parameter(torch.empty(self.d_proj, self.d_embed)))
        else:
            for i, (start, end) in enumerate(self.bounds):
                width = self.d_embed // (self.div_val ** i)
                self.emb_layers.append(nn.Embedding(end - start, width))
                self.emb_projs.append(nn.Parameter(torch.empty(self.d_proj, width)))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.div_val == 1:
            embed = self.emb_layers[0](ids)
            if self.d_proj != self.d_embed:
                embed = F.linear(embed, self.emb_projs[0])
            return embed * self.emb_scale
        flat = ids.reshape(-1)
        weight = self.emb_projs[0]
        out = torch.zeros(flat.shape[0], self.d_proj, dtype=weight.dtype, device=weight.device)  # (N, d_model)
        for (start, end), table, proj in zip(self.bounds, self.emb_layers, self.emb_projs):
            rows = ((flat >= start) & (flat < end)).nonzero().squeeze(1)
            if rows.numel():
                out.index_copy_(0, rows, F.linear(table(flat.index_select(0, rows) - start), proj))
        return out.view(*ids.shape, self.d_proj) * self.emb_scale


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------
def sinusoids(distances: torch.Tensor, width: int) -> torch.Tensor:
    """(K,) float distances → (K, width): sines then cosines (not interleaved), as the reference."""
    inv_freq = 1 / (10000 ** (torch.arange(0.0, width, 2.0, device=distances.device) / width))
    angles = torch.outer(distances, inv_freq.to(distances.dtype))
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def rel_shift(scores: torch.Tensor) -> torch.Tensor:
    """(B, nH, T, K) scores against distances K-1 .. 0 → each query's row aligned to the keys:
    out[..., i, j] = scores[..., i, j + T - 1 - i] where j <= i + K - T (the reference's pad-and-
    reshape trick; the positions beyond are masked anyway)."""
    batch, heads, queries, keys = scores.shape
    padded = torch.cat([scores.new_zeros(batch, heads, queries, 1), scores], dim=-1)  # (B, nH, T, K + 1)
    return padded.view(batch, heads, keys + 1, queries)[:, :, 1:].reshape(batch, heads, queries, keys)


class RelPartialLearnableMultiHeadAttn(nn.Module):
    def __init__(self, config: TransfoXLConfig, r_w_bias: Optional[nn.Parameter], r_r_bias: Optional[nn.Parameter]):
        super().__init__()
        self.n_head, self.d_head, self.pre_lnorm = config.n_head, config.d_head, config.pre_lnorm
        inner = config.n_head * config.d_head
        self.qkv_net = nn.Linear(config.d_model, 3 * inner, bias=False)
        self.drop = nn.Dropout(config.dropout)
        self.dropatt = nn.Dropout(config.dropatt)
        self.o_net = nn.Linear(inner, config.d_model, bias=False)
        self.layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.scale = 1 / (config.d_head ** 0.5)
        # Shared with every layer (the body's) when untie_r is false: one parameter, two keys.
        self.r_w_bias = r_w_bias if r_w_bias is not None else nn.Parameter(torch.empty(config.n_head, config.d_head))
        self.r_r_bias = r_r_bias if r_r_bias is not None else nn.Parameter(torch.empty(config.n_head, config.d_head))
        self.r_net = nn.Linear(config.d_model, inner, bias=False)

    def forward(self, hidden: torch.Tensor, rel: torch.Tensor, masked: torch.Tensor, mems: Optional[torch.Tensor],
                need_weights: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(B, T, d) states, (K, d) distance encodings, (T, K) True where masked, (B, M, d)
        memories → (B, T, d), probabilities (B, nH, T, K)."""
        batch, queries, _ = hidden.shape
        keys_in = hidden if mems is None else torch.cat([mems, hidden], dim=1)  # (B, K, d)
        heads = self.qkv_net(self.layer_norm(keys_in) if self.pre_lnorm else keys_in)
        q, k, v = heads.chunk(3, dim=-1)
        q = q[:, -queries:].view(batch, queries, self.n_head, self.d_head)
        k = k.view(batch, -1, self.n_head, self.d_head)
        v = v.view(batch, -1, self.n_head, self.d_head)
        r = self.r_net(rel).view(-1, self.n_head, self.d_head)  # (K, nH, dh)
        content = torch.einsum("bind,bjnd->bnij", q + self.r_w_bias, k)  # (B, nH, T, K)
        position = rel_shift(torch.einsum("bind,jnd->bnij", q + self.r_r_bias, r))
        scores = (content + position) * self.scale
        # The dtype's lowest value, not -inf: a query that may see nothing attends uniformly, as there.
        scores = scores.masked_fill(masked, torch.finfo(scores.dtype).min)
        probs = self.dropatt(scores.softmax(dim=-1))
        context = torch.einsum("bnij,bjnd->bind", probs, v).reshape(batch, queries, -1)
        out = self.drop(self.o_net(context))
        out = hidden + out if self.pre_lnorm else self.layer_norm(hidden + out)
        return out, probs if need_weights else None


class PositionwiseFF(nn.Module):
    def __init__(self, config: TransfoXLConfig):
        super().__init__()
        self.pre_lnorm = config.pre_lnorm
        # Indices are checkpoint keys: CoreNet.0 and CoreNet.3 are the linear layers.
        self.CoreNet = nn.Sequential(nn.Linear(config.d_model, config.d_inner), nn.ReLU(), nn.Dropout(config.dropout),
                                     nn.Linear(config.d_inner, config.d_model), nn.Dropout(config.dropout))
        self.layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_epsilon)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.pre_lnorm:
            return hidden + self.CoreNet(self.layer_norm(hidden))
        return self.layer_norm(hidden + self.CoreNet(hidden))


class RelPartialLearnableDecoderLayer(nn.Module):
    def __init__(self, config: TransfoXLConfig, r_w_bias: Optional[nn.Parameter], r_r_bias: Optional[nn.Parameter]):
        super().__init__()
        self.dec_attn = RelPartialLearnableMultiHeadAttn(config, r_w_bias, r_r_bias)
        self.pos_ff = PositionwiseFF(config)

    def forward(self, hidden, rel, masked, mems, need_weights):
        attended, probs = self.dec_attn(hidden, rel, masked, mems, need_weights)
        return self.pos_ff(attended), probs


# ---------------------------------------------------------------------------------------------
# Body
# ---------------------------------------------------------------------------------------------
class TransfoXLPreTrainedModel(PreTrainedModel):
    config_class = TransfoXLConfig
    base_model_prefix = "transformer"
    # The sinusoids' frequencies are computed, not weights.
    checkpoint_drop = PreTrainedModel.checkpoint_drop + (r"(^|\.)pos_emb\.inv_freq$",)

    def _body_prefix(self) -> str:
        return "" if isinstance(self, TransfoXLModel) else f"{self.base_model_prefix}."

    def tied_weights(self) -> dict[str, str]:
        """Keys that are one tensor under two names: the layers' r biases when untie_r is false
        (the reference saves them once, as the body's)."""
        if self.config.untie_r:
            return {}
        body = self._body_prefix()
        return {f"{body}layers.{i}.dec_attn.{name}": f"{body}{name}"
                for i in range(self.config.n_layer) for name in ("r_w_bias", "r_r_bias")}

    def init_weight(self, module: nn.Module, name: str, param: torch.Tensor) -> None:
        """The reference's init: normal(init_std) weights, zero biases, projections normal(proj_init_std)."""
        with torch.no_grad():
            if isinstance(module, nn.LayerNorm):
                param.fill_(1.0 if name == "weight" else 0.0)
            elif name.endswith("bias") and name not in ("r_w_bias", "r_r_bias"):
                param.zero_()
            elif isinstance(module, nn.ParameterList):
                param.normal_(0.0, self.config.proj_init_std)
            else:
                param.normal_(0.0, self.config.init_std)


class TransfoXLModel(TransfoXLPreTrainedModel):
    def __init__(self, config: TransfoXLConfig):
        super().__init__(config)
        check_supported(config)
        self.word_emb = AdaptiveEmbedding(config)
        self.drop = nn.Dropout(config.dropout)
        shared = None
        if not config.untie_r:
            self.r_w_bias = nn.Parameter(torch.empty(config.n_head, config.d_head))
            self.r_r_bias = nn.Parameter(torch.empty(config.n_head, config.d_head))
            shared = (self.r_w_bias, self.r_r_bias)
        self.layers = nn.ModuleList(RelPartialLearnableDecoderLayer(config, *(shared or (None, None)))
                                    for _ in range(config.n_layer))

    def tie_weights(self) -> None:
        super().tie_weights()
        self._share_r_biases()

    def _share_r_biases(self) -> None:
        if not self.config.untie_r:  # loading assigns tensors per key: make the layers' the body's again
            for layer in self.layers:
                layer.dec_attn.r_w_bias, layer.dec_attn.r_r_bias = self.r_w_bias, self.r_r_bias

    def get_input_embeddings(self) -> AdaptiveEmbedding:
        return self.word_emb

    def init_mems(self, batch: int) -> Optional[Mems]:
        """Zero memories, as the reference starts a sequence with (None when mem_len is 0)."""
        if self.config.mem_len <= 0:
            return None
        param = self.word_emb.emb_layers[0].weight
        return [torch.zeros(self.config.mem_len, batch, self.config.d_model, dtype=param.dtype, device=param.device)
                for _ in range(self.config.n_layer)]

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        mems: Optional[Mems] = None,
        *,
        attention_mask: Optional[torch.Tensor] = None,
        inputs_embeds: Optional[torch.Tensor] = None,
        output_hidden_states: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
    ) -> TransfoXLModelOutput:
        """(B, T) ids after ``mems`` (per layer (M, B, d_model), the previous segment's) →
        (B, T, d_model) states and the memories for the next segment. ``attention_mask`` (B, T)
        is only checked (the reference has none): the model is causal, so a right-padded row's
        real tokens never see its pads; any other padding is refused."""
        check_one_input(input_ids, inputs_embeds)
        check_right_padded(attention_mask)
        word_emb = self.word_emb(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, d)
        batch, queries = word_emb.shape[:2]
        if mems is None:
            mems = self.init_mems(batch)
        past = mems[0].shape[0] if mems is not None else 0
        keys = past + queries
        masked = self._mask(queries, past, word_emb.device)  # (T, K)
        distances = torch.arange(keys - 1, -1, -1.0, device=word_emb.device, dtype=word_emb.dtype)
        if self.config.clamp_len > 0:
            distances = distances.clamp(max=self.config.clamp_len)
        rel = self.drop(sinusoids(distances, self.config.d_model))  # (K, d)
        want_hidden = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        want_probs = self.config.output_attentions if output_attentions is None else output_attentions
        hidden = self.drop(word_emb)
        inputs, all_probs = [], []
        for i, layer in enumerate(self.layers):
            inputs.append(hidden)
            layer_mems = None if mems is None else mems[i].transpose(0, 1)  # (B, M, d)
            hidden, probs = layer(hidden, rel, masked, layer_mems, want_probs)
            all_probs.append(probs)
        hidden = self.drop(hidden)
        return TransfoXLModelOutput(
            hidden,
            self._update_mems(inputs, mems, past, queries),
            (*inputs, hidden) if want_hidden else None,
            tuple(all_probs) if want_probs else None,
        )

    def _mask(self, queries: int, past: int, device: torch.device) -> torch.Tensor:
        """(T, K) True where a query must not look: the future, and with ``same_length`` the keys
        beyond mem_len back, so every query sees as many keys (the reference's formula)."""
        ones = torch.ones(queries, past + queries, dtype=torch.bool, device=device)
        future = torch.triu(ones, 1 + past)
        if not self.config.same_length:
            return future
        overflow = past + queries - self.config.mem_len
        shift = queries - overflow if overflow > 0 else queries
        return future | torch.tril(ones, -shift)

    def _update_mems(self, inputs: list[torch.Tensor], mems: Optional[Mems], past: int, queries: int) -> Optional[Mems]:
        """Each layer's last mem_len inputs, memories first, in the reference's (M, B, d) layout."""
        if mems is None:
            return None
        end = past + max(0, queries)
        begin = max(0, end - self.config.mem_len)
        with torch.no_grad():
            return [torch.cat([m, x.transpose(0, 1)], dim=0)[begin:end].detach() for m, x in zip(mems, inputs)]


# ---------------------------------------------------------------------------------------------
# Adaptive softmax and heads
# ---------------------------------------------------------------------------------------------
class ProjectedAdaptiveLogSoftmax(nn.Module):
    """(N, d_model) states → log-probabilities over the vocabulary, cluster by cluster."""

    def __init__(self, config: TransfoXLConfig):
        super().__init__()
        self.d_embed, self.d_proj, self.div_val = config.d_embed, config.d_model, config.div_val
        self.vocab_size = config.vocab_size
        self.bounds = cluster_bounds(config)
        self.shortlist = self.bounds[0][1]
        self.n_clusters = len(self.bounds) - 1
        if self.n_clusters > 0:
            self.cluster_weight = nn.Parameter(torch.empty(self.n_clusters, self.d_embed))
            self.cluster_bias = nn.Parameter(torch.empty(self.n_clusters))
        self.out_layers = nn.ModuleList()
        self.out_projs = nn.ParameterList()
        if self.div_val == 1:
            for _ in self.bounds:
                self.out_projs.append(nn.Parameter(torch.empty(self.d_proj, self.d_embed))
                                      if self.d_proj != self.d_embed else None)
            self.out_layers.append(nn.Linear(self.d_embed, config.vocab_size))
        else:
            for i, (start, end) in enumerate(self.bounds):
                width = self.d_embed // (self.div_val ** i)
                self.out_projs.append(nn.Parameter(torch.empty(self.d_proj, width)))
                self.out_layers.append(nn.Linear(width, end - start))

    def _cluster(self, i: int) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """Weight, bias and projection of cluster i (the head's with the cluster rows appended)."""
        if self.div_val == 1:
            start, end = self.bounds[i]
            weight, bias = self.out_layers[0].weight[start:end], self.out_layers[0].bias[start:end]
        else:
            weight, bias = self.out_layers[i].weight, self.out_layers[i].bias
        if i == 0 and self.n_clusters > 0:
            weight, bias = torch.cat([weight, self.cluster_weight]), torch.cat([bias, self.cluster_bias])
        return weight, bias, self.out_projs[i]

    def _logprobs(self, hidden: torch.Tensor, i: int) -> torch.Tensor:
        """(N, d_model) → (N, cluster size [+ n_clusters for the head]) log-softmax of cluster i."""
        weight, bias, proj = self._cluster(i)
        if proj is not None:
            hidden = F.linear(hidden, proj.t().contiguous())
        return F.linear(hidden, weight, bias).log_softmax(dim=-1)

    def log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, d_model) → (N, V) log-probabilities of every token."""
        head = self._logprobs(hidden, 0)
        if self.n_clusters == 0:
            return head
        out = hidden.new_empty(hidden.shape[0], self.vocab_size)
        out[:, :self.shortlist] = head[:, :self.shortlist]
        for i in range(1, len(self.bounds)):
            start, end = self.bounds[i]
            out[:, start:end] = head[:, self.shortlist + i - 1, None] + self._logprobs(hidden, i)
        return out

    def target_logprobs(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(N, d_model) states, (N,) next tokens → (N,) log p(target), in order; each tail cluster
        runs only on the states whose target lies in it. Targets outside the vocabulary give 0."""
        head = self._logprobs(hidden, 0)
        out = torch.zeros(targets.shape[0], dtype=head.dtype, device=head.device)
        for i, (start, end) in enumerate(self.bounds):
            rows = ((targets >= start) & (targets < end)).nonzero().squeeze(1)
            if not rows.numel():
                continue
            local = (targets.index_select(0, rows) - start)[:, None]
            if i == 0:
                values = head.index_select(0, rows).gather(1, local).squeeze(1)
            else:
                tail = self._logprobs(hidden.index_select(0, rows), i)
                values = head.index_select(0, rows)[:, self.shortlist + i - 1] + tail.gather(1, local).squeeze(1)
            out.index_copy_(0, rows, values)
        return out

    def forward(self, hidden: torch.Tensor, labels: Optional[torch.Tensor] = None, keep_order: bool = False
                ) -> torch.Tensor:
        """The reference's criterion. Without labels: (B*T, V) log-probabilities. With labels:
        (B*(T-1),) negative log-likelihoods of each next label (-100: ignored, 0), grouped by
        cluster as the reference returns them unless ``keep_order``."""
        if labels is None:
            return self.log_probs(hidden.reshape(-1, hidden.shape[-1]))
        hidden = hidden[..., :-1, :].reshape(-1, hidden.shape[-1])
        labels = labels[..., 1:].reshape(-1)
        nll = -self.target_logprobs(hidden, labels)
        if keep_order or self.n_clusters == 0:
            return nll.masked_fill(labels == -100, 0.0)
        # The reference concatenates the clusters' losses (shortlist first), zeros after.
        order = torch.cat([((labels >= s) & (labels < e)).nonzero().squeeze(1) for s, e in self.bounds])
        out = torch.zeros_like(nll)
        out[:order.numel()] = nll.index_select(0, order)
        return out


class TransfoXLLMHeadModel(TransfoXLPreTrainedModel):
    """Body + adaptive softmax, its output layers tied to the input tables and projections as
    the config says (``tie_word_embeddings``, ``tie_projs``)."""

    def __init__(self, config: TransfoXLConfig):
        super().__init__(config)
        self.transformer = TransfoXLModel(config)
        self.crit = ProjectedAdaptiveLogSoftmax(config)

    def tied_weights(self) -> dict[str, str]:
        tied = super().tied_weights()
        config = self.config
        if config.tie_word_embeddings:
            for i in range(len(self.crit.out_layers)):
                tied[f"crit.out_layers.{i}.weight"] = f"transformer.word_emb.emb_layers.{i}.weight"
        for i, tie in enumerate(config.tie_projs or []):
            if tie and config.div_val == 1 and config.d_model != config.d_embed:
                tied[f"crit.out_projs.{i}"] = "transformer.word_emb.emb_projs.0"
            elif tie and config.div_val != 1:
                tied[f"crit.out_projs.{i}"] = f"transformer.word_emb.emb_projs.{i}"
        return tied

    def tie_weights(self) -> None:
        super().tie_weights()
        self.transformer._share_r_biases()

    def forward(self, input_ids=None, mems=None, *, labels: Optional[torch.Tensor] = None,
                **kwargs) -> TransfoXLLMHeadModelOutput:
        """(B, T) ids → (B, T, V) log-probabilities of the next token; with ``labels`` (B, T)
        instead the per-token losses (B, T-1) (-100 ignored) and their mean over the rest."""
        out = self.transformer(input_ids, mems, **kwargs)
        hidden = out.last_hidden_state
        batch, length = hidden.shape[:2]
        if labels is None:
            return TransfoXLLMHeadModelOutput(None, self.crit(hidden).view(batch, length, -1), out.mems,
                                              out.hidden_states, out.attentions)
        losses = self.crit(hidden, labels).view(batch, length - 1)
        return TransfoXLLMHeadModelOutput(losses, None, out.mems, out.hidden_states, out.attentions,
                                          losses[losses != 0].mean())

    def target_logprobs(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(N, d_model) final states, (N,) next tokens → (N,) log p(next token): the score task's
        hook for a head whose output is not a logits layer."""
        return self.crit.target_logprobs(hidden, targets)

    # -- decoding, as the reference's generate: the prompt, then one token at a time on the
    # memories (with mem_len 0 there are none, and each step reruns the whole sequence). The
    # generate stage's hook for a model without a key/value cache or an attention mask.
    def start_decoding(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Right-padded (B, T) prompts → (B, V) the next token's log-probabilities and the state.
        Prompts of one length run together (padding would enter the memories)."""
        rows = [ids[i, :int(mask[i].sum())] for i in range(ids.shape[0])]
        if self.config.mem_len <= 0:
            return self._last_logprobs(rows), {"rows": rows}
        scores = ids.new_zeros((len(rows), self.config.vocab_size), dtype=self.dtype)
        mems = [ids.new_zeros((self.config.mem_len, len(rows), self.config.d_model), dtype=self.dtype)
                for _ in range(self.config.n_layer)]
        for members, batch in self._same_length(rows):
            out = self(batch)
            scores[members] = out.prediction_scores[:, -1]
            for layer, new in zip(mems, out.mems):
                layer[:, members] = new
        return scores, {"mems": mems}

    def decode_step(self, state: dict, tokens: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """(R,) the tokens just chosen → (R, V) the next log-probabilities and the new state."""
        if "rows" in state:
            rows = [torch.cat([row, token[None]]) for row, token in zip(state["rows"], tokens)]
            return self._last_logprobs(rows), {"rows": rows}
        out = self(tokens[:, None], mems=state["mems"])
        return out.prediction_scores[:, -1], {"mems": out.mems}

    @staticmethod
    def select_rows(state: dict, rows: torch.Tensor) -> dict:
        """The state of rows ``rows`` (R',): kept, copied or reordered."""
        if "rows" in state:
            return {"rows": [state["rows"][int(i)] for i in rows]}
        return {"mems": [m.index_select(1, rows) for m in state["mems"]]}

    def _last_logprobs(self, rows: list[torch.Tensor]) -> torch.Tensor:
        scores = rows[0].new_zeros((len(rows), self.config.vocab_size), dtype=self.dtype)
        for members, batch in self._same_length(rows):
            scores[members] = self(batch).prediction_scores[:, -1]
        return scores

    @staticmethod
    def _same_length(rows: list[torch.Tensor]):
        """(row indices, (b, T) their ids) for each length among ``rows``."""
        by_length: dict[int, list[int]] = {}
        for i, row in enumerate(rows):
            by_length.setdefault(len(row), []).append(i)
        for members in by_length.values():
            yield torch.tensor(members, device=rows[0].device), torch.stack([rows[i] for i in members])


class TransfoXLForSequenceClassification(TransfoXLPreTrainedModel):
    """Classifies each row by one token's logits: the one before the row's first pad_token_id, the
    last one without a pad (4.37's rule)."""

    def __init__(self, config: TransfoXLConfig):
        super().__init__(config)
        self.transformer = TransfoXLModel(config)
        self.score = nn.Linear(config.d_embed, config.num_labels, bias=False)

    def forward(self, input_ids=None, mems=None, *, attention_mask: Optional[torch.Tensor] = None,
                **kwargs) -> TransfoXLSequenceClassifierOutputWithPast:
        """(B, T) ids → (B, num_labels). With a (right-padding) ``attention_mask`` each row's
        last real token is the mask's (what the reference picks on such a batch padded with
        pad_token_id); without one, the reference's rule on the ids."""
        out = self.transformer(input_ids, mems, attention_mask=attention_mask, **kwargs)
        hidden = out.last_hidden_state  # (B, T, d_model)
        batch, length = hidden.shape[:2]
        pad = self.config.pad_token_id
        if attention_mask is not None:
            last = attention_mask.sum(-1) - 1
        elif pad is None and batch > 1:
            raise ValueError("TransfoXLForSequenceClassification needs pad_token_id in its config to classify a "
                             "batch of more than one row (it picks each row's last non-pad token)")
        elif pad is None or input_ids is None:
            last = torch.full((batch,), length - 1, device=hidden.device)
        else:  # 4.37's rule: the token before the first pad (the last one when there is none)
            last = ((input_ids == pad).int().argmax(-1) - 1) % length
        logits = self.score(hidden[torch.arange(batch, device=hidden.device), last.to(hidden.device)])
        return TransfoXLSequenceClassifierOutputWithPast(logits, out.mems, out.hidden_states, out.attentions)


CONTRACT = ModelContract(
    causal=True,
    model_type="transfo-xl",
    config_class=TransfoXLConfig,
    heads={
        registry.BASE: TransfoXLModel,
        registry.PRETRAINING: TransfoXLLMHeadModel,
        registry.WITH_LM_HEAD: TransfoXLLMHeadModel,
        registry.CAUSAL_LM: TransfoXLLMHeadModel,
        registry.SEQUENCE_CLASSIFICATION: TransfoXLForSequenceClassification,
    },
    name_patterns=("transfo-xl", "transfo_xl"),
    input_names=("input_ids",),  # no attention mask: causal, right-padded rows are unaffected
    tokenizer="transfo-xl",
    tokenizer_class="TransfoXLTokenizer",
    rank=100,
    max_length_rule=context_length,
    # Every task runs each row (window) from zero memories, as the reference's first segment, and
    # generate decodes each row on its own memories (start_decoding): a row's memory never reaches
    # another row. No heads for fill-mask, ner or qa.
    tasks=("embed", "classify", "score", "generate"),
)
