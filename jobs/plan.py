"""Plan a run before any actor starts: find the input shards, check their columns, cut work units.

A work unit is a row range of one input shard and becomes exactly one output file, named
after the shard, so a rerun writes the same names (overwrite, never duplicate).  Every check
that can fail on the input (no files, missing columns, unreadable footers) fails here.
"""
from __future__ import annotations

import logging
import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable

import fsspec
import numpy as np
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

logger = logging.getLogger(__name__)

PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
_FOOTER_THREADS = 16


class InputError(ValueError):
    """The input can't be used (no files, a missing column, an unreadable file); the message says which."""


@dataclass(frozen=True)
class Shard:
    url: str          # full URL (or local path) of the input file
    name: str         # path relative to the input root: ids and output names derive from it
    num_rows: int
    row_group_rows: tuple[int, ...]


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


def filesystem(url: str, storage_options: dict[str, Any]) -> tuple[fsspec.AbstractFileSystem, str]:
    """fsspec filesystem and in-filesystem path for a URL or local path."""
    return fsspec.core.url_to_fs(url, **storage_options)


def join_url(root: str, relative: str) -> str:
    return root.rstrip("/") + "/" + relative


def _full_url(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A URL the workers can open again with the same storage options (plain path when local)."""
    return path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)


def list_shards(inputs: Iterable[str], storage_options: dict[str, Any]) -> list[tuple[str, str]]:
    """(url, name relative to its input root) of every Parquet file the inputs name, sorted.

    An input is a file, a directory/prefix (searched recursively, skipping ``_*`` and ``.*``
    names such as ``_SUCCESS``), or a glob.  Fails naming the input that matched nothing.
    """
    found: dict[str, str] = {}
    for item in inputs:
        fs, path = filesystem(item, storage_options)
        try:
            if any(ch in path for ch in "*?["):
                root = path[: min(path.index(ch) for ch in "*?[" if ch in path)].rsplit("/", 1)[0]
                paths = [p for p in fs.glob(path) if fs.isfile(p)]
            elif fs.isfile(path):
                root, paths = posixpath.dirname(path), [path]
            elif fs.isdir(path):
                root = path.rstrip("/")
                paths = [p for p in fs.find(root) if _is_data_file(posixpath.relpath(p, root))]
            else:
                raise InputError(f"Input {item} does not exist (no such file, directory or prefix).")
        except InputError:
            raise
        except Exception as err:  # storage errors come in many types; name the input in any case
            raise InputError(f"Can't list input {item}: {type(err).__name__}: {err}") from err
        paths = [p for p in paths if p.endswith(PARQUET_SUFFIXES)]
        if not paths:
            raise InputError(f"No Parquet files found in input {item} (looked for {', '.join('*' + s for s in PARQUET_SUFFIXES)}).")
        for p in paths:
            found.setdefault(_full_url(fs, p), posixpath.relpath(p, root) if root else p)
    names = sorted(found.values())
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"Several inputs have files with the same relative name ({', '.join(duplicates[:5])}): "
                         "output names would clash. Give one common parent directory or glob instead.")
    return sorted(found.items(), key=lambda item: item[1])


def _is_data_file(relative: str) -> bool:
    return not any(part.startswith(("_", ".")) for part in relative.split("/"))


def read_shard(url: str, name: str, columns: list[str], storage_options: dict[str, Any]) -> Shard:
    """Footer of one file: row counts, and a check that every needed column is there."""
    fs, path = filesystem(url, storage_options)
    try:
        with fs.open(path, "rb") as handle:
            metadata = pq.ParquetFile(handle).metadata
            schema = metadata.schema.to_arrow_schema()
    except Exception as err:
        raise InputError(f"Can't read the Parquet footer of {url}: {type(err).__name__}: {err}") from err
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise InputError(f"Column(s) {', '.join(map(repr, missing))} not found in {url}; its columns are "
                         f"{', '.join(schema.names)}. Pass the right --text-column / --id-column / --keep-columns.")
    groups = tuple(metadata.row_group(i).num_rows for i in range(metadata.num_row_groups))
    return Shard(url=url, name=name, num_rows=metadata.num_rows, row_group_rows=groups)


def plan(inputs: list[str], columns: list[str], max_rows_per_file: int, storage_options: dict[str, Any]) -> Plan:
    listed = list_shards(inputs, storage_options)
    logger.info("reading the footers of %d input file(s)", len(listed))
    with ThreadPoolExecutor(_FOOTER_THREADS) as pool:
        shards = list(pool.map(lambda item: read_shard(item[0], item[1], columns, storage_options), listed))
    units: list[Unit] = []
    for index, shard in enumerate(shards):
        if shard.num_rows == 0:
            logger.warning("%s has no rows: no output file for it", shard.url)
            continue
        pieces = -(-shard.num_rows // max_rows_per_file)
        bounds = np.linspace(0, shard.num_rows, pieces + 1).astype(int)
        for k in range(pieces):
            units.append(Unit(index=len(units), shard=index, row_start=int(bounds[k]), row_stop=int(bounds[k + 1]),
                              output=output_name(shard.name, k, pieces)))
    return Plan(shards=shards, units=units, columns=columns)


def output_name(shard_name: str, piece: int, pieces: int) -> str:
    """``a/part-7.parquet`` → ``a/part-7.parquet``, or ``a/part-7-00002-of-00005.parquet`` when split."""
    stem = shard_name.rsplit(".", 1)[0]
    return f"{stem}.parquet" if pieces == 1 else f"{stem}-{piece:05d}-of-{pieces:05d}.parquet"
