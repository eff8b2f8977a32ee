"""Transformer-XL through the job (real Ray, Parquet in and out): ``score`` of texts tokenized
by our TransfoXLTokenizer, through the adaptive softmax, equal to transformers 4.37.2's
log-probabilities of each row run alone (tests/fixtures/transfo_xl/score.json), so rows
batched together share no memory; tasks the contract does not declare are refused before Ray."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.infer import run_job
from jobs.model import ModelError
from jobs.spec import parse_spec

pytestmark = [pytest.mark.slow]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "transfo_xl"
GOLDEN = json.loads((FIXTURES / "score.json").read_text(encoding="utf-8"))


def job(*argv: str) -> dict:
    return run_job(parse_spec(list(argv)))


@pytest.mark.usefixtures("ray_local")
def test_score_job_equals_the_reference_through_the_adaptive_softmax(tmp_path: Path) -> None:
    rows = GOLDEN["rows"]
    (tmp_path / "in").mkdir()
    half = len(rows) // 2
    for shard, part in enumerate((rows[:half], rows[half:])):
        pq.write_table(pa.table({"text": [r["text"] for r in part]}), tmp_path / "in" / f"part-{shard}.parquet")
    manifest = job("--task", "score", "--model", str(FIXTURES / GOLDEN["model"]), "--input", str(tmp_path / "in"),
                   "--output", str(tmp_path / "out"), "--return-token-logprobs")
    assert manifest["model"]["model_class"] == "TransfoXLLMHeadModel"
    table = pa.concat_tables([pq.read_table(tmp_path / "out" / f"part-{k}.parquet") for k in range(2)])
    assert table.num_rows == len(rows)
    for row, want in enumerate(rows):
        assert table["scored_tokens"][row].as_py() == len(want["ids"]) - 1
        np.testing.assert_allclose(table["token_logprobs"][row].as_py(), want["token_logprobs"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(table["logprob_sum"][row].as_py(), want["logprob_sum"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(table["perplexity"][row].as_py(),
                                   np.exp(-want["logprob_sum"] / (len(want["ids"]) - 1)), rtol=1e-5)


@pytest.mark.parametrize("task", ["generate", "embed"])
def test_tasks_the_contract_does_not_declare_are_refused_before_ray(task: str, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"text": ["the cat"]}), tmp_path / "in" / "part-0.parquet")
    with pytest.raises(ModelError, match=r"transfo-xl serves only --task score"):
        job("--task", task, "--model", str(FIXTURES / GOLDEN["model"]), "--input", str(tmp_path / "in"),
            "--output", str(tmp_path / "out"))
