"""Resolve a model reference (directory, file, fsspec URL or cached name) to local files.

Every loader in autoload asks a :class:`ModelSource` for files by name; the source decides
where they come from.  Remote files (``s3://``, ``gs://``, ``http(s)://`` ...) are copied once
into a local cache under a file lock, so many processes on a node share one download; storage
calls retry transient errors (:mod:`autoload.storage`), and URLs in messages have their
credentials masked.  Hub
names are looked up in the local caches; a hub fetcher can be registered with
:func:`register_name_resolver` without touching any loader.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import fsspec
from filelock import FileLock

from .storage import object_version, redact_text, retry, scoped_options

logger = logging.getLogger(__name__)

_CHUNK = 8 << 20


def default_cache_dir() -> Path:
    """``$AUTOINFER_CACHE`` or ``~/.cache/autoinfer``."""
    return Path(os.environ.get("AUTOINFER_CACHE", Path.home() / ".cache" / "autoinfer"))


def _hf_hub_cache() -> Path:
    if "HF_HUB_CACHE" in os.environ:
        return Path(os.environ["HF_HUB_CACHE"])
    hf_home = os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")
    return Path(hf_home) / "hub"


@dataclass
class FetchOptions:
    """The download options of the reference API, carried to wherever they apply."""

    cache_dir: Optional[Path] = None
    force_download: bool = False
    resume_download: bool = False
    proxies: Optional[dict] = None
    local_files_only: bool = False
    revision: Optional[str] = None
    storage_options: dict = field(default_factory=dict)

    @classmethod
    def pop_from(cls, kwargs: dict) -> "FetchOptions":
        """Take the fetch options out of a kwargs dict (the rest stays for the caller)."""
        cache_dir = kwargs.pop("cache_dir", None)
        return cls(
            cache_dir=cache_dir or None,
            force_download=bool(kwargs.pop("force_download", False)),
            resume_download=bool(kwargs.pop("resume_download", False) or False),
            proxies=kwargs.pop("proxies", None),
            local_files_only=bool(kwargs.pop("local_files_only", False)),
            revision=kwargs.pop("revision", None),
            storage_options=dict(kwargs.pop("storage_options", None) or {}),
        )

    def __post_init__(self) -> None:
        if self.cache_dir is not None:
            self.cache_dir = Path(self.cache_dir)

    @property
    def cache_root(self) -> Path:
        return self.cache_dir or default_cache_dir()


class ModelSource:
    """Files of one model reference, by file name, as local paths."""

    def __init__(self, reference: str, local_dir: Optional[Path], single_file: Optional[Path] = None):
        self.reference = reference
        self.local_dir = local_dir
        self.single_file = single_file

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reference!r})"

    def has(self, filename: str) -> bool:
        return self.local_dir is not None and (self.local_dir / filename).is_file()

    def fetch(self, filename: str) -> Path:
        """The local path of ``filename``; raises FileNotFoundError naming where it looked."""
        if not self.has(filename):
            raise FileNotFoundError(f"{filename} not found in {self.where()}")
        return self.local_dir / filename

    def fetch_optional(self, filename: str) -> Optional[Path]:
        return self.fetch(filename) if self.has(filename) else None

    def where(self) -> str:
        return str(self.local_dir) if self.local_dir else self.reference


class RemoteSource(ModelSource):
    """A directory or file on an fsspec filesystem, mirrored file by file into the cache."""

    def __init__(self, url: str, fs: fsspec.AbstractFileSystem, root: str, is_file: bool, options: FetchOptions):
        digest = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:20]
        self.cache = options.cache_root / "remote" / digest
        super().__init__(url, self.cache)
        self.fs, self.root, self.options = fs, root.rstrip("/"), options
        self.remote_dir = self.root.rsplit("/", 1)[0] if is_file else self.root
        self._listing: Optional[set[str]] = None
        if is_file:
            self.single_file = self.fetch(self.root.rsplit("/", 1)[-1])

    def where(self) -> str:
        return redact_text(self.reference)

    def _names(self) -> set[str]:
        if self._listing is None:
            try:
                entries = retry(lambda: self.fs.ls(self.remote_dir, detail=False), f"list {self.where()}")
            except FileNotFoundError:
                entries = []
            self._listing = {e.rstrip("/").rsplit("/", 1)[-1] for e in entries}
        return self._listing

    def has(self, filename: str) -> bool:
        if (self.cache / filename).is_file() and not self.options.force_download:
            return True
        if "/" in filename:  # nested (1_Pooling/config.json): not in the top-level listing
            remote = f"{self.remote_dir}/{filename}"
            return retry(lambda: self.fs.isfile(remote), f"look up {remote}")
        return filename in self._names()

    def fetch(self, filename: str) -> Path:
        """The cached copy, downloaded first if missing, forced, or changed on the remote side."""
        target = self.cache / filename
        remote = f"{self.remote_dir}/{filename}"
        version = self._remote_version(remote) if target.is_file() else None
        if self._is_current(target, version):
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target) + ".lock"):
            # Another process may have finished the download while we waited for the lock.
            if self._is_current(target, version):
                return target
            if not retry(lambda: self.fs.isfile(remote), f"look up {remote}"):
                raise FileNotFoundError(f"{filename} not found in {self.where()} (looked for {redact_text(remote)})")
            retry(lambda: self._download(remote, target), f"download {remote}")
            _version_file(target).write_text(self._remote_version(remote) or "")
        return target

    def _is_current(self, target: Path, version: Optional[str]) -> bool:
        if not target.is_file() or self.options.force_download:
            return False
        if self.options.local_files_only or version is None:
            return True  # offline, or the remote cannot tell: the cached copy stands
        recorded = _version_file(target)
        return recorded.is_file() and recorded.read_text() == version

    def _remote_version(self, remote: str) -> Optional[str]:
        """ETag / modification time and size of the remote object; None when unreachable.

        Not retried: with a cached copy at hand, waiting out an outage would only delay the load.
        """
        if self.options.local_files_only:
            return None
        try:
            info = self.fs.info(remote)
        except Exception as err:  # unreachable storage: fall back to the cache, say so
            logger.warning("can't check %s against the remote copy (%s); using the cached file", redact_text(remote),
                           redact_text(str(err)))
            return None
        return object_version(info)

    def _download(self, remote: str, target: Path) -> None:
        partial = target.with_name(target.name + ".incomplete")
        offset = partial.stat().st_size if (self.options.resume_download and partial.exists()) else 0
        logger.info("downloading %s → %s%s", redact_text(remote), target, f" (resuming at {offset} bytes)" if offset else "")
        with self.fs.open(remote, "rb") as src, open(partial, "ab" if offset else "wb") as dst:
            if offset:
                src.seek(offset)
            shutil.copyfileobj(src, dst, _CHUNK)
        os.replace(partial, target)


def _version_file(target: Path) -> Path:
    return target.with_name(target.name + ".version")


# A resolver takes (name, options) and returns a ModelSource or None.  The hub fetcher of a
# later release registers itself here; local caches are always tried first.
_name_resolvers: list[Callable[[str, FetchOptions], Optional[ModelSource]]] = []


def register_name_resolver(resolver: Callable[[str, FetchOptions], Optional[ModelSource]]) -> None:
    _name_resolvers.append(resolver)


def _cached_name(name: str, options: FetchOptions) -> Optional[ModelSource]:
    """A model name found in our cache (``models/<org>--<name>``) or a Hugging Face hub cache."""
    ours = options.cache_root / "models" / name.replace("/", "--")
    if ours.is_dir():
        return ModelSource(name, ours)
    hub_repo = _hf_hub_cache() / ("models--" + name.replace("/", "--"))
    ref_file = hub_repo / "refs" / (options.revision or "main")
    if ref_file.is_file():
        snapshot = hub_repo / "snapshots" / ref_file.read_text().strip()
        if snapshot.is_dir():
            return ModelSource(name, snapshot)
    if options.revision and (hub_repo / "snapshots" / options.revision).is_dir():
        return ModelSource(name, hub_repo / "snapshots" / options.revision)
    return None


def _storage_options(url: str, options: FetchOptions) -> dict[str, Any]:
    storage = scoped_options(url, options.storage_options)
    if options.proxies:
        protocol = url.split("://", 1)[0]
        if protocol in ("s3", "s3a"):
            config_kwargs = dict(storage.get("config_kwargs", {}))
            config_kwargs.setdefault("proxies", options.proxies)
            storage["config_kwargs"] = config_kwargs
        else:
            logger.info("proxies do not apply to %s:// URLs; set them in storage_options", protocol)
    return storage


def open_source(reference: "str | os.PathLike | ModelSource", options: Optional[FetchOptions] = None) -> ModelSource:
    """Resolve a directory, file, fsspec URL or model name into a :class:`ModelSource`
    (an already opened source is returned as it is)."""
    if isinstance(reference, ModelSource):
        return reference
    options = options or FetchOptions()
    ref = os.fspath(reference)
    if ref.startswith("file://"):
        ref = ref[len("file://"):]
    if "://" not in ref:
        path = Path(ref).expanduser()
        if path.is_dir():
            return ModelSource(ref, path)
        if path.is_file():
            return ModelSource(ref, path.parent, single_file=path)
        if not options.force_download:
            cached = _cached_name(ref, options)
            if cached is not None:
                return cached
        for resolver in _name_resolvers:
            found = None if options.local_files_only else resolver(ref, options)
            if found is not None:
                return found
        raise OSError(
            f"Can't find model {ref!r}: it is not a local directory or file, not a URL, and not in "
            f"the local caches ({options.cache_root / 'models'}, {_hf_hub_cache()}). Hub downloads "
            "are not available in this build: pass a directory, a file, or an fsspec URL such as "
            "s3://bucket/model/ or file:///path/to/model."
        )
    fs, root = fsspec.core.url_to_fs(ref, **_storage_options(ref, options))
    shown = redact_text(ref)
    try:
        is_file, exists = retry(lambda: _kind(fs, root), f"look up model location {ref}")
    except Exception as err:  # storage errors come in many types; name the URL in any case
        raise OSError(f"Can't reach model location {shown}: {type(err).__name__}: {redact_text(str(err))}") from err
    if not exists:
        raise OSError(f"Can't find model {shown}: no such file or directory on {fs.protocol}")
    return RemoteSource(ref, fs, root, is_file, options)


def _kind(fs: fsspec.AbstractFileSystem, path: str) -> tuple[bool, bool]:
    """(is a file, exists) of a remote path.  A path ending in ``/`` names a directory: over
    HTTP a directory's index page would pass for a file."""
    if path.endswith("/"):
        return False, fs.isdir(path)
    is_file = fs.isfile(path)
    return is_file, is_file or fs.isdir(path)
