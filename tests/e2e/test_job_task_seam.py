"""The task seam is real: a task defined in the test tree only (tests/task_token_stats.py)
runs through the real pipeline, its option on the command line, without any edit in jobs/."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from conftest import REPO

pytestmark = pytest.mark.slow

TASK = "task_token_stats:TokenStatsTask"
TEXTS = ["a short one", "rivers run to the sea under the old stone bridge", "x", "two words"]


def test_a_task_from_the_test_tree_runs_through_the_pipeline(minilm: str, tmp_path: Path) -> None:
    from transformers import AutoModel as ReferenceModel
    from transformers import AutoTokenizer as ReferenceTokenizer

    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"text": TEXTS[:2]}), tmp_path / "in" / "part-0.parquet")
    pq.write_table(pa.table({"text": TEXTS[2:]}), tmp_path / "in" / "part-1.parquet")
    tests_dir = str(REPO / "tests")
    # The job and its Ray workers import the task's module from PYTHONPATH.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests_dir, str(REPO)]), "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    help_text = subprocess.run([sys.executable, "-m", "jobs.infer", "--task", TASK, "--help"], cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=120).stdout
    assert "options of --task token-stats" in help_text and "--norm-scale X" in help_text
    job = subprocess.run(
        [sys.executable, "-m", "jobs.infer", "--task", TASK, "--model", minilm, "--input", str(tmp_path / "in"),
         "--output", str(tmp_path / "out"), "--norm-scale", "2", "--actors", "2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert job.returncode == 0, job.stdout[-2000:] + job.stderr[-5000:]
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["task"]["name"] == "token-stats" and manifest["identity"]["norm_scale"] == 2.0
    table = pa.concat_tables([pq.read_table(tmp_path / "out" / f"part-{k}.parquet") for k in range(2)])
    assert table.column_names == ["id", "tokens", "first_token", "token_ids", "token_norms", "truncated"]
    assert table.schema.field("token_norms").type == pa.list_(pa.float32())

    tokenizer = ReferenceTokenizer.from_pretrained(minilm)
    reference = ReferenceModel.from_pretrained(minilm).eval()
    for row, text in enumerate(TEXTS):
        ids = tokenizer(text)["input_ids"]
        with torch.no_grad():
            hidden = reference(torch.tensor([ids])).last_hidden_state[0]
        assert table["tokens"][row].as_py() == len(ids)
        assert table["first_token"][row].as_py() == ids[0] == tokenizer.cls_token_id
        assert table["token_ids"][row].as_py() == ids
        np.testing.assert_allclose(table["token_norms"][row].as_py(), 2 * hidden.norm(dim=-1).numpy(), rtol=1e-4)
