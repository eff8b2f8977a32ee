"""Reading back the windows the tokenize stage cut (``actors.tokenize.Windows``): per row, its
model sequences in text order with what maps their tokens to characters.  The ner and qa
stages collapse a row's windows into one output row with these."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import pyarrow as pa

from .common import INPUT_IDS, OFFSETS, SEQUENCE_IDS, TEXT, TEXT_PAIR, WORD_IDS
from .model_stage import Results


@dataclass
class Window:
    """One model sequence of a row."""

    sequence: int            # its index in Results.sequences (and Results.per_token)
    ids: np.ndarray          # (T,) token ids
    offsets: np.ndarray      # (T, 2) start, end character offsets into its own text
    sequence_ids: np.ndarray  # (T,) -1 special token, 0 first text, 1 second text
    word_ids: np.ndarray     # (T,) word of its text, -1 for special tokens

    def word_chars(self, token: int, sequence_id: int) -> Optional[tuple[int, int]]:
        """The character span of the word ``token`` belongs to, from the word's tokens in this
        window and text (``tokenizers.Encoding.word_to_chars``); None for a token without a word."""
        word = int(self.word_ids[token])
        if word < 0:
            return None
        tokens = np.flatnonzero((self.word_ids == word) & (self.sequence_ids == sequence_id))
        if not len(tokens):
            return None
        return int(self.offsets[tokens[0], 0]), int(self.offsets[tokens[-1], 1])


def _nested(table: pa.Table, column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A list<list<x>> column as (row → first window, window → first value, values)."""
    data = table[column].combine_chunks()
    if isinstance(data, pa.ChunkedArray):  # an empty table
        data = pa.concat_arrays(data.chunks) if data.num_chunks else pa.array([], type=data.type)
    outer = data.offsets.to_numpy()
    inner_list = data.values
    inner = inner_list.offsets.to_numpy()
    values = inner_list.values.to_numpy(zero_copy_only=False)
    return outer - outer[0], inner[outer[0]:] - inner[outer[0]], values[inner[outer[0]]:]


def row_windows(results: Results) -> Iterator[tuple[int, str, Optional[str], list[Window]]]:
    """``(row, text, pair text, windows)`` for each row that ran, in row order.  Windows are
    numbered as the model stage's sequences: the tokenize stage gives each valid row at least one
    and a bad row none, so the flattened windows are the sequences in order."""
    table = results.table
    if table is None or OFFSETS not in table.column_names:
        raise ValueError("this stage needs the tokenize stage's windows (a task whose tokenize_kwargs give "
                         "windows=actors.tokenize.Windows(...))")
    outer, inner, ids = _nested(table, INPUT_IDS)
    _, _, offsets = _nested(table, OFFSETS)
    _, _, sequence_ids = _nested(table, SEQUENCE_IDS)
    _, _, word_ids = _nested(table, WORD_IDS)
    texts = table[TEXT].to_pylist()
    pairs = table[TEXT_PAIR].to_pylist() if TEXT_PAIR in table.column_names else [None] * table.num_rows
    for row in np.flatnonzero(results.valid):
        windows = []
        for window in range(outer[row], outer[row + 1]):
            start, stop = inner[window], inner[window + 1]
            windows.append(Window(sequence=int(window), ids=ids[start:stop],
                                  offsets=offsets[2 * start:2 * stop].reshape(-1, 2),
                                  sequence_ids=sequence_ids[start:stop], word_ids=word_ids[start:stop]))
        yield int(row), texts[row], pairs[row], windows
