"""Every text type Parquet writers produce, through the whole job on Ray (issue 16): each
file's embeddings equal those of the same texts as a plain string column.  The inputs are
those of test_text_types.py (each Parquet-writable type, and a pandas ``category`` column)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from jobs.infer import run_job
from jobs.spec import parse_spec
from text_types_data import write_inputs

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]


def test_the_job_embeds_every_text_type_like_the_string_column(minilm: str, tmp_path: Path) -> None:
    declared = write_inputs(tmp_path / "in")
    manifest = run_job(parse_spec(["--model", minilm, "--input", str(tmp_path / "in"),
                                   "--output", str(tmp_path / "out"), "--id-column", "id"]))
    assert manifest["summary"]["bad_rows"] == 0
    tokens = {shard["name"]: shard["tokens"] for shard in manifest["shards"]}
    expected = pq.read_table(tmp_path / "out" / "string.parquet")
    for name in declared:
        out = pq.read_table(tmp_path / "out" / name)
        assert out["id"].to_pylist() == expected["id"].to_pylist(), name
        assert tokens[name] == tokens["string.parquet"], name
        np.testing.assert_allclose(np.array(out["embedding"].to_pylist()), np.array(expected["embedding"].to_pylist()),
                                   rtol=0, atol=1e-6, err_msg=f"{name} ({declared[name]})")
