"""Score stage: the log-likelihood of each row's text under a causal language model.

Per row: ``logprob_sum`` (natural log), ``logprob_mean``, ``perplexity`` (exp of minus the
mean) and ``scored_tokens``; optionally ``token_logprobs``, one per scored token.  With a
prompt (text pairs), only the continuation's tokens are scored.

A text longer than the model's context runs as several windows (the reference perplexity
recipe): windows start every ``stride`` tokens, each is at most ``context`` tokens long, and
each token is scored once, in the first window that reaches it, with at least ``context -
stride`` tokens of left context.  The first token of a text has no left context: it is scored
only after a BOS token (``add_bos``).

An encoder-decoder (T5; ``ModelContract.encoder_decoder``) scores the second text of each pair
(the target, EOS included) given the first (the source): the source runs through the encoder,
the target, shifted right after the decoder's start token, through the decoder: the sum is
minus the reference's loss (labels = the target) times the target's tokens.  No windows: the
source is encoded whole (relative positions have no hard limit).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import pyarrow as pa
import torch

from autoload import registry
from autoload.modeling import Segments

from .common import INPUT_IDS, PROMPT_TOKENS
from .heads import LanguageModel, is_encoder_decoder
from .model_stage import ModelStage, Results, unpad

# Tokens whose vocabulary logits are materialised at once: (chunk, V) floats, not (N, V).
LOGIT_CHUNK = 512


def windows(length: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first scored token) of each window over a text of ``length`` tokens, as the
    reference perplexity recipe cuts them: no token is scored twice, and with ``stride <
    context`` every token after the first is scored (without overlap, a window's first token
    has no left context and is not)."""
    cuts: list[tuple[int, int, int]] = []
    previous_end = 0
    for begin in range(0, max(length, 1), stride):
        end = min(begin + context, length)
        cuts.append((begin, end, max(previous_end, begin + 1)))
        previous_end = end
        if end == length:
            break
    return cuts


class Score(ModelStage):
    auto_class = LanguageModel
    checkpoint_kind = "language model"
    per_token = ("next_logprob",)

    def __init__(self, model: str, *, context: int, stride: Optional[int] = None, bos_token_id: Optional[int] = None,
                 return_token_logprobs: bool = False, **kwargs: Any) -> None:
        if stride is not None and not 0 < stride <= context:
            raise ValueError(f"stride must be in 1..{context} (the context), got {stride}")
        self.context = context
        self.stride = stride or context
        self.bos_token_id = bos_token_id
        self.return_token_logprobs = return_token_logprobs
        super().__init__(model, **kwargs)
        # A head whose output is not a logits layer (Transformer-XL's adaptive softmax) scores the
        # given next tokens itself; the others' logits go through log_softmax here.
        self.target_logprobs = getattr(self.model, "target_logprobs", None)
        self.seq2seq = is_encoder_decoder(self.model.config)
        if self.seq2seq:
            # The decoder reads the padded encoder states, and the targets are padded anyway.
            self.flat = False
            self.lm_head = self.model.lm_logits  # the head with its tied-embedding rescale
            return
        # The body's states go through the LM head a chunk of tokens at a time (a causal LM with
        # logits names its head lm_head), so no (tokens, vocabulary) array is ever whole.
        self.body = getattr(self.model, self.model.base_model_prefix)
        self.lm_head = None if self.target_logprobs is not None else self.model.lm_head
        # The body gets the inputs its architecture declares (Transformer-XL takes no attention mask).
        self.body_inputs = registry.contract(self.model.config.model_type).input_names

    def __call__(self, table: pa.Table) -> pa.Table:
        """Cut each row into its windows (sequences) before the shared machinery runs them."""
        if self.seq2seq:
            return super().__call__(self._split_targets(table))
        rows = table[INPUT_IDS].to_pylist()
        if self.bos_token_id is not None:
            rows = [[self.bos_token_id, *ids] if ids else ids for ids in rows]
        prompts = (table[PROMPT_TOKENS].to_numpy() if PROMPT_TOKENS in table.column_names
                   else np.zeros(table.num_rows, dtype=np.int64)) + (self.bos_token_id is not None)
        self._cuts = [windows(len(ids), self.context, self.stride) if ids else [] for ids in rows]
        self._prompts = prompts
        nested = [[ids[begin:end] for begin, end, _ in cuts] for ids, cuts in zip(rows, self._cuts)]
        table = table.set_column(table.schema.get_field_index(INPUT_IDS), INPUT_IDS,
                                 pa.array(nested, type=pa.list_(pa.list_(pa.int32()))))
        return super().__call__(table)

    # -- encoder-decoder: the target given the source ----------------------------------------
    def _split_targets(self, table: pa.Table) -> pa.Table:
        """Each row's pair tokens → the source (the first text and its EOS) as the sequence the
        stage runs, the target (the second and its EOS) kept per row for the decoder."""
        if PROMPT_TOKENS not in table.column_names:
            raise ValueError(f"{type(self.model).__name__} is an encoder-decoder: score gives the log-likelihood of a "
                             "target given a source; name the target column with --text-pair-column")
        rows = table[INPUT_IDS].to_pylist()
        cuts = table[PROMPT_TOKENS].to_numpy()
        self._targets = [ids[int(cut):] if ids else [] for ids, cut in zip(rows, cuts)]
        sources = [ids[:int(cut)] if ids else [] for ids, cut in zip(rows, cuts)]
        # One decoder width for the whole block, so every micro-batch's output has one shape.
        self._target_width = max([len(t) for t in self._targets] + [1])
        return table.set_column(table.schema.get_field_index(INPUT_IDS), INPUT_IDS,
                                pa.array(sources, type=pa.list_(pa.int32())))

    def _forward_group(self, group: np.ndarray, sequences: Any) -> tuple[dict[str, torch.Tensor], np.ndarray]:
        self._group_rows = sequences.row[group]  # the rows of this micro-batch, in its order
        return super()._forward_group(group, sequences)

    def _forward_seq2seq(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """(B, S) sources → (B, W) log p(target token | source, earlier target tokens), 0 past
        each target's end."""
        device = inputs["input_ids"].device
        labels = torch.full((len(self._group_rows), self._target_width), -100, dtype=torch.long)
        for i, row in enumerate(self._group_rows):
            target = self._targets[row]
            labels[i, :len(target)] = torch.tensor(target, dtype=torch.long)
        labels = labels.to(device)
        real = labels != -100
        encoded = self.model.encode(inputs["input_ids"], inputs["attention_mask"]).last_hidden_state
        hidden = self.model.decoder(self.model.shift_right(labels), real.long(), encoded, inputs["attention_mask"])[0]
        out = torch.zeros(labels.shape, dtype=torch.float32, device=device)
        out[real] = self._next_logprobs(hidden[real], labels[real], torch.ones_like(labels[real], dtype=torch.bool))
        return {"target_logprob": out}

    def _seq2seq_columns(self, results: Results) -> dict[str, pa.Array]:
        values = results.per_row("target_logprob", (self._target_width,))
        counts = np.array([len(t) if ok else 0 for t, ok in zip(self._targets, results.valid)], dtype=np.int64)
        per_row = [values[row, :counts[row]] for row in range(results.num_rows)]
        sums = np.array([float(np.sum(v, dtype=np.float64)) for v in per_row])
        return self._score_columns(results, sums, counts, [v.tolist() for v in per_row])

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.seq2seq:
            return self._forward_seq2seq(inputs)
        hidden = self.body(**{name: inputs[name] for name in self.body_inputs if name in inputs}).last_hidden_state
        mask = inputs["attention_mask"]
        ids = inputs["input_ids"]
        following = torch.cat([ids[:, 1:], ids[:, :1]], dim=1)  # (B, T): the token each position predicts
        has_next = torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], dim=1).bool()
        flat_hidden, flat_next, flat_has = unpad(hidden, mask), unpad(following, mask), unpad(has_next, mask)
        return {"next_logprob": self._next_logprobs(flat_hidden, flat_next, flat_has)}

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self.body.forward_flat(input_ids, segments, **inputs)  # (N, H)
        following = torch.roll(input_ids, -1)
        has_next = torch.ones_like(input_ids, dtype=torch.bool)
        has_next[segments.last] = False  # a sequence's last token predicts nothing within it
        return {"next_logprob": self._next_logprobs(hidden, following, has_next)}

    def _next_logprobs(self, hidden: torch.Tensor, following: torch.Tensor, has_next: torch.Tensor) -> torch.Tensor:
        """(N, H) states, (N,) next ids → (N,) float32 log p(next token), 0 where there is none."""
        out = torch.zeros(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], LOGIT_CHUNK):
            chunk = slice(start, start + LOGIT_CHUNK)
            if self.target_logprobs is not None:
                out[chunk] = self.target_logprobs(hidden[chunk], following[chunk].long()).float()
                continue
            logits = self.lm_head(hidden[chunk]).float()  # (chunk, V)
            out[chunk] = logits.log_softmax(-1).gather(1, following[chunk, None].long()).squeeze(1)
        return out.masked_fill(~has_next, 0.0)

    def columns(self, results: Results) -> dict[str, pa.Array]:
        if self.seq2seq:
            return self._seq2seq_columns(results)
        sums = np.zeros(results.num_rows, dtype=np.float64)
        counts = np.zeros(results.num_rows, dtype=np.int64)
        per_row: list = [[] for _ in range(results.num_rows)]
        seen = np.zeros(results.num_rows, dtype=np.int64)  # windows of the row handled so far
        logprobs = results.per_token.get("next_logprob")
        for sequence, row in enumerate(results.sequences.row):
            begin, end, first = self._cuts[row][seen[row]]
            seen[row] += 1
            # Position j predicts token begin + j + 1; score the tokens from max(first, prompt) on.
            lowest = max(first, int(self._prompts[row]))
            values = logprobs[sequence][lowest - begin - 1:end - begin - 1]  # empty when nothing is scored here
            sums[row] += float(np.sum(values, dtype=np.float64))
            counts[row] += len(values)
            per_row[row].extend(np.asarray(values, dtype=np.float32).tolist())
        return self._score_columns(results, sums, counts, per_row)

    def _score_columns(self, results: Results, sums: np.ndarray, counts: np.ndarray,
                       per_row: list) -> dict[str, pa.Array]:
        """Per-row sums and counts of the scored tokens' log-probabilities → the output columns."""
        nulls = ~results.valid | (counts == 0)
        mean = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
        columns = {
            "logprob_sum": pa.array(sums, mask=nulls),
            "logprob_mean": pa.array(mean, mask=nulls),
            "perplexity": pa.array(np.exp(-mean), mask=nulls),
            "scored_tokens": pa.array(counts.astype(np.int32), mask=~results.valid),
        }
        if self.return_token_logprobs:
            columns["token_logprobs"] = pa.array([p if ok else None for p, ok in zip(per_row, results.valid)],
                                                 type=pa.list_(pa.float32()))
        return columns
