"""An error the job raises on purpose ends the command's stderr with the job's message alone
(issue 16): no Ray retry advice after it, no stack trace, no request for a Ray bug report; Ray
Data's log file, which the job names, keeps the full trace."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import REPO
from test_job_bad_input import _corrupt_pages

pytestmark = pytest.mark.slow


@pytest.fixture
def ray_tmp() -> Iterator[Path]:
    """A Ray temp dir of the test's own (short: Ray's socket paths must stay under ~107 chars)."""
    root = Path(tempfile.mkdtemp(prefix="ai16-", dir="/tmp"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _bad_row(directory: Path) -> str:
    pq.write_table(pa.table({"text": ["good one", None, "good two"]}), directory / "a.parquet")
    return ("a.parquet row 1: column 'text' is null. Fix the input, or rerun with --on-bad-row flag to write such rows "
            "with a null output and an 'error' column.")


def _bad_shard(directory: Path) -> str:
    _corrupt_pages(directory / "c.parquet", 20)
    return "--on-bad-shard skip to leave it out (recorded in the manifest)."


@pytest.mark.parametrize("make_input, error", [(_bad_row, "BadRowError"), (_bad_shard, "BadShardError")],
                         ids=["bad row", "bad shard"])
def test_stderr_ends_with_the_jobs_message(make_input, error: str, ray_tmp: Path, minilm: str, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    ending = make_input(tmp_path / "in")
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    result = subprocess.run([sys.executable, "-m", "jobs.infer", "--model", minilm, "--input", str(tmp_path / "in"),
                             "--output", str(tmp_path / "out")], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert re.match(r"^\S+ \S+ ERROR jobs\.infer: ", lines[-1]) and lines[-1].endswith(ending), result.stderr[-3000:]
    for noise in ("Traceback", "retried_io_errors", "Failed to apply UDF", "open an issue", error):
        assert noise not in result.stderr, f"{noise!r} on stderr:\n{result.stderr[-3000:]}"
    log = re.search(r"Ray Data's log, with the full trace: (\S+)", lines[-2])
    assert log, lines[-2]
    trace = Path(log.group(1)).read_text()
    assert "Traceback" in trace and error in trace
