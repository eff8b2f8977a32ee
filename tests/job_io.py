"""Parquet in and out for the job tests: input shards from columns, and an output column read
back as DuckDB and pandas read it (what a downstream tool sees)."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def write_shards(directory: Path, columns: dict[str, list], shards: int = 2) -> Path:
    """``part-<k>.parquet`` files holding consecutive slices of the string ``columns``."""
    directory.mkdir(parents=True)
    rows = len(next(iter(columns.values())))
    cut = -(-rows // shards)
    for shard in range(shards):
        part = {name: pa.array(values[shard * cut:(shard + 1) * cut], pa.string()) for name, values in columns.items()}
        pq.write_table(pa.table(part), directory / f"part-{shard}.parquet")
    return directory


def read_back(directory: Path, column: str) -> tuple[list, list]:
    """``column`` of every output file, as DuckDB and as pandas read it, in row order."""
    import duckdb
    import pandas as pd

    pattern = str(directory / "part-*.parquet")
    by_duckdb = [row[0] for row in duckdb.sql(f"SELECT {column} FROM read_parquet('{pattern}', filename=true) "
                                              "ORDER BY filename, id").fetchall()]
    frames = [pd.read_parquet(path) for path in sorted(directory.glob("part-*.parquet"))]
    return by_duckdb, list(pd.concat(frames)[column])
