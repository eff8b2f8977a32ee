"""What every stage shares: internal column names, the bad-row error, micro-batching.

Internal columns start with ``__``: the job adds them when reading (where a row came from),
the stages add theirs (token ids, timings), and the sink drops them all before writing.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

logger = logging.getLogger(__name__)

# Added by the reader: which work unit / source shard / row a row is.
UNIT = "__unit"
SOURCE = "__source"
ROW = "__row"
# Added by the tokenize stage.
INPUT_IDS = "__input_ids"
TOKEN_TYPE_IDS = "__token_type_ids"
# Each token's language id, for models that declare a ``langs`` input (XLM, FlauBERT).
LANGS = "__langs"
TOKENS = "__tokens"
# With Windows (actors/tokenize.py), per window: token offsets (start, end flattened), which text
# of a pair each token is from (-1: special), and its word in that text (-1: none).
OFFSETS = "__offsets"
SEQUENCE_IDS = "__sequence_ids"
WORD_IDS = "__word_ids"
TEXT = "__text"
TEXT_PAIR = "__text_pair"
# With text pairs, when asked: where the second text starts (tokens of the first, specials included).
PROMPT_TOKENS = "__prompt_tokens"
# Added by the model stage: padded length of the forward that ran the row (for the padding ratio).
PADDED = "__padded"
# Busy seconds of a stage, spread evenly over the rows of the batch it ran (sums stay exact).
SECONDS = "__seconds_"
# Why a row has no output, when the bad-row policy is "flag" (a user-visible column).
ERROR = "error"
# Whether a row's text was cut to the model's maximum length (a user-visible column).
TRUNCATED = "truncated"

BAD_ROW_POLICIES = ("error", "flag")
POOLINGS = ("mean", "cls", "last", "max")
DTYPES = ("auto", "float32", "float16", "bfloat16")
EMBEDDING_DTYPES = ("float32", "float16")


class BadRowError(ValueError):
    """An input row the job can't process under the ``error`` policy (message names file and row)."""


def seconds_column(seconds: float, rows: int) -> pa.Array:
    """``seconds`` spread over ``rows`` rows, so summing the column over any rows adds up."""
    return pa.array(np.full(rows, seconds / max(rows, 1)), type=pa.float64())


def valid_rows(table: pa.Table) -> np.ndarray:
    """Boolean mask of rows without an error (all rows when the table has no error column)."""
    if ERROR not in table.column_names:
        return np.ones(table.num_rows, dtype=bool)
    return table[ERROR].is_null().to_numpy(zero_copy_only=False)


def micro_batches(lengths: np.ndarray, max_tokens: int, max_rows: int) -> list[np.ndarray]:
    """Row indices grouped into forwards, longest rows first.

    Sorting by length keeps padding small (rows of similar length share a forward); each
    group holds at most ``max_rows`` rows and at most ``max_tokens`` padded tokens, so
    short rows run in big batches and long rows in small ones.
    """
    order = np.argsort(-lengths, kind="stable")
    groups: list[np.ndarray] = []
    start = 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)  # sorted descending: the first is the longest
        rows = max(1, min(max_rows, max_tokens // longest))
        groups.append(order[start:start + rows])
        start += rows
    return groups


def pad_rows(ids: pa.ListArray, rows: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a list<int> column → (B, T) int64 ids padded with ``pad_id`` and the (B, T) mask."""
    offsets = ids.offsets.to_numpy()
    values = ids.values.to_numpy()
    starts, stops = offsets[rows], offsets[rows + 1]
    width = max(int((stops - starts).max()), 1)
    padded = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, (start, stop) in enumerate(zip(starts, stops)):
        padded[i, :stop - start] = values[start:stop]
        mask[i, :stop - start] = 1
    return padded, mask


def flat_rows(ids: pa.ListArray, rows: np.ndarray) -> np.ndarray:
    """Rows of a list<int> column back to back, in the order of ``rows``: (N,) int32 values."""
    offsets = ids.offsets.to_numpy()
    starts = offsets[rows]
    lengths = offsets[rows + 1] - starts
    out_starts = np.cumsum(lengths) - lengths
    # Token j of the output comes from starts[row] + (j - out_starts[row]).
    index = np.arange(int(lengths.sum())) + np.repeat(starts - out_starts, lengths)
    return ids.values.to_numpy()[index].astype(np.int32, copy=False)


def fixed_size_list(values: np.ndarray, valid: np.ndarray, value_type: pa.DataType) -> pa.FixedSizeListArray:
    """(N, D) array → fixed_size_list<value_type>[D], null where ``valid`` is False."""
    flat = pa.array(np.ascontiguousarray(values).reshape(-1), type=value_type)
    mask = None if valid.all() else pa.array(~valid)
    return pa.FixedSizeListArray.from_arrays(flat, values.shape[1], mask=mask)


# Test hook for the fault-tolerance tests, inert unless the variable names a directory.  A file
# ``<dir>/<stage>`` makes the first process of that stage to find it delete it and die at once
# (``os._exit``, as a killed or preempted worker would), so exactly one process dies per file;
# ``<dir>/<stage>.delay`` holds seconds every batch of the stage waits (to catch a job mid-run).
FAULTS_ENV = "AUTOINFER_TEST_FAULTS"


def injected_faults(stage: str) -> None:
    directory = os.environ.get(FAULTS_ENV)
    if not directory:
        return
    trigger = Path(directory) / stage
    try:
        trigger.unlink()  # atomic: only one process wins, whatever the number of actors
    except FileNotFoundError:
        pass
    else:
        logger.warning("test fault injection: the %s process %d exits now", stage, os.getpid())
        trigger.with_name(stage + ".fired").write_text(str(os.getpid()))
        os._exit(1)
    delay = trigger.with_name(stage + ".delay")
    if delay.is_file():
        time.sleep(float(delay.read_text()))
