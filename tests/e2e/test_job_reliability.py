"""Issue 14's reliability gaps through the job on Ray: two concurrent runs into one output (the
second is refused by the first's lease; the output ends exact), and a resume on another device
type refusing to mix float16 and float32 files (the identity holds the resolved dtype)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import REPO
from jobs import infer, placement
from jobs.infer import run_job
from jobs.lease import LeaseError
from jobs.output import OutputError
from jobs.spec import parse_spec

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]


def _inputs(directory: Path, shards: int, rows: int) -> list[str]:
    directory.mkdir(parents=True)
    ids = []
    for shard in range(shards):
        names = [f"doc-{shard}-{n}" for n in range(rows)]
        pq.write_table(pa.table({"id": names, "text": [f"text {n} of shard {shard} about rivers" for n in range(rows)]}),
                       directory / f"part-{shard}.parquet")
        ids += names
    return ids


def test_a_second_run_into_the_same_output_is_refused_and_the_first_ends_exact(faults: Path, minilm: str,
                                                                               tmp_path: Path) -> None:
    import ray

    ids = _inputs(tmp_path / "in", shards=8, rows=10)
    out = tmp_path / "out"
    argv = ["--model", minilm, "--input", str(tmp_path / "in"), "--output", str(out), "--id-column", "id",
            "--actors", "1"]
    (faults / "model.delay").write_text("1.0")  # each unit takes a while: the second run comes mid-job
    log = tmp_path / "first.log"
    try:
        with open(log, "wb") as handle:
            first = subprocess.Popen([sys.executable, "-m", "jobs.infer", *argv, "--ray-address",
                                      ray.get_runtime_context().gcs_address], cwd=REPO, stdout=handle,
                                     stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)})
        deadline = time.monotonic() + 300
        while not list(out.glob("part-*.parquet")) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the first file is committed: the first run is under way
        assert first.poll() is None, log.read_text()[-3000:]
        started = time.monotonic()
        with pytest.raises(LeaseError, match=rf"Another run is writing to the output {out} \(host .*, pid {first.pid}"):
            run_job(parse_spec(argv))
        refused_in = time.monotonic() - started
    finally:
        (faults / "model.delay").unlink(missing_ok=True)
    assert first.wait(timeout=600) == 0, log.read_text()[-3000:]
    table = pa.concat_tables([pq.read_table(out / f"part-{k}.parquet") for k in range(8)])
    assert table["id"].to_pylist() == ids and table["embedding"].null_count == 0  # every row once, in order
    assert not (out / "_lease.json").exists()
    # Once the first run is done the output is free: the same job again finds everything committed.
    manifest = run_job(parse_spec(argv))
    assert manifest["summary"]["skipped_files"] == 8 and manifest["summary"]["computed_files"] == 0
    print(f"\nFIGURES concurrent_runs: second run refused in {refused_in:.1f} s; rows in {len(ids)}, "
          f"rows out {table.num_rows}, duplicates {table.num_rows - len(set(table['id'].to_pylist()))}")


def test_a_resume_on_gpus_refuses_to_mix_precisions(minilm: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """With --dtype auto a CPU run writes float32 files; the same command on a cluster with GPUs
    would write float16 ones.  The identity records the resolved dtype, so that resume is refused
    naming it (before, both were "auto" and the two precisions were mixed silently)."""
    _inputs(tmp_path / "in", shards=2, rows=4)
    argv = ["--model", minilm, "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]
    first = run_job(parse_spec(argv))
    assert first["identity"]["dtype"] == "float32"
    (tmp_path / "out" / "part-1.parquet").unlink()  # one file left to compute: a resume
    gpu_node = placement.NodeShape("gpu-node", cpus=8, gpus=1, memory=64 * 2**30)
    monkeypatch.setattr(placement, "cluster_nodes", lambda: [gpu_node])
    with pytest.raises(OutputError, match=r'different job \(dtype: "float32" there, "float16" now\)'):
        run_job(parse_spec(argv))
    monkeypatch.undo()
    assert infer.resolved_dtype(parse_spec([*argv, "--dtype", "bfloat16"])) == "bfloat16"
    assert infer.resolved_dtype(parse_spec([*argv, "--num-gpus-per-actor", "1"])) == "float16"
    resumed = run_job(parse_spec(argv))  # on CPUs again: the resume goes ahead
    assert resumed["summary"]["skipped_files"] == 1 and resumed["summary"]["computed_files"] == 1
    embeddings = np.array(pq.read_table(tmp_path / "out" / "part-1.parquet")["embedding"].to_pylist())
    assert embeddings.dtype == np.float64 and np.isfinite(embeddings).all()
