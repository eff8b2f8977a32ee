"""GPT-2: config, decoder and heads, loading reference checkpoints by their own key names.

A pre-LayerNorm causal decoder whose projections are ``Conv1D`` s (weights stored (in, out)).
The padded forward takes and returns a key/value cache for generation; the flat forward runs
causal attention within each sequence of an unpadded batch.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from ..configuration import PretrainedConfig
from ..modeling import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    PastKeyValues,
    PreTrainedModel,
    Segments,
    SequenceClassifierOutputWithPast,
    activation,
    attention,
    causal_mask,
    check_flat_inputs,
    varlen_attention,
)
from ..layers import (Conv1D, DecoderFlatHead, QuestionAnsweringHead, TokenClassificationHead, check_one_input,
                      last_token_states)
from .. import registry
from ..contract import ModelContract

KeyValue = tuple[torch.Tensor, torch.Tensor]  # (B, nH, T, d) each


class GPT2Config(PretrainedConfig):
    model_type = "gpt2"
    defaults = dict(
        vocab_size=50257,
        n_positions=1024,
        n_embd=768,
        n_layer=12,
        n_head=12,
        n_inner=None,
        activation_function="gelu_new",
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
        scale_attn_weights=True,
        use_cache=True,
        bos_token_id=50256,
        eos_token_id=50256,
        scale_attn_by_inverse_layer_idx=False,
        reorder_and_upcast_attn=False,
    )
    attribute_map = {"hidden_size": "n_embd", "max_position_embeddings": "n_positions",
                     "num_attention_heads": "n_head", "num_hidden_layers": "n_layer"}


# ---------------------------------------------------------------------------------------------
# Body
# ---------------------------------------------------------------------------------------------
def attention_scale(config: GPT2Config, layer_idx: int) -> float:
    """What the reference multiplies the scores by: 1/sqrt(d) unless ``scale_attn_weights`` is
    off, further divided by the layer's number (from 1) with ``scale_attn_by_inverse_layer_idx``."""
    scale = 1.0 / math.sqrt(config.n_embd // config.n_head) if config.scale_attn_weights else 1.0
    return scale / (layer_idx + 1) if config.scale_attn_by_inverse_layer_idx else scale


class GPT2Attention(nn.Module):
    def __init__(self, config: GPT2Config, layer_idx: int):
        super().__init__()
        if config.n_embd % config.n_head:
            raise ValueError(f"n_embd {config.n_embd} is not a multiple of n_head {config.n_head}")
        self.num_heads = config.n_head
        self.head_dim = config.n_embd // config.n_head
        self.c_attn = Conv1D(3 * config.n_embd, config.n_embd)  # q | k | v side by side
        self.c_proj = Conv1D(config.n_embd, config.n_embd)
        self.attn_dropout = nn.Dropout(config.attn_pdrop)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)
        self.scale = attention_scale(config, layer_idx)
        self.upcast = bool(config.reorder_and_upcast_attn)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)  # (B, nH, T, d)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, past: Optional[KeyValue],
                need_weights: bool) -> tuple[torch.Tensor, KeyValue, Optional[torch.Tensor]]:
        """(B, T, H) → (B, T, H), this layer's keys and values (past ones first), probabilities."""
        q, k, v = (self._heads(x) for x in self.c_attn(hidden).chunk(3, dim=-1))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)  # (B, nH, P + T, d)
        # reorder_and_upcast_attn: the reference computes the scores in float32 whatever the dtype.
        dtype = torch.float32 if self.upcast else q.dtype
        context, probs = attention(q.to(dtype), k.to(dtype), v.to(dtype), mask, scale=self.scale,
                                   need_weights=need_weights, dropout_p=self.attn_dropout.p if self.training else 0.0)
        batch, _, length, _ = context.shape
        context = context.to(q.dtype).transpose(1, 2).reshape(batch, length, -1)  # (B, T, H)
        return self.resid_dropout(self.c_proj(context)), (k, v), probs

    def forward_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        # In the model's dtype even with reorder_and_upcast_attn, as the reference's SDPA and flash paths.
        context = varlen_attention(self.c_attn(hidden), segments, self.num_heads, causal=True, scale=self.scale)
        return self.resid_dropout(self.c_proj(context))  # (N, H)


class GPT2MLP(nn.Module):
    def __init__(self, config: GPT2Config):
        super().__init__()
        inner = config.n_inner if config.n_inner is not None else 4 * config.n_embd
        self.c_fc = Conv1D(inner, config.n_embd)
        self.c_proj = Conv1D(config.n_embd, inner)
        self.act = activation(config.activation_function)
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(hidden))))


class GPT2Block(nn.Module):
    """Pre-LayerNorm: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: GPT2Config, layer_idx: int):
        super().__init__()
        if config.add_cross_attention:
            raise ValueError("add_cross_attention (GPT-2 as an encoder-decoder's decoder) is not supported")
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = GPT2Attention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = GPT2MLP(config)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, past: Optional[KeyValue],
                need_weights: bool) -> tuple[torch.Tensor, KeyValue, Optional[torch.Tensor]]:
        attended, present, probs = self.attn(self.ln_1(hidden), mask, past, need_weights)
        hidden = hidden + attended
        return hidden + self.mlp(self.ln_2(hidden)), present, probs

    def forward_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        hidden = hidden + self.attn.forward_flat(self.ln_1(hidden), segments)
        return hidden + self.mlp(self.ln_2(hidden))  # (N, H)


class GPT2PreTrainedModel(PreTrainedModel):
    config_class = GPT2Config
    base_model_prefix = "transformer"
    # Old checkpoints carry the causal-mask buffers (attn.bias, attn.masked_bias); not weights.
    checkpoint_drop = PreTrainedModel.checkpoint_drop + (r"(^|\.)attn\.(masked_)?bias$",)

    def init_all_weights(self) -> None:
        """The reference's init, plus its residual projections scaled by 1/sqrt(2 * n_layer)."""
        super().init_all_weights()
        std = self.config.initializer_range / math.sqrt(2 * self.config.n_layer)
        with torch.no_grad():
            for name, param in self.named_parameters():
                if name.endswith("c_proj.weight"):
                    param.normal_(mean=0.0, std=std)


class GPT2Model(GPT2PreTrainedModel):
    def __init__(self, config: GPT2Config):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(GPT2Block(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.wte

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        past_key_values: Optional[PastKeyValues] = None,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        *,
        inputs_embeds: Optional[torch.Tensor] = None,
        use_cache: bool = False,
        output_hidden_states: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
    ) -> BaseModelOutputWithPast:
        """Padded (B, T) new tokens after ``past_key_values`` (per layer (key, value), each
        (B, nH, P, d)); ``attention_mask`` (B, P + T) covers the cached and the new tokens;
        ``position_ids`` (B|1, T) default to P..P+T-1, as in the reference (a left-padded batch
        passes its own).  ``use_cache`` returns every layer's keys and values, past ones first."""
        check_one_input(input_ids, inputs_embeds)
        embeds = self.wte(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, H)
        past_length = past_key_values[0][0].shape[2] if past_key_values is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past_length, past_length + embeds.shape[1], device=embeds.device)[None]
        hidden = embeds + self.wpe(position_ids)
        if token_type_ids is not None:  # GPT-2 has no type table: types are looked up as words
            hidden = hidden + self.wte(token_type_ids)
        hidden = self.drop(hidden)
        mask = causal_mask(attention_mask, embeds.shape[1], past_length, embeds.device)  # (B|1, 1, T, P + T)
        return self._run_blocks(hidden, mask, past_key_values, use_cache,
                                self.config.output_hidden_states if output_hidden_states is None else output_hidden_states,
                                self.config.output_attentions if output_attentions is None else output_attentions)

    def _run_blocks(self, hidden: torch.Tensor, mask: torch.Tensor, past_key_values: Optional[PastKeyValues],
                    use_cache: bool, output_hidden_states: bool, output_attentions: bool) -> BaseModelOutputWithPast:
        """The blocks, then ln_f.  Hidden states are the reference's: the embeddings, each block's
        output but the last, and the final normalised states in its place."""
        all_hidden, all_probs, presents = [], [], []
        for i, block in enumerate(self.h):
            all_hidden.append(hidden)
            hidden, present, probs = block(hidden, mask, past_key_values[i] if past_key_values else None,
                                           output_attentions)
            if use_cache:  # else each layer's keys and values are freed as soon as it is done
                presents.append(present)
            all_probs.append(probs)
        hidden = self.ln_f(hidden)  # (B, T, H)
        return BaseModelOutputWithPast(
            hidden,
            tuple(presents) if use_cache else None,
            (*all_hidden, hidden) if output_hidden_states else None,  # L + 1 states
            tuple(all_probs) if output_attentions else None,
        )

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments) -> torch.Tensor:
        """Unpadded inference: (N,) token ids of ``segments``' sequences back to back → (N, H)
        final (ln_f) states; each token attends to its own sequence's tokens up to itself."""
        check_flat_inputs(self, input_ids, segments)
        hidden = self.drop(self.wte(input_ids) + self.wpe(segments.positions))  # (N, H)
        for block in self.h:
            hidden = block.forward_flat(hidden, segments)
        return self.ln_f(hidden)


# ---------------------------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------------------------
class GPT2LMHeadModel(DecoderFlatHead, GPT2PreTrainedModel):
    tied_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config: GPT2Config):
        super().__init__(config)
        self.transformer = GPT2Model(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)

    def forward(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                position_ids=None, **kwargs) -> CausalLMOutputWithPast:
        out = self.transformer(input_ids, past_key_values, attention_mask, token_type_ids, position_ids, **kwargs)
        return CausalLMOutputWithPast(self.lm_head(out.last_hidden_state), out.past_key_values, out.hidden_states,
                                      out.attentions)  # logits (B, T, V)

    def head_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        """(N, H) → (N, V): each token's next-token logits."""
        return self.lm_head(hidden)


class GPT2ForSequenceClassification(DecoderFlatHead, GPT2PreTrainedModel):
    """Classifies each sequence by its last real token, the only one that has seen the whole row."""

    def __init__(self, config: GPT2Config):
        super().__init__(config)
        self.transformer = GPT2Model(config)
        self.score = nn.Linear(config.n_embd, config.num_labels, bias=False)

    def forward(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                position_ids=None, **kwargs) -> SequenceClassifierOutputWithPast:
        out = self.transformer(input_ids, past_key_values, attention_mask, token_type_ids, position_ids, **kwargs)
        hidden = out.last_hidden_state  # (B, T, H)
        logits = self.score(last_token_states(hidden, input_ids, self.config.pad_token_id))  # (B, num_labels)
        return SequenceClassifierOutputWithPast(logits, out.past_key_values, out.hidden_states, out.attentions)

    def head_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        """(N, H) → (B, num_labels) logits from each sequence's last token."""
        return self.score(hidden.index_select(0, segments.last))


def token_classifier_dropout(config: GPT2Config) -> float:
    """The reference's choice: classifier_dropout, else hidden_dropout, else 0.1."""
    for name in ("classifier_dropout", "hidden_dropout"):
        if getattr(config, name, None) is not None:
            return getattr(config, name)
    return 0.1


class GPT2ForTokenClassification(DecoderFlatHead, TokenClassificationHead, GPT2PreTrainedModel):
    def __init__(self, config: GPT2Config):
        super().__init__(config)
        self.transformer = GPT2Model(config)
        self.add_token_classifier(config, token_classifier_dropout(config))

    def forward(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                position_ids=None, **kwargs):
        # No cache in the output, as in the reference.
        out = self.transformer(input_ids, past_key_values, attention_mask, token_type_ids, position_ids, **kwargs)
        return self.token_classifier_output(out)


class GPT2ForQuestionAnswering(DecoderFlatHead, QuestionAnsweringHead, GPT2PreTrainedModel):
    def __init__(self, config: GPT2Config):
        super().__init__(config)
        self.transformer = GPT2Model(config)
        # The reference gives two outputs whatever num_labels says, and no dropout before them.
        self.dropout = nn.Identity()
        self.qa_outputs = nn.Linear(config.n_embd, 2)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, **kwargs):
        out = self.transformer(input_ids, None, attention_mask, token_type_ids, position_ids, **kwargs)
        return self.question_answering_output(out)


CONTRACT = ModelContract(
    causal=True,
    model_type="gpt2",
    config_class=GPT2Config,
    heads={
        registry.BASE: GPT2Model,
        registry.PRETRAINING: GPT2LMHeadModel,
        registry.WITH_LM_HEAD: GPT2LMHeadModel,
        registry.CAUSAL_LM: GPT2LMHeadModel,
        registry.SEQUENCE_CLASSIFICATION: GPT2ForSequenceClassification,
        registry.TOKEN_CLASSIFICATION: GPT2ForTokenClassification,
        registry.QUESTION_ANSWERING: GPT2ForQuestionAnswering,
    },
    name_patterns=("gpt2",),
    # The forward accepts token_type_ids (looked up in the word table), but the reference
    # tokenizer never emits them and no released checkpoint was trained with them: the job
    # passes ids and the mask only.
    input_names=("input_ids", "attention_mask"),
    tokenizer="gpt2",
    tokenizer_class="GPT2Tokenizer",
    rank=90,
    padding_side="right",  # GPT2Tokenizer's default; generation pads prompts left itself
    # max_length_rule: the default, max_position_embeddings, is n_positions here (attribute_map).
)
