"""Planning without Ray: which files an input names, how shards become units and output names,
and that a unit reads exactly its rows (through row groups)."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actors.common import ROW, SOURCE, UNIT
from jobs.pipeline import OUTPUT, Resources, plan_resources, read_unit, unit_items
from jobs.plan import InputError, list_shards, plan
from jobs.spec import make_spec


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


GIB = 2**30


@pytest.mark.parametrize("cluster, flags, weights, expected", [
    # CPUs: one single-threaded actor per CPU, tokenizing its own rows; a reserve for the writes.
    ({"CPU": 2}, {}, 0, dict(num_gpus=0, num_cpus=0.875, threads=1, min_actors=1, max_actors=2, fused_tokenize=True)),
    ({"CPU": 2}, {"actors": "2"}, 0, dict(num_cpus=0.875, threads=1, min_actors=2, max_actors=2)),
    ({"CPU": 2}, {"actors": "1", "threads_per_actor": 2}, 0, dict(num_cpus=1.75, threads=2, max_actors=1)),
    ({"CPU": 16, "memory": 64 * GIB}, {}, 90 * 2**20, dict(num_cpus=15 / 16, threads=1, max_actors=16, task_cpus=1.0)),
    ({"CPU": 16}, {"threads_per_actor": 4}, 0, dict(num_cpus=3.75, threads=4, max_actors=4)),
    ({"CPU": 16}, {"cpus_per_actor": 2}, 0, dict(num_cpus=2.0, threads=2, max_actors=8)),
    # Each actor holds its own weights: 8 GiB of memory fits two 1.3 GB copies in half of it.
    ({"CPU": 16, "memory": 8 * GIB}, {}, 1_300_000_000, dict(num_cpus=1.0, threads=1, max_actors=2)),
    ({"CPU": 2}, {"tokenize_pool": True}, 0, dict(max_actors=2, fused_tokenize=False)),
    # No more actors than units to compute, unless asked for.
    ({"CPU": 16, "units": 3}, {}, 0, dict(num_cpus=1.0, max_actors=3)),
    ({"CPU": 16, "units": 3}, {"actors": "4"}, 0, dict(min_actors=4, max_actors=4)),
    ({"CPU": 32, "GPU": 4, "units": 1}, {}, 0, dict(num_gpus=1.0, max_actors=1)),
    # GPUs: one GPU per actor, tokenizing in a CPU pool of its own.
    ({"CPU": 32, "GPU": 4}, {}, 0, dict(num_gpus=1.0, num_cpus=1.0, min_actors=1, max_actors=4, fused_tokenize=False)),
    ({"CPU": 8}, {"num_gpus_per_actor": 1, "actors": "1,8"}, 0, dict(num_gpus=1.0, min_actors=1, max_actors=8)),
    ({"CPU": 8, "GPU": 1}, {"tokenize_pool": False}, 0, dict(num_gpus=1.0, fused_tokenize=True)),
])
def test_actor_resources(cluster: dict, flags: dict, weights: int, expected: dict) -> None:
    cluster = dict(cluster)
    resources = plan_resources(make_spec(flags), cluster, weights, cluster.pop("units", None))
    assert isinstance(resources, Resources)
    assert {k: getattr(resources, k) for k in expected} == expected
