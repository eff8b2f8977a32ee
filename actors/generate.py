"""Generate stage: continue each row's prompt with a causal language model.

Per row: ``generated_text``, ``generated_tokens`` (tokens the model produced, an EOS included)
and ``finish_reason``: ``eos`` (the model ended), ``stop`` (a ``stop`` string appeared: the
text ends before it) or ``length`` (``max_new_tokens`` reached).

Prompts of a micro-batch are left-padded, run once through the model (prefill), then decoded
one token per step with the KV cache; a row that finishes leaves the batch (its cache rows
are dropped), so long rows don't keep short ones' compute busy.  Greedy by default; with
``do_sample``, temperature / top-k / top-p sampling from a generator seeded per row from the
job's seed and the row's id (source file and row), so a retried or resumed unit writes the
same text whatever its batch.  With ``num_beams`` > 1, beam search as transformers'
``generate(num_beams=k, do_sample=False)`` (see :class:`Beams`): each prompt runs as k cache rows,
reordered by the chosen beams every step; a prompt whose search has settled leaves the batch.

An encoder-decoder (T5; ``ModelContract.encoder_decoder``) is text-to-text: the prompt is the
source, encoded once per row (right-padded, no positions to fix); the decoder starts from its
start token and decodes with its cache, whose cross-attention keys and values are computed
from the encoder states on the first step and reused.  Decoding (greedy, sampling, beams) is
the same loop on either kind of model: only the prefill and the step differ.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import pyarrow as pa
import torch

from autoload import AutoTokenizer

from .common import INPUT_IDS, ROW, SOURCE, TOKENS, TRUNCATED, BadRowError
from .heads import LanguageModel, is_encoder_decoder
from .model_stage import ModelStage, Results

FINISH_REASONS = ("length", "eos", "stop")
LONG_PROMPTS = ("error", "truncate")


class Generate(ModelStage):
    auto_class = LanguageModel
    checkpoint_kind = "language model"

    def __init__(self, model: str, *, context: int, max_new_tokens: int, eos_token_id: Optional[int] = None,
                 do_sample: bool = False, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 seed: int = 0, stop: Sequence[str] = (), long_prompt: str = "error", num_beams: int = 1,
                 **kwargs: Any) -> None:
        if num_beams < 1:
            raise ValueError(f"num_beams must be at least 1, got {num_beams}")
        if num_beams > 1 and do_sample:
            raise ValueError("beam search samples nothing: num_beams > 1 runs without do_sample")
        if long_prompt not in LONG_PROMPTS:
            raise ValueError(f"long_prompt must be one of {LONG_PROMPTS}, got {long_prompt!r}")
        if max_new_tokens >= context:
            raise ValueError(f"max_new_tokens ({max_new_tokens}) must be below the context ({context})")
        self.context, self.max_new_tokens, self.eos_token_id = context, max_new_tokens, eos_token_id
        self.do_sample, self.temperature, self.top_k, self.top_p = do_sample, temperature, top_k, top_p
        self.seed, self.stop, self.long_prompt, self.num_beams = seed, list(stop), long_prompt, num_beams
        super().__init__(model, **kwargs)
        # A micro-batch of B prompts decodes B x num_beams rows: the budgets count prompts, so
        # the rows a forward runs stay within the device's limits (an OOM lowers it further).
        self.max_batch_tokens = max(1, self.max_batch_tokens // num_beams)
        self.batch_size = max(1, self.batch_size // num_beams)
        # Left padding needs positions and the cache: generation runs on the padded forward.
        self.flat = False
        self.seq2seq = is_encoder_decoder(self.model.config)
        self.own_decoding = callable(getattr(self.model, "start_decoding", None))
        self.tokenizer = AutoTokenizer.from_pretrained(model, storage_options=kwargs.get("storage_options") or {},
                                                       cache_dir=kwargs.get("cache_dir"))

    def __call__(self, table: pa.Table) -> pa.Table:
        table = self._fit_prompts(table)
        self._seeds = self._row_seeds(table)
        return super().__call__(table)

    def _fit_prompts(self, table: pa.Table) -> pa.Table:
        """Prompts keep room for the new tokens: longer ones fail naming the row, or lose their
        beginning (the end is what the continuation follows) and are marked ``truncated``."""
        # An encoder-decoder's new tokens go to the decoder: the source has the whole context.
        room = self.context if self.seq2seq else self.context - self.max_new_tokens
        lengths = table[TOKENS].to_numpy()
        long = np.flatnonzero(lengths > room)
        if not len(long):
            return table
        if self.long_prompt == "error":
            row = int(long[0])
            where = (f"{table[SOURCE][row].as_py()} row {table[ROW][row].as_py()}"
                     if SOURCE in table.column_names else f"row {row} of the batch")
            needs = ("is longer than" if self.seq2seq
                     else f"leaves no room for --max-new-tokens {self.max_new_tokens} in")
            raise BadRowError(f"{where}: a prompt of {int(lengths[row])} tokens {needs} the model's context of "
                              f"{self.context}. Shorten the prompt, lower --max-new-tokens, or rerun with "
                              "--long-prompt truncate (keeps its end).")
        ids = table[INPUT_IDS].to_pylist()
        cut = table[TRUNCATED].to_numpy(zero_copy_only=False).copy()
        for row in long:
            ids[row] = ids[row][-room:]
            cut[row] = True
        lengths = np.minimum(lengths, room)
        for name, column in ((INPUT_IDS, pa.array(ids, type=pa.list_(pa.int32()))), (TOKENS, pa.array(lengths.astype(np.int32))),
                             (TRUNCATED, pa.array(cut))):
            table = table.set_column(table.schema.get_field_index(name), name, column)
        return table

    def _row_seeds(self, table: pa.Table) -> np.ndarray:
        """A 63-bit seed per row from the job's seed and the row's identity (file and row)."""
        if SOURCE not in table.column_names:
            keys = [str(i) for i in range(table.num_rows)]
        else:
            keys = [f"{s}#{r}" for s, r in zip(table[SOURCE].to_pylist(), table[ROW].to_pylist())]
        digests = [hashlib.sha256(f"{self.seed}:{key}".encode()).digest()[:8] for key in keys]
        return np.array([int.from_bytes(d, "little") >> 1 for d in digests], dtype=np.int64)

    # -- one micro-batch: prefill, then one token per step ----------------------------------
    # -- the model's side of decoding: prefill, one step, keeping some rows ----------------
    def _prefill(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """(B, T) prompts → (B, V) the first new token's logits and the decoding state: the
        cache plus, for a decoder, the mask and positions; for an encoder-decoder, the encoder
        states and their mask (run once here). A model that decodes its own way (Transformer-XL's
        memories: ``start_decoding``, ``decode_step``, ``select_rows``) keeps its own state."""
        if self.own_decoding:
            return self.model.start_decoding(ids, mask)
        if self.seq2seq:
            encoded = self.model.encode(ids, mask).last_hidden_state  # (B, S, H)
            start = ids.new_full((ids.shape[0], 1), self.model.config.decoder_start_token_id)
            step = self.model(attention_mask=mask, encoder_outputs=(encoded,), decoder_input_ids=start, use_cache=True)
            return step.logits[:, -1], {"cache": step.past_key_values, "encoded": encoded, "mask": mask}
        ids, mask = _left_align(ids, mask)  # each row's tokens end at the last column
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        step = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        return step.logits[:, -1], {"cache": step.past_key_values, "mask": mask, "positions": positions[:, -1:]}

    def _step(self, state: dict[str, Any], tokens: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """(R,) the tokens just chosen → (R, V) the next token's logits and the new state."""
        if self.own_decoding:
            return self.model.decode_step(state, tokens)
        if self.seq2seq:
            step = self.model(attention_mask=state["mask"], encoder_outputs=(state["encoded"],),
                              decoder_input_ids=tokens[:, None], past_key_values=state["cache"], use_cache=True)
            return step.logits[:, -1], {**state, "cache": step.past_key_values}
        mask = torch.cat([state["mask"], state["mask"].new_ones(state["mask"].shape[0], 1)], dim=1)
        positions = state["positions"] + 1
        step = self.model(input_ids=tokens[:, None], attention_mask=mask, position_ids=positions,
                          past_key_values=state["cache"], use_cache=True)
        return step.logits[:, -1], {"cache": step.past_key_values, "mask": mask, "positions": positions}

    def _rows(self, state: dict[str, Any], rows: torch.Tensor) -> dict[str, Any]:
        """The state of rows ``rows`` (R',) (kept, copied or reordered), cache included."""
        if self.own_decoding:
            return self.model.select_rows(state, rows)
        return {name: _reorder(value, rows) if name == "cache" else value.index_select(0, rows)
                for name, value in state.items()}

    # -- one micro-batch: prefill, then one token per step ----------------------------------
    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ids, mask = inputs["input_ids"], inputs["attention_mask"]  # (B, T) each, right-padded
        if self.num_beams > 1:
            return self._beam_search(ids, mask)
        batch = ids.shape[0]
        out = torch.full((batch, self.max_new_tokens), -1, dtype=torch.long, device=ids.device)
        finish = torch.zeros(batch, dtype=torch.long, device=ids.device)  # 0 = length
        generators = self._generators(ids.device)
        logits, state = self._prefill(ids, mask)
        active = torch.arange(batch, device=ids.device)
        for t in range(self.max_new_tokens):
            chosen = self._choose(logits.float(), [generators[i] for i in active.tolist()])  # (b,)
            out[active, t] = chosen
            ended = chosen == self.eos_token_id if self.eos_token_id is not None else torch.zeros_like(chosen, dtype=torch.bool)
            finish[active[ended]] = FINISH_REASONS.index("eos")
            keep = ~ended
            if t == self.max_new_tokens - 1 or not bool(keep.any()):
                break
            if not bool(keep.all()):  # finished rows leave the batch, with their cache
                kept = keep.nonzero()[:, 0]
                active, chosen, state = active[kept], chosen[kept], self._rows(state, kept)
            logits, state = self._step(state, chosen)
        return {"tokens": out, "finish": finish}

    def _beam_search(self, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Right-padded (B, T) prompts → the best beam's tokens (B, max_new_tokens), -1 after its
        end, and finish codes.  The prompts run once (prefill); their cache rows are then copied k times."""
        batch, beams, device = ids.shape[0], self.num_beams, ids.device
        out = torch.full((batch, self.max_new_tokens), -1, dtype=torch.long, device=device)
        finish = torch.zeros(batch, dtype=torch.long, device=device)
        logits, state = self._prefill(ids, mask)
        # Each prompt's row becomes k rows (prompt-major), identical until the first step.
        rows = torch.arange(batch, device=device).repeat_interleave(beams)  # (B*k,)
        state, logits = self._rows(state, rows), logits[rows]
        search = Beams.start(batch, beams, self.max_new_tokens, device)
        active = torch.arange(batch, device=device)  # the prompts still searching
        for t in range(self.max_new_tokens):
            last = t == self.max_new_tokens - 1
            parents = search.advance(logits.float().log_softmax(-1), t, self.eos_token_id, last)  # (b, k)
            if last:
                break
            # Each running beam continues its parent's cache row, among its own prompt's k rows.
            rows = parents + beams * torch.arange(len(active), device=device)[:, None]  # (b, k)
            settled = search.settled(t + 1)  # (b,)
            if bool(settled.any()):  # settled prompts leave the batch, with their cache rows
                self._settle(out, finish, active[settled], search.best()[settled])
                keep = ~settled
                active, rows, search = active[keep], rows[keep], search.select(keep)
                if not len(active):
                    break
            logits, state = self._step(self._rows(state, rows.flatten()), search.tokens[:, :, t].reshape(-1))
        self._settle(out, finish, active, search.best())
        return {"tokens": out, "finish": finish}

    def _settle(self, out: torch.Tensor, finish: torch.Tensor, prompts: torch.Tensor, best: torch.Tensor) -> None:
        """Write the best hypotheses (p, max_new_tokens) of ``prompts`` (p,) and why they ended."""
        out[prompts] = best
        if self.eos_token_id is not None:
            ends = best.gather(1, ((best >= 0).sum(1, keepdim=True) - 1).clamp(min=0))[:, 0]  # (p,) last tokens
            finish[prompts] = torch.where(ends == self.eos_token_id, FINISH_REASONS.index("eos"), 0)

    def _forward_group(self, group: np.ndarray, sequences: Any) -> tuple[dict[str, torch.Tensor], np.ndarray]:
        self._batch_seeds = self._seeds[sequences.row[group]]  # the rows of this micro-batch, in its order
        return super()._forward_group(group, sequences)

    def _generators(self, device: torch.device) -> list[Optional[torch.Generator]]:
        """One generator per row of the micro-batch, seeded from the row (none when greedy)."""
        if not self.do_sample:
            return [None] * len(self._batch_seeds)
        generators = []
        for seed in self._batch_seeds:
            generator = torch.Generator(device=device)
            generator.manual_seed(int(seed))
            generators.append(generator)
        return generators

    def _choose(self, logits: torch.Tensor, generators: list[Optional[torch.Generator]]) -> torch.Tensor:
        """(b, V) next-token logits → (b,) chosen ids: argmax, or a sample per row."""
        if not self.do_sample:
            return logits.argmax(-1)
        logits = logits / max(self.temperature, 1e-6)
        if self.top_k:
            kth = logits.topk(min(self.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.top_p < 1.0:
            ordered, order = logits.sort(dim=-1, descending=True)
            cumulative = ordered.softmax(-1).cumsum(-1)
            # Drop the tokens past the nucleus, always keeping the most likely one.
            drop = cumulative - ordered.softmax(-1) > self.top_p
            logits = logits.scatter(1, order, ordered.masked_fill(drop, float("-inf")))
        probs = logits.softmax(-1)
        return torch.stack([torch.multinomial(p, 1, generator=g)[0] for p, g in zip(probs, generators)])

    def columns(self, results: Results) -> dict[str, pa.Array]:
        tokens = results.per_row("tokens", (self.max_new_tokens,))
        finish = results.per_row("finish")
        texts: list[Optional[str]] = []
        counts: list[Optional[int]] = []
        reasons: list[Optional[str]] = []
        for row in range(results.num_rows):
            if not results.valid[row]:
                texts.append(None), counts.append(None), reasons.append(None)
                continue
            ids = [int(t) for t in tokens[row] if t >= 0]
            text, count, reason = self._finish(ids, FINISH_REASONS[int(finish[row])])
            texts.append(text), counts.append(count), reasons.append(reason)
        return {"generated_text": pa.array(texts, type=pa.string()),
                "generated_tokens": pa.array(counts, type=pa.int32()),
                "finish_reason": pa.array(reasons, type=pa.string())}

    def _finish(self, ids: list[int], reason: str) -> tuple[str, int, str]:
        """The row's text, token count and finish reason, ended before the first stop string."""
        text = self._decode(ids)
        found = [text.find(s) for s in self.stop if s in text]
        if not found:
            return text, len(ids), reason
        # The fewest tokens whose text holds a stop string: the count the stop ended at.
        low, high = 1, len(ids)
        while low < high:
            middle = (low + high) // 2
            if any(s in self._decode(ids[:middle]) for s in self.stop):
                high = middle
            else:
                low = middle + 1
        return text[:min(found)], low, "stop"

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


@dataclass
class Beams:
    """Beam search state of b prompts with k beams each, as transformers 5's ``_beam_search``
    with its defaults (``length_penalty=1.0``, ``early_stopping=False``):

    - Each step, the 2k best of the k x V continuations by summed log-probability are kept;
      the best k of them that did not end (EOS, or the last step) keep running.
    - A continuation among the best k that ended becomes a hypothesis scored by its summed
      log-probability over its length (new tokens, EOS included); the best k hypotheses are kept.
    - A prompt is settled once it holds k hypotheses and its best running beam's score over
      the current length is no better than the worst of them.
    - The answer is the best hypothesis; at the last step every continuation ends (by length).
    """

    scores: torch.Tensor        # (b, k) running beams' summed log-probabilities
    tokens: torch.Tensor        # (b, k, N) running beams' new tokens, -1 after
    done_scores: torch.Tensor   # (b, k) hypotheses' scores, best first; -inf for none yet
    done_tokens: torch.Tensor   # (b, k, N) hypotheses' tokens, -1 after

    @classmethod
    def start(cls, batch: int, beams: int, new_tokens: int, device: torch.device) -> "Beams":
        # The k copies of a prompt are identical: only the first scores 0, so the first step's
        # candidates come from it alone (-1e9 as the reference, not -inf: should the vocabulary
        # hold fewer than 2k tokens, the copies fill the rest in the reference's order).
        scores = torch.full((batch, beams), -1e9, device=device)
        scores[:, 0] = 0
        tokens = torch.full((batch, beams, new_tokens), -1, dtype=torch.long, device=device)
        return cls(scores, tokens, torch.full((batch, beams), float("-inf"), device=device), tokens.clone())

    def advance(self, log_probs: torch.Tensor, t: int, eos: Optional[int], last: bool) -> torch.Tensor:
        """Step ``t`` on the running beams' next-token log-probabilities (b*k, V) → (b, k) the
        beam each new running beam continues."""
        batch, beams, _ = self.tokens.shape
        vocab = log_probs.shape[-1]
        summed = (log_probs.view(batch, beams, vocab) + self.scores[:, :, None]).view(batch, beams * vocab)
        top, index = summed.topk(2 * beams)  # (b, 2k), best first
        parents, chosen = index // vocab, index % vocab
        tokens = _pick(self.tokens, parents)  # (b, 2k, N) a copy: the parents' tokens
        tokens[:, :, t] = chosen
        ended = chosen == eos if eos is not None else torch.zeros_like(chosen, dtype=torch.bool)
        if last:  # the length limit ends every continuation
            ended = torch.ones_like(ended)
        self._keep_hypotheses(top, tokens, ended, t + 1)
        # At least k of the 2k did not end (a beam offers EOS once), so k beams keep running.
        self.scores, pick = top.masked_fill(ended, float("-inf")).topk(beams)
        self.tokens = _pick(tokens, pick)
        return parents.gather(1, pick)

    def _keep_hypotheses(self, top: torch.Tensor, tokens: torch.Tensor, ended: torch.Tensor, length: int) -> None:
        """Merge the ended continuations among the best k into the k best hypotheses; the other
        k are spares for the running beams only."""
        beams = self.scores.shape[1]
        eligible = ended.clone()
        eligible[:, beams:] = False
        candidates = torch.where(eligible, top / length, float("-inf"))  # (b, 2k)
        merged = torch.cat([self.done_scores, candidates], dim=1)  # earlier hypotheses first, as the reference
        self.done_scores, pick = merged.topk(beams)
        self.done_tokens = _pick(torch.cat([self.done_tokens, tokens], dim=1), pick)

    def settled(self, length: int) -> torch.Tensor:
        """(b,) prompts whose best running beam can't beat their worst hypothesis any more, by the
        reference's estimate with ``early_stopping=False``: its score over the current length."""
        return ~(self.scores[:, 0] / length > self.done_scores.min(dim=1).values)

    def best(self) -> torch.Tensor:
        """(b, N) the best hypothesis of each prompt."""
        return self.done_tokens[:, 0]

    def select(self, keep: torch.Tensor) -> "Beams":
        """The prompts where ``keep`` (b,) is true."""
        return Beams(self.scores[keep], self.tokens[keep], self.done_scores[keep], self.done_tokens[keep])


def _pick(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(b, n, N) per-beam tokens, (b, m) beam indices → (b, m, N) the indexed beams' tokens."""
    return tokens.gather(1, index[:, :, None].expand(-1, -1, tokens.shape[2]))


def _reorder(cache: tuple[tuple[torch.Tensor, ...], ...], rows: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], ...]:
    """Per-layer cache tensors, each (R, heads, P, d) ((key, value) for a decoder; self and
    cross keys and values for an encoder-decoder) → rows ``rows`` (R',) of it."""
    return tuple(tuple(tensor.index_select(0, rows) for tensor in layer) for layer in cache)


def _left_align(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, T) ids and mask → left-padded: each row's tokens end at the last column,
    where the next token is generated."""
    width = ids.shape[1]
    shift = width - mask.sum(1)  # (B,) pads per row
    index = (torch.arange(width, device=ids.device)[None, :] - shift[:, None]) % width  # (B, T)
    return ids.gather(1, index), mask.gather(1, index)
