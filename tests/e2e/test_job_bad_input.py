"""Bad input that only shows while the job runs: every kind of bad row, over-long text, and a
Parquet file whose footer is fine but whose data pages are corrupt.  (What can be checked
before Ray starts is in test_job_errors.py.)"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actors.common import BadRowError
from jobs.infer import run_job
from jobs.pipeline import BadShardError
from jobs.spec import parse_spec

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]

LONG = "the river carries water from the mountain to the ocean " * 20_000  # 1.1 MB, ~220,000 tokens


def _corrupt_pages(path: Path, rows: int) -> None:
    """A file whose footer reads fine but whose text column's data page is damaged."""
    pq.write_table(pa.table({"text": [f"sentence number {n} about a quiet village" for n in range(rows)]}), path,
                   use_dictionary=False, write_page_checksum=True)
    column = pq.ParquetFile(path).metadata.row_group(0).column(0)
    data = bytearray(path.read_bytes())
    middle = column.data_page_offset + column.total_compressed_size // 2
    data[middle:middle + 8] = bytes(b ^ 0xFF for b in data[middle:middle + 8])
    path.write_bytes(bytes(data))


def _inputs(directory: Path) -> None:
    directory.mkdir(parents=True)
    pq.write_table(pa.table({"text": ["a fine sentence", None, "", "   ", LONG, "another fine one"]}), directory / "a.parquet")
    pq.write_table(pa.table({"text": pa.array([b"caf\xc3\xa9 is fine", b"\xc3\x28 broken"], pa.binary())}),
                   directory / "b.parquet")
    _corrupt_pages(directory / "c.parquet", 20)


def test_every_bad_row_flagged_and_a_corrupt_file_skipped(minilm: str, tmp_path: Path) -> None:
    _inputs(tmp_path / "in")
    manifest = run_job(parse_spec(["--model", minilm, "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                                   "--on-bad-row", "flag", "--on-bad-shard", "skip"]))
    a = pq.read_table(tmp_path / "out" / "a.parquet")
    assert a["error"].to_pylist() == [None, "column 'text' is null", "column 'text' is empty",
                                      "column 'text' holds only whitespace", None, None]
    assert a["embedding"].is_null().to_pylist() == [False, True, True, True, False, False]
    assert a["truncated"].to_pylist() == [False, False, False, False, True, False]
    b = pq.read_table(tmp_path / "out" / "b.parquet")
    assert b["error"][0].as_py() is None and b["error"][1].as_py().startswith("column 'text' is not valid UTF-8")
    assert not (tmp_path / "out" / "c.parquet").exists()
    summary = manifest["summary"]
    assert (summary["rows"], summary["bad_rows"], summary["truncated_rows"]) == (8, 4, 1)
    assert (summary["unreadable_inputs"], summary["unreadable_rows"]) == (1, 20)
    (problem,) = manifest["errors"]["unreadable_inputs"]
    assert problem.startswith("Can't read rows 0-19 of input c.parquet") and "CRC checksum" in problem
    assert {s["name"]: s["bad_rows"] for s in manifest["shards"]} == {"a.parquet": 3, "b.parquet": 1, "c.parquet": 0}
    assert (tmp_path / "out" / "_SUCCESS").exists()


def test_corrupt_data_pages_fail_the_job_naming_the_file(minilm: str, tmp_path: Path) -> None:
    _inputs(tmp_path / "in")
    with pytest.raises(BadShardError, match=r"Can't read rows 0-19 of input c\.parquet \(.*c\.parquet\): OSError: .*CRC "
                                            r"checksum.*--on-bad-shard skip"):
        run_job(parse_spec(["--model", minilm, "--input", str(tmp_path / "in" / "c.parquet"),
                            "--output", str(tmp_path / "out")]))
    assert not (tmp_path / "out" / "_SUCCESS").exists()


def test_an_empty_text_stops_the_job_under_the_default_policy(minilm: str, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"text": ["fine", "fine too", ""]}), tmp_path / "in" / "e.parquet")
    with pytest.raises(BadRowError, match=r"e\.parquet row 2: column 'text' is empty"):
        run_job(parse_spec(["--model", minilm, "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]))
