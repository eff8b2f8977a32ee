"""Faults during a job: a model actor dies, the object store goes away and comes back, the
driver is killed; and a secret given in storage options stays out of every file and log.

Each test checks the output is exact (every input row once, in order, with its embedding) and
prints one line of figures (``FIGURES …``, shown with ``pytest -s``) for the closing report.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.local import LocalFileSystem

from conftest import REPO, S3Server
from jobs import infer
from jobs.infer import run_job
from jobs.records import committed_outputs
from jobs.spec import parse_spec

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]

WORDS = "the river carries water from a mountain to the ocean past quiet villages and old forests".split()


def write_inputs(directory: Path, sizes: list[int]) -> dict[str, list[str]]:
    """Shards ``part-<i>.parquet`` (``id``, ``text``); returns name → texts."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    texts = {}
    for i, size in enumerate(sizes):
        rows = [" ".join(rng.choice(WORDS, size=int(rng.integers(4, 30)))) for _ in range(size)]
        pq.write_table(pa.table({"id": [f"doc-{i}-{n}" for n in range(size)], "text": rows}), directory / f"part-{i}.parquet")
        texts[f"part-{i}.parquet"] = rows
    return texts


def job(*argv: str) -> dict[str, Any]:
    return run_job(parse_spec(list(argv)))


def check_exact(texts: dict[str, list[str]], read: Callable[[str], pa.Table], minilm: str) -> tuple[int, int]:
    """Every input row exactly once, in order, with the embedding the model gives it alone.
    Returns (output rows, duplicate ids)."""
    from actors.embed import Embed
    from actors.tokenize import Tokenize

    ids: list[str] = []
    ours, expected_texts = [], []
    for name, rows in texts.items():
        table = read(name)
        assert table["id"].to_pylist() == [f"doc-{name[5:-8]}-{n}" for n in range(len(rows))], name
        assert table["embedding"].null_count == 0 and not any(table["truncated"].to_pylist())
        ids += table["id"].to_pylist()
        ours += table["embedding"].to_pylist()
        expected_texts += rows
    tokens = Tokenize(minilm, text_column="text", max_length=256)(pa.table({"text": expected_texts}))
    reference = Embed(minilm, pooling="mean", normalize=True)(tokens)["embedding"].to_pylist()
    np.testing.assert_allclose(np.array(ours), np.array(reference), atol=2e-5)
    return len(ids), len(ids) - len(set(ids))


def rerun_resumes(argv: list[str], committed: set[str], units: int, texts: dict[str, list[str]],
                  read: Callable[[str], pa.Table], minilm: str) -> tuple[dict[str, Any], int, int, float]:
    """Run the job again after a fault: it must skip exactly the ``committed`` units, compute
    the rest of the ``units``, and leave every input row once in the output.  Returns the
    rerun's summary, the rows and duplicates found, and the rerun's seconds."""
    started = time.monotonic()
    manifest = job(*argv)
    seconds = time.monotonic() - started
    summary = manifest["summary"]
    assert summary["skipped_files"] == len(committed) and summary["computed_files"] == units - len(committed)
    assert {f for shard in manifest["shards"] for f in shard["skipped"]} == committed
    rows, duplicates = check_exact(texts, read, minilm)
    assert duplicates == 0 and summary["rows"] == rows
    return summary, rows, duplicates, seconds


def local_reader(out: Path) -> Callable[[str], pa.Table]:
    return lambda name: pq.read_table(out / name)


def s3_reader(server: S3Server, out: str) -> Callable[[str], pa.Table]:
    fs = server.filesystem()
    fs.invalidate_cache()

    def read(name: str) -> pa.Table:
        with fs.open(f"{out}/{name}", "rb") as handle:
            return pq.read_table(handle)
    return read


def figures(test: str, **values: Any) -> None:
    print(f"\nFIGURES {test}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


def retry_warnings() -> int:
    """Retry warnings (``autoload.storage.retry``) so far in this Ray session's worker logs."""
    import ray

    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    return sum(path.read_bytes().count(b"); retrying in ") for path in logs.glob("worker-*"))


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def test_a_model_actor_killed_mid_job(faults: Path, minilm: str, tmp_path: Path) -> None:
    """One model actor process exits on its first batch; Ray restarts it and reruns its batch."""
    texts = write_inputs(tmp_path / "in", [40] * 6)
    out = tmp_path / "out"
    (faults / "model").write_text("")
    started = time.monotonic()
    try:
        manifest = job("--model", minilm, "--input", str(tmp_path / "in"), "--output", str(out), "--id-column", "id",
                       "--actors", "2")
    finally:
        (faults / "model").unlink(missing_ok=True)
    fired = faults / "model.fired"
    assert fired.exists(), "the model actor was never killed"
    killed_pid = fired.read_text()
    fired.unlink()
    rows, duplicates = check_exact(texts, local_reader(out), minilm)
    assert rows == 240 and duplicates == 0 and manifest["summary"]["rows"] == 240
    assert (out / "_SUCCESS").exists() and not (out / "_temporary").exists()
    figures("actor_killed", injected=f"os._exit of model actor pid {killed_pid} on its first batch", rows_in=240,
            rows_out=rows, duplicates=duplicates, skipped_files=0, seconds=round(time.monotonic() - started, 1))


def test_s3_server_restarted_during_writes(private_s3: S3Server, faults: Path, minilm: str, tmp_path: Path) -> None:
    """The object store stops (SIGTERM) and starts again while units are being written: storage
    calls retry through the gap; the rerun keeps every committed unit and the output is exact."""
    server = private_s3
    fs = server.filesystem()
    texts = write_inputs(tmp_path / "in", [25] * 8)
    fs.put(str(tmp_path / "in") + "/", f"{server.bucket}/in/", recursive=True)
    out = f"{server.bucket}/out"
    argv = ["--model", minilm, "--input", f"s3://{server.bucket}/in/", "--output", f"s3://{out}", "--id-column", "id",
            "--storage-options", json.dumps(server.storage_options), "--actors", "1"]
    watcher = type(fs)(**server.storage_options, skip_instance_cache=True)  # a client of its own, not the job's

    def records() -> set[str]:
        try:
            watcher.invalidate_cache()
            return committed_outputs(watcher, out)  # JSON records, and those folded into _files.parquet
        except Exception:  # the server is down
            return set()

    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["manifest"] = job(*argv)
        except Exception as err:  # the test judges it below
            result["error"] = err

    (faults / "model.delay").write_text("0.6")  # each unit takes a while: the outage hits the middle of the job
    retries_before = retry_warnings()
    started = time.monotonic()
    thread = threading.Thread(target=run)
    thread.start()
    try:
        wait_for(lambda: len(records()) >= 2 or not thread.is_alive(), 240, "two committed units")
        assert thread.is_alive(), f"the job ended before the outage: {result}"
        before_outage = len(records())
        server.stop()
        outage_started = time.monotonic()
        # About as long as the S3 client's own retries last (botocore's backoff, up to ~15 s):
        # calls that outlast them go through ours (autoload.storage.retry).
        time.sleep(12)
        server.start()
        outage = time.monotonic() - outage_started
        # The job could not finish without the server: at least its final commit came after the outage.
        assert thread.is_alive() and before_outage < 8
    finally:
        (faults / "model.delay").unlink(missing_ok=True)
        thread.join(timeout=600)
    first_seconds = time.monotonic() - started
    retries = retry_warnings() - retries_before  # how many calls outlasted the client's own retries
    if "error" in result:  # allowed, if it says clearly what failed and that a rerun resumes
        assert "run the same command again to resume" in str(result["error"]), result["error"]
    committed = records()
    summary, rows, duplicates, rerun_seconds = rerun_resumes(argv, committed, 8, texts, s3_reader(server, out), minilm)
    assert rows == 200
    assert not fs.exists(f"{out}/_temporary") and fs.exists(f"{out}/_SUCCESS")
    figures("s3_restarted", injected=f"SeaweedFS stopped after {before_outage} commits, down {outage:.1f} s",
            first_run="succeeded" if "manifest" in result else f"failed: {str(result['error'])[:120]}",
            retry_warnings=retries, rows_in=200, rows_out=rows, duplicates=duplicates,
            skipped_on_rerun=summary["skipped_files"], first_run_seconds=round(first_seconds, 1), rerun_seconds=round(rerun_seconds, 1))


def test_driver_killed_mid_job_then_rerun_resumes(faults: Path, minilm: str, tmp_path: Path) -> None:
    """The job's driver (a separate process on the same Ray) gets SIGKILL after some units are
    committed; the rerun keeps exactly those, computes the rest, and the output is exact."""
    import ray

    texts = write_inputs(tmp_path / "in", [30] * 10)
    out = tmp_path / "out"
    argv = ["--model", minilm, "--input", str(tmp_path / "in"), "--output", str(out), "--id-column", "id", "--actors", "1"]
    (faults / "model.delay").write_text("0.8")
    started = time.monotonic()
    log = tmp_path / "driver.log"
    with open(log, "wb") as handle:
        driver = subprocess.Popen([sys.executable, "-m", "jobs.infer", *argv, "--ray-address",
                                   ray.get_runtime_context().gcs_address], cwd=REPO, stdout=handle,
                                  stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)})
    commits = out / "_commits"
    try:
        wait_for(lambda: len(list(commits.glob("*.json"))) >= 3 or driver.poll() is not None, 300, "three commits")
        assert driver.poll() is None, log.read_text()[-3000:]
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        (faults / "model.delay").unlink(missing_ok=True)
        if driver.poll() is None:
            driver.kill()
    killed_after = time.monotonic() - started
    # Ray ends the dead driver's workers; a write it had under way may still have committed.
    wait_for(lambda: ray.available_resources().get("CPU", 0) >= 2, 120, "the killed job's workers to end")
    committed = committed_outputs(LocalFileSystem(), str(out))
    assert 3 <= len(committed) < 10 and not (out / "_SUCCESS").exists()
    summary, rows, duplicates, rerun_seconds = rerun_resumes(argv, committed, 10, texts, local_reader(out), minilm)
    assert rows == 300
    assert (out / "_SUCCESS").exists() and not (out / "_temporary").exists()
    figures("driver_killed", injected=f"SIGKILL to the driver {killed_after:.1f} s in, {len(committed)} units committed",
            rows_in=300, rows_out=rows, duplicates=duplicates, skipped_on_rerun=summary["skipped_files"],
            computed_on_rerun=summary["computed_files"], rerun_seconds=round(rerun_seconds, 1))


def test_a_secret_in_storage_options_stays_out_of_files_and_logs(private_s3: S3Server, minilm: str, tmp_path: Path,
                                                                 capfd: pytest.CaptureFixture,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    import ray

    server = private_s3
    secret = server.secret
    fs = server.filesystem()
    write_inputs(tmp_path / "in", [10, 12])
    fs.put(str(tmp_path / "in") + "/", f"{server.bucket}/in/", recursive=True)
    fs.put(minilm + "/", f"{server.bucket}/models/minilm/", recursive=True)
    options = json.dumps(server.storage_options)
    common = ["--storage-options", options, "--cache-dir", str(tmp_path / "cache")]
    with caplog.at_level(logging.INFO):
        assert infer.main(["--model", f"s3://{server.bucket}/models/minilm/", "--input", f"s3://{server.bucket}/in/",
                           "--output", f"s3://{server.bucket}/out", *common]) == 0
        # Failures quote URLs and storage errors: none may carry the secret either.
        assert infer.main(["--model", minilm, "--input", f"s3://{server.bucket}/nothing-here/",
                           "--output", f"s3://{server.bucket}/out2", *common]) == 2
        assert infer.main(["--model", f"{server.endpoint.replace('//', f'//user:{secret}@')}/no-model/",
                           "--input", f"s3://{server.bucket}/in/", "--output", f"s3://{server.bucket}/out3", *common]) == 2
    captured = capfd.readouterr()
    assert "Can't use model http://***@127.0.0.1" in caplog.text and "nothing-here" in caplog.text
    places = {"stdout": captured.out, "stderr": captured.err, "log records": caplog.text}
    fs.invalidate_cache()
    for path in fs.find(f"{server.bucket}/out"):
        places[f"s3://{path}"] = fs.cat_file(path).decode("utf-8", "replace")
    for path in (tmp_path / "cache").rglob("*"):
        if path.is_file():
            places[str(path)] = path.read_bytes().decode("utf-8", "replace")
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())  # this session's Ray logs, all workers
    for path in logs.rglob("*"):
        if path.is_file():
            places[str(path)] = path.read_bytes().decode("utf-8", "replace")
    assert any(p.endswith("_manifest.json") for p in places) and any(".log" in p or ".out" in p for p in places)
    leaks = [place for place, text in places.items() if secret in text]
    assert not leaks, f"the secret appears in {leaks}"
    manifest = json.loads(places[f"s3://{server.bucket}/out/_manifest.json"])
    assert manifest["job"]["storage_options"]["secret"] == "***" and manifest["summary"]["rows"] == 22
    figures("secret", searched_files=len(places) - 3, ray_log_files=sum(str(logs) in p for p in places), leaks=len(leaks))
