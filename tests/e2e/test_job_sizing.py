"""--target-file-bytes through the real job: an input file whose output would be far over the
target comes out as several files near it, every row once; commit records folded while the
run goes on."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import output, records
from jobs.infer import run_job
from jobs.spec import parse_spec

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]


def test_outputs_are_cut_near_the_target_size(minilm: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The driver folds the commit records after every file here (1,000 by default), while the
    # workers go on committing: the end result is the same.
    monkeypatch.setattr(records, "FOLD_EVERY", 1)
    folds = []
    fold = output.fold_records
    monkeypatch.setattr(output, "fold_records", lambda *args: (folds.append(args), fold(*args)))
    (tmp_path / "in").mkdir()
    texts = [f"sentence {n} about rivers, mountains and the sea" for n in range(360)]
    pq.write_table(pa.table({"text": texts}), tmp_path / "in" / "big.parquet")
    pq.write_table(pa.table({"text": texts[:5]}), tmp_path / "in" / "small.parquet")
    target = 200_000  # MiniLM: 384 float32 a row, about 1.6 KB with its id: ~125 rows a file
    manifest = run_job(parse_spec(["--model", minilm, "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                                   "--target-file-bytes", "200KB", "--actors", "1"]))
    out = tmp_path / "out"
    big = sorted(p for p in out.glob("big-*.parquet"))
    assert [p.name for p in big] == [f"big-{k:05d}-of-00003.parquet" for k in range(3)]
    assert all(0.8 * target < p.stat().st_size < 1.2 * target for p in big), [p.stat().st_size for p in big]
    ids = [i for p in big for i in pq.read_table(p)["id"].to_pylist()]
    assert ids == [f"big.parquet#{n}" for n in range(360)]
    # A small input file stays one (small) file: inputs are never merged.
    assert pq.read_table(out / "small.parquet").num_rows == 5
    assert manifest["summary"]["files"] == 4 and manifest["summary"]["rows"] == 365
    assert sorted(records.decode((out / records.FILES).read_bytes())) == sorted(p.name for p in [*big, out / "small.parquet"])
    assert not list((out / "_commits").rglob("*.json"))
    assert len(folds) >= 3  # after each file but the last, which the commit folds
