"""The model stage's general protocol (no Ray): per-token (ragged) outputs, rows that run as
several model sequences and collapse back to one output row, bad rows, any micro-batching."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch

from actors.common import ERROR, INPUT_IDS, PADDED, TOKENS
from actors.embed import Embed
from actors.model_stage import Results
from actors.tokenize import Tokenize
from task_token_stats import TokenStats

TEXTS = ["alpha beta gamma " * k for k in (1, 7, 3, 12, 2, 5)] + ["x"]


@pytest.fixture(scope="module")
def tokenized(minilm: str) -> pa.Table:
    return Tokenize(minilm, text_column="text", max_length=64)(pa.table({"text": TEXTS}))


@pytest.mark.parametrize("max_batch_tokens", [1, 40, 10_000])
@pytest.mark.parametrize("flat", [True, False])
def test_per_token_outputs_come_back_per_row_in_order(minilm: str, tokenized: pa.Table, max_batch_tokens: int,
                                                      flat: bool) -> None:
    stage = TokenStats(minilm, max_batch_tokens=max_batch_tokens, threads=1)
    stage.flat = flat
    out = stage(tokenized)
    assert out["token_ids"].to_pylist() == tokenized[INPUT_IDS].to_pylist()
    assert out["tokens"].to_pylist() == tokenized[TOKENS].to_pylist()
    alone = TokenStats(minilm, threads=1)
    for row in range(tokenized.num_rows):
        expected = alone(tokenized.slice(row, 1))["token_norms"][0].as_py()
        np.testing.assert_allclose(out["token_norms"][row].as_py(), expected, rtol=1e-5)


class WindowMean(Embed):
    """Each row is several windows (sequences); its embedding is the mean of theirs."""

    def columns(self, results: Results) -> dict[str, pa.Array]:
        hidden = int(self.model.config.hidden_size)
        sums = np.zeros((results.num_rows, hidden), dtype=np.float64)
        np.add.at(sums, results.sequences.row, results.per_sequence.get("embedding", np.zeros((0, hidden))))
        counts = np.bincount(results.sequences.row, minlength=results.num_rows)
        means = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
        return {"embedding": pa.array(list(means), type=pa.list_(pa.float32(), hidden), mask=~results.valid),
                "windows": pa.array(counts.astype(np.int32))}


def _windows(ids: list[int], size: int) -> list[list[int]]:
    return [ids[start:start + size] for start in range(0, len(ids), size)]


@pytest.mark.parametrize("max_batch_tokens", [8, 10_000])
def test_rows_of_several_sequences_collapse_back_to_one_row(minilm: str, tokenized: pa.Table,
                                                            max_batch_tokens: int) -> None:
    rows = tokenized[INPUT_IDS].to_pylist()
    windows = [_windows(ids, 6) for ids in rows]
    nested = pa.table({
        INPUT_IDS: pa.array(windows, type=pa.list_(pa.list_(pa.int32()))),
        TOKENS: pa.array([len(ids) for ids in rows], type=pa.int32()),
        ERROR: pa.array([None, None, "column 'text' is null", None, None, None, None], type=pa.string()),
    })
    out = WindowMean(minilm, max_batch_tokens=max_batch_tokens, threads=1)(nested)
    assert out.num_rows == nested.num_rows
    # Each window alone, as its own row, through the plain embed stage.
    flat_windows = [w for row in windows for w in row]
    one_each = pa.table({INPUT_IDS: pa.array(flat_windows, type=pa.list_(pa.int32())),
                         TOKENS: pa.array([len(w) for w in flat_windows], type=pa.int32())})
    alone = np.array(Embed(minilm, threads=1)(one_each)["embedding"].to_pylist(), dtype=np.float32)
    start = 0
    for row, row_windows in enumerate(windows):
        got = out["embedding"][row].as_py()
        if row == 2:  # the bad row: no sequences ran, a null output
            assert got is None and out["windows"][row].as_py() == 0
        else:
            np.testing.assert_allclose(got, alone[start:start + len(row_windows)].mean(0), atol=1e-5)
            assert out["windows"][row].as_py() == len(row_windows)
        start += len(row_windows)
    assert out[PADDED].to_pylist()[2] == 0 and sum(out[PADDED].to_pylist()) >= sum(len(w) for w in flat_windows) - 24


def test_every_row_bad_gives_nulls_and_no_forward(minilm: str, tokenized: pa.Table) -> None:
    table = tokenized.append_column(ERROR, pa.array(["bad"] * tokenized.num_rows))
    stage = TokenStats(minilm, threads=1)
    calls: list[Any] = []
    stage.forward_flat = lambda *a, **k: calls.append(a)  # type: ignore[method-assign]
    out = stage(table)
    assert calls == [] and out["first_token"].null_count == tokenized.num_rows
    assert out["token_ids"].to_pylist() == [None] * tokenized.num_rows


def test_only_declared_inputs_reach_the_model(tmp_path, minilm: str) -> None:
    """A DistilBERT sequence classifier given pairs (token types in the block) runs without them."""
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    from actors.classify import Classify

    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=30522, dim=32, n_layers=2, n_heads=4, hidden_dim=37, num_labels=2)
    DistilBertForSequenceClassification(config).eval().save_pretrained(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (tmp_path / name).write_bytes((Path(minilm) / name).read_bytes())
    # A BERT tokenizer's pairs carry token types; the stage must not hand them to DistilBERT.
    table = Tokenize(minilm, text_column="a", text_pair_column="b", max_length=32)(
        pa.table({"a": ["one", "two words"], "b": ["three", "four five six"]}))
    assert "__token_type_ids" in table.column_names
    out = Classify(str(tmp_path), threads=1)(table)
    assert out["label"].null_count == 0
