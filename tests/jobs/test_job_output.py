"""The output commit protocol without Ray: what a crash at each step leaves, what a rerun keeps,
what it recomputes and cleans up, and when it refuses to mix two jobs' results."""
from __future__ import annotations

import json
from typing import Any, Iterator

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import output
from jobs.output import OutputError, commit, commit_unit, fingerprint, prepare

IDENTITY = {"task": "embed", "weights_sha256": "a" * 64, "inputs": ["s3://in/"], "pooling": "mean"}
JOB = fingerprint(IDENTITY)


def _expected(*names: str, version: str = "v1") -> dict[str, dict[str, Any]]:
    return {name: {"job": JOB, "input": name, "input_version": version, "row_start": 0, "row_stop": 3} for name in names}


def _commit(url: str, name: str, version: str = "v1") -> dict[str, Any]:
    table = pa.table({"id": [f"{name}#{i}" for i in range(3)], "embedding": [[0.0, 1.0]] * 3})
    record = {"job": JOB, "input": name, "input_version": version, "row_start": 0, "row_stop": 3, "rows": 3,
              "stats": {"tokens": 9}}
    return commit_unit(url, {}, name, table, record)


@pytest.fixture(params=["local", "memory"])
def out(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A local directory (rename to publish) and an object-store-like filesystem (copy to publish)."""
    if request.param == "local":
        yield str(tmp_path / "out")
        return
    url = f"memory://out-{tmp_path.name}"
    yield url
    fsspec.filesystem("memory").rm(url, recursive=True)


def _files(url: str) -> set[str]:
    fs, root = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    return {p[len(root.rstrip("/")) + 1:] for p in fs.find(root)}


def test_a_unit_is_published_then_recorded(out: str) -> None:
    assert prepare(out, {}, IDENTITY, _expected("a.parquet", "sub/b.parquet"), overwrite=False) == {}
    record = _commit(out, "a.parquet")
    _commit(out, "sub/b.parquet")
    assert _files(out) == {"_job.json", "a.parquet", "sub/b.parquet", "_commits/a.parquet.json",
                           "_commits/sub/b.parquet.json"}
    fs, root = fsspec.core.url_to_fs(out)
    assert record["bytes"] == fs.size(f"{root}/a.parquet") and len(record["sha256"]) == 64
    assert pq.read_table(fs.open(f"{root}/sub/b.parquet", "rb"))["id"].to_pylist() == [f"sub/b.parquet#{i}" for i in range(3)]
    commit(out, {}, {"fingerprint": JOB, "identity": IDENTITY, "shards": []}, discard=[])
    assert {"_manifest.json", "_SUCCESS"} <= _files(out)
    # A rerun of the same job keeps both units and withdraws _SUCCESS until it commits again.
    kept = prepare(out, {}, IDENTITY, _expected("a.parquet", "sub/b.parquet"), overwrite=False)
    assert sorted(kept) == ["a.parquet", "sub/b.parquet"] and kept["a.parquet"]["stats"] == {"tokens": 9}
    assert "_SUCCESS" not in _files(out)


def test_crash_before_the_record_leaves_nothing_committed(out: str, monkeypatch: pytest.MonkeyPatch) -> None:
    prepare(out, {}, IDENTITY, _expected("a.parquet"), overwrite=False)
    written: list[str] = []

    def crash_on_record(fs, path: str, data: bytes) -> None:
        written.append(path)
        raise KeyboardInterrupt("the process dies here")  # not an Exception: nothing catches or retries it

    monkeypatch.setattr(output, "put_atomic", crash_on_record)
    with pytest.raises(KeyboardInterrupt):
        _commit(out, "a.parquet")
    monkeypatch.undo()
    assert written[0].endswith("_commits/a.parquet.json")
    assert "a.parquet" in _files(out)  # published, but without its record...
    assert prepare(out, {}, IDENTITY, _expected("a.parquet"), overwrite=False) == {}  # ...so it is recomputed


def test_crash_before_publishing_leaves_a_temporary_file_the_next_run_removes(out: str,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    prepare(out, {}, IDENTITY, _expected("a.parquet"), overwrite=False)

    def crash(*args: Any) -> None:
        raise KeyboardInterrupt("the process dies here")

    monkeypatch.setattr(output, "_publish", crash)
    with pytest.raises(KeyboardInterrupt):
        _commit(out, "a.parquet")
    monkeypatch.undo()
    leftovers = _files(out) - {"_job.json"}
    assert len(leftovers) == 1 and next(iter(leftovers)).startswith("_temporary/a.parquet.")
    assert prepare(out, {}, IDENTITY, _expected("a.parquet"), overwrite=False) == {}
    assert _files(out) == {"_job.json"}


def test_resume_recomputes_what_no_longer_matches(out: str) -> None:
    prepare(out, {}, IDENTITY, _expected("a.parquet", "b.parquet", "c.parquet", "old.parquet"), overwrite=False)
    for name in ("a.parquet", "b.parquet", "c.parquet", "old.parquet"):
        _commit(out, name)
    fs, root = fsspec.core.url_to_fs(out)
    fs.pipe_file(f"{root}/c.parquet", b"a different file")  # data not as recorded
    fs.pipe_file(f"{root}/_commits/d.parquet.json", b'{"job": "')  # a record cut short
    expected = {**_expected("a.parquet", "c.parquet", "d.parquet"), **_expected("b.parquet", version="v2")}
    kept = prepare(out, {}, IDENTITY, expected, overwrite=False)
    assert sorted(kept) == ["a.parquet"]  # b's input changed, c's data is not the recorded one, d has no valid record
    # Records of units to recompute are gone; so is the earlier run's file this run no longer writes.
    # The kept record is folded into the side file (jobs/records.py); no JSON record is left.
    assert _files(out) == {"_job.json", "a.parquet", "b.parquet", "c.parquet", "_files.parquet"}
    assert sorted(_side_file(out)) == ["a.parquet"]


def test_another_jobs_output_is_refused_unless_overwrite(out: str) -> None:
    prepare(out, {}, IDENTITY, _expected("a.parquet"), overwrite=False)
    _commit(out, "a.parquet")
    commit(out, {}, {"fingerprint": JOB, "identity": IDENTITY, "shards": [{"outputs": ["a.parquet"]}]}, discard=[])
    other = {**IDENTITY, "weights_sha256": "b" * 64}
    other_expected = {k: {**v, "job": fingerprint(other)} for k, v in _expected("a.parquet").items()}
    with pytest.raises(OutputError, match=r"holds results of a different job \(weights_sha256: \"aaaaaaaaaaaaaa… there, "
                                          r"\"bbbbbbbbbbbbbb… now\).*another --output, or pass --overwrite"):
        prepare(out, {}, other, other_expected, overwrite=False)
    assert prepare(out, {}, other, other_expected, overwrite=True) == {}
    assert _files(out) == {"_job.json", "a.parquet"}  # old records and manifest gone: a crash now can't mix
    assert json.loads(fsspec.core.url_to_fs(out)[0].cat_file(_job_path(out)))["fingerprint"] == fingerprint(other)


def _job_path(url: str) -> str:
    return fsspec.core.url_to_fs(url)[1].rstrip("/") + "/_job.json"


def test_discarded_units_go_with_the_commit(out: str) -> None:
    prepare(out, {}, IDENTITY, _expected("a.parquet", "b.parquet"), overwrite=False)
    _commit(out, "a.parquet")
    _commit(out, "b.parquet")
    commit(out, {}, {"fingerprint": JOB, "identity": IDENTITY, "shards": []}, discard=["b.parquet", "never.parquet"])
    assert _files(out) == {"_job.json", "a.parquet", "_files.parquet", "_manifest.json", "_SUCCESS"}
    assert sorted(_side_file(out)) == ["a.parquet"]


def _side_file(url: str) -> dict:
    from jobs import records

    fs, root = fsspec.core.url_to_fs(url)
    return records.decode(fs.cat_file(root.rstrip("/") + "/_files.parquet"))


def test_an_output_without_job_identity_is_refused(out: str) -> None:
    """A manifest from an older version of the job (or another tool) says nothing to resume from."""
    fs, root = fsspec.core.url_to_fs(out)
    fs.makedirs(root, exist_ok=True)
    fs.pipe_file(f"{root}/_manifest.json", json.dumps({"shards": [{"outputs": ["a.parquet"]}]}).encode())
    with pytest.raises(OutputError, match="its manifest names no job identity"):
        prepare(out, {}, IDENTITY, _expected("a.parquet"), overwrite=False)
    assert prepare(out, {}, IDENTITY, _expected("a.parquet"), overwrite=True) == {}
