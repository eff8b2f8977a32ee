"""The reliability gaps of issue 14, without Ray: storage options scoped per protocol (an
http:// model with S3 options), the output lease (one writer at a time), committed files
verified on resume (size + ETag / mtime; --verify rehashes), object-store commits without a
copy, and {date} in input and output URLs."""
from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import fsspec
import pyarrow as pa
import pytest
import torch

from jobs import lease as leases
from jobs import output
from jobs.lease import LeaseError
from jobs.output import commit_unit, prepare
from jobs.spec import SpecError, parse_spec

IDENTITY = {"task": "embed", "weights_sha256": "a" * 64}
JOB = output.fingerprint(IDENTITY)


def _expected(*names: str) -> dict[str, dict[str, Any]]:
    return {name: {"job": JOB, "input": name, "input_version": "v1", "row_start": 0, "row_stop": 3} for name in names}


def _commit(url: str, name: str, storage_options: dict[str, Any] = {}) -> dict[str, Any]:
    table = pa.table({"id": [f"{name}#{i}" for i in range(3)], "embedding": [[0.0, 1.0]] * 3})
    record = {"job": JOB, "input": name, "input_version": "v1", "row_start": 0, "row_stop": 3, "rows": 3, "stats": {}}
    return commit_unit(url, storage_options, name, table, record)


# -- storage options per protocol ----------------------------------------------------------------
@pytest.fixture(scope="module")
def http_model(tmp_path_factory: pytest.TempPathFactory, minilm: str) -> Iterator[tuple[Path, str]]:
    """A tiny BERT directory, and the same directory served over HTTP by a local server."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("http-model")
    BertModel(BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).eval().save_pretrained(directory)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (directory / name).write_bytes((Path(minilm) / name).read_bytes())

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads, block_on_close = True, False  # the client's keep-alive connections must not hold the teardown

    server = Server(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield directory, f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


def test_an_http_model_loads_with_s3_storage_options(http_model: tuple[Path, str], tmp_path: Path) -> None:
    """Flat S3 options (for the job's input and output) don't reach the HTTP client: before
    they did, and aiohttp refused the unknown 'key' argument."""
    from autoload import AutoModel, AutoTokenizer

    local, url = http_model
    s3_options = {"key": "testkey", "secret": "testsecret", "endpoint_url": "http://127.0.0.1:9",
                  "client_kwargs": {"region_name": "us-east-1"}}
    fetched = AutoModel.from_pretrained(url, storage_options=s3_options, cache_dir=str(tmp_path / "cache")).eval()
    tokenizer = AutoTokenizer.from_pretrained(url, storage_options=s3_options, cache_dir=str(tmp_path / "cache"))
    reference = AutoModel.from_pretrained(local).eval()
    batch = tokenizer(["rivers and mountains"], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(fetched(**batch)[0], reference(**batch)[0])


def test_storage_options_nested_per_protocol_reach_only_that_protocol() -> None:
    from autoload.storage import scoped_options

    options = {"key": "K", "secret": "S", "s3": {"endpoint_url": "http://s3"}, "http": {"headers": {"A": "b"}}}
    assert scoped_options("s3://b/x", options) == {"key": "K", "secret": "S", "endpoint_url": "http://s3"}
    assert scoped_options("s3a://b/x", options)["endpoint_url"] == "http://s3"  # an alias of s3
    assert scoped_options("https://host/m/", options) == {"headers": {"A": "b"}}
    assert scoped_options("/tmp/x", options) == {}
    assert scoped_options("gs://b/x", options) == {"key": "K", "secret": "S"}
    assert scoped_options("simplecache::s3://b/x", options) == options  # fsspec splits a chain itself


# -- the output lease ------------------------------------------------------------------------------
def test_a_second_run_is_refused_while_the_first_holds_the_lease(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    first = leases.acquire(out, {})
    try:
        with pytest.raises(LeaseError, match=rf"Another run is writing to the output {out} \(host .*, pid {os.getpid()}"):
            leases.acquire(out, {})
    finally:
        first.release()
    assert not (tmp_path / "out" / leases.LEASE).exists()
    leases.acquire(out, {}).release()  # free again once released


def test_a_dead_holder_on_this_machine_frees_the_lease_at_once(tmp_path: Path) -> None:
    """A run killed here (SIGKILL: no release) leaves its lease; its pid is gone, so the rerun
    takes it over without waiting for the expiry."""
    out = tmp_path / "out"
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r}); from jobs import lease; "
            f"lease.acquire({str(out)!r}, {{}}); import os; os._exit(0)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert (out / leases.LEASE).exists()
    leases.acquire(str(out), {}).release()


def test_an_expired_lease_is_taken_over_and_the_old_holder_learns_it(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    stale = leases.acquire(out, {}, ttl=0.2, renew_every=3600)  # it never renews in time
    time.sleep(0.3)
    fresh = leases.acquire(out, {})
    try:
        stale.renew()
        with pytest.raises(LeaseError, match="is no longer this run's: another run .* took over"):
            stale.check()
    finally:
        fresh.release()
        stale.release()


def test_two_runs_racing_for_an_s3_lease_one_wins(s3_server) -> None:
    """Both write their lease at the same moment; each reads back the one write that won."""
    out = f"s3://{s3_server.bucket}/lease-race-{os.getpid()}"
    barrier = threading.Barrier(2)
    outcomes: list[Any] = []

    def run() -> None:
        barrier.wait()
        try:
            outcomes.append(leases.acquire(out, s3_server.storage_options, settle=1.0))
        except LeaseError as err:
            outcomes.append(err)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    held = [o for o in outcomes if isinstance(o, leases.Lease)]
    assert len(held) == 1 and sum(isinstance(o, LeaseError) for o in outcomes) == 1
    held[0].release()


# -- committed files verified on resume ------------------------------------------------------------
def test_a_committed_file_changed_in_place_is_recomputed(tmp_path: Path) -> None:
    """Same size, other bytes: the modification time no longer matches the record (before,
    only the size was compared and the corrupt file was kept); with the time put back, only
    --verify's SHA-256 finds it."""
    out = str(tmp_path / "out")
    prepare(out, {}, IDENTITY, _expected("a.parquet", "b.parquet"), overwrite=False)
    for name in ("a.parquet", "b.parquet"):
        _commit(out, name)
    path = tmp_path / "out" / "a.parquet"
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    time.sleep(0.01)
    path.write_bytes(bytes(data))
    assert sorted(prepare(out, {}, IDENTITY, _expected("a.parquet", "b.parquet"), overwrite=False)) == ["b.parquet"]

    _commit(out, "a.parquet")
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # a copy that kept the time
    assert sorted(prepare(out, {}, IDENTITY, _expected("a.parquet", "b.parquet"), overwrite=False)) == ["a.parquet",
                                                                                                     "b.parquet"]
    kept = prepare(out, {}, IDENTITY, _expected("a.parquet", "b.parquet"), overwrite=False, verify=True)
    assert sorted(kept) == ["b.parquet"]


def test_s3_commits_write_in_place_and_resume_checks_the_etag(s3_server, monkeypatch: pytest.MonkeyPatch) -> None:
    """On S3 a unit is one PUT under its own name (no _temporary object, no server-side copy:
    before, every file was written twice); a same-size rewrite changes its ETag, so the resume
    recomputes it."""
    out = f"s3://{s3_server.bucket}/verify-{os.getpid()}-{time.monotonic_ns()}"
    options = s3_server.storage_options
    prepare(out, options, IDENTITY, _expected("a.parquet", "b.parquet"), overwrite=False)

    def no_copy(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an object-store commit copied a file")

    import s3fs

    monkeypatch.setattr(s3fs.S3FileSystem, "copy", no_copy)
    written: list[str] = []
    real_put = output._put
    monkeypatch.setattr(output, "_put", lambda fs, path, data: (written.append(path), real_put(fs, path, data)))
    records = [_commit(out, name, options) for name in ("a.parquet", "b.parquet")]
    monkeypatch.undo()
    assert [p.rsplit("/", 1)[-1] for p in written] == ["a.parquet", "b.parquet"]
    assert all(record["version"].startswith("ETag=") for record in records)

    fs = s3_server.filesystem()
    root = out[len("s3://"):]
    data = bytearray(fs.cat(f"{root}/a.parquet"))
    data[len(data) // 2] ^= 0xFF
    fs.pipe(f"{root}/a.parquet", bytes(data))
    assert sorted(prepare(out, options, IDENTITY, _expected("a.parquet", "b.parquet"), overwrite=False)) == ["b.parquet"]


# -- {date} in URLs ---------------------------------------------------------------------------------
def test_date_fields_take_the_run_date(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTOINFER_RUN_DATE", raising=False)
    spec = parse_spec(["--input", "s3://b/docs/{date:%Y/%m/%d}/", "--output", "s3://b/emb/{date}/",
                       "--run-date", "2026-11-30"])
    assert (spec.input, spec.output, spec.run_date) == (["s3://b/docs/2026/11/30/"], "s3://b/emb/2026-11-30/", "2026-11-30")
    monkeypatch.setenv("AUTOINFER_RUN_DATE", "2025-01-02")
    assert parse_spec(["--input", "x", "--output", "s3://b/emb/{date}/"]).output == "s3://b/emb/2025-01-02/"
    monkeypatch.delenv("AUTOINFER_RUN_DATE")
    today = parse_spec(["--input", "x", "--output", "s3://b/{date}"])
    assert today.output == f"s3://b/{today.run_date}" and len(today.run_date) == 10
    assert parse_spec(["--input", "s3://b/{ab}*.parquet", "--output", "o"]).input == ["s3://b/{ab}*.parquet"]
    with pytest.raises(SpecError, match=r"--run-date \(command line\): expected a date YYYY-MM-DD, got '2026-13-01'"):
        parse_spec(["--input", "x", "--output", "o/{date}", "--run-date", "2026-13-01"])
    from jobs.spec import build_parser

    assert "{date:%Y/%m/%d}" in " ".join(build_parser().format_help().split())  # --help shows the strftime text
    monkeypatch.setenv("AUTOINFER_RUN_DATE", "yesterday")
    with pytest.raises(SpecError, match=r"\$AUTOINFER_RUN_DATE: expected a date"):
        parse_spec(["--input", "x", "--output", "o/{date}"])


def test_memory_filesystem_still_publishes_by_copy() -> None:
    """Filesystems without an atomic PUT keep the temporary name + publish path."""
    assert not output.atomic_put(fsspec.filesystem("memory"))
    assert output.atomic_put(fsspec.filesystem("s3", anon=True))
