"""Every Arrow type Parquet writers use for text is text (issue 16): string, large_string,
string_view, UTF-8 binary / large_binary / binary_view, and dictionaries of any of them (what
pandas writes for a ``category`` column).  Each gives the tokens of the plain string column and
passes the plan's footer check (test_job_text_types.py: the embeddings, through the whole job)."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actors.common import ERROR, INPUT_IDS
from actors.tokenize import Tokenize
from jobs.plan import InputError, is_text_type, read_shard
from text_types_data import TEXTS, text_columns, write_inputs

@pytest.fixture(scope="module")
def tokenize(minilm: str) -> Tokenize:
    return Tokenize(minilm, text_column="text", max_length=64, on_bad_row="flag")


@pytest.mark.parametrize("name", list(text_columns()))
def test_every_text_type_gives_the_tokens_of_the_string_column(tokenize: Tokenize, name: str) -> None:
    expected = tokenize(pa.table({"text": TEXTS}))[INPUT_IDS].to_pylist()
    out = tokenize(pa.table({"text": text_columns()[name]}))
    assert out[INPUT_IDS].to_pylist() == expected
    assert out[ERROR].null_count == len(TEXTS)


def test_each_chunk_of_a_dictionary_column_has_its_own_dictionary(tokenize: Tokenize) -> None:
    """As a Parquet file with several row groups reads: one dictionary per row group."""
    chunks = [pa.array(TEXTS[:3]).dictionary_encode(), pa.array(TEXTS[3:]).dictionary_encode()]
    assert chunks[0].dictionary != chunks[1].dictionary
    out = tokenize(pa.table({"text": pa.chunked_array(chunks)}))
    assert out[INPUT_IDS].to_pylist() == tokenize(pa.table({"text": TEXTS}))[INPUT_IDS].to_pylist()


def test_bad_rows_of_a_dictionary_column_are_named_like_plain_ones(tokenize: Tokenize) -> None:
    """A null index, a null or empty dictionary value, invalid UTF-8 in a binary dictionary."""
    values = pa.array([b"fine", None, b"", b"\xc3\x28 broken"], pa.binary())
    column = pa.DictionaryArray.from_arrays(pa.array([0, None, 1, 2, 3, 0], pa.int32()), values)
    out = tokenize(pa.table({"text": column}))
    errors = out[ERROR].to_pylist()
    assert errors[:5] == [None, "column 'text' is null", "column 'text' is null", "column 'text' is empty",
                          "column 'text' is not valid UTF-8 (invalid continuation byte at byte 0)"]
    assert errors[5] is None and out[INPUT_IDS][5] == out[INPUT_IDS][0]


def test_the_plan_accepts_every_text_type_and_still_refuses_numbers(tmp_path: Path) -> None:
    declared = write_inputs(tmp_path / "in")
    assert declared["pandas_category.parquet"].startswith("dictionary<values=string")
    assert declared["string_view.parquet"] == "string_view" and declared["large_binary.parquet"] == "large_binary"
    for name in declared:
        shard = read_shard(str(tmp_path / "in" / name), name, ["id", "text"], {}, text_columns=["text"])
        assert shard.num_rows == len(TEXTS)
    numbers = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"text": [1, 2, 1]}), numbers)
    with pytest.raises(InputError, match=r"holds int64, not text"):
        read_shard(str(numbers), "numbers.parquet", ["text"], {}, text_columns=["text"])
    # Parquet keeps dictionaries of text only; one of numbers from elsewhere is no text either.
    assert not is_text_type(pa.dictionary(pa.int32(), pa.int64()))
