"""Layers that several encoder architectures share unchanged, each defined once.

A module here keeps the submodule names the reference checkpoints use (``word_embeddings``,
``layer``, ``classifier``, ``qa_outputs``, ...), so a model built from it still loads with a
strict ``load_state_dict``.  What differs between architectures (attention blocks, poolers,
LM heads, position numbering) stays in the model file; see docs/layout.md.
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch import nn

from .configuration import PretrainedConfig
from .modeling import (
    BaseModelOutput,
    QuestionAnsweringModelOutput,
    Segments,
    TokenClassifierOutput,
    activation,
    padding_mask,
)

LayerOutputs = tuple[torch.Tensor, Optional[tuple[torch.Tensor, ...]], Optional[tuple[torch.Tensor, ...]]]


# ---------------------------------------------------------------------------------------------
# Body
# ---------------------------------------------------------------------------------------------
class Embeddings(nn.Module):
    """Word + absolute position + token-type embeddings, then LayerNorm and dropout, ``width``
    wide: BERT's (width ``hidden_size``), ELECTRA's and ALBERT's (``embedding_size``), and RoBERTa's
    (whose model file numbers the positions)."""

    def __init__(self, config: PretrainedConfig, width: int, position_padding_idx: Optional[int] = None):
        super().__init__()
        if getattr(config, "position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"position_embedding_type={config.position_embedding_type!r} is not supported; only 'absolute'")
        self.word_embeddings = nn.Embedding(config.vocab_size, width, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, width, padding_idx=position_padding_idx)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, width)
        self.LayerNorm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        input_ids: Optional[torch.Tensor],
        token_type_ids: Optional[torch.Tensor],
        position_ids: Optional[torch.Tensor],
        inputs_embeds: Optional[torch.Tensor],
    ) -> torch.Tensor:
        if position_ids is None:
            position_ids = self.default_positions(input_ids, inputs_embeds)
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)  # (B, T, W)
        if token_type_ids is None:
            token_type_ids = torch.zeros(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids) + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(embeddings))  # (B, T, W)

    def default_positions(self, input_ids: Optional[torch.Tensor], inputs_embeds: Optional[torch.Tensor]) -> torch.Tensor:
        """(1, T) positions 0..T-1 when the caller gives none."""
        reference = input_ids if input_ids is not None else inputs_embeds
        return torch.arange(reference.shape[1], device=reference.device)[None, :]


def check_one_input(input_ids: Optional[torch.Tensor], inputs_embeds: Optional[torch.Tensor]) -> None:
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids or inputs_embeds")


def run_layers(layers: Iterable[nn.Module], hidden: torch.Tensor, mask: torch.Tensor,
               output_hidden_states: bool, output_attentions: bool) -> LayerOutputs:
    """Padded (B, T, H) states through ``layers`` in order, each ``layer(hidden, mask,
    need_weights) -> (hidden, probs)`` → last states, every state (input first) and every
    attention map, the latter two None unless asked for."""
    all_hidden = [hidden] if output_hidden_states else None
    all_probs = [] if output_attentions else None
    for layer in layers:
        hidden, probs = layer(hidden, mask, output_attentions)
        if output_hidden_states:
            all_hidden.append(hidden)
        if output_attentions:
            all_probs.append(probs)
    return hidden, _tuple(all_hidden), _tuple(all_probs)


def run_layers_flat(layers: Iterable[nn.Module], hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
    """Flat (N, H) states through each layer's ``forward_flat`` in order."""
    for layer in layers:
        hidden = layer.forward_flat(hidden, segments)
    return hidden  # (N, H)


def _tuple(items: Optional[list]) -> Optional[tuple]:
    return tuple(items) if items is not None else None


class LayerStack(nn.Module):
    """``layer``: blocks run one after another (BERT's ``encoder``, DistilBERT's ``transformer``)."""

    def __init__(self, layers: Iterable[nn.Module]):
        super().__init__()
        self.layer = nn.ModuleList(layers)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, output_hidden_states: bool,
                output_attentions: bool) -> LayerOutputs:
        return run_layers(self.layer, hidden, mask, output_hidden_states, output_attentions)

    def forward_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        return run_layers_flat(self.layer, hidden, segments)


def encode(encoder: nn.Module, config: PretrainedConfig, embedded: torch.Tensor, attention_mask: Optional[torch.Tensor],
           output_hidden_states: Optional[bool], output_attentions: Optional[bool]) -> LayerOutputs:
    """Padded (B, T, E) embeddings through ``encoder`` under ``attention_mask``; output flags the
    call leaves as None come from the config, as in the reference."""
    mask = padding_mask(attention_mask, embedded.shape[:2], embedded.device)
    return encoder(
        embedded,
        mask,
        config.output_hidden_states if output_hidden_states is None else output_hidden_states,
        config.output_attentions if output_attentions is None else output_attentions,
    )


class Conv1D(nn.Module):
    """The GPT family's linear layer: its weight is stored (in, out), the transpose of
    ``nn.Linear``'s, as the checkpoints hold it, so loading stays a strict load."""

    def __init__(self, out_features: int, in_features: int):  # the reference's argument order (nf, nx)
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight)  # (..., in) → (prod(...), out)
        return flat.view(*x.shape[:-1], flat.shape[-1])


# ---------------------------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------------------------
def classifier_dropout(config: PretrainedConfig) -> float:
    """``classifier_dropout`` when the config sets it, else the hidden dropout."""
    return config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob


class FirstTokenClassificationHead(nn.Module):
    """dense → activation → out_proj on the first token's state (RoBERTa: tanh, ELECTRA: gelu,
    each fixed by the reference whatever ``hidden_act`` says)."""

    def __init__(self, config: PretrainedConfig, activation_name: str):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = activation(activation_name)
        self.dropout = nn.Dropout(classifier_dropout(config))
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, first: torch.Tensor) -> torch.Tensor:
        """(B, H) first-token states → (B, num_labels) logits."""
        return self.out_proj(self.dropout(self.activation(self.dense(self.dropout(first)))))


class TokenClassificationHead:
    """Mixin of a token-classification model: ``classifier(dropout(state))`` for every token,
    under the keys every encoder's reference uses (``classifier.weight`` beside the body)."""

    def add_token_classifier(self, config: PretrainedConfig, dropout: float) -> None:
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def head_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        """(N, H) → (N, num_labels) per-token logits."""
        return self.classifier(self.dropout(hidden))

    def token_classifier_output(self, out: BaseModelOutput) -> TokenClassifierOutput:
        logits = self.classifier(self.dropout(out.last_hidden_state))  # (B, T, num_labels)
        return TokenClassifierOutput(logits, out.hidden_states, out.attentions)


class QuestionAnsweringHead:
    """Mixin of an extractive QA model: ``qa_outputs`` gives each token a start and an end logit."""

    def add_span_classifier(self, config: PretrainedConfig, dropout: float = 0.0) -> None:
        """``dropout`` before ``qa_outputs``: only DistilBERT's reference has one (p = 0 elsewhere)."""
        if config.num_labels != 2:
            raise ValueError(f"{type(self).__name__} needs num_labels=2 (start and end logits), got {config.num_labels}")
        self.dropout = nn.Dropout(dropout)
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)

    def head_flat(self, hidden: torch.Tensor, segments: Segments) -> torch.Tensor:
        """(N, H) → (N, 2): each token's start logit, then its end logit."""
        return self.qa_outputs(self.dropout(hidden))

    def question_answering_output(self, out: BaseModelOutput) -> QuestionAnsweringModelOutput:
        start, end = self.qa_outputs(self.dropout(out.last_hidden_state)).split(1, dim=-1)  # (B, T, 1) each
        return QuestionAnsweringModelOutput(start.squeeze(-1), end.squeeze(-1), out.hidden_states, out.attentions)


# -- decoders ---------------------------------------------------------------------------------
class DecoderFlatHead:
    """A decoder head on the flat layout (gpt2, openai-gpt, ctrl: the body is ``transformer`` and
    takes ids only): the body's ``forward_flat``, then the head's ``head_flat``."""

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments) -> torch.Tensor:
        """Unpadded inference: (N,) token ids → per-sequence (B, ...) or per-token (N, ...) outputs."""
        return self.head_flat(self.transformer.forward_flat(input_ids, segments), segments)


def last_token_states(hidden: torch.Tensor, input_ids: Optional[torch.Tensor], pad_token_id: Optional[int]
                      ) -> torch.Tensor:
    """(B, T, H) states → (B, H) at the position a causal sequence classifier pools, as the
    reference finds it: the last position whose id is not ``pad_token_id`` (either padding
    side), or the last position when there are no ids to look at; a batch needs ``pad_token_id``."""
    batch, length = hidden.shape[:2]
    if pad_token_id is None and batch != 1:
        raise ValueError("Cannot handle batch sizes > 1 if no padding token is defined: set pad_token_id in the "
                         "config.")
    if pad_token_id is None or input_ids is None:
        last = torch.full((batch,), length - 1, dtype=torch.long, device=hidden.device)
    else:
        real = (input_ids != pad_token_id).to(torch.int32)
        last = (torch.arange(length, device=input_ids.device, dtype=torch.int32) * real).argmax(-1).to(hidden.device)
    return hidden[torch.arange(batch, device=hidden.device), last]
