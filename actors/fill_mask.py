"""Fill-mask stage: the likeliest tokens for every mask token of a row, as transformers'
``pipeline("fill-mask")`` gives them.

Per row, ``predictions`` holds one list per mask token (in text order), each the ``top_k``
candidates best first: ``token`` (id), ``token_str`` (the token decoded alone), ``score``
(its softmax probability over the whole vocabulary at that position) and ``sequence`` (the
row's tokens with this candidate in the mask's place, decoded; special tokens are kept when the
row has several masks, so the other masks stay visible, as the reference does).  With
``targets`` only those tokens are scored (still probabilities over the whole vocabulary, not
renormalised), and at most as many candidates as targets are given.

A row whose tokens hold no mask token has nothing to predict: it is a bad row.  The stage
applies the job's bad-row policy to it the way the tokenize stage does; it knows the policy
from the tokenize stage's output (an ``error`` column exists only under ``flag``).
"""
from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

import numpy as np
import pyarrow as pa
import torch

from autoload import AutoModelForMaskedLM, AutoTokenizer
from autoload.modeling import Segments

from .common import ERROR, INPUT_IDS, ROW, SOURCE, TRUNCATED, BadRowError
from .model_stage import ModelStage, Results, unpad

logger = logging.getLogger(__name__)

PREDICTION = pa.struct([("token", pa.int32()), ("token_str", pa.string()), ("score", pa.float32()),
                        ("sequence", pa.string())])
# One list per mask token, each the candidates best first.
PREDICTIONS = pa.list_(pa.list_(PREDICTION))


def target_ids(tokenizer: Any, targets: Sequence[str]) -> list[int]:
    """The token ids of ``targets``, as the reference pipeline finds them: the vocabulary entry
    of that exact spelling, else the first token the text encodes to (logged, since the score
    is then that token's); duplicates dropped.  Sorted, so the job's manifest is stable."""
    vocab = tokenizer.get_vocab()
    ids: list[int] = []
    for target in targets:
        found = vocab.get(target)
        if found is None:
            encoded = tokenizer(target, add_special_tokens=False)["input_ids"]
            if not encoded:
                logger.warning("target %r is no token of the model's vocabulary and encodes to nothing: ignored", target)
                continue
            found = encoded[0]
            logger.warning("target %r is not in the model's vocabulary: scoring its first token %r instead", target,
                           tokenizer.convert_ids_to_tokens(found))
        ids.append(int(found))
    if not ids:
        raise ValueError(f"--targets {','.join(targets)}: none of them is a token of the model's vocabulary")
    return sorted(set(ids))


class FillMask(ModelStage):
    """Adds ``predictions`` (list<list<struct<token, token_str, score, sequence>>>); null for bad rows."""

    auto_class = AutoModelForMaskedLM
    checkpoint_kind = "masked language model"
    per_token = ("top_scores", "top_ids")

    def __init__(self, model: str, *, top_k: int = 5, targets: Sequence[str] = (), **kwargs: Any) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        fetch = {"storage_options": kwargs.get("storage_options") or {}, "cache_dir": kwargs.get("cache_dir")}
        self.tokenizer = AutoTokenizer.from_pretrained(model, **fetch)
        if self.tokenizer.mask_token_id is None:
            raise ValueError(f"{model}'s tokenizer has no mask token: it can't fill masks")
        self.mask_id = int(self.tokenizer.mask_token_id)
        self.targets: Optional[list[int]] = target_ids(self.tokenizer, targets) if targets else None
        self.top_k = min(top_k, len(self.targets)) if self.targets else top_k
        super().__init__(model, **kwargs)
        self.top_k = min(self.top_k, int(self.model.config.vocab_size))  # torch.topk refuses more
        self.body = getattr(self.model, self.model.base_model_prefix)
        self._target_index = (torch.tensor(self.targets, device=self.device) if self.targets is not None else None)

    def __call__(self, table: pa.Table) -> pa.Table:
        """Apply the bad-row policy to rows without a mask token, then run the rest."""
        return super().__call__(self._rows_without_mask(table))

    def _rows_without_mask(self, table: pa.Table) -> pa.Table:
        errors = table[ERROR].to_pylist() if ERROR in table.column_names else [None] * table.num_rows
        truncated = table[TRUNCATED].to_pylist() if TRUNCATED in table.column_names else [False] * table.num_rows
        missing = []
        for index, ids in enumerate(table[INPUT_IDS].to_pylist()):
            if errors[index] is None and ids is not None and self.mask_id not in ids:
                missing.append(index)
        if not missing:
            return table
        mask = self.tokenizer.mask_token
        reasons = {i: (f"no mask token {mask} within the first {len(table[INPUT_IDS][i])} tokens (the text was cut to "
                       "the model's maximum length)" if truncated[i] else
                       f"the text has no mask token {mask}: put {mask} where a token is to be predicted")
                   for i in missing}
        if ERROR not in table.column_names:  # the job's policy is "error"
            first = missing[0]
            raise BadRowError(f"{_where(table, first)}: {reasons[first]}. Fix the input, or rerun with --on-bad-row flag "
                              f"to write such rows with a null output and an '{ERROR}' column.")
        for i, reason in reasons.items():
            errors[i] = reason
        return table.set_column(table.schema.get_field_index(ERROR), ERROR, pa.array(errors, type=pa.string()))

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = unpad(self.model(**inputs).logits, inputs["attention_mask"])  # (N, V)
        is_mask = unpad(inputs["input_ids"], inputs["attention_mask"]) == self.mask_id
        return self._top(logits[is_mask], is_mask)

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self.body.forward_flat(input_ids, segments, **inputs)  # (N, H)
        is_mask = input_ids == self.mask_id
        # Only the mask positions go through the vocabulary projection (masked LM heads are per token).
        return self._top(self.model.head_flat(hidden[is_mask], segments), is_mask)

    def _top(self, logits: torch.Tensor, is_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """(M, V) logits at the M mask positions, (N,) where they are → (N, k) scores and ids, zero
        at the other tokens."""
        probs = logits.float().softmax(-1)
        if self._target_index is not None:
            probs = probs[:, self._target_index]
        values, index = probs.topk(self.top_k, dim=-1)
        if self._target_index is not None:
            index = self._target_index[index]
        scores = torch.zeros(is_mask.shape[0], self.top_k, dtype=torch.float32, device=logits.device)
        ids = torch.zeros(is_mask.shape[0], self.top_k, dtype=torch.int64, device=logits.device)
        scores[is_mask] = values
        ids[is_mask] = index
        return {"top_scores": scores, "top_ids": ids}

    def columns(self, results: Results) -> dict[str, pa.Array]:
        rows: list = [None] * results.num_rows
        ids_per_sequence = results.sequences.ids
        scores, top_ids = results.per_token.get("top_scores"), results.per_token.get("top_ids")
        pad = self.tokenizer.pad_token_id
        for sequence, row in enumerate(results.sequences.row):
            tokens = np.asarray(ids_per_sequence[sequence].values, dtype=np.int64)
            positions = np.flatnonzero(tokens == self.mask_id)
            single = len(positions) == 1
            per_mask = []
            for position in positions:
                candidates = []
                for score, token in zip(scores[sequence][position].tolist(), top_ids[sequence][position].tolist()):
                    filled = tokens.copy()
                    filled[position] = token
                    if pad is not None:
                        filled = filled[filled != pad]
                    candidates.append({"token": token, "token_str": self.tokenizer.decode([token]), "score": score,
                                       "sequence": self.tokenizer.decode(filled.tolist(), skip_special_tokens=single)})
                per_mask.append(candidates)
            rows[row] = per_mask
        return {"predictions": pa.array(rows, type=PREDICTIONS)}


def _where(table: pa.Table, index: int) -> str:
    if SOURCE in table.column_names and ROW in table.column_names:
        return f"{table[SOURCE][index].as_py()} row {table[ROW][index].as_py()}"
    return f"row {index} of the batch"
