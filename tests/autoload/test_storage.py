"""Storage helpers without servers: which errors are retried and how, the final error, masking of
credentials, and model downloads that survive a flaky filesystem."""
from __future__ import annotations

import errno
import logging
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from autoload import storage
from autoload.storage import RetryPolicy, StorageError, is_transient, redact_options, redact_text, retry, secret_values

FAST = RetryPolicy(attempts=4, first_delay=0.001, max_delay=0.002)


class ClientError(Exception):
    """Shaped like botocore's: an error response with a code and an HTTP status."""

    def __init__(self, code: str, status: int) -> None:
        super().__init__(f"An error occurred ({code})")
        self.response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}


class EndpointConnectionError(Exception):
    """Named like botocore's: recognised by name, no botocore import needed."""


def _wrapped(cause: BaseException) -> OSError:
    """As s3fs translates a client error: an OSError whose cause is the original."""
    err = OSError(errno.EIO, "translated")
    err.__cause__ = cause
    return err


@pytest.mark.parametrize("err", [
    ConnectionResetError("reset by peer"), ConnectionRefusedError("refused"), TimeoutError("timed out"),
    OSError(errno.ETIMEDOUT, "timed out"), EndpointConnectionError("Could not connect"),
    ClientError("SlowDown", 503), ClientError("InternalError", 500), ClientError("Throttling", 400),
    _wrapped(ClientError("ServiceUnavailable", 503)), _wrapped(ConnectionResetError("reset")),
])
def test_transient_errors(err: BaseException) -> None:
    assert is_transient(err)


@pytest.mark.parametrize("err", [
    FileNotFoundError("no such key"), PermissionError("denied"), ValueError("corrupt"),
    ClientError("AccessDenied", 403), ClientError("NoSuchKey", 404), _wrapped(ClientError("NoSuchBucket", 404)),
    StorageError("already retried"),
])
def test_permanent_errors(err: BaseException) -> None:
    assert not is_transient(err)


def test_retry_succeeds_after_transient_failures(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("connection reset by peer")
        return "done"

    with caplog.at_level(logging.WARNING):
        assert retry(flaky, "write s3://bucket/out/part-0.parquet", FAST) == "done"
    assert len(calls) == 3
    assert caplog.text.count("write s3://bucket/out/part-0.parquet: ConnectionResetError") == 2
    assert "attempt 2 of 4" in caplog.text


def test_retry_gives_up_naming_the_object() -> None:
    calls = []

    def down() -> None:
        calls.append(1)
        raise ClientError("SlowDown", 503)

    with pytest.raises(StorageError, match=r"read s3://bucket/in/part-7\.parquet failed 4 times over \d+ s with transient "
                                           r"storage errors, the last: ClientError: .*SlowDown.*Check that the storage"):
        retry(down, "read s3://bucket/in/part-7.parquet", FAST)
    assert len(calls) == 4


def test_retry_raises_permanent_errors_at_once() -> None:
    calls = []

    def missing() -> None:
        calls.append(1)
        raise FileNotFoundError("s3://bucket/in/gone.parquet")

    with pytest.raises(FileNotFoundError):
        retry(missing, "read s3://bucket/in/gone.parquet", FAST)
    assert len(calls) == 1


def test_backoff_grows_exponentially_with_jitter() -> None:
    policy = RetryPolicy(attempts=6, first_delay=0.5, max_delay=4.0)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 4.0)]:
        delays = [policy.delay(attempt) for _ in range(200)]
        assert ceiling / 2 <= min(delays) and max(delays) <= ceiling
        assert len(set(delays)) > 100  # jittered: workers don't retry in lockstep


def test_redaction() -> None:
    options = {"key": "AKIAEXAMPLE", "secret": "s3cr3t-value", "endpoint_url": "http://minio:9000",
               "client_kwargs": {"region_name": "us-east-1", "aws_session_token": "tok-123456"},
               "config_kwargs": {"signature_version": "s3v4"}}
    assert redact_options(options) == {
        "key": "***", "secret": "***", "endpoint_url": "http://minio:9000",
        "client_kwargs": {"region_name": "us-east-1", "aws_session_token": "***"},
        "config_kwargs": {"signature_version": "s3v4"}}
    assert sorted(secret_values(options)) == ["AKIAEXAMPLE", "s3cr3t-value", "tok-123456"]
    assert redact_text("https://alice:pa55word@models.example.com/bert/config.json") == \
        "https://***@models.example.com/bert/config.json"
    assert redact_text("GET https://b.s3.amazonaws.com/m.bin?X-Amz-Credential=AK%2F1&X-Amz-Signature=abc&part=2") == \
        "GET https://b.s3.amazonaws.com/m.bin?X-Amz-Credential=***&X-Amz-Signature=***&part=2"
    assert redact_text("abfs://c/x?sv=2020&sig=Zm9v") == "abfs://c/x?sv=2020&sig=***"
    assert redact_text("denied for s3cr3t-value", secrets=["s3cr3t-value"]) == "denied for ***"
    assert redact_text("s3://bucket/path/file@v2.parquet") == "s3://bucket/path/file@v2.parquet"


class FlakyMemoryFileSystem(MemoryFileSystem):
    """The in-memory filesystem, except that its first reads of each file fail like a dropped connection."""

    protocol = "flakymem"
    failures: dict[str, int] = {}
    failures_per_file = 2

    @classmethod
    def _strip_protocol(cls, path):
        if isinstance(path, str) and path.startswith("flakymem://"):
            path = "memory://" + path[len("flakymem://"):]
        return super()._strip_protocol(path)

    def cat_file(self, path, start=None, end=None, **kwargs):
        self._maybe_fail(path)
        return super().cat_file(path, start=start, end=end, **kwargs)

    def _open(self, path, mode="rb", **kwargs):
        if "r" in mode:
            self._maybe_fail(path)
        return super()._open(path, mode=mode, **kwargs)

    def _maybe_fail(self, path: str) -> None:
        count = self.failures.get(path, 0)
        if count < self.failures_per_file:
            self.failures[path] = count + 1
            raise ConnectionResetError(errno.ECONNRESET, f"connection reset while reading {path}")


@pytest.fixture
def flaky_model(minilm: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(storage, "DEFAULT_RETRY", FAST)
    fsspec.register_implementation("flakymem", FlakyMemoryFileSystem, clobber=True)
    FlakyMemoryFileSystem.failures.clear()
    fs = fsspec.filesystem("flakymem")
    for path in Path(minilm).rglob("*"):
        if path.is_file():
            fs.pipe(f"/models/minilm/{path.relative_to(minilm)}", path.read_bytes())
    yield "flakymem://models/minilm"
    fs.rm("/models", recursive=True)


def test_model_download_survives_dropped_connections(flaky_model: str, minilm: str, tmp_path: Path) -> None:
    from autoload import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(flaky_model, cache_dir=tmp_path / "cache")
    assert AutoTokenizer.from_pretrained(flaky_model, cache_dir=tmp_path / "cache").backend.get_vocab_size() == 30522
    cached = next((tmp_path / "cache").rglob("model.safetensors"))
    assert cached.read_bytes() == (Path(minilm) / "model.safetensors").read_bytes()
    assert FlakyMemoryFileSystem.failures["/models/minilm/model.safetensors"] == 2  # failed twice, then retried
    assert type(model).__name__ == "BertModel"


def test_model_download_that_keeps_failing_names_the_file(flaky_model: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from autoload import AutoConfig

    monkeypatch.setattr(FlakyMemoryFileSystem, "failures_per_file", 100)
    with pytest.raises(StorageError, match=r"download /models/minilm/config\.json failed 4 times .*ConnectionResetError"):
        AutoConfig.from_pretrained(flaky_model, cache_dir=tmp_path / "cache")
