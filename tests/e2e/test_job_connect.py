"""Which Ray the job runs on (issue 16).  Without --ray-address or RAY_ADDRESS: a fresh local
Ray, even when a dead cluster's ``ray_current_cluster`` file is left behind.  With one: a
connect bounded by ``CONNECT_TIMEOUT_S`` that fails naming the address when nothing answers.

Every test points Ray at a temp dir of its own (RAY_TMPDIR), so the machine's /tmp/ray and
the Rays of other users of this machine are never read or touched."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from conftest import REPO, free_port
from jobs import infer, pipeline


class StaleRay:
    """A private Ray temp dir whose ``ray_current_cluster`` names a cluster that is gone, as a
    killed ``ray start --head`` leaves it."""

    def __init__(self) -> None:
        # Short: Ray's unix socket paths under it must stay below ~107 characters.
        self.root = Path(tempfile.mkdtemp(prefix="ai16-", dir="/tmp"))
        self.dead_port = free_port()  # bound and released: nothing listens there
        self.dead = f"127.0.0.1:{self.dead_port}"
        (self.root / "ray").mkdir()
        (self.root / "ray" / "ray_current_cluster").write_text(self.dead)

    def env(self) -> dict[str, str]:
        env = {**os.environ, "RAY_TMPDIR": str(self.root), "PYTHONPATH": str(REPO)}
        env.pop("RAY_ADDRESS", None)
        return env

    def sessions(self) -> list[Path]:
        return sorted((self.root / "ray").glob("session_2*"))

    def stop_leftovers(self) -> None:
        """Kill processes of a Ray started under this temp dir that outlived their job (only ours)."""
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and str(self.root) in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    os.kill(int(entry.name), signal.SIGKILL)
            except OSError:
                continue


@pytest.fixture
def stale() -> Iterator[StaleRay]:
    stale = StaleRay()
    try:
        yield stale
    finally:
        stale.stop_leftovers()
        shutil.rmtree(stale.root, ignore_errors=True)


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    directory = tmp_path / "in"
    directory.mkdir()
    pq.write_table(pa.table({"text": ["a quiet village", "the river carries water"]}), directory / "part-0.parquet")
    return directory


def _cli(argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.infer", *argv], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _seconds_between(log: str, first: str, last: str) -> float:
    """Seconds between the log lines containing ``first`` and ``last`` (their timestamps)."""
    def when(text: str) -> datetime:
        line = next(line for line in log.splitlines() if text in line)
        return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")

    return (when(last) - when(first)).total_seconds()


@pytest.mark.slow
def test_a_stale_cluster_file_is_ignored_and_a_fresh_local_ray_runs_the_job(stale: StaleRay, shards: Path, minilm: str,
                                                                            tmp_path: Path) -> None:
    # Ray's own default (ray.init(address=None)) would retry the dead address for many minutes.
    result = _cli(["--model", minilm, "--input", str(shards), "--output", str(tmp_path / "out")], stale.env(), 240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "_SUCCESS").exists()
    assert "Ray: starting a fresh local Ray (neither --ray-address nor RAY_ADDRESS is set)" in result.stderr
    assert "Failed to connect to GCS" not in result.stderr and str(stale.dead_port) not in result.stderr
    assert len(stale.sessions()) == 1  # the local Ray the job started, under the private temp dir
    assert (stale.root / "ray" / "ray_current_cluster").read_text() == stale.dead  # left as it was


def test_a_dead_ray_address_fails_within_the_timeout_naming_it(stale: StaleRay, shards: Path, minilm: str,
                                                               tmp_path: Path) -> None:
    started = time.monotonic()
    result = _cli(["--model", minilm, "--input", str(shards), "--output", str(tmp_path / "out"),
                   "--ray-address", stale.dead], stale.env(), 120)
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert re.search(rf"ERROR jobs\.infer: Can't reach the Ray cluster at [\d.]+:{stale.dead_port} "
                     rf"\(--ray-address {stale.dead}, which .* resolved to\): connection refused", last), last
    # From the plan's last line to the error: the connect attempt alone.
    assert _seconds_between(result.stderr, "work unit(s)", "Can't reach") < infer.CONNECT_TIMEOUT_S
    assert not stale.sessions() and not (tmp_path / "out" / "_SUCCESS").exists()
    print(f"dead --ray-address: exit 2 after {elapsed:.1f} s in all")


@pytest.fixture
def no_ray_here(monkeypatch: pytest.MonkeyPatch, stale: StaleRay) -> StaleRay:
    """main() in this process as in a fresh one: no Ray up (this suite's local Ray may be),
    Ray's temp dir the stale one, no RAY_ADDRESS; and no pipeline, should the connect pass."""
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(pipeline, "run", lambda *args, **kwargs: pytest.fail("the job connected"))
    monkeypatch.setenv("RAY_TMPDIR", str(stale.root))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return stale


def _main_error(argv: list[str], caplog: pytest.LogCaptureFixture) -> tuple[str, float]:
    """main's final message, and the seconds from the plan's last line to it (the connect attempt)."""
    with caplog.at_level("INFO", logger="jobs.infer"):
        assert infer.main(argv) == 2
    planned = next(r for r in caplog.records if "work unit(s)" in r.getMessage())
    final = caplog.records[-1]
    assert final.levelname == "ERROR"
    return final.getMessage(), final.created - planned.created


def test_ray_address_from_the_environment_is_checked_alike(no_ray_here: StaleRay, shards: Path, minilm: str,
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("RAY_ADDRESS", no_ray_here.dead)
    message, seconds = _main_error(["--model", minilm, "--input", str(shards), "--output", str(tmp_path / "out")],
                                   caplog)
    assert seconds < infer.CONNECT_TIMEOUT_S
    assert f"(RAY_ADDRESS={no_ray_here.dead}, which" in message and "connection refused" in message


def test_auto_finds_the_stale_file_and_fails_naming_its_address(no_ray_here: StaleRay, shards: Path, minilm: str,
                                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    # Ray's "auto" prefers a cluster running on this machine to the file when there is exactly
    # one: other users' Rays must not take part.
    monkeypatch.setattr(ray._private.services, "find_gcs_addresses", lambda: frozenset())
    message, _ = _main_error(["--model", minilm, "--input", str(shards), "--output", str(tmp_path / "out"),
                              "--ray-address", "auto"], caplog)
    assert re.search(rf"Can't reach the Ray cluster at [\d.]+:{no_ray_here.dead_port} \(--ray-address auto, ", message)
    assert "a cluster that died leaves that file behind" in message


def test_an_address_where_nothing_answers_fails_after_the_timeout(no_ray_here: StaleRay, shards: Path, minilm: str,
                                                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A port whose listen queue is full drops new connections, as a firewalled or hung host does."""
    monkeypatch.setattr(infer, "CONNECT_TIMEOUT_S", 1.0)
    with closing(socket.socket()) as server, closing(socket.socket()) as queued:
        server.bind(("0.0.0.0", 0))  # every address of this host: Ray dials 127.0.0.1 as this node's IP
        server.listen(0)
        port = server.getsockname()[1]
        queued.connect(("127.0.0.1", port))  # fills the queue; nothing ever accepts
        message, seconds = _main_error(["--model", minilm, "--input", str(shards), "--output", str(tmp_path / "out"),
                                        "--ray-address", f"127.0.0.1:{port}"], caplog)
    assert f":{port} (--ray-address 127.0.0.1:{port}, which" in message and "nothing answered within 1 s" in message
    assert 1.0 <= seconds < 5.0
