"""Text in every Arrow type Parquet writers use, shared by the tokenize-stage tests
(tests/actors/test_text_types.py) and the job over every type (tests/e2e/test_job_text_types.py)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

# Repeats, so dictionaries have fewer values than rows.
TEXTS = ["the river carries water", "a quiet village", "the river carries water", "café au lait in the morning",
         "old forests past the mountain", "a quiet village", "Ünïcödé text survives", "the river carries water"]
PLAIN_TYPES = {"string": pa.string(), "large_string": pa.large_string(), "string_view": pa.string_view(),
               "binary": pa.binary(), "large_binary": pa.large_binary(), "binary_view": pa.binary_view()}


def as_array(texts: list, kind: pa.DataType) -> pa.Array:
    binary = pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind)
    return pa.array([t.encode() if binary and t is not None else t for t in texts], kind)


def text_columns() -> dict[str, pa.Array]:
    """Name → the texts as a column of that type: each plain type, and each as a dictionary."""
    columns = {name: as_array(TEXTS, kind) for name, kind in PLAIN_TYPES.items()}
    columns.update({f"dictionary<{name}>": as_array(TEXTS, kind).dictionary_encode()
                    for name, kind in PLAIN_TYPES.items()})
    return columns


def write_inputs(directory: Path) -> dict[str, str]:
    """One Parquet file per text type Parquet keeps (a dictionary of views it can't write), plus a
    pandas `category` column; file name → the Arrow type the file's footer declares."""
    directory.mkdir(parents=True)
    ids = [f"row-{i}" for i in range(len(TEXTS))]
    for name, column in text_columns().items():
        if name not in ("dictionary<string_view>", "dictionary<binary_view>"):
            # Row groups of 3 rows: a dictionary column reads as several chunks, one dictionary each.
            pq.write_table(pa.table({"id": ids, "text": column}), directory / f"{name}.parquet", row_group_size=3)
    category = pd.DataFrame({"id": ids, "text": pd.Categorical(TEXTS)})
    category.to_parquet(directory / "pandas_category.parquet", index=False)
    return {p.name: str(pq.read_schema(p).field("text").type) for p in sorted(directory.glob("*.parquet"))}
