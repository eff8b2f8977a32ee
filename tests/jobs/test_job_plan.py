"""Planning without Ray: which files an input names, how shards become units and output names,
and that a unit reads exactly its rows (through row groups)."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actors.common import ROW, SOURCE, UNIT
from jobs.pipeline import OUTPUT, read_unit, unit_items
from jobs.plan import InputError, list_shards, plan


def _write(path: Path, rows: int, row_group_size: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": [f"row {n}" for n in range(rows)], "n": list(range(rows))}), path,
                   row_group_size=row_group_size)


def test_directories_globs_and_lists(tmp_path: Path) -> None:
    for name in ("a/part-0.parquet", "b/part-0.parquet", "b/deeper/x.parquet", "_tmp/skip.parquet",
                 "a/.hidden.parquet"):
        _write(tmp_path / name, 2)
    (tmp_path / "_SUCCESS").write_text("")
    names = [name for _, name in list_shards([str(tmp_path)], {})]
    assert names == ["a/part-0.parquet", "b/deeper/x.parquet", "b/part-0.parquet"]
    assert [n for _, n in list_shards([str(tmp_path / "b" / "*.parquet")], {})] == ["part-0.parquet"]
    assert [n for _, n in list_shards([str(tmp_path / "a" / "part-0.parquet"), str(tmp_path / "b/deeper")], {})] == [
        "part-0.parquet", "x.parquet"]
    with pytest.raises(InputError, match="same relative name.*part-0.parquet"):
        list_shards([str(tmp_path / "a"), str(tmp_path / "b")], {})


def test_units_follow_the_size_limit_and_read_exactly_their_rows(tmp_path: Path) -> None:
    _write(tmp_path / "big.parquet", 103, row_group_size=10)
    _write(tmp_path / "small.parquet", 5)
    work = plan([str(tmp_path)], ["text"], max_rows_per_file=40, storage_options={})
    assert [u.output for u in work.units] == [f"big-0000{k}-of-00003.parquet" for k in range(3)] + ["small.parquet"]
    assert [(u.row_start, u.row_stop) for u in work.units] == [(0, 34), (34, 68), (68, 103), (0, 5)]
    for item in unit_items(work):
        table = read_unit(item, ["text", "n"], {})
        assert table["n"].to_pylist() == list(range(item["row_start"], item["row_start"] + item["rows"]))
        assert table[ROW].to_pylist() == table["n"].to_pylist()
        assert set(table[UNIT].to_pylist()) == {item["unit"]} and set(table[OUTPUT].to_pylist()) == {item["output"]}
        assert set(table[SOURCE].to_pylist()) == {item["name"]}
    assert unit_items(work)[1]["row_groups"] == [3, 4, 5, 6]  # rows 34..67 live in row groups 3..6
