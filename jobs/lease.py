"""One writer per output at a time: a lease object, ``<output>/_lease.json``.

A run takes the lease before it touches the output and keeps it while it runs (a thread
renews it every ``RENEW_EVERY_S``); a second run into the same output finds a live lease held
by another run and refuses, naming the holder and when the lease ends.  A run that dies stops
renewing: its lease expires ``TTL_S`` after the last renewal and the next run takes it over.
On the holder's own machine a dead holder (its pid gone) is known at once, so a rerun after a
crash or a kill there does not wait for the expiry.

Taking the lease is a write followed by a read back after ``SETTLE_S``: of two runs that write
at the same moment, both read back the one write that won (object stores give read-after-write
consistency), so exactly one holds it.  On a local disk the first write is exclusive (O_EXCL).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

import fsspec
from fsspec.implementations.local import LocalFileSystem

from autoload.storage import redact_text, retry
from jobs.plan import filesystem, join_url

logger = logging.getLogger(__name__)

LEASE = "_lease.json"
TTL_S = 120.0        # a lease not renewed for this long is free
RENEW_EVERY_S = 30.0
SETTLE_S = 1.0       # between writing a lease and reading it back


class LeaseError(RuntimeError):
    """Another run holds the output's lease (the message names it and what to do)."""


def _now() -> float:
    return time.time()


def _stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass
class Lease:
    """The lease this run holds on ``output``; :meth:`release` gives it back."""

    output: str
    storage_options: dict[str, Any]
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    ttl: float = TTL_S
    renew_every: float = RENEW_EVERY_S
    lost: Optional[str] = None  # why the lease was lost while the run went on
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: Optional[threading.Thread] = None

    def body(self) -> dict[str, Any]:
        now = _now()
        return {"token": self.token, "host": socket.gethostname(), "pid": os.getpid(), "renewed": now,
                "expires": now + self.ttl, "expires_utc": _stamp(now + self.ttl)}

    def start_renewing(self) -> None:
        self._thread = threading.Thread(target=self._renew_loop, name="output-lease", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.renew_every):
            try:
                self.renew()
            except Exception as err:  # a failed renewal is retried at the next tick; the lease lasts TTL_S
                logger.warning("could not renew the lease on %s: %s", redact_text(self.output), redact_text(str(err)))

    def renew(self) -> None:
        fs, path = _lease_path(self.output, self.storage_options)
        found = _read(fs, path)
        if found is not None and found.get("token") != self.token:
            self.lost = (f"another run ({_holder(found)}) took over the output's lease while this one ran: its renewals "
                         f"failed for {self.ttl:g} s")
            self._stop.set()
            return
        _write(fs, path, self.body())

    def check(self) -> None:
        """Raise when the lease was lost: committing then could mix two runs' files."""
        if self.lost:
            raise LeaseError(f"The output {redact_text(self.output)} is no longer this run's: {self.lost}. Its "
                             "committed files are kept; run the job again once the other run has ended.")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        fs, path = _lease_path(self.output, self.storage_options)
        try:
            found = _read(fs, path)
            if found is not None and found.get("token") == self.token:
                retry(lambda: fs.rm_file(path), f"remove {redact_text(self.output)}/{LEASE}")
        except Exception as err:  # it expires by itself
            logger.warning("could not remove the lease on %s (%s); it expires by itself", redact_text(self.output),
                           redact_text(str(err)))


def acquire(output: str, storage_options: dict[str, Any], ttl: float = TTL_S, renew_every: float = RENEW_EVERY_S,
            settle: float = SETTLE_S) -> Lease:
    """Take the lease on ``output`` (renewed from then on) or raise :class:`LeaseError`."""
    lease = Lease(output, storage_options, ttl=ttl, renew_every=renew_every)
    fs, path = _lease_path(output, storage_options)
    shown = redact_text(output)
    found = _read(fs, path)
    if found is not None and _alive(found):
        raise _refusal(shown, found)
    if found is not None:
        logger.info("taking over the lease on %s from a run that is gone (%s)", shown, _holder(found))
    body = lease.body()
    if isinstance(fs, LocalFileSystem) and found is None:
        if not _create_exclusive(path, body):
            raced = _read(fs, path)
            raise _refusal(shown, raced or body)
    else:
        _write(fs, path, body)
        time.sleep(settle)
        won = _read(fs, path)
        if won is None or won.get("token") != lease.token:
            raise _refusal(shown, won or {})
    lease.start_renewing()
    return lease


def _refusal(shown: str, found: dict[str, Any]) -> LeaseError:
    expires = found.get("expires")
    until = f"; its lease ends at {_stamp(float(expires))} unless renewed" if isinstance(expires, (int, float)) else ""
    return LeaseError(
        f"Another run is writing to the output {shown} ({_holder(found)}{until}). Two runs into one output would "
        f"compute the same files twice: wait for it to finish (then run again to resume, if needed), or write to "
        f"another --output. If that run is dead, its lease expires within {TTL_S:g} s of its last renewal; "
        f"deleting {shown}/{LEASE} frees it at once."
    )


def _holder(found: dict[str, Any]) -> str:
    renewed = found.get("renewed")
    when = f", renewed {_stamp(float(renewed))}" if isinstance(renewed, (int, float)) else ""
    return f"host {found.get('host', '?')}, pid {found.get('pid', '?')}{when}"


def _alive(found: dict[str, Any]) -> bool:
    """Whether the lease ``found`` still binds: not expired, and its holder not known dead."""
    expires = found.get("expires")
    if not isinstance(expires, (int, float)) or expires <= _now():
        return False
    if found.get("host") == socket.gethostname() and isinstance(found.get("pid"), int):
        return _pid_alive(found["pid"])
    return True


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # an earlier run in this process that did not release it (it ended with an error)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lease_path(output: str, storage_options: dict[str, Any]) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, root = filesystem(output, storage_options)
    return fs, join_url(root, LEASE)


def _read(fs: fsspec.AbstractFileSystem, path: str) -> Optional[dict[str, Any]]:
    try:
        data = retry(lambda: fs.cat_file(path), f"read {path}")
    except FileNotFoundError:
        return None
    try:
        found = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}  # cut short by a crash: expired
    return found if isinstance(found, dict) else {}


def _write(fs: fsspec.AbstractFileSystem, path: str, body: dict[str, Any]) -> None:
    from jobs.output import put_atomic

    data = (json.dumps(body, sort_keys=True) + "\n").encode()
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    retry(lambda: put_atomic(fs, path, data), f"write {path}")


def _create_exclusive(path: str, body: dict[str, Any]) -> bool:
    """Create the local lease file only if none exists (False: another run just did)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(handle, "w") as out:
        out.write(json.dumps(body, sort_keys=True) + "\n")
    return True
