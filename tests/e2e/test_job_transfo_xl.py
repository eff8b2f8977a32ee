"""Transformer-XL through the job (real Ray, Parquet in and out): ``score`` of texts tokenized
by our TransfoXLTokenizer, through the adaptive softmax, equal to transformers 4.37.2's
log-probabilities of each row run alone (tests/fixtures/transfo_xl/score.json), so rows
batched together share no memory; greedy ``generate`` equal to 4.37.2's generate of each prompt
alone (generate.json); tasks the contract does not declare are refused before Ray (embed and
classify: tests/actors/test_transfo_xl_stages.py)."""
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
GENERATED = json.loads((FIXTURES / "generate.json").read_text(encoding="utf-8"))


def job(*argv: str) -> dict:
    return run_job(parse_spec(list(argv)))


@pytest.mark.usefixtures("ray_local")
def test_score_job_equals_the_reference_through_the_adaptive_softmax(tmp_path: Path) -> None:
    rows = GOLDEN["rows"]
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"text": [r["text"] for r in rows]}), tmp_path / "in" / "part-0.parquet")
    manifest = job("--task", "score", "--model", str(FIXTURES / GOLDEN["model"]), "--input", str(tmp_path / "in"),
                   "--output", str(tmp_path / "out"), "--return-token-logprobs")
    assert manifest["model"]["model_class"] == "TransfoXLLMHeadModel"
    table = pq.read_table(tmp_path / "out" / "part-0.parquet")  # one block: the rows ran batched together
    assert table.num_rows == len(rows)
    for row, want in enumerate(rows):
        assert table["scored_tokens"][row].as_py() == len(want["ids"]) - 1
        np.testing.assert_allclose(table["token_logprobs"][row].as_py(), want["token_logprobs"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(table["logprob_sum"][row].as_py(), want["logprob_sum"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(table["perplexity"][row].as_py(),
                                   np.exp(-want["logprob_sum"] / (len(want["ids"]) - 1)), rtol=1e-5)


@pytest.mark.usefixtures("ray_local")
def test_generate_job_greedy_equals_the_reference_generate_of_each_prompt_alone(tmp_path: Path) -> None:
    rows = GENERATED["rows"]
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"text": [r["prompt"] for r in rows]}), tmp_path / "in" / "part-0.parquet")
    job("--task", "generate", "--model", str(FIXTURES / GENERATED["model"]), "--input", str(tmp_path / "in"),
        "--output", str(tmp_path / "out"), "--max-new-tokens", str(GENERATED["max_new_tokens"]))
    table = pq.read_table(tmp_path / "out" / "part-0.parquet")
    for row, want in enumerate(rows):
        ended = GENERATED["eos_token_id"] in want["new_ids"]
        assert table["generated_text"][row].as_py() == want["text"]
        assert table["generated_tokens"][row].as_py() == len(want["new_ids"])
        assert table["finish_reason"][row].as_py() == ("eos" if ended else "length")


@pytest.mark.parametrize("task", ["fill-mask", "ner", "qa"])
def test_tasks_the_contract_does_not_declare_are_refused_before_ray(task: str, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"text": ["the cat"]}), tmp_path / "in" / "part-0.parquet")
    with pytest.raises(ModelError, match=rf"--task {task} can't run on .*transfo-xl") as err:
        job("--task", task, "--model", str(FIXTURES / GOLDEN["model"]), "--input", str(tmp_path / "in"),
            "--output", str(tmp_path / "out"))
    if task != "fill-mask":  # (fill-mask's own check, an encoder's task, refuses first)
        assert "transfo-xl serves only --task embed, classify, score, generate" in str(err.value)
