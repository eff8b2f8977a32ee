"""`ray job submit` end to end: a local Ray head started by the test, the repository as the
working directory, input and output on the suite's S3 server (credentials via env vars, as on
a cluster), then the head is stopped — only that head, found by its own temp directory."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import REPO, free_ports, processes_using, venv_bin

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_head() -> Iterator[tuple[str, dict[str, str]]]:
    """A Ray head on 127.0.0.1 (free ports, its own temp dir); yields the job API URL and the env to use."""
    # A short temp dir: Ray's unix socket paths must stay under ~107 characters.
    temp_dir = tempfile.mkdtemp(prefix="rayh-", dir="/tmp")
    gcs, dashboard, client, agent, agent_grpc, metrics, runtime_env = free_ports(7)
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",  # Ray 2.60 would otherwise demand a token from the CLI calls
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",  # stop at once on SIGTERM instead of draining 30 s
        # The job's entrypoint runs in the head's environment: `python` must be this venv's.
        "PATH": f"{Path(venv_bin('ray')).parent}:{os.environ.get('PATH', '')}",
    }
    env.pop("RAY_ADDRESS", None)
    command = [
        venv_bin("ray"), "start", "--head", "--block", f"--temp-dir={temp_dir}", "--node-ip-address=127.0.0.1",
        f"--port={gcs}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
        "--num-cpus=2", "--disable-usage-stats",
    ]
    log = open(Path(temp_dir) / "head.log", "wb")
    head = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        _wait_for_job_api(address, head, Path(temp_dir) / "head.log")
        yield address, env
    finally:
        head.send_signal(signal.SIGTERM)  # --block: the head stops every process it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        deadline = time.monotonic() + 30
        while processes_using(temp_dir) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in processes_using(temp_dir):  # stragglers of this head only
            os.kill(pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for_job_api(address: str, head: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if head.poll() is not None:
            pytest.fail(f"ray start exited ({head.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{address}/api/version", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the Ray head's job API did not answer on {address} within {timeout} s:\n{log.read_text()[-3000:]}")


def test_ray_job_submit_end_to_end(ray_head, s3_server, minilm: str, tmp_path: Path) -> None:
    address, env = ray_head
    fs = s3_server.filesystem()
    rows = [f"sentence number {n} about rivers and mountains" for n in range(60)]
    for shard in range(3):
        local = tmp_path / f"part-{shard}.parquet"
        pq.write_table(pa.table({"text": rows[shard * 20:(shard + 1) * 20]}), local)
        fs.put(str(local), f"{s3_server.bucket}/submit/in/part-{shard}.parquet")
    submission = f"autoinfer-test-{os.getpid()}"
    runtime_env = {"env_vars": s3_server.env}
    submit = subprocess.run(
        [venv_bin("ray"), "job", "submit", "--address", address, "--submission-id", submission,
         "--working-dir", str(REPO), "--runtime-env-json", json.dumps(runtime_env), "--",
         "python", "-m", "jobs.infer", "--model", minilm, "--input", f"s3://{s3_server.bucket}/submit/in/",
         "--output", f"s3://{s3_server.bucket}/submit/out", "--actors", "2"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    status = subprocess.run([venv_bin("ray"), "job", "status", "--address", address, submission],
                            env=env, capture_output=True, text=True, timeout=60)
    assert f"Job '{submission}' succeeded" in status.stdout, submit.stdout[-5000:] + submit.stderr[-3000:] + status.stdout
    assert "embed: 60 rows from 3 input file(s)" in submit.stdout

    out = f"{s3_server.bucket}/submit/out"
    assert fs.exists(f"{out}/_SUCCESS")
    manifest = json.loads(fs.cat(f"{out}/_manifest.json"))
    assert [s["outputs"] for s in manifest["shards"]] == [[f"part-{i}.parquet"] for i in range(3)]
    with fs.open(f"{out}/part-2.parquet", "rb") as handle:
        table = pq.read_table(handle)
    assert table["id"].to_pylist() == [f"part-2.parquet#{n}" for n in range(20)]
    norms = np.linalg.norm(np.array(table["embedding"].to_pylist()), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)  # normalised, as the model's modules.json asks


# -- deploy/: the KubeRay manifests' exact entrypoint and runtime env through `ray job submit` --
DEPLOY = REPO / "deploy"


def _manifests() -> dict[str, list[dict]]:
    import yaml

    return {path.name: [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
            for path in sorted(DEPLOY.glob("*.yaml"))}


def test_deploy_manifests_describe_one_job() -> None:
    """The RayJob, the RayCronJob's template and the CronJob's ConfigMap all hold the same job;
    the fields a scheduled GPU run needs are set."""
    import yaml

    found = _manifests()
    rayjob = found["rayjob.yaml"][0]
    assert (rayjob["apiVersion"], rayjob["kind"]) == ("ray.io/v1", "RayJob")
    spec = rayjob["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0 and spec["backoffLimit"] >= 1
    assert spec["entrypoint"].startswith("python -m jobs.infer ")
    cluster = spec["rayClusterSpec"]
    assert cluster["enableInTreeAutoscaling"] is True and cluster["rayVersion"] == "2.60.0"
    gpu = [group for group in cluster["workerGroupSpecs"] if group["groupName"] == "gpu"][0]
    assert gpu["minReplicas"] == 0 < gpu["maxReplicas"]
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "--output s3://corpus/embeddings/{date}/" in spec["entrypoint"]
    assert "env_vars" in yaml.safe_load(spec["runtimeEnvYAML"])

    cron = found["raycronjob.yaml"][0]
    assert (cron["apiVersion"], cron["kind"]) == ("ray.io/v1", "RayCronJob") and cron["spec"]["schedule"]
    assert cron["spec"]["jobTemplate"] == spec  # the nightly run is the RayJob, unchanged

    kinds = {doc["kind"]: doc for doc in found["cronjob.yaml"]}
    pod = kinds["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == ["kubectl", "create", "-f", "/manifests/rayjob.yaml"]
    assert pod["volumes"][0]["configMap"]["name"] == "autoinfer-rayjob"
    assert kinds["Role"]["rules"] == [{"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create"]}]
    kustomization = found["kustomization.yaml"][0]
    assert kustomization["configMapGenerator"] == [{"name": "autoinfer-rayjob", "files": ["rayjob.yaml"]}]
    assert rayjob["metadata"].get("generateName")  # kubectl create makes a new RayJob each night


def test_deploy_rayjob_runs_nightly_into_dated_partitions(ray_head, s3_server, minilm: str, tmp_path: Path) -> None:
    """The RayJob's exact entrypoint and runtime env through `ray job submit`, on the test's S3
    server holding the buckets it names; the test adds only what the pods provide (endpoint,
    credentials) and the run date.  Two dates give two partitions; a rerun on the second date
    resumes it (every file committed already, nothing recomputed)."""
    import shlex

    import yaml

    address, env = ray_head
    spec = _manifests()["rayjob.yaml"][0]["spec"]
    entrypoint, runtime_env = spec["entrypoint"], yaml.safe_load(spec["runtimeEnvYAML"])
    argv = shlex.split(entrypoint)
    model, inputs, dated = (argv[argv.index(flag) + 1] for flag in ("--model", "--input", "--output"))
    fs = s3_server.filesystem()
    for bucket in {url[len("s3://"):].split("/")[0] for url in (model, inputs, dated)}:
        if not fs.exists(bucket):
            fs.mkdir(bucket)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "modules.json", "sentence_bert_config.json", "1_Pooling/config.json"):
        fs.put(str(Path(minilm) / name), f"{model[len('s3://'):]}{name}")
    rows = [f"night {n}: rivers and mountains" for n in range(24)]
    for shard in range(2):
        pq.write_table(pa.table({"text": rows[shard * 12:(shard + 1) * 12]}), tmp_path / f"part-{shard}.parquet")
        fs.put(str(tmp_path / f"part-{shard}.parquet"), f"{inputs[len('s3://'):]}part-{shard}.parquet")

    def pods_env(day: str) -> dict[str, str]:
        return {**runtime_env["env_vars"], **s3_server.env, "AUTOINFER_RUN_DATE": day}

    def partition(day: str) -> str:
        return dated.replace("{date}", day)[len("s3://"):].rstrip("/")

    tables = {}
    for day in ("2026-11-30", "2026-12-01"):
        submission = f"autoinfer-deploy-{day}-{os.getpid()}"
        submitted = {**runtime_env, "env_vars": pods_env(day), "working_dir": str(REPO)}
        run = subprocess.run([venv_bin("ray"), "job", "submit", "--address", address, "--submission-id", submission,
                              "--runtime-env-json", json.dumps(submitted), "--", *argv],
                             env=env, capture_output=True, text=True, timeout=600)
        status = subprocess.run([venv_bin("ray"), "job", "status", "--address", address, submission],
                                env=env, capture_output=True, text=True, timeout=60)
        assert f"Job '{submission}' succeeded" in status.stdout, run.stdout[-4000:] + run.stderr[-2000:]
        assert "embed: 24 rows from 2 input file(s)" in run.stdout
        assert fs.exists(f"{partition(day)}/_SUCCESS")
        assert json.loads(fs.cat(f"{partition(day)}/_manifest.json"))["job"]["run_date"] == day
        with fs.open(f"{partition(day)}/part-1.parquet", "rb") as handle:
            tables[day] = pq.read_table(handle)
    assert tables["2026-11-30"]["id"].to_pylist() == [f"part-1.parquet#{n}" for n in range(12)]
    np.testing.assert_allclose(np.array(tables["2026-11-30"]["embedding"].to_pylist()),
                               np.array(tables["2026-12-01"]["embedding"].to_pylist()), atol=1e-6)

    # A retry of 2026-12-01 (the RayJob's backoffLimit) resumes that day's partition: the same
    # entrypoint and env, run here; with every file committed it starts no Ray at all.
    rerun_env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    rerun = subprocess.run(argv, cwd=REPO, env={**rerun_env, **pods_env("2026-12-01")}, capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "every output file is committed already" in rerun.stderr
    manifest = json.loads(fs.cat(f"{partition('2026-12-01')}/_manifest.json"))
    assert sorted(name for shard in manifest["shards"] for name in shard["skipped"]) == ["part-0.parquet",
                                                                                         "part-1.parquet"]
