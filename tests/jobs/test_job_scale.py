"""Huge inputs and outputs without Ray: how many storage requests planning and resuming make
(a counting filesystem), that the manifest stays small, and that planning stays fast.

bench/plan_bench.py measures 1,000 / 10,000 / 100,000 input files; these tests use fewer and
bound loosely, so they hold on a loaded 2-core machine."""
from __future__ import annotations

import io
import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.local import LocalFileSystem

from jobs import records
from jobs.output import commit, fingerprint, prepare
from jobs.plan import plan

IDENTITY = {"task": "embed", "weights_sha256": "a" * 64, "inputs": ["s3://in/"]}
JOB = fingerprint(IDENTITY)


class CountingFileSystem(LocalFileSystem):
    """Local files under ``countfs://``, counting every call that would be a request (or a
    batch of them) on an object store."""

    protocol = ("countfs",)
    calls: Counter = Counter()
    # fsspec caches instances; the counts are per test (reset by the fixture).
    cachable = False

    @classmethod
    def _strip_protocol(cls, path: Any) -> str:
        path = str(path)
        return super()._strip_protocol(path[len("countfs://"):] if path.startswith("countfs://") else path)

    def unstrip_protocol(self, name: str) -> str:
        return "countfs://" + name


_depth = threading.local()


def _counted(name: str):
    """Counts the call when it comes from outside the filesystem (a local ``ls`` calls ``info``
    per entry, a ``find`` calls ``ls``: on an object store those are one paged listing)."""
    def method(self, *args, **kwargs):
        depth = getattr(_depth, "value", 0)
        if depth == 0:
            CountingFileSystem.calls[name] += 1
        _depth.value = depth + 1
        try:
            return getattr(LocalFileSystem, name)(self, *args, **kwargs)
        finally:
            _depth.value = depth
    return method


for _name in ("find", "ls", "info", "glob", "cat_file", "cat", "_open", "pipe_file", "rm", "rm_file", "exists",
              "isfile", "isdir"):
    setattr(CountingFileSystem, _name, _counted(_name))


@pytest.fixture
def counting() -> Iterator[Counter]:
    fsspec.register_implementation("countfs", CountingFileSystem, clobber=True)
    CountingFileSystem.calls.clear()
    yield CountingFileSystem.calls


def _reads(calls: Counter) -> int:
    return calls["cat_file"] + calls["cat"] + calls["_open"]


def _expected(names: list[str]) -> dict[str, dict[str, Any]]:
    return {n: {"job": JOB, "input": n, "input_version": "v1", "row_start": 0, "row_stop": 3} for n in names}


def _committed_output(root: Path, names: list[str]) -> None:
    """What a finished run's workers leave: each data file and its JSON commit record (written
    directly: the commit protocol itself is tested in test_job_output.py)."""
    (root / "_commits").mkdir(parents=True)
    for name in names:
        (root / name).write_bytes(b"data of " + name.encode())
        record = {**_expected([name])[name], "output": name, "rows": 3, "bytes": len(b"data of ") + len(name),
                  "sha256": "0" * 64, "stats": {"tokens": 9}}
        (root / "_commits" / f"{name}.json").write_text(json.dumps(record))


def test_resuming_a_10000_file_output_reads_its_records_in_a_few_requests(tmp_path: Path, counting: Counter) -> None:
    names = [f"part-{i:05d}.parquet" for i in range(10_000)]
    out = tmp_path / "out"
    url = f"countfs://{out}"
    prepare(url, {}, IDENTITY, _expected(names), overwrite=False)
    _committed_output(out, names)
    # Before the fold (a run cut short): the JSON records are read in batches, not one call each.
    counting.clear()
    assert len(prepare(url, {}, IDENTITY, _expected(names), overwrite=False)) == 10_000
    assert counting["cat"] <= 10_000 // 500 and counting["cat_file"] <= 3, counting
    # prepare folded them into the side file: no JSON record is left.
    assert not list((out / "_commits").rglob("*.json")) and (out / records.FILES).is_file()
    shards = [{"name": n, "outputs": [n], "rows": 3} for n in names]
    commit(url, {}, {"fingerprint": JOB, "identity": IDENTITY, "shards": shards, "summary": {"rows": 30_000}},
           discard=[])
    # The manifest holds totals and a pointer, not 10,000 entries.
    manifest = json.loads((out / "_manifest.json").read_text())
    assert "shards" not in manifest and manifest["summary"] == {"rows": 30_000}
    assert manifest["files"]["path"] == records.FILES and manifest["files"]["count"] == 10_000
    assert (out / "_manifest.json").stat().st_size < 2_000
    table = pq.read_table(out / records.FILES)
    assert table.num_rows == 10_000 and table["rows"].to_pylist() == [3] * 10_000
    # The resume of the complete output: one listing, and a handful of reads whatever the file count.
    counting.clear()
    started = time.perf_counter()
    kept = prepare(url, {}, IDENTITY, _expected(names), overwrite=False)
    seconds = time.perf_counter() - started
    assert sorted(kept) == names and kept[names[7]]["stats"] == {"tokens": 9}
    assert counting["find"] == 1 and _reads(counting) <= 4, counting
    assert seconds < 20, seconds


def test_a_recomputed_unit_leaves_the_side_file_before_its_data_is_touched(tmp_path: Path) -> None:
    names = ["a.parquet", "b.parquet"]
    out = tmp_path / "out"
    prepare(str(out), {}, IDENTITY, _expected(names), overwrite=False)
    _committed_output(out, names)
    commit(str(out), {}, {"fingerprint": JOB, "identity": IDENTITY, "shards": []}, discard=[])
    assert sorted(records.decode((out / records.FILES).read_bytes())) == names
    (out / "b.parquet").write_bytes(b"another size altogether")  # no longer the recorded file
    assert sorted(prepare(str(out), {}, IDENTITY, _expected(names), overwrite=False)) == ["a.parquet"]
    assert sorted(records.decode((out / records.FILES).read_bytes())) == ["a.parquet"]
    # A cut-short side file is no record: every unit is recomputed, with a warning.
    (out / records.FILES).write_bytes(b"PAR1 cut short")
    assert prepare(str(out), {}, IDENTITY, _expected(names), overwrite=False) == {}
    assert not (out / records.FILES).exists()
    # Small jobs keep their per-input list in the manifest (and the pointer too).
    shards = [{"name": n, "outputs": [n]} for n in names]
    commit(str(out), {}, {"fingerprint": JOB, "identity": IDENTITY, "shards": shards}, discard=[])
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["shards"] == shards and manifest["files"]["shards_inline"] is True


def _tiny_inputs(root: Path, files: int) -> None:
    sink = io.BytesIO()
    pq.write_table(pa.table({"text": ["a", "b", "c"]}), sink)
    data = sink.getvalue()
    for index in range(files):
        directory = root / f"d{index // 500:03d}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"part-{index:05d}.parquet").write_bytes(data)


def test_planning_thousands_of_files_lists_once_and_reads_each_footer_once(tmp_path: Path, counting: Counter) -> None:
    files = 2_000
    _tiny_inputs(tmp_path / "in", files)
    started = time.perf_counter()
    work = plan([f"countfs://{tmp_path / 'in'}"], ["text"], 50_000, {}, text_columns=["text"])
    seconds = time.perf_counter() - started
    assert len(work.shards) == files and len(work.units) == files and work.num_rows == 3 * files
    assert work.shards[0].name == "d000/part-00000.parquet" and work.shards[0].version
    # One recursive listing (paged by the store), one read per footer, no lookup per file.
    assert counting["find"] == 1 and counting["_open"] == files, counting
    assert counting["info"] + counting["isfile"] + counting["isdir"] <= 3, counting
    assert seconds < 30, seconds


def test_a_glob_is_listed_with_details_not_a_lookup_per_match(tmp_path: Path, counting: Counter) -> None:
    _tiny_inputs(tmp_path / "in", 600)
    work = plan([f"countfs://{tmp_path / 'in'}/d00*/part-*.parquet"], ["text"], 50_000, {})
    assert len(work.shards) == 600 and work.shards[-1].name == "d001/part-00599.parquet"
    assert counting["glob"] == 1 and counting["info"] + counting["isfile"] <= 2, counting


def test_records_folded_during_a_run_and_those_after_are_both_kept(tmp_path: Path, counting: Counter) -> None:
    """The driver folds every FOLD_EVERY commits while workers keep writing JSON records: a run
    cut short then leaves the side file plus the few records since, and a resume keeps all."""
    from jobs.output import fold_records

    names = [f"part-{i:04d}.parquet" for i in range(1_200)]
    out = tmp_path / "out"
    url = f"countfs://{out}"
    prepare(url, {}, IDENTITY, _expected(names), overwrite=False)
    _committed_output(out, names[:1_000])
    fold_records(url, {})
    assert not list((out / "_commits").rglob("*.json"))
    assert len(records.decode((out / records.FILES).read_bytes())) == 1_000
    # 200 more commits after the fold, then the driver dies (no final commit).
    for name in names[1_000:]:
        (out / name).write_bytes(b"data of " + name.encode())
        record = {**_expected([name])[name], "output": name, "rows": 3, "bytes": len(b"data of ") + len(name),
                  "sha256": "0" * 64}
        (out / "_commits" / f"{name}.json").write_text(json.dumps(record))
    counting.clear()
    assert sorted(prepare(url, {}, IDENTITY, _expected(names), overwrite=False)) == names
    assert counting["cat"] == 1 and counting["cat_file"] <= 3, counting  # 200 records: one batch, plus the side file
