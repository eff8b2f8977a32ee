"""The model stage's shared machinery: load once, length-sorted token-budget micro-batches.

A subclass names the Auto class to load, turns one forward's outputs into a (B, D) float32
array and those arrays into Arrow columns.  Rows come in and go out in the same order.
"""
from __future__ import annotations

import logging
import time
from typing import Any, ClassVar, Optional

import numpy as np
import pyarrow as pa
import torch

from autoload.checkpoint import weights_digest

from .common import DTYPES, INPUT_IDS, PADDED, SECONDS, TOKEN_TYPE_IDS, TOKENS, injected_faults, micro_batches, pad_rows, seconds_column, valid_rows

logger = logging.getLogger(__name__)


def load_dtype(name: str, device: torch.device) -> str:
    """The ``torch_dtype`` to load with: ``auto`` is float32 on CPU (half precision is slow
    there and changes results) and the checkpoint's own dtype on GPU."""
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {name!r}")
    return "float32" if name == "auto" and device.type == "cpu" else name


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
        batch_size: int = 128,
        max_batch_tokens: int = 16384,
        pad_token_id: int = 0,
        storage_options: Optional[dict] = None,
        cache_dir: Optional[str] = None,
        expected_weights_digest: Optional[str] = None,
    ) -> None:
        started = time.perf_counter()
        if threads:
            # Ray gives actors with <= 1 CPU OMP_NUM_THREADS=1; the job decides instead.
            torch.set_num_threads(threads)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.pad_token_id = pad_token_id
        loaded, info = self.auto_class.from_pretrained(
            model, torch_dtype=load_dtype(dtype, self.device), storage_options=storage_options or {}, cache_dir=cache_dir,
            output_loading_info=True,
        )
        missing = [k for k in info["missing_keys"] if not k.startswith(self.unused_weights)]
        if missing:
            # Freshly initialised weights would produce confident nonsense for every row.
            raise ValueError(
                f"{model} has no trained weights for {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}: "
                f"it is not a {self.checkpoint_kind} checkpoint for {type(loaded).__name__}."
            )
        self.model = loaded.to(self.device)
        if expected_weights_digest is not None:
            digest = weights_digest(self.model.checkpoint_files)
            if digest != expected_weights_digest:
                raise RuntimeError(
                    f"The weights of {model} changed while the job ran (sha256 {digest}, the job planned "
                    f"with {expected_weights_digest}). Rerun the job once the model stops changing."
                )
        logger.info("model stage loaded %s (%s, %s, %d threads) in %.1f s", model,
                    type(self.model).__name__, self.model.dtype, torch.get_num_threads(), time.perf_counter() - started)

    # -- subclass interface ---------------------------------------------------------------
    @property
    def output_width(self) -> int:
        raise NotImplementedError

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """One micro-batch → (B, output_width) float32 on the model's device."""
        raise NotImplementedError

    def columns(self, outputs: np.ndarray, valid: np.ndarray) -> dict[str, pa.Array]:
        """(N, output_width) results (rows where ``valid`` is False hold zeros) → output columns."""
        raise NotImplementedError

    # -- the stage ------------------------------------------------------------------------
    def __call__(self, table: pa.Table) -> pa.Table:
        injected_faults("model")
        started = time.perf_counter()
        valid = valid_rows(table)
        rows = np.flatnonzero(valid)
        ids = table[INPUT_IDS].combine_chunks()
        type_ids = table[TOKEN_TYPE_IDS].combine_chunks() if TOKEN_TYPE_IDS in table.column_names else None
        lengths = table[TOKENS].to_numpy()
        outputs = np.zeros((table.num_rows, self.output_width), dtype=np.float32)
        padded = np.zeros(table.num_rows, dtype=np.int32)
        with torch.inference_mode():
            for group in micro_batches(lengths[rows], self.max_batch_tokens, self.batch_size):
                batch_rows = rows[group]
                input_ids, mask = pad_rows(ids, batch_rows, self.pad_token_id)  # (B, T) each
                inputs = {"input_ids": input_ids, "attention_mask": mask}
                if type_ids is not None:
                    inputs["token_type_ids"] = pad_rows(type_ids, batch_rows, 0)[0]
                tensors = {k: torch.from_numpy(v).to(self.device) for k, v in inputs.items()}
                # Results go back to each row's own position: the output keeps the input order.
                outputs[batch_rows] = self.forward(tensors).float().cpu().numpy()
                padded[batch_rows] = input_ids.shape[1]
        table = table.drop_columns([c for c in (INPUT_IDS, TOKEN_TYPE_IDS) if c in table.column_names])
        for name, column in self.columns(outputs, valid).items():
            table = table.append_column(name, column)
        table = table.append_column(PADDED, pa.array(padded))
        elapsed = time.perf_counter() - started
        return table.append_column(SECONDS + "model", seconds_column(elapsed, table.num_rows))
