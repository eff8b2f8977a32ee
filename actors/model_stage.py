"""The model stage's shared machinery: load once, length-sorted token-budget micro-batches.

A subclass names the Auto class to load, runs one micro-batch (``forward`` padded,
``forward_flat`` unpadded) into named outputs, and turns the outputs into Arrow columns of any
shape: per-row vectors, scalars or strings, per-token lists.  Everything else is shared here:

- A row may run as several model sequences (windows of a long text, question + context
  strides): the tokenize step then gives ``__input_ids`` as a list of sequences per row.  The
  stage runs sequences, not rows, and hands the subclass each sequence's row to collapse them.
- Sequences run longest first in micro-batches cut by a token budget; results go back to
  their own sequence's place, so the output keeps the input order.
- Models with a ``forward_flat`` run unpadded: each micro-batch's tokens back to back, so the
  linear layers see real tokens only.  A CUDA out-of-memory error halves the micro-batch and
  lowers the actor's token budget for the rest of its life; no row is lost.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Optional

import numpy as np
import pyarrow as pa
import torch

from autoload import registry
from autoload.checkpoint import weights_digest
from autoload.contract import LANGS as LANGS_INPUT
from autoload.contract import TOKEN_TYPE_IDS as TOKEN_TYPE_INPUT
from autoload.modeling import Segments, to_device

from .common import (
    DTYPES,
    INPUT_IDS,
    LANGS,
    PADDED,
    SECONDS,
    TOKEN_TYPE_IDS,
    flat_rows,
    injected_faults,
    micro_batches,
    pad_rows,
    seconds_column,
    valid_rows,
)

logger = logging.getLogger(__name__)

# Micro-batch limits per device type: (tokens per forward, rows per forward).  On CPU small
# forwards win: on one core, 2,048-token forwards ran 21 % (MiniLM) and 22 % (BERT-base) more
# tokens per CPU-second than 16,384-token ones (bench/ablation.py).  GPUs need large forwards
# to fill; 32k-131k-token batches ran best in an H200 probe of an unpadded BERT.
MICRO_BATCH_LIMITS = {"cpu": (2048, 128), "cuda": (65536, 1024)}


def load_dtype(name: str, device: torch.device) -> str:
    """The ``torch_dtype`` to load with: ``auto`` is float16 on GPU and float32 elsewhere.

    Tensor cores run float16 and bfloat16 at the same rate; float16's longer mantissa keeps
    MiniLM's embeddings within 0.2 % of float32 where bfloat16 drifts 1-1.5 %.  On CPU, half
    precision changes results, and without AMX it is slower.
    """
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {name!r}")
    if name != "auto":
        return name
    return "float16" if device.type == "cuda" else "float32"


# Per-token model inputs beside the ids: model input name → the tokenize stage's column.
EXTRA_INPUTS = {TOKEN_TYPE_INPUT: TOKEN_TYPE_IDS, LANGS_INPUT: LANGS}


@dataclass
class Sequences:
    """The model sequences of a block: token ids (and token types) per sequence, and the row
    each belongs to.  Rows with an error have none."""

    ids: pa.ListArray                 # one list<int32> of token ids per sequence
    row: np.ndarray                   # (S,) the input row of each sequence
    lengths: np.ndarray               # (S,) tokens per sequence
    # Per-token inputs beside the ids, by the model's input name (token types, languages), for
    # the ones the model declares and the tokenize stage wrote.
    extras: dict[str, pa.ListArray] = field(default_factory=dict)

    @classmethod
    def from_table(cls, table: pa.Table, valid: np.ndarray, inputs: Mapping[str, str]) -> "Sequences":
        """``inputs``: model input name → the block's column holding it, per token."""
        rows = np.flatnonzero(valid)
        take = pa.array(rows, type=pa.int64())
        ids = table[INPUT_IDS].combine_chunks().take(take)
        extras = {name: table[column].combine_chunks().take(take) for name, column in inputs.items()
                  if column in table.column_names}
        if pa.types.is_list(ids.type.value_type) or pa.types.is_large_list(ids.type.value_type):
            # Several sequences per row: list<list<int>>.
            counts = ids.value_lengths().to_numpy(zero_copy_only=False)
            row = np.repeat(rows, counts)
            ids = ids.flatten()
            extras = {name: values.flatten() for name, values in extras.items()}
        else:
            row = rows
        lengths = ids.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64)
        return cls(ids=ids, row=row, lengths=lengths, extras=extras)

    def __len__(self) -> int:
        return len(self.row)


@dataclass
class Ragged:
    """Per-token values of every sequence: ``values`` (N, ...) back to back in sequence order,
    sequence s's tokens at ``values[offsets[s]:offsets[s + 1]]``."""

    values: np.ndarray
    offsets: np.ndarray

    def __getitem__(self, sequence: int) -> np.ndarray:
        return self.values[self.offsets[sequence]:self.offsets[sequence + 1]]


@dataclass
class Results:
    """What a block's forwards produced, in sequence order, for the subclass's ``columns``."""

    sequences: Sequences
    num_rows: int
    valid: np.ndarray                     # (rows,) rows without an error (they have sequences)
    per_sequence: dict[str, np.ndarray]   # name → (S, ...)
    per_token: dict[str, Ragged]          # name → values per token of each sequence
    # The block as the stage got it, e.g. the tokenize stage's offsets and texts for stages that
    # map tokens back to characters (ner, qa).
    table: Optional[pa.Table] = None

    def tokens_per_row(self) -> np.ndarray:
        """(rows,) int64: tokens each row ran, over all its sequences."""
        return np.bincount(self.sequences.row, weights=self.sequences.lengths, minlength=self.num_rows).astype(np.int64)

    def per_row(self, name: str, shape: tuple[int, ...] = ()) -> np.ndarray:
        """(rows, *shape) of a per-sequence output (its dtype; float32 when nothing ran) for
        stages that run one sequence per row; rows with an error (and every row, when none
        ran) hold zeros: the columns mark them null."""
        if name not in self.per_sequence:
            return np.zeros((self.num_rows, *shape), dtype=np.float32)
        out = np.zeros((self.num_rows, *shape), dtype=self.per_sequence[name].dtype)
        if len(np.unique(self.sequences.row)) != len(self.sequences):
            raise ValueError(f"{name}: rows ran as several sequences; collapse them by Results.sequences.row")
        out[self.sequences.row] = self.per_sequence[name]
        return out


class ModelStage:
    """Callable on an Arrow table from the tokenize stage; returns it with the output columns
    added and the token columns removed.  Build once per actor: ``__init__`` loads the model."""

    auto_class: ClassVar[Any]
    # Weights the stage never uses, so a checkpoint may lack them (e.g. BERT's pooler for embeddings).
    unused_weights: ClassVar[tuple[str, ...]] = ()
    checkpoint_kind: ClassVar[str] = "model"
    # Names of ``forward``'s outputs that are per token ((N, ...) over the batch's tokens);
    # the others are per sequence ((B, ...)).
    per_token: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "auto",
        device: Optional[str] = None,
        threads: Optional[int] = None,
        batch_size: Optional[int] = None,
        max_batch_tokens: Optional[int] = None,
        pad_token_id: int = 0,
        storage_options: Optional[dict] = None,
        cache_dir: Optional[str] = None,
        expected_weights_digest: Optional[str] = None,
        progress: Optional[Callable[[int, int], None]] = None,
    ) -> None:
        started = time.perf_counter()
        # Called with (rows, tokens) after every micro-batch: the job's progress and stall watchdog.
        self.progress = progress
        if threads:
            # Ray gives actors with <= 1 CPU OMP_NUM_THREADS=1; the job decides instead.
            torch.set_num_threads(threads)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        tokens, rows = MICRO_BATCH_LIMITS.get(self.device.type, MICRO_BATCH_LIMITS["cpu"])
        self.batch_size = batch_size or rows
        self.max_batch_tokens = max_batch_tokens or tokens
        self.pad_token_id = pad_token_id
        loaded, info = self.auto_class.from_pretrained(
            model, torch_dtype=load_dtype(dtype, self.device), storage_options=storage_options or {}, cache_dir=cache_dir,
            output_loading_info=True,
        )
        problem = self.untrained(model, type(loaded).__name__, info["missing_keys"])
        if problem:
            raise ValueError(problem)
        self.model = loaded.to(self.device).prepare_for_inference()
        self.flat = callable(getattr(self.model, "forward_flat", None))
        # Only the inputs the architecture declares reach it (DistilBERT and RoBERTa take no token types).
        declared = registry.contract(self.model.config.model_type).input_names
        self.extra_inputs = {name: column for name, column in EXTRA_INPUTS.items() if name in declared}
        if expected_weights_digest is not None:
            digest = weights_digest(self.model.checkpoint_files)
            if digest != expected_weights_digest:
                raise RuntimeError(
                    f"The weights of {model} changed while the job ran (sha256 {digest}, the job planned "
                    f"with {expected_weights_digest}). Rerun the job once the model stops changing."
                )
        if progress is not None:
            progress(0, 0)  # tells the job this actor's node as soon as it is up
        logger.info("model stage loaded %s (%s, %s, %s, %d threads, %s, <= %d tokens / %d rows per forward) in %.1f s",
                    model, type(self.model).__name__, self.model.dtype, self.device, torch.get_num_threads(),
                    "unpadded" if self.flat else "padded", self.max_batch_tokens, self.batch_size,
                    time.perf_counter() - started)

    @classmethod
    def untrained(cls, model: str, model_class: str, missing_keys: list[str]) -> Optional[str]:
        """Why a checkpoint can't serve this stage, or None: the weights the stage uses that it
        lacks.  Freshly initialised weights would produce confident nonsense for every row."""
        missing = [k for k in missing_keys if not k.startswith(cls.unused_weights)]
        if not missing:
            return None
        return (f"{model} has no trained weights for {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}: "
                f"it is not a {cls.checkpoint_kind} checkpoint for {model_class}.")

    # -- subclass interface ---------------------------------------------------------------
    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One padded micro-batch ((B, T) ``input_ids``, ``attention_mask``, maybe
        ``token_type_ids``) → named outputs: (B, ...) per sequence, or for names in
        ``per_token`` (N, ...) over the real tokens in row order (see :func:`unpad`)."""
        raise NotImplementedError

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """One unpadded micro-batch, (N,) ids (and the declared inputs, flat) → the same outputs."""
        raise NotImplementedError

    def columns(self, results: Results) -> dict[str, pa.Array]:
        """The block's results → output columns, one value per input row (null for bad rows)."""
        raise NotImplementedError

    # -- the stage ------------------------------------------------------------------------
    def __call__(self, table: pa.Table) -> pa.Table:
        injected_faults("model")
        started = time.perf_counter()
        valid = valid_rows(table)
        sequences = Sequences.from_table(table, valid, self.extra_inputs)
        with torch.inference_mode():
            per_sequence, per_token, widths = self._run(sequences)
        results = Results(sequences=sequences, num_rows=table.num_rows, valid=valid, per_sequence=per_sequence,
                          per_token=per_token, table=table)
        table = table.drop_columns([c for c in (INPUT_IDS, *EXTRA_INPUTS.values()) if c in table.column_names])
        for name, column in self.columns(results).items():
            table = table.append_column(name, column)
        # Padded positions per row, summed over its sequences (for the padding ratio).
        padded = np.bincount(sequences.row, weights=widths, minlength=table.num_rows).astype(np.int32)
        table = table.append_column(PADDED, pa.array(padded))
        elapsed = time.perf_counter() - started
        return table.append_column(SECONDS + "model", seconds_column(elapsed, table.num_rows))

    def _run(self, sequences: Sequences) -> tuple[dict[str, np.ndarray], dict[str, Ragged], np.ndarray]:
        """Forward every sequence, longest first, in token-budget micro-batches.  Returns the
        per-sequence and per-token outputs in sequence order and the width each sequence ran
        at.  After an out-of-memory error the sequences not run yet are cut again under the
        lowered budget."""
        lengths = sequences.lengths
        done: list[np.ndarray] = []
        outputs: list[dict[str, torch.Tensor]] = []
        widths: list[np.ndarray] = []
        remaining = np.arange(len(sequences))
        # Sequences still to run per row: progress counts a row once its last sequence ran.
        pending = np.bincount(sequences.row, minlength=int(sequences.row.max()) + 1 if len(sequences) else 0)
        while len(remaining):
            for group in micro_batches(lengths[remaining], self.max_batch_tokens, self.batch_size):
                group = remaining[group]
                try:
                    output, width = self._forward_group(group, sequences)
                except torch.cuda.OutOfMemoryError as err:
                    self._lower_budget(len(group), int(lengths[group].max()), err)
                    break
                done.append(group)
                outputs.append(output)
                widths.append(width)
                if self.progress is not None:
                    rows = np.unique(sequences.row[group])
                    np.subtract.at(pending, sequences.row[group], 1)
                    self.progress(int((pending[rows] == 0).sum()), int(lengths[group].sum()))
            else:
                break
            # Outside the except block the failed forward's tensors are released, so the cache
            # can hand their memory back before the smaller retry.
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            remaining = np.setdiff1d(remaining, np.concatenate(done)) if done else remaining
        order = np.concatenate(done) if done else np.zeros(0, dtype=np.int64)
        ran_widths = np.zeros(len(sequences), dtype=np.int64)
        ran_widths[order] = np.concatenate(widths) if widths else []
        per_sequence, per_token = self._in_sequence_order(outputs, order, lengths)
        return per_sequence, per_token, ran_widths

    def _in_sequence_order(self, outputs: list[dict[str, torch.Tensor]], order: np.ndarray, lengths: np.ndarray
                           ) -> tuple[dict[str, np.ndarray], dict[str, Ragged]]:
        """The micro-batches' outputs (sequences in ``order``) back in sequence order.  Results
        stay on the device until the block ends: one copy back, no wait per micro-batch."""
        per_sequence: dict[str, np.ndarray] = {}
        per_token: dict[str, Ragged] = {}
        if not outputs:
            return per_sequence, per_token
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        for name in outputs[0]:
            ran = torch.cat([output[name] for output in outputs])
            host = (ran.float() if ran.is_floating_point() else ran).cpu().numpy()
            if name in self.per_token:
                # Token j of sequence s came at position ran_starts[s] + j of the run order.
                ran_lengths = lengths[order]
                ran_starts = np.zeros(len(lengths), dtype=np.int64)
                ran_starts[order] = np.cumsum(ran_lengths) - ran_lengths
                index = np.arange(offsets[-1]) + np.repeat(ran_starts - offsets[:-1], lengths)
                per_token[name] = Ragged(values=host[index], offsets=offsets)
            else:
                placed = np.zeros((len(lengths), *host.shape[1:]), dtype=host.dtype)
                placed[order] = host
                per_sequence[name] = placed
        return per_sequence, per_token

    def _forward_group(self, group: np.ndarray, sequences: Sequences) -> tuple[dict[str, torch.Tensor], np.ndarray]:
        """One micro-batch → its outputs on the device and, per sequence, the number of token
        positions it ran at (its own length when unpadded)."""
        group_lengths = sequences.lengths[group]
        if self.flat and group_lengths.min() > 0:
            segments = Segments.from_lengths(group_lengths, self.device)
            extra = {name: to_device(flat_rows(values, group), self.device) for name, values in sequences.extras.items()}
            output = self.forward_flat(to_device(flat_rows(sequences.ids, group), self.device), segments, **extra)
            return output, group_lengths.astype(np.int64)
        input_ids, mask = pad_rows(sequences.ids, group, self.pad_token_id)  # (B, T) each
        inputs = {"input_ids": input_ids, "attention_mask": mask}
        inputs.update({name: pad_rows(values, group, 0)[0] for name, values in sequences.extras.items()})
        output = self.forward({k: to_device(v, self.device) for k, v in inputs.items()})
        return output, np.full(len(group), input_ids.shape[1], dtype=np.int64)

    def _lower_budget(self, rows: int, longest: int, err: torch.cuda.OutOfMemoryError) -> None:
        """After an out-of-memory error on ``rows`` rows of up to ``longest`` tokens: halve the
        micro-batch by lowering the token budget (kept for later batches too)."""
        if rows == 1:
            raise RuntimeError(f"Out of memory on a single row of {longest} tokens on {self.device}: lower --max-length, "
                               f"use a device with more memory, or a smaller --dtype.") from err
        self.max_batch_tokens = max(1, rows // 2) * longest
        logger.warning("out of memory on %s with %d rows x %d tokens; retrying in smaller micro-batches, token budget "
                       "now %d", self.device, rows, longest, self.max_batch_tokens)


def unpad(values: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, ...) per-position values of a padded forward → (N, ...) of the real tokens, in
    row order: the layout ``forward_flat`` gives."""
    return values[attention_mask.bool()]
