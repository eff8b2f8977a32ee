"""Storage helpers shared by autoload and the batch job: retrying transient errors, and masking
credentials before a URL, a set of storage options or an error message is logged, stored or raised.

Object stores fail transiently all the time (throttling, 5xx, a reset connection, a node being
replaced); one such hiccup must not end a job that has run for hours.  Every storage call of the
project goes through :func:`retry`; what is not transient (a missing object, a denied request,
a corrupt file) is raised at once.
"""
from __future__ import annotations

import errno
import logging
import random
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all; the wait before try n+1 is ``first_delay * 2**(n-1)`` (at most
    ``max_delay``) times a random factor in [0.5, 1], so many workers don't retry in lockstep."""

    attempts: int = 5
    first_delay: float = 0.5
    max_delay: float = 20.0

    def delay(self, attempt: int) -> float:
        return min(self.max_delay, self.first_delay * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


# With boto's own quick retries inside each attempt, the default rides out about a minute of
# unavailability (a restarted storage node, a throttling burst) before giving up.
DEFAULT_RETRY = RetryPolicy()


class StorageError(OSError):
    """A storage operation still failed after its retries; the message names the object."""


# Exception class names (anywhere in the class hierarchy) of connection-level failures in the
# clients behind fsspec (botocore, aiohttp, http.client, fsspec): matched by name so that no
# optional client library has to be importable.
_TRANSIENT_CLASSES = frozenset({
    "EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError",
    "HTTPClientError", "ResponseStreamingError", "IncompleteReadError", "IncompleteRead", "ResponseParserError",
    "ClientConnectionError", "ClientConnectorError", "ServerDisconnectedError", "ClientPayloadError",
    "ServerTimeoutError", "RemoteDisconnected", "FSTimeoutError",
})
# Error codes that S3 and its look-alikes use for throttling and server-side trouble.
_TRANSIENT_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
    "TooManyRequestsException", "RequestTimeout", "RequestTimeoutException", "InternalError",
    "ServiceUnavailable", "ServerBusy", "OperationAborted",
})
_TRANSIENT_ERRNOS = frozenset({
    errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EPIPE,
    errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.EAGAIN,
})


def _chain(err: BaseException) -> Iterable[BaseException]:
    """``err`` and its causes/contexts: clients wrap a socket error in their own exceptions."""
    seen: set[int] = set()
    current: Optional[BaseException] = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _http_status(err: BaseException) -> Optional[int]:
    response = getattr(err, "response", None)
    if isinstance(response, Mapping):  # botocore ClientError
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return status if isinstance(status, int) else None
    status = getattr(err, "status", None)  # aiohttp ClientResponseError (fsspec's http)
    return status if isinstance(status, int) else None


def _error_code(err: BaseException) -> Optional[str]:
    response = getattr(err, "response", None)
    if isinstance(response, Mapping):
        code = response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


def is_transient(err: BaseException) -> bool:
    """Whether retrying the operation may help: connection failures, timeouts, throttling, 5xx."""
    for link in _chain(err):
        if isinstance(link, StorageError):
            return False  # its retries already ran out; retrying again only multiplies the wait
        if isinstance(link, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
            return False
        if isinstance(link, (ConnectionError, TimeoutError)):
            return True
        if isinstance(link, OSError) and link.errno in _TRANSIENT_ERRNOS:
            return True
        if any(cls.__name__ in _TRANSIENT_CLASSES for cls in type(link).__mro__):
            return True
        status = _http_status(link)
        if status is not None and (status >= 500 or status == 429):
            return True
        if _error_code(link) in _TRANSIENT_CODES:
            return True
    return False


def retry(operation: Callable[[], T], what: str, policy: Optional[RetryPolicy] = None) -> T:
    """Run ``operation``; retry transient storage errors with exponential backoff and jitter.

    ``what`` names the operation and its object (``"write s3://b/out/part-0.parquet"``): it is in
    the warnings and in the final :class:`StorageError` (credentials masked).  Errors that are
    not transient are raised unchanged at the first failure.  ``policy`` defaults to
    ``DEFAULT_RETRY`` as it is when called.
    """
    policy = policy or DEFAULT_RETRY
    started = time.monotonic()
    for attempt in range(1, policy.attempts + 1):
        try:
            return operation()
        except Exception as err:
            if not is_transient(err):
                raise
            reason = redact_text(f"{type(err).__name__}: {err}")
            if attempt == policy.attempts:
                raise StorageError(
                    f"{redact_text(what)} failed {attempt} times over {time.monotonic() - started:.0f} s with "
                    f"transient storage errors, the last: {reason}. Check that the storage endpoint is reachable "
                    "and not throttling, then run again."
                ) from err
            delay = policy.delay(attempt)
            logger.warning("%s: %s (attempt %d of %d); retrying in %.1f s", redact_text(what), reason, attempt,
                           policy.attempts, delay)
            time.sleep(delay)
    raise AssertionError("unreachable: the loop returns or raises")


def object_version(info: Mapping[str, Any]) -> str:
    """An fsspec ``info()`` entry's version: ETag (or modification time) and size.  It changes
    when the object is rewritten, so cached copies and committed results can be checked against it."""
    stamp = next((info[k] for k in ("ETag", "etag", "mtime", "LastModified", "created") if info.get(k)), "")
    return f"{stamp}:{info.get('size')}"


# -- storage options per protocol --------------------------------------------------------------
# Protocols that take none of the object-store options given flat (credentials, an endpoint):
# they get only the options nested under their own name.
OWN_OPTIONS_ONLY = frozenset({"http", "https", "file", "local"})


def _protocol_aliases(protocol: str) -> tuple[str, ...]:
    """Every name of ``protocol``'s filesystem (``s3``/``s3a``, ``gs``/``gcs``, ``http``/``https``...)."""
    import fsspec

    try:
        names = fsspec.get_filesystem_class(protocol).protocol
    except (ImportError, ValueError):
        return (protocol,)
    return (names,) if isinstance(names, str) else tuple(names)


def _is_protocol(name: str) -> bool:
    import fsspec

    return name in fsspec.available_protocols()


def scoped_options(url: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The storage options that apply to ``url``.

    Options may be given flat (``{"key": ..., "endpoint_url": ...}``: for the object store the
    job reads and writes), nested per protocol (``{"s3": {...}, "http": {"headers": {...}}}``,
    fsspec's own convention for chained URLs), or both, the nested ones winning.  Flat options
    go to every protocol but http(s) and local paths, which take none of an object store's
    options (an S3 key handed to an HTTP client is an error).  A chained URL (``a::b://``) gets
    them all: fsspec hands each filesystem of the chain its own.
    """
    if "::" in url:
        return dict(options)
    protocol = url.split("://", 1)[0].lower() if "://" in url else "file"
    nested = {k for k, v in options.items() if isinstance(v, Mapping) and _is_protocol(str(k))}
    flat = {k: v for k, v in options.items() if k not in nested}
    found: dict[str, Any] = {} if protocol in OWN_OPTIONS_ONLY else flat
    aliases = _protocol_aliases(protocol)
    for key in sorted(nested):
        if key == protocol or key in aliases:
            found = {**found, **options[key]}
    return found


# -- credentials --------------------------------------------------------------------------------
MASK = "***"
# Words in a storage-option key whose value is a credential.
_SECRET_KEY_WORDS = ("secret", "key", "token", "password", "passwd", "credential", "session", "signature", "auth")
# Keys that contain such a word but hold no secret (an endpoint, a profile name, a version).
_PUBLIC_KEY_SUFFIXES = ("_url", "_name", "_version", "_path", "_file")
# user:password@ in a URL, and secret-looking query parameters (pre-signed URLs, SAS tokens).
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][\w+.-]*://)[^/\s@]+@")
_SECRET_QUERY = re.compile(r"(?P<name>[?&][^=&\s#]*(?:sig|signature|token|key|secret|credential|password)[^=&\s#]*=)"
                           r"[^&\s#]+", re.IGNORECASE)
_MIN_SECRET_LENGTH = 4  # shorter values would mask ordinary words


def _is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_KEY_WORDS) and not lowered.endswith(_PUBLIC_KEY_SUFFIXES)


def secret_values(options: Mapping[str, Any]) -> list[str]:
    """The credential strings in (nested) storage options, to mask wherever they might appear."""
    found: list[str] = []
    for key, value in options.items():
        if isinstance(value, Mapping):
            found.extend(secret_values(value))
        elif isinstance(value, str) and _is_secret_key(str(key)) and len(value) >= _MIN_SECRET_LENGTH:
            found.append(value)
    return found


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with URL passwords, secret query parameters and the given secret values masked."""
    text = _URL_USERINFO.sub(lambda m: m.group("scheme") + MASK + "@", text)
    text = _SECRET_QUERY.sub(lambda m: m.group("name") + MASK, text)
    for secret in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def redact_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Storage options safe to log or store: credential values masked, URLs in the rest cleaned."""
    safe: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, Mapping):
            safe[key] = redact_options(value)
        elif _is_secret_key(str(key)):
            safe[key] = MASK
        elif isinstance(value, str):
            safe[key] = redact_text(value)
        else:
            safe[key] = value
    return safe
