"""The output directory and its commit protocol, on any fsspec filesystem.

    <output>/<name>.parquet            one data file per work unit, named after its input shard
    <output>/_commits/<name>.json      the unit's commit record: written after its data file is in place
    <output>/_job.json                 the identity (model, settings, inputs) of the job the records belong to
    <output>/_temporary/               files being written; a crash's leftovers are removed by the next run
    <output>/_manifest.json, _SUCCESS  written last, once every unit is committed

A unit's data is written under ``_temporary/``, then published under its name (a rename), then
its commit record is written; on object stores whose PUT is atomic (S3, GCS, Azure) the data is
written under its name directly, with no copy.  A crash at any point leaves the
unit committed (record present, data complete) or uncommitted (no record; a data file without
one is rewritten by the next run), never half of it.  ``_SUCCESS`` is withdrawn when a run starts.

A rerun of the same job skips each unit whose record matches (same input file version and
rows, data file present with the recorded size) and computes the rest.  An output holding
another job's results is refused unless ``overwrite``.  Only one run may write to an output
at a time.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import posixpath
import uuid
from datetime import datetime
from typing import Any, Optional

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from autoload.storage import redact_text, retry
from jobs import records as records_file
from jobs.plan import filesystem, join_url

logger = logging.getLogger(__name__)

MANIFEST = "_manifest.json"
SUCCESS = "_SUCCESS"
JOB = "_job.json"
COMMITS = "_commits"
TEMPORARY = "_temporary"
_RECORD_SUFFIX = ".json"
_READ_CHUNK = 500  # commit records fetched per request batch
_PARTIAL = ".incomplete"  # a local small file being written next to its final name


class OutputError(ValueError):
    """The output location can't take this job's results (the message says what to do)."""


def fingerprint(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def prepare(output: str, storage_options: dict[str, Any], identity: dict[str, Any], expected: dict[str, dict[str, Any]],
            overwrite: bool, verify: bool = False) -> dict[str, dict[str, Any]]:
    """Get the output ready for a run; return the commit records of the units to skip.

    ``expected`` maps each planned unit's output name to what its record must say (input file,
    its version, row range).  Withdraws ``_SUCCESS``; refuses another job's output unless
    ``overwrite``; removes temporary leftovers, records of units to recompute, and data files
    of earlier runs that this run no longer writes.

    A committed file is kept only if it is still the file its record names: its size and its
    version as the listing gives it for free (the ETag on object stores, the modification time
    on disks) equal the record's.  ``verify`` also reads each one whole and compares its SHA-256.
    """
    fs, root = filesystem(output, storage_options)
    shown = redact_text(output)
    job = fingerprint(identity)
    # Listings cached by an earlier run in this process would hide what its workers wrote.
    fs.invalidate_cache()
    listed = retry(lambda: _listing(fs, root), f"list the output {output}")  # relative path -> info
    if SUCCESS in listed:
        retry(lambda: fs.rm(join_url(root, SUCCESS)), f"remove {output}/{SUCCESS}")
    manifest = _read_json(fs, root, MANIFEST, output) if MANIFEST in listed else None
    previous_job = _read_json(fs, root, JOB, output) if JOB in listed else None
    # Records folded into the side file, then any JSON ones committed since (they win).
    records = {**(_read_files(fs, root, output) if records_file.FILES in listed else {}),
               **_read_records(fs, root, output, [p for p in listed if _is_record(p)])}
    if not overwrite:
        _refuse_other_jobs(shown, identity, job, manifest, previous_job, records)

    committed = {} if overwrite else {
        name: record for name, record in records.items()
        if name in expected and _matches(record, expected[name], listed.get(name))
    }
    if verify and committed:
        committed = _verified(fs, root, output, committed)
    earlier = set(records) | _manifest_outputs(manifest)
    stale = sorted(name for name in earlier - set(expected) if name in listed)
    # Records go first: no record may outlive, even for a moment, the data it vouches for.
    # The side file is rewritten with the kept records alone before anything is deleted, and
    # then every JSON record can go (kept ones are in the side file).
    _put_files(fs, root, output, committed)
    _remove(fs, root, output, [p for p in listed if _is_record(p)]
            + [p for p in listed if p.endswith(_PARTIAL)] + ([MANIFEST] if overwrite and manifest else []))
    if any(p.startswith(TEMPORARY + "/") for p in listed):
        remove_temporary(output, storage_options)
    if stale:
        logger.info("removing %d file(s) of an earlier run that this run does not write: %s", len(stale),
                    ", ".join(stale[:5]) + (" ..." if len(stale) > 5 else ""))
        _remove(fs, root, output, stale)
    _put_json(fs, root, JOB, {"fingerprint": job, "identity": identity}, f"{output}/{JOB}")
    if committed:
        logger.info("resuming in %s: %d of %d output file(s) already committed, skipped", shown, len(committed),
                    len(expected))
    return committed


def parquet_bytes(table: pa.Table) -> bytes:
    """A unit's output file.  Float columns (embeddings, scores, logits) are written without
    dictionary encoding: their values are all different, so Parquet's dictionary attempt only
    adds a dictionary page (up to 1 MiB a column) before falling back, making a 200 KB file
    1.5 times larger, and file sizes unpredictable for --target-file-bytes."""
    sink = io.BytesIO()
    pq.write_table(table, sink, use_dictionary=[f.name for f in table.schema if not _is_floating(f.type)])
    return sink.getvalue()


def _is_floating(kind: pa.DataType) -> bool:
    while pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        kind = kind.value_type
    return pa.types.is_floating(kind)


def commit_unit(output: str, storage_options: dict[str, Any], relative: str, table: pa.Table,
                record: dict[str, Any]) -> dict[str, Any]:
    """Write one unit's data and commit it: temporary name, publish, then the record (returned)."""
    fs, root = filesystem(output, storage_options)
    data = parquet_bytes(table)
    final = join_url(root, relative)
    if atomic_put(fs):
        # The object appears whole or not at all: written under its name directly, with no
        # copy and no delete.  A crash before the record leaves a file without one: rewritten.
        retry(lambda: _put(fs, final, data), f"write {join_url(output, relative)}")
    else:
        temporary = join_url(root, f"{TEMPORARY}/{relative}.{uuid.uuid4().hex}")
        retry(lambda: _put(fs, temporary, data), f"write {join_url(output, TEMPORARY)}/{relative}")
        _publish(fs, temporary, final, join_url(output, relative))
    info = retry(lambda: fs.info(final), f"look up {join_url(output, relative)}")
    record = {**record, "output": relative, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
              "version": file_version(info)}
    _put_json(fs, root, _record_name(relative), record, f"the commit record of {join_url(output, relative)}", indent=1)
    return record


def commit(output: str, storage_options: dict[str, Any], manifest: dict[str, Any], discard: list[str]) -> None:
    """The run's last writes: the manifest, then ``_SUCCESS``; first the ``discard`` data files
    (earlier results of input rows that this run could not read) and the temporary files go."""
    fs, root = filesystem(output, storage_options)
    _remove(fs, root, output, [_record_name(n) for n in discard] + discard)
    _fold_records(fs, root, output, set(discard))
    remove_temporary(output, storage_options)
    _put_json(fs, root, MANIFEST, _manifest_to_write(manifest), f"{output}/{MANIFEST}")
    retry(lambda: put_atomic(fs, join_url(root, SUCCESS), b""), f"write {output}/{SUCCESS}")


def remove_temporary(output: str, storage_options: dict[str, Any]) -> None:
    fs, root = filesystem(output, storage_options)
    path = join_url(root, TEMPORARY)
    try:
        retry(lambda: fs.rm(path, recursive=True), f"remove {output}/{TEMPORARY}")
    except FileNotFoundError:
        pass  # nothing was left there


# Object stores whose PUT of a whole object is atomic (a reader sees the old object, or none,
# or the new one whole): S3 (PutObject; a multipart upload appears only when completed), GCS,
# Azure Blob (a committed block list).
ATOMIC_PUT_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az"})


def atomic_put(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    return not isinstance(fs, LocalFileSystem) and bool(set(protocols) & ATOMIC_PUT_PROTOCOLS)


def put_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """A small object that appears whole or not at all: one PUT on object stores; on local
    disks a temporary file renamed into place."""
    if isinstance(fs, LocalFileSystem):
        partial = f"{path}.{uuid.uuid4().hex}{_PARTIAL}"
        _put(fs, partial, data)
        fs.mv(partial, path)
    else:
        fs.pipe_file(path, data)


def _put_json(fs: fsspec.AbstractFileSystem, root: str, name: str, value: dict[str, Any], shown: str,
              indent: int = 2) -> None:
    """A JSON object under the output, written whole (:func:`put_atomic`), retried."""
    body = (json.dumps(value, indent=indent, sort_keys=True, default=str) + "\n").encode()
    retry(lambda: put_atomic(fs, join_url(root, name), body), f"write {shown}")


def _put(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    fs.pipe_file(path, data)


def _publish(fs: fsspec.AbstractFileSystem, temporary: str, final: str, shown: str) -> None:
    """Move a written file to its final name: a rename on local disks, a server-side copy on object stores."""
    if isinstance(fs, LocalFileSystem):
        fs.makedirs(posixpath.dirname(final), exist_ok=True)
        retry(lambda: fs.mv(temporary, final), f"publish {shown}")
        return
    retry(lambda: fs.copy(temporary, final), f"publish {shown}")
    try:
        retry(lambda: fs.rm(temporary), f"remove the temporary copy of {shown}")
    except FileNotFoundError:
        pass  # an earlier attempt removed it and only the answer was lost


def _listing(fs: fsspec.AbstractFileSystem, root: str) -> dict[str, dict[str, Any]]:
    """Relative path → listing entry (size, ETag or mtime) of every file under the output ({}
    when it doesn't exist yet)."""
    try:
        found = fs.find(root, detail=True)
    except FileNotFoundError:
        return {}
    return {posixpath.relpath(path, root): info for path, info in found.items()}


def file_version(info: dict[str, Any]) -> str:
    """What changes when a file is rewritten, from its listing entry: ETag and size on object
    stores, modification time and size on disks.  (A filesystem may give a time as a number
    in its listing and as a datetime from ``info``: both become the same string.)"""
    for key in ("ETag", "etag", "mtime", "LastModified", "last_modified", "created"):
        stamp = info.get(key)
        if stamp:
            if isinstance(stamp, datetime):
                stamp = stamp.timestamp()
            if isinstance(stamp, (int, float)):
                stamp = f"{float(stamp):.3f}"
            return f"{key}={stamp}:{info.get('size')}"
    return f"size={info.get('size')}"


def _is_record(relative: str) -> bool:
    return relative.startswith(COMMITS + "/") and relative.endswith(_RECORD_SUFFIX)


def _record_name(output_name: str) -> str:
    return f"{COMMITS}/{output_name}{_RECORD_SUFFIX}"


def _read_json(fs: fsspec.AbstractFileSystem, root: str, name: str, output: str) -> Optional[dict[str, Any]]:
    """A JSON object stored in the output, or None (with a warning) when unreadable."""
    try:
        data = json.loads(retry(lambda: fs.cat_file(join_url(root, name)), f"read {output}/{name}"))
    except (json.JSONDecodeError, UnicodeDecodeError, FileNotFoundError) as err:
        logger.warning("ignoring the unreadable %s/%s (%s)", redact_text(output), name, err)
        return None
    return data if isinstance(data, dict) else None


def _read_records(fs: fsspec.AbstractFileSystem, root: str, output: str, paths: list[str]) -> dict[str, dict[str, Any]]:
    """Output name → commit record.  A record cut short by a crash is no record: left out here,
    it is removed and its unit recomputed."""
    records: dict[str, dict[str, Any]] = {}
    for start in range(0, len(paths), _READ_CHUNK):
        chunk = [join_url(root, p) for p in paths[start:start + _READ_CHUNK]]
        contents = retry(lambda: fs.cat(chunk, on_error="omit"), f"read commit records in {output}/{COMMITS}")
        for path, body in contents.items():
            relative = posixpath.relpath(path, root)
            name = relative[len(COMMITS) + 1:-len(_RECORD_SUFFIX)]
            try:
                record = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError):
                record = None
            if isinstance(record, dict) and record.get("output") == name:
                records[name] = record
            else:
                logger.warning("ignoring the unreadable commit record %s/%s; its unit is recomputed",
                               redact_text(output), relative)
                records.setdefault(name, {})
    return records


def _matches(record: dict[str, Any], expected: dict[str, Any], info: Optional[dict[str, Any]]) -> bool:
    """The record is this job's for this unit, and the file it vouches for is the one it wrote
    (size, and version where the record has one: records of older versions have none)."""
    if info is None or not all(record.get(k) == v for k, v in expected.items()):
        return False
    if int(info.get("size") or 0) != record.get("bytes"):
        return False
    return "version" not in record or record["version"] == file_version(info)


def _verified(fs: fsspec.AbstractFileSystem, root: str, output: str,
              committed: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The committed files whose content still hashes to their record's SHA-256 (``--verify``)."""
    kept = {}
    for name, record in committed.items():
        digest = hashlib.sha256()

        def read() -> None:
            digest.__init__()  # a retried read starts over
            with fs.open(join_url(root, name), "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)

        retry(read, f"read {redact_text(output)}/{name}")
        if digest.hexdigest() == record.get("sha256"):
            kept[name] = record
        else:
            logger.warning("--verify: %s/%s does not hash to its commit record's SHA-256; it is recomputed",
                           redact_text(output), name)
    logger.info("--verify: %d of %d committed file(s) hash to their records", len(kept), len(committed))
    return kept


def _read_files(fs: fsspec.AbstractFileSystem, root: str, output: str) -> dict[str, dict[str, Any]]:
    """The records in the side file (one request, or a few ranged reads); {} when unreadable."""
    try:
        return records_file.decode(retry(lambda: fs.cat_file(join_url(root, records_file.FILES)),
                                         f"read {output}/{records_file.FILES}"))
    except (ValueError, FileNotFoundError) as err:
        logger.warning("ignoring the unreadable %s/%s (%s); its units are recomputed", redact_text(output),
                       records_file.FILES, err)
        return {}


def _put_files(fs: fsspec.AbstractFileSystem, root: str, output: str, records: dict[str, dict[str, Any]]) -> None:
    """Make the side file hold exactly ``records`` (none: no side file)."""
    if records:
        retry(lambda: put_atomic(fs, join_url(root, records_file.FILES), records_file.encode(records)),
              f"write {output}/{records_file.FILES}")
    else:
        _remove(fs, root, output, [records_file.FILES])


def fold_records(output: str, storage_options: dict[str, Any]) -> None:
    """Fold the JSON commit records written so far into the side file.  The driver does this
    every :data:`jobs.records.FOLD_EVERY` committed units, so a run cut short leaves at most
    that many records to read one object each.  Workers keep committing meanwhile: only the
    records read here are deleted, and a newer JSON record wins over the side file's."""
    fs, root = filesystem(output, storage_options)
    fs.invalidate_cache()  # the workers' new records, not a listing cached earlier
    _fold_records(fs, root, output, set())


def _fold_records(fs: fsspec.AbstractFileSystem, root: str, output: str, discard: set[str]) -> None:
    """Fold the JSON commit records into the side file, then delete them: a resume reads one
    object instead of one per file.  A crash between the two leaves both, saying the same."""
    try:
        found = retry(lambda: fs.find(join_url(root, COMMITS)), f"list {output}/{COMMITS}")
    except FileNotFoundError:
        found = []
    paths = [posixpath.relpath(p, root) for p in found]
    paths = [p for p in paths if _is_record(p)]
    if not paths and not discard:
        return
    exists = retry(lambda: fs.exists(join_url(root, records_file.FILES)), f"look up {output}/{records_file.FILES}")
    records = {**(_read_files(fs, root, output) if exists else {}), **_read_records(fs, root, output, paths)}
    _put_files(fs, root, output, {name: record for name, record in records.items() if record and name not in discard})
    _remove(fs, root, output, paths)


def _manifest_to_write(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest as stored: with the per-input list when it is small, else without it (the
    side file has the same facts per output file); either way pointing to the side file."""
    shards = manifest.get("shards")
    inline = not isinstance(shards, list) or len(shards) <= records_file.MANIFEST_SHARDS_INLINE
    count = sum(len(s.get("outputs", [])) for s in shards) if isinstance(shards, list) else 0
    stored = dict(manifest) if inline else {k: v for k, v in manifest.items() if k != "shards"}
    stored["files"] = records_file.pointer(count, inline)
    return stored


def _manifest_outputs(manifest: Optional[dict[str, Any]]) -> set[str]:
    try:
        return {f for shard in (manifest or {}).get("shards", []) for f in shard.get("outputs", [])}
    except (AttributeError, TypeError):
        return set()


def _refuse_other_jobs(shown: str, identity: dict[str, Any], job: str, manifest: Optional[dict[str, Any]],
                       previous_job: Optional[dict[str, Any]], records: dict[str, dict[str, Any]]) -> None:
    """Raise when anything in the output was written by a job with another identity."""
    theirs: Optional[dict[str, Any]] = None
    for found in (previous_job, manifest):
        if found is not None and found.get("fingerprint") != job:
            theirs = found
            break
    foreign = [name for name, record in records.items() if record and record.get("job") != job]
    if theirs is None and not foreign:
        return
    if theirs is not None and isinstance(theirs.get("identity"), dict):
        other = theirs["identity"]
        differences = "; ".join(f"{key}: {_short(other.get(key))} there, {_short(identity.get(key))} now"
                                for key in sorted(set(identity) | set(other)) if identity.get(key) != other.get(key))
    elif theirs is not None:
        differences = "its manifest names no job identity: another tool or an older version of this job wrote it"
    else:
        differences = f"{len(foreign)} commit record(s) of another job"
    raise OutputError(
        f"The output {shown} holds results of a different job ({differences}). Mixing "
        "them would give an output that no single job produced: write to another --output, or pass --overwrite to "
        "replace its results."
    )


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text[:15] + "…" if len(text) > 40 and text.startswith('"') else text


def _remove(fs: fsspec.AbstractFileSystem, root: str, output: str, names: list[str]) -> None:
    """Delete files by relative name; names already gone are no error."""
    paths = [join_url(root, n) for n in names]
    if not paths:
        return
    if not isinstance(fs, LocalFileSystem):
        try:
            # Object stores delete up to 1,000 keys per request, and a missing key is no error.
            retry(lambda: fs.rm(paths), f"remove {len(paths)} file(s) in {output}")
            return
        except FileNotFoundError:
            pass  # a filesystem that does mind: delete one by one below
    for path in paths:
        try:
            retry(lambda: fs.rm_file(path), f"remove {redact_text(output)}/{posixpath.relpath(path, root)}")
        except FileNotFoundError:
            pass
