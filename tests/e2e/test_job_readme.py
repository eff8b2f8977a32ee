"""What the README and cluster.yaml promise: the demo command runs as written; the cluster
config is one Ray's launcher accepts, with autoscaling GPU workers and the project installed."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from conftest import REPO


def readme_command(after: str) -> str:
    """The first fenced bash command after the line containing ``after``."""
    text = (REPO / "README.md").read_text()
    match = re.search(re.escape(after) + r".*?```bash\n(.*?)\n```", text, re.S)
    assert match, f"README has no bash block after {after!r}"
    return match.group(1).strip()


def test_readme_has_exactly_the_two_set_up_commands() -> None:
    setup = (REPO / "README.md").read_text().split("## Set up and run", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)\n```", setup, re.S)
    assert blocks[1:] == ["python -m jobs.infer", "python -m pytest -q"]
    assert "pip install" in blocks[0]


@pytest.mark.slow
def test_the_readme_demo_command_runs_on_a_fresh_directory(tmp_path: Path) -> None:
    """As a new user: no sample data, no output yet; the command creates both and prints a summary."""
    command = shlex.split(readme_command("Run the demo"))
    assert command[0] == "python"
    # RAY_ADDRESS=local: a Ray of its own even if another runs on this machine (as for a new user).
    env = {**os.environ, "RAY_ADDRESS": "local", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, *command[1:]], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    summary = result.stdout
    assert re.search(r"embed: 2,000 rows from 4 input file\(s\) → \S*/demo_output \(4 file\(s\)", summary), summary
    assert re.search(r"[\d,.]+ rows/s, [\d,]+ tok/s", summary) and "padding" in summary, summary
    assert sorted(p.name for p in (tmp_path / "data" / "sample").iterdir()) == [f"part-000{i}.parquet" for i in range(4)]
    output = tmp_path / "demo_output"
    assert (output / "_SUCCESS").exists() and (output / "_manifest.json").exists()
    table = pq.read_table(output / "part-0000.parquet")
    assert table.num_rows == 500 and str(table.schema.field("embedding").type) == "fixed_size_list<element: float>[384]"


def test_cluster_yaml_is_a_valid_ray_cluster_config() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(prepare_config(config))  # Ray's own schema and defaults, as `ray up` does
    assert config["provider"]["type"] == "aws"
    head = config["available_node_types"][config["head_node_type"]]
    assert head["node_config"]["InstanceType"].startswith(("m", "c"))  # a CPU head
    gpu_workers = [t for name, t in config["available_node_types"].items()
                   if name != config["head_node_type"] and t["node_config"]["InstanceType"].startswith(("g", "p"))]
    assert gpu_workers and gpu_workers[0]["min_workers"] == 0 and gpu_workers[0]["max_workers"] >= 1
    assert any("-e ~/autoinfer" in c for c in config["setup_commands"]) and config["file_mounts"]["~/autoinfer"] == "."
    assert all("RAY_AUTH_MODE=token" in " ".join(config[k]) for k in ("head_start_ray_commands", "worker_start_ray_commands"))
    assert "ray up cluster.yaml" in (REPO / "README.md").read_text()
