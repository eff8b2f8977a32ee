"""A plan that starves the read/write tasks of CPU, forced on purpose, ends with the stall
watchdog's message instead of hanging."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def test_actors_that_take_every_cpu_fail_with_the_watchdogs_message(minilm: str, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    for shard in range(2):
        pq.write_table(pa.table({"text": [f"shard {shard} row {n}" for n in range(4)]}),
                       tmp_path / "in" / f"part-{shard}.parquet")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    started = time.monotonic()
    # Two actors of 1 CPU on the job's own 2-CPU local Ray: nothing is left for the writes.
    job = subprocess.run(
        [sys.executable, "-m", "jobs.infer", "--model", minilm, "--input", str(tmp_path / "in"), "--output",
         str(tmp_path / "out"), "--actors", "2", "--cpus-per-actor", "1", "--stall-timeout", "4"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )
    elapsed = time.monotonic() - started
    assert job.returncode == 2, job.stdout[-2000:] + job.stderr[-5000:]
    last = job.stderr.strip().splitlines()[-1]
    assert "The job made no progress for" in last and "while work waits for resources" in last, job.stderr[-5000:]
    assert "read/write tasks (0.25 CPU each): no node has that much CPU free (node " in last
    assert "--actors" in last and "--cpus-per-actor" in last and "--stall-timeout" in last
    assert "may stall waiting for CPUs" in job.stderr  # the planner warned before it started
    assert not (tmp_path / "out" / "_SUCCESS").exists()
    assert elapsed < 120, f"the watchdog took {elapsed:.0f} s"


def test_a_slow_model_with_nothing_waiting_is_not_a_stall(minilm: str, tmp_path: Path) -> None:
    """No progress for longer than the timeout while every task has room (here: each model
    call sleeps 8 s, as a slow start would) is logged, and the job finishes."""
    from actors.common import FAULTS_ENV

    (tmp_path / "in").mkdir()
    (tmp_path / "faults").mkdir()
    (tmp_path / "faults" / "model.delay").write_text("8")
    pq.write_table(pa.table({"text": [f"row {n}" for n in range(4)]}), tmp_path / "in" / "part-0.parquet")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", FAULTS_ENV: str(tmp_path / "faults")}
    env.pop("RAY_ADDRESS", None)
    job = subprocess.run(
        [sys.executable, "-m", "jobs.infer", "--model", minilm, "--input", str(tmp_path / "in"), "--output",
         str(tmp_path / "out"), "--stall-timeout", "3"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )
    assert job.returncode == 0, job.stdout[-2000:] + job.stderr[-5000:]
    assert "but nothing waits for resources" in job.stderr
    assert (tmp_path / "out" / "_SUCCESS").exists()
