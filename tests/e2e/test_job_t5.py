"""T5 through the job (real Ray, Parquet in and out) on a tiny random checkpoint: embed (the
encoder alone, mean pooling), score (log p(target | source) = the reference loss x target tokens)
and generate text-to-text with beams (equal to the reference generate())."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from jobs.infer import run_job
from jobs.spec import parse_spec
from t5_data import tiny_t5

transformers = pytest.importorskip("transformers")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]

SOURCES = ["translate English to German: the house is small", "summarize: the quick brown fox jumps", "hello world",
           "a quiet village by the old stone bridge"]
TARGETS = ["das haus ist klein", "the fox", "hello", "a village"]


@pytest.fixture(scope="module")
def t5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_t5(tmp_path_factory.mktemp("t5"))


def _inputs(directory: Path, columns: dict[str, list]) -> Path:
    directory.mkdir(parents=True)
    for shard in range(2):
        pq.write_table(pa.table({k: v[shard * 2:(shard + 1) * 2] for k, v in columns.items()}),
                       directory / f"part-{shard}.parquet")
    return directory


def _outputs(directory: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(directory / f"part-{k}.parquet") for k in range(2)])


def job(*argv: str) -> dict:
    return run_job(parse_spec(list(argv)))


def test_t5_embed_score_and_generate_jobs(t5: Path, tmp_path: Path) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(t5)
    model = transformers.T5ForConditionalGeneration.from_pretrained(t5).eval()
    inputs = _inputs(tmp_path / "in", {"source": SOURCES, "target": TARGETS})

    manifest = job("--task", "embed", "--model", str(t5), "--input", str(inputs), "--output", str(tmp_path / "emb"),
                   "--text-column", "source")
    assert manifest["model"]["model_class"] == "T5EncoderModel"  # the encoder alone
    embeddings = np.array(_outputs(tmp_path / "emb")["embedding"].to_pylist())
    encoder = transformers.T5EncoderModel.from_pretrained(t5).eval()
    for row, source in enumerate(SOURCES):
        with torch.no_grad():
            expected = encoder(**tokenizer(source, return_tensors="pt")).last_hidden_state[0].mean(0)
        np.testing.assert_allclose(embeddings[row], expected.numpy(), rtol=1e-5, atol=1e-5)

    job("--task", "score", "--model", str(t5), "--input", str(inputs), "--output", str(tmp_path / "score"),
        "--text-column", "source", "--text-pair-column", "target", "--return-token-logprobs")
    scored = _outputs(tmp_path / "score")
    for row, (source, target) in enumerate(zip(SOURCES, TARGETS)):
        labels = tokenizer(target, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            loss = float(model(**tokenizer(source, return_tensors="pt"), labels=labels).loss)
        assert scored["scored_tokens"][row].as_py() == labels.shape[1] == len(scored["token_logprobs"][row].as_py())
        np.testing.assert_allclose(scored["logprob_sum"][row].as_py(), -loss * labels.shape[1], rtol=1e-5, atol=1e-5)

    job("--task", "generate", "--model", str(t5), "--input", str(inputs), "--output", str(tmp_path / "gen"),
        "--text-column", "source", "--max-new-tokens", "6", "--num-beams", "2")
    generated = _outputs(tmp_path / "gen")
    for row, source in enumerate(SOURCES):
        with torch.no_grad():
            out = model.generate(**tokenizer(source, return_tensors="pt"), max_new_tokens=6, num_beams=2,
                                 do_sample=False)
        new = out[0, 1:].tolist()
        assert generated["generated_tokens"][row].as_py() == len(new)
        assert generated["generated_text"][row].as_py() == tokenizer.decode(new, skip_special_tokens=True)
