"""The output's commit records in one Parquet side file, ``_files.parquet``.

A worker commits its unit with a small JSON record under ``_commits/`` (one PUT, appearing
whole: see ``jobs.output``).  Reading those back one object each would make resuming a
100,000-file output 100,000 requests, so the driver folds them into this one file: when a
run starts (the records it keeps), every :data:`FOLD_EVERY` files committed, and when it
ends.  A resume then reads one object, plus the JSON records of at most FOLD_EVERY units
committed since the last fold (a run cut short), fetched in batches.

One row per output file: the record's main fields as columns, for people and query engines
(``SELECT input, rows FROM '_files.parquet'``), and the whole record as JSON, which is what
the job reads back, so fields added to records later travel without a schema change.
"""
from __future__ import annotations

import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

FILES = "_files.parquet"
# Above this many input files the manifest leaves the per-input list out (it would be tens of
# megabytes of JSON) and points to FILES, which holds the same facts per output file.
MANIFEST_SHARDS_INLINE = 1000
# While a run goes on, the driver folds the records every this many committed files.
FOLD_EVERY = 1000

_COLUMNS = {"output": pa.string(), "input": pa.string(), "row_start": pa.int64(), "row_stop": pa.int64(),
            "rows": pa.int64(), "bytes": pa.int64(), "sha256": pa.string(), "record": pa.string()}


def encode(records: dict[str, dict[str, Any]]) -> bytes:
    """The side file's bytes for ``records`` (output name → commit record), sorted by name."""
    names = sorted(records)
    columns = {key: pa.array([records[n].get(key) for n in names], type=kind) for key, kind in _COLUMNS.items()
               if key not in ("output", "record")}
    table = pa.table({"output": pa.array(names, type=pa.string()), **columns,
                      "record": pa.array([json.dumps(records[n], sort_keys=True, default=str) for n in names],
                                         type=pa.string())})
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def decode(data: bytes) -> dict[str, dict[str, Any]]:
    """Output name → commit record from the side file's bytes; raises ValueError when they are
    not such a file (the caller then treats the records as absent: their units are recomputed)."""
    try:
        table = pq.read_table(io.BytesIO(data), columns=["output", "record"])
        pairs = zip(table["output"].to_pylist(), table["record"].to_pylist())
        records = {name: json.loads(body) for name, body in pairs}
    except (pa.ArrowException, KeyError, TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"not a commit-record file: {err}") from err
    return {name: record for name, record in records.items()
            if isinstance(record, dict) and record.get("output") == name}


def pointer(count: int, shards_inline: bool) -> dict[str, Any]:
    """What the manifest says about the side file."""
    return {"path": FILES, "count": count, "format": "one row per output file; column `record` is its commit "
            "record as JSON", "shards_inline": shards_inline}


def committed_outputs(fs: Any, root: str) -> set[str]:
    """Names of the output files committed under ``root`` (a path on ``fs``): those in the side
    file and those with a JSON record not folded yet.  For tools and tests watching a run."""
    root = root.rstrip("/")
    names: set[str] = set()
    try:
        names |= set(decode(fs.cat_file(f"{root}/{FILES}")))
    except (FileNotFoundError, ValueError):
        pass
    try:
        found = fs.find(f"{root}/_commits")
    except FileNotFoundError:
        found = []
    prefix = f"{root}/_commits/"
    return names | {p[len(prefix):-len(".json")] for p in found if p.startswith(prefix) and p.endswith(".json")}
