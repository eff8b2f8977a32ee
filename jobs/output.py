"""The output directory's commit protocol: ``_SUCCESS`` off first, data files, then the
manifest, then ``_SUCCESS`` last.  A reader that sees ``_SUCCESS`` sees a complete run.

Files are named after their input shard, so a rerun overwrites them; files of an earlier run
that this run no longer writes (listed in the old manifest) are removed before the commit.
"""
from __future__ import annotations

import json
import logging
from typing import Any

from jobs.plan import filesystem, join_url

logger = logging.getLogger(__name__)

MANIFEST = "_manifest.json"
SUCCESS = "_SUCCESS"


def start(output: str, storage_options: dict[str, Any]) -> list[str]:
    """Withdraw an earlier run's ``_SUCCESS``; return the data files its manifest listed."""
    fs, root = filesystem(output, storage_options)
    success, manifest = join_url(root, SUCCESS), join_url(root, MANIFEST)
    if fs.exists(success):
        fs.rm(success)
    if not fs.exists(manifest):
        return []
    try:
        with fs.open(manifest, "rb") as handle:
            previous = json.load(handle)
        return [f for shard in previous.get("shards", []) for f in shard.get("outputs", [])]
    except (json.JSONDecodeError, AttributeError, TypeError) as err:
        logger.warning("ignoring the unreadable earlier manifest %s (%s)", manifest, err)
        return []


def commit(output: str, storage_options: dict[str, Any], manifest: dict[str, Any], previous: list[str]) -> None:
    fs, root = filesystem(output, storage_options)
    current = {f for shard in manifest["shards"] for f in shard["outputs"]}
    for stale in sorted(set(previous) - current):
        path = join_url(root, stale)
        if fs.exists(path):
            logger.info("removing %s: written by an earlier run, not part of this one", path)
            fs.rm(path)
    with fs.open(join_url(root, MANIFEST), "wb") as handle:
        handle.write((json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n").encode())
    with fs.open(join_url(root, SUCCESS), "wb") as handle:
        handle.write(b"")
