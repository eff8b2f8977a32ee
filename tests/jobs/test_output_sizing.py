"""--target-file-bytes: rows per output file from the output's columns, checked against the
size Parquet really writes for such rows."""
from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.options import SpecError, byte_size
from jobs.output import parquet_bytes
from jobs.plan import estimated_row_bytes, plan, rows_per_file
from jobs.spec import parse_spec

EMBEDDING = pa.schema([("embedding", pa.list_(pa.float32(), 384))])


@pytest.mark.parametrize("text, size", [("268435456", 268435456), ("256MiB", 256 * 2**20), ("128 MB", 128 * 10**6),
                                        ("1.5GiB", int(1.5 * 2**30)), (4096, 4096), ("64kb", 64_000)])
def test_sizes_read_with_their_units(text, size) -> None:
    assert byte_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "-5MB", "12 parsecs", "MB"])
def test_a_bad_size_names_what_is_expected(text) -> None:
    with pytest.raises(SpecError, match="size"):
        byte_size(text)


def test_the_flag_sits_next_to_max_rows_per_file(tmp_path) -> None:
    spec = parse_spec(["--input", str(tmp_path), "--output", str(tmp_path / "out"), "--target-file-bytes", "1MiB"])
    assert spec.target_file_bytes == 2**20 and spec.max_rows_per_file == 50_000
    with pytest.raises(SpecError, match=r"--target-file-bytes .*expected a size"):
        parse_spec(["--input", str(tmp_path), "--output", str(tmp_path / "out"), "--target-file-bytes", "lots"])


def test_row_bytes_follow_the_column_types() -> None:
    assert estimated_row_bytes(EMBEDDING) == 384 * 4
    assert estimated_row_bytes(pa.schema([("embedding", pa.list_(pa.float16(), 384))]), extra_columns=1) == 768 + 32
    labels = pa.schema([("label", pa.string()), ("label_id", pa.int64()), ("score", pa.float32())])
    assert estimated_row_bytes(labels) == 32 + 8 + 4
    assert estimated_row_bytes(pa.schema([("entities", pa.list_(pa.float32()))])) == 128 * 4


def test_rows_per_file_aims_at_the_target_and_keeps_the_row_cap() -> None:
    assert rows_per_file(50_000, None, EMBEDDING) == 50_000
    assert rows_per_file(50_000, 10 * 2**20, EMBEDDING, extra_columns=1) == 10 * 2**20 // (1536 + 32)
    assert rows_per_file(1_000, 10 * 2**20, EMBEDDING, extra_columns=1) == 1_000  # the cap still holds
    assert rows_per_file(50_000, 10, EMBEDDING) == 1  # never zero rows


def test_files_cut_to_the_estimate_come_out_near_the_target(tmp_path) -> None:
    """Rows of random-looking embeddings and ids, as the embed task writes them, cut by the
    estimate: Parquet's file is near the target, never far above it."""
    target = 2 * 2**20
    rows = rows_per_file(50_000, target, EMBEDDING, extra_columns=1)
    pq.write_table(pa.table({"text": [f"sentence {i}" for i in range(5 * rows + 7)]}), tmp_path / "big.parquet")
    work = plan([str(tmp_path / "big.parquet")], ["text"], rows, {})
    assert len(work.units) == 6 and max(u.row_stop - u.row_start for u in work.units) <= rows
    unit = work.units[0]
    count = unit.row_stop - unit.row_start
    values = np.random.default_rng(0).standard_normal((count, 384)).astype(np.float32)
    table = pa.table({"id": [f"big.parquet#{i}" for i in range(count)],
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), 384),
                      "truncated": pa.array(np.zeros(count, bool))})
    size = len(parquet_bytes(table))  # as jobs.output.commit_unit writes a unit
    assert 0.75 * target < size < 1.1 * target, size  # snappy takes a little off random floats


def test_float_columns_are_written_without_a_dictionary_attempt() -> None:
    """Parquet's dictionary attempt on all-different floats adds a dictionary page before it
    falls back: a small embedding file came out 1.5 times its values' size."""
    values = np.random.default_rng(1).standard_normal((127, 384)).astype(np.float32)
    table = pa.table({"id": [f"a#{i}" for i in range(127)],
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), 384)})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    assert len(parquet_bytes(table)) < 0.75 * len(sink.getvalue())
    assert pq.read_table(io.BytesIO(parquet_bytes(table))).equals(table)
