"""The model stage's shared machinery: load once, length-sorted token-budget micro-batches.

A subclass names the Auto class to load, turns one forward's outputs into a (B, D) float32
array and those arrays into Arrow columns.  Rows come in and go out in the same order.

Models with a ``forward_flat`` run unpadded: each micro-batch's tokens back to back, so the
linear layers see real tokens only.  A CUDA out-of-memory error halves the micro-batch and
lowers the actor's token budget for the rest of its life; no row is lost.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, ClassVar, Optional

import numpy as np
import pyarrow as pa
import torch

from autoload.checkpoint import weights_digest
from autoload.modeling import Segments, to_device

from .common import (
    DTYPES,
    INPUT_IDS,
    PADDED,
    SECONDS,
    TOKEN_TYPE_IDS,
    TOKENS,
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


class ModelStage:
    """Callable on an Arrow table from the tokenize stage; returns it with the output columns
    added and the token columns removed.  Build once per actor: ``__init__`` loads the model."""

    auto_class: ClassVar[Any]
    # Weights the stage never uses, so a checkpoint may lack them (e.g. BERT's pooler for embeddings).
    unused_weights: ClassVar[tuple[str, ...]] = ()
    checkpoint_kind: ClassVar[str] = "model"

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
        if expected_weights_digest is not None:
            digest = weights_digest(self.model.checkpoint_files)
            if digest != expected_weights_digest:
                raise RuntimeError(
                    f"The weights of {model} changed while the job ran (sha256 {digest}, the job planned "
                    f"with {expected_weights_digest}). Rerun the job once the model stops changing."
                )
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
    @property
    def output_width(self) -> int:
        raise NotImplementedError

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """One padded micro-batch → (B, output_width) float32 on the model's device."""
        raise NotImplementedError

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments, **inputs: torch.Tensor) -> torch.Tensor:
        """One unpadded micro-batch, (N,) ids (and ``token_type_ids``) → (B, output_width) float32."""
        raise NotImplementedError

    def columns(self, outputs: np.ndarray, valid: np.ndarray) -> dict[str, pa.Array]:
        """(N, output_width) results (rows where ``valid`` is False hold zeros) → output columns."""
        raise NotImplementedError

    # -- the stage ------------------------------------------------------------------------
    def __call__(self, table: pa.Table) -> pa.Table:
        injected_faults("model")
        started = time.perf_counter()
        valid = valid_rows(table)
        ids = table[INPUT_IDS].combine_chunks()
        type_ids = table[TOKEN_TYPE_IDS].combine_chunks() if TOKEN_TYPE_IDS in table.column_names else None
        lengths = table[TOKENS].to_numpy()
        outputs = np.zeros((table.num_rows, self.output_width), dtype=np.float32)
        widths = np.zeros(table.num_rows, dtype=np.int32)
        with torch.inference_mode():
            rows, results, ran_widths = self._run(np.flatnonzero(valid), lengths, ids, type_ids)
        # Results go back to each row's own position: the output keeps the input order.
        outputs[rows] = results
        widths[rows] = ran_widths
        table = table.drop_columns([c for c in (INPUT_IDS, TOKEN_TYPE_IDS) if c in table.column_names])
        for name, column in self.columns(outputs, valid).items():
            table = table.append_column(name, column)
        table = table.append_column(PADDED, pa.array(widths))
        elapsed = time.perf_counter() - started
        return table.append_column(SECONDS + "model", seconds_column(elapsed, table.num_rows))

    def _run(self, rows: np.ndarray, lengths: np.ndarray, ids: pa.ListArray,
             type_ids: Optional[pa.ListArray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Forward ``rows`` longest first in token-budget micro-batches.  Returns the rows in the
        order they ran, their (rows, output_width) results and the width each ran at.  After an
        out-of-memory error the rows not run yet are cut again under the lowered budget."""
        done: list[np.ndarray] = []
        results: list[torch.Tensor] = []
        widths: list[np.ndarray] = []
        remaining = rows
        while len(remaining):
            for group in micro_batches(lengths[remaining], self.max_batch_tokens, self.batch_size):
                group = remaining[group]
                try:
                    result, width = self._forward_group(group, lengths, ids, type_ids)
                except torch.cuda.OutOfMemoryError as err:
                    self._lower_budget(len(group), int(lengths[group].max()), err)
                    break
                done.append(group)
                results.append(result)
                widths.append(width)
                if self.progress is not None:
                    self.progress(len(group), int(lengths[group].sum()))
            else:
                break
            # Outside the except block the failed forward's tensors are released, so the cache
            # can hand their memory back before the smaller retry.
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            remaining = np.setdiff1d(remaining, np.concatenate(done)) if done else remaining
        if not done:
            return rows, np.zeros((0, self.output_width), dtype=np.float32), np.zeros(0, dtype=np.int32)
        # Results stay on the device until the block ends: one copy back, no wait per micro-batch.
        host = torch.cat(results).float().cpu().numpy()
        return np.concatenate(done), host, np.concatenate(widths)

    def _forward_group(self, group: np.ndarray, lengths: np.ndarray, ids: pa.ListArray,
                       type_ids: Optional[pa.ListArray]) -> tuple[torch.Tensor, np.ndarray]:
        """One micro-batch → its (B, output_width) results on the device and, per row, the
        number of token positions it ran at (its own length when unpadded)."""
        group_lengths = lengths[group]
        if self.flat and group_lengths.min() > 0:
            segments = Segments.from_lengths(group_lengths, self.device)
            extra = {} if type_ids is None else {"token_type_ids": to_device(flat_rows(type_ids, group), self.device)}
            result = self.forward_flat(to_device(flat_rows(ids, group), self.device), segments, **extra)
            return result, group_lengths.astype(np.int32)
        input_ids, mask = pad_rows(ids, group, self.pad_token_id)  # (B, T) each
        inputs = {"input_ids": input_ids, "attention_mask": mask}
        if type_ids is not None:
            inputs["token_type_ids"] = pad_rows(type_ids, group, 0)[0]
        result = self.forward({k: to_device(v, self.device) for k, v in inputs.items()})
        return result, np.full(len(group), input_ids.shape[1], dtype=np.int32)

    def _lower_budget(self, rows: int, longest: int, err: torch.cuda.OutOfMemoryError) -> None:
        """After an out-of-memory error on ``rows`` rows of up to ``longest`` tokens: halve the
        micro-batch by lowering the token budget (kept for later batches too)."""
        if rows == 1:
            raise RuntimeError(f"Out of memory on a single row of {longest} tokens on {self.device}: lower --max-length, "
                               f"use a device with more memory, or a smaller --dtype.") from err
        self.max_batch_tokens = max(1, rows // 2) * longest
        logger.warning("out of memory on %s with %d rows x %d tokens; retrying in smaller micro-batches, token budget "
                       "now %d", self.device, rows, longest, self.max_batch_tokens)
