"""Plan a run before any actor starts: find the input shards, check their columns, cut work units.

A work unit is a row range of one input shard and becomes exactly one output file, named
after the shard, so a rerun writes the same names (overwrite, never duplicate).  Every check
that can fail on the input (no files, missing columns or columns of the wrong type,
unreadable footers, an output inside an input) fails here, before Ray starts.
"""
from __future__ import annotations

import logging
import posixpath
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable, Optional

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from autoload.storage import StorageError, object_version, redact_text, retry, scoped_options

logger = logging.getLogger(__name__)

PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
_FOOTER_THREADS = 16
_FOOTER_BATCH = 256
_GLOB_CHARS = "*?["
# Arrow types a text column may have, also as a dictionary's values (pandas writes a `category`
# column so); all-null columns (type null) are bad rows, not a bad column.
_TEXT_TYPES = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view, pa.types.is_binary,
               pa.types.is_large_binary, pa.types.is_binary_view, pa.types.is_null)
_PLAIN_LAYOUT = {pa.string_view(): pa.large_string(), pa.binary_view(): pa.large_binary()}


class InputError(ValueError):
    """The input can't be used (no files, a missing column, an unreadable file); the message says which."""


@dataclass(frozen=True)
class Shard:
    url: str          # full URL (or local path) of the input file
    name: str         # path relative to the input root: ids and output names derive from it
    num_rows: int
    row_group_rows: tuple[int, ...]
    version: str = ""             # ETag or mtime, and size: a changed file is recomputed on resume
    error: Optional[str] = None   # why it can't be read, when skipped under --on-bad-shard skip


@dataclass(frozen=True)
class Unit:
    index: int
    shard: int        # index into the plan's shards
    row_start: int
    row_stop: int
    output: str       # path of the output file, relative to the output root


@dataclass
class Plan:
    shards: list[Shard]
    units: list[Unit]
    columns: list[str]   # input columns to read

    @property
    def num_rows(self) -> int:
        return sum(s.num_rows for s in self.shards)

    @property
    def bad_shards(self) -> list[Shard]:
        return [s for s in self.shards if s.error]


def filesystem(url: str, storage_options: dict[str, Any]) -> tuple[fsspec.AbstractFileSystem, str]:
    """fsspec filesystem and in-filesystem path for a URL or local path, with the storage
    options that apply to its protocol (:func:`autoload.storage.scoped_options`)."""
    return fsspec.core.url_to_fs(url, **scoped_options(url, storage_options))


def join_url(root: str, relative: str) -> str:
    return root.rstrip("/") + "/" + relative


def check_output_location(inputs: Iterable[str], output: str, storage_options: dict[str, Any]) -> None:
    """Refuse an output equal to or inside an input: the next run would read the job's own
    output files as input (and a glob or prefix would keep growing)."""
    out_fs, out_path = filesystem(output, storage_options)
    out_path = posixpath.normpath(out_path)
    for item in inputs:
        in_fs, in_path = filesystem(item, storage_options)
        if in_fs.protocol != out_fs.protocol:
            continue
        glob_root = _glob_root(in_path)  # a glob reaches everything below its fixed part
        root = posixpath.normpath(in_path if glob_root is None else glob_root)
        if out_path == root or out_path.startswith(root.rstrip("/") + "/"):
            raise InputError(f"The output {redact_text(output)} is {'the same as' if out_path == root else 'inside'} the input "
                             f"{redact_text(item)}: the next run would read this job's output files as input. "
                             "Choose an output location outside every input.")


def _full_url(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A URL the workers can open again with the same storage options (plain path when local)."""
    return path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)


def list_shards(inputs: Iterable[str], storage_options: dict[str, Any]) -> list[tuple[str, str]]:
    """(url, name relative to its input root) of every Parquet file the inputs name, sorted.

    An input is a file, a directory/prefix (searched recursively, skipping ``_*`` and ``.*``
    names such as ``_SUCCESS``), or a glob.  Fails naming the input that matched nothing.
    """
    return [(item.url, item.name) for item in listed_shards(inputs, storage_options)]


@dataclass(frozen=True)
class Listed:
    """An input file as its listing gave it: the version comes with the listing, so the plan
    needs no request per file for it (one HEAD each, on an object store)."""

    url: str
    name: str
    version: str
    fs: fsspec.AbstractFileSystem
    path: str
    info: dict[str, Any]


def listed_shards(inputs: Iterable[str], storage_options: dict[str, Any]) -> list[Listed]:
    """:func:`list_shards` with each file's version and filesystem.  Directories and prefixes
    are listed with the filesystem's recursive listing (``find``: on S3 the paged
    ListObjectsV2, 1,000 keys a request), globs with its ``glob``, both with details."""
    found: dict[str, Listed] = {}
    for item in inputs:
        fs, path = filesystem(item, storage_options)
        shown = redact_text(item)
        try:
            root, paths = retry(lambda: _list(fs, path), f"list input {item}")
        except Exception as err:  # storage errors come in many types; name the input in any case
            raise InputError(f"Can't list input {shown}: {type(err).__name__}: {redact_text(str(err))}") from err
        if root is None:
            raise InputError(f"Input {shown} does not exist (no such file, directory or prefix).")
        paths = {p: info for p, info in paths.items() if p.endswith(PARQUET_SUFFIXES)}
        if not paths:
            raise InputError(f"No Parquet files found in input {shown} (looked for {', '.join('*' + s for s in PARQUET_SUFFIXES)}).")
        for p, info in paths.items():
            url = _full_url(fs, p)
            if url not in found:
                found[url] = Listed(url=url, name=posixpath.relpath(p, root) if root else p,
                                    version=object_version(info), fs=fs, path=p,
                                    info={"size": info.get("size")})
    counts = Counter(item.name for item in found.values())
    duplicates = sorted(name for name, count in counts.items() if count > 1)
    if duplicates:
        raise InputError(f"Several inputs have files with the same relative name ({', '.join(duplicates[:5])}): "
                         "output names would clash. Give one common parent directory or glob instead.")
    return sorted(found.values(), key=lambda item: item.name)


def _list(fs: fsspec.AbstractFileSystem, path: str) -> tuple[Optional[str], dict[str, dict[str, Any]]]:
    """(root that names are relative to, file path → listing details) of one input; root None
    when it doesn't exist.

    An input is a file, a directory/prefix (searched recursively, skipping ``_*`` and ``.*``
    names such as ``_SUCCESS``), or a glob.
    """
    root = _glob_root(path)
    if root is not None:
        return root, {p: info for p, info in fs.glob(path, detail=True).items() if info.get("type") == "file"}
    info = _info(fs, path)
    if info is not None and info.get("type") == "file":
        return posixpath.dirname(path), {path: info}
    if info is not None or fs.isdir(path):
        root = path.rstrip("/")
        return root, {p: info for p, info in fs.find(root, detail=True).items()
                      if _is_data_file(posixpath.relpath(p, root))}
    return None, {}


def _info(fs: fsspec.AbstractFileSystem, path: str) -> Optional[dict[str, Any]]:
    try:
        return fs.info(path)
    except FileNotFoundError:
        return None


def _glob_root(path: str) -> Optional[str]:
    """The directory above a glob's first wildcard, or None when ``path`` is no glob."""
    if not any(ch in path for ch in _GLOB_CHARS):
        return None
    return path[: min(path.index(ch) for ch in _GLOB_CHARS if ch in path)].rsplit("/", 1)[0]


def is_bad_file(err: BaseException) -> bool:
    """Whether a read failed because of the file (corrupt, truncated, not Parquet, gone) rather
    than the storage service or the credentials, which no skipping can fix."""
    return not isinstance(err, (StorageError, PermissionError))


def _is_data_file(relative: str) -> bool:
    return not any(part.startswith(("_", ".")) for part in relative.split("/"))


def read_shard(url: str, name: str, columns: list[str], storage_options: dict[str, Any],
               text_columns: Iterable[str] = (), on_bad_shard: str = "error", listed: Optional[Listed] = None) -> Shard:
    """Footer of one file: row counts, version, and a check that every needed column is there
    and the text columns hold text.  An unreadable footer fails naming the file, or with
    ``on_bad_shard="skip"`` gives a shard with no rows and the reason in ``error``.

    With its ``listed`` entry the file's version and size come from the listing: reading the
    footer is then the only request (on S3 a ranged GET; opening would otherwise HEAD first)."""
    fs, path = (listed.fs, listed.path) if listed is not None else filesystem(url, storage_options)
    shown = redact_text(url)

    def footer() -> tuple[Any, str]:
        if listed is None:
            info = fs.info(path)
            version = object_version(info)
        else:
            info, version = listed.info, listed.version
        known = {} if isinstance(fs, LocalFileSystem) or info.get("size") is None else {"size": int(info["size"])}
        with fs.open(path, "rb", **known) as handle:
            return pq.ParquetFile(handle).metadata, version

    try:
        metadata, version = retry(footer, f"read the Parquet footer of {url}")
        schema = metadata.schema.to_arrow_schema()
    except Exception as err:
        reason = f"Can't read the Parquet footer of {shown}: {type(err).__name__}: {redact_text(str(err))}"
        if on_bad_shard == "skip" and is_bad_file(err):
            logger.warning("%s; skipping it (--on-bad-shard skip)", reason)
            return Shard(url=url, name=name, num_rows=0, row_group_rows=(), error=reason)
        raise InputError(f"{reason}. Replace the file, or rerun with --on-bad-shard skip to leave it out.") from err
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise InputError(f"Column(s) {', '.join(map(repr, missing))} not found in {shown}; its columns are "
                         f"{', '.join(schema.names)}. Pass the right --text-column / --id-column / --keep-columns.")
    for column in text_columns:
        kind = schema.field(column).type
        if not is_text_type(kind):
            raise InputError(f"Column {column!r} in {shown} holds {kind}, not text (string or UTF-8 binary). "
                             "Pass the text column with --text-column / --text-pair-column.")
    groups = tuple(metadata.row_group(i).num_rows for i in range(metadata.num_row_groups))
    return Shard(url=url, name=name, num_rows=metadata.num_rows, row_group_rows=groups, version=version)


def is_text_type(kind: pa.DataType) -> bool:
    """Whether a column of this Arrow type can hold the job's text (the tokenize stage reads them all)."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return any(check(kind) for check in _TEXT_TYPES)


def without_view_types(table: pa.Table) -> pa.Table:
    """``table`` with string_view / binary_view columns as large_string / large_binary.

    Ray 2.60 moves Arrow tables between processes with its own serializer, which has no view
    types: it falls back to Arrow IPC for the whole table, logging a warning with a traceback
    (and under pytest refuses).  One cast of the unit's rows, where they are read, avoids that.
    """
    for index, field in enumerate(table.schema):
        plain = _PLAIN_LAYOUT.get(field.type)
        if plain is not None:
            table = table.set_column(index, field.with_type(plain), table.column(index).cast(plain))
    return table


def plan(inputs: list[str], columns: list[str], max_rows_per_file: int, storage_options: dict[str, Any],
         text_columns: Iterable[str] = (), on_bad_shard: str = "error") -> Plan:
    started = time.perf_counter()
    listed = listed_shards(inputs, storage_options)
    logger.info("listed %d input file(s) in %.1f s; reading their footers", len(listed), time.perf_counter() - started)
    text_columns = list(text_columns)
    # Local footers are read fastest by one thread (many only contend for the GIL); an object
    # store's latency is hidden by many requests in flight, handed out in batches so that
    # 100,000 files cost 400 futures, not 100,000.
    local = all(isinstance(item.fs, LocalFileSystem) for item in listed)

    def read(batch: list[Listed]) -> list[Shard]:
        return [read_shard(item.url, item.name, columns, storage_options, text_columns, on_bad_shard, listed=item)
                for item in batch]

    batches = [listed[i:i + _FOOTER_BATCH] for i in range(0, len(listed), _FOOTER_BATCH)]
    if local or len(batches) == 1:
        shards = [shard for batch in batches for shard in read(batch)]
    else:
        with ThreadPoolExecutor(_FOOTER_THREADS) as pool:
            shards = [shard for done in pool.map(read, batches) for shard in done]
    logger.info("read %d footer(s) in %.1f s", len(shards), time.perf_counter() - started)
    units: list[Unit] = []
    for index, shard in enumerate(shards):
        if shard.num_rows == 0:
            if not shard.error:
                logger.warning("%s has no rows: no output file for it", redact_text(shard.url))
            continue
        pieces = -(-shard.num_rows // max_rows_per_file)
        bounds = np.linspace(0, shard.num_rows, pieces + 1).astype(int)
        for k in range(pieces):
            units.append(Unit(index=len(units), shard=index, row_start=int(bounds[k]), row_stop=int(bounds[k + 1]),
                              output=output_name(shard.name, k, pieces)))
    return Plan(shards=shards, units=units, columns=columns)


# Bytes a row of a variable-width output column is assumed to take (ids, labels, kept text):
# the estimate only has to keep files within a small factor of the target.
VARIABLE_WIDTH_BYTES = 32
# Per-token outputs (lists without a fixed width): elements a row is assumed to have.
LIST_ELEMENTS = 128


def estimated_row_bytes(schema: pa.Schema, extra_columns: int = 0) -> int:
    """Parquet bytes one output row takes, estimated from the column types: fixed-width values
    at their width (embeddings are random-looking floats that barely compress), strings at
    :data:`VARIABLE_WIDTH_BYTES`, lists without a fixed width at :data:`LIST_ELEMENTS`
    elements; ``extra_columns`` variable-width columns more (the id and kept columns)."""
    def width(kind: pa.DataType) -> float:
        if pa.types.is_fixed_size_list(kind):
            return kind.list_size * width(kind.value_type)
        if pa.types.is_list(kind) or pa.types.is_large_list(kind):
            return LIST_ELEMENTS * width(kind.value_type)
        if pa.types.is_struct(kind):
            return sum(width(f.type) for f in kind)
        if pa.types.is_boolean(kind):
            return 0.125
        try:
            return kind.bit_width / 8
        except ValueError:  # strings, binaries, dictionaries: no fixed width
            return VARIABLE_WIDTH_BYTES
    return max(1, int(sum(width(f.type) for f in schema) + VARIABLE_WIDTH_BYTES * extra_columns))


def rows_per_file(max_rows_per_file: int, target_file_bytes: Optional[int], schema: pa.Schema,
                  extra_columns: int = 0) -> int:
    """Rows per output file: ``max_rows_per_file``, or fewer so that a file comes out near
    ``target_file_bytes`` (see :func:`estimated_row_bytes`)."""
    if not target_file_bytes:
        return max_rows_per_file
    row_bytes = estimated_row_bytes(schema, extra_columns)
    rows = max(1, min(max_rows_per_file, target_file_bytes // row_bytes))
    logger.info("--target-file-bytes %d: about %d bytes per output row, so at most %d rows per file", target_file_bytes,
                row_bytes, rows)
    return rows


def output_name(shard_name: str, piece: int, pieces: int) -> str:
    """``a/part-7.parquet`` → ``a/part-7.parquet``, or ``a/part-7-00002-of-00005.parquet`` when split."""
    stem = shard_name.rsplit(".", 1)[0]
    return f"{stem}.parquet" if pieces == 1 else f"{stem}-{piece:05d}-of-{pieces:05d}.parquet"
