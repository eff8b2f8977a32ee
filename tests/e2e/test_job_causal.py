"""Causal LMs through the job (real Ray, Parquet in and out) on tiny GPT-2 checkpoints:
score (equal to the reference's losses, also through the S3 server), generate (greedy equal
to the reference's generate(); seeded sampling the same across a rerun and a resume),
embed --pooling last and classify; generate on an encoder is refused before Ray starts."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from causal_lm_data import tiny_gpt2
from job_io import write_shards
from jobs import infer, pipeline, records
from jobs.infer import run_job
from jobs.model import ModelError
from jobs.spec import parse_spec

transformers = pytest.importorskip("transformers")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]

PROMPTS = ["the quick brown fox", "hello world, rivers", "a quiet village", "the lazy dog", "seas", "an old stone"]


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_gpt2(tmp_path_factory.mktemp("gpt2"), n_positions=64)


def _outputs(directory: Path, shards: int = 2) -> pa.Table:
    return pa.concat_tables([pq.read_table(directory / f"part-{k}.parquet") for k in range(shards)])


def job(*argv: str) -> dict:
    return run_job(parse_spec(list(argv)))


def test_score_job_equals_the_reference_losses_through_s3(gpt2: Path, s3_server, tmp_path: Path) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(gpt2)
    model = transformers.GPT2LMHeadModel.from_pretrained(gpt2).eval()
    prompts, continuations = PROMPTS, [" jumps over", " and seas", " by the bridge", " sleeps", " run", " bridge"]
    local = write_shards(tmp_path / "in", {"prompt": prompts, "text": continuations})
    fs = s3_server.filesystem()
    fs.put(str(local) + "/", f"{s3_server.bucket}/causal/in/", recursive=True)
    job("--task", "score", "--model", str(gpt2), "--input", f"s3://{s3_server.bucket}/causal/in/",
        "--output", f"s3://{s3_server.bucket}/causal/out", "--text-column", "prompt", "--text-pair-column", "text",
        "--return-token-logprobs", "--storage-options", json.dumps(s3_server.storage_options))
    with fs.open(f"{s3_server.bucket}/causal/out/part-1.parquet", "rb") as handle:
        second = pq.read_table(handle)
    with fs.open(f"{s3_server.bucket}/causal/out/part-0.parquet", "rb") as handle:
        table = pa.concat_tables([pq.read_table(handle), second])
    for row, (prompt, continuation) in enumerate(zip(prompts, continuations)):
        head, rest = tokenizer(prompt)["input_ids"], tokenizer(continuation)["input_ids"]
        ids = torch.tensor([head + rest])
        labels = ids.clone()
        labels[:, :len(head)] = -100
        with torch.no_grad():
            expected = -float(model(ids, labels=labels).loss) * len(rest)
        assert table["scored_tokens"][row].as_py() == len(rest) == len(table["token_logprobs"][row].as_py())
        np.testing.assert_allclose(table["logprob_sum"][row].as_py(), expected, rtol=1e-4)


def test_generate_job_greedy_equals_the_reference(gpt2: Path, tmp_path: Path) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(gpt2)
    model = transformers.GPT2LMHeadModel.from_pretrained(gpt2).eval()
    write_shards(tmp_path / "in", {"text": PROMPTS})
    manifest = job("--task", "generate", "--model", str(gpt2), "--input", str(tmp_path / "in"), "--output",
                   str(tmp_path / "out"), "--max-new-tokens", "12", "--actors", "2")
    assert manifest["task"]["settings"]["max_new_tokens"] == 12
    table = _outputs(tmp_path / "out")
    for row, prompt in enumerate(PROMPTS):
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=0)
        new = out[0, ids.shape[1]:].tolist()
        assert table["generated_text"][row].as_py() == tokenizer.decode(new, skip_special_tokens=True)
        assert table["generated_tokens"][row].as_py() == len(new)
        assert table["finish_reason"][row].as_py() == ("eos" if new[-1] == 0 and len(new) < 12 else "length")


def test_seeded_sampling_is_the_same_after_a_rerun_and_a_resume(gpt2: Path, tmp_path: Path) -> None:
    write_shards(tmp_path / "in", {"text": PROMPTS})
    argv = ["--task", "generate", "--model", str(gpt2), "--input", str(tmp_path / "in"), "--output",
            str(tmp_path / "out"), "--max-new-tokens", "8", "--do-sample", "--top-k", "30", "--seed", "7"]
    job(*argv)
    first = _outputs(tmp_path / "out")["generated_text"].to_pylist()
    job(*argv, "--overwrite")
    assert _outputs(tmp_path / "out")["generated_text"].to_pylist() == first
    # A resume recomputes a unit whose commit record is gone: its rows come out the same.
    side_file = tmp_path / "out" / records.FILES
    kept = records.decode(side_file.read_bytes())
    del kept["part-1.parquet"]
    side_file.write_bytes(records.encode(kept))
    manifest = job(*argv)
    assert manifest["summary"]["computed_files"] == 1
    assert _outputs(tmp_path / "out")["generated_text"].to_pylist() == first


def test_embed_last_token_and_classify_on_gpt2(gpt2: Path, tmp_path: Path) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(gpt2)
    write_shards(tmp_path / "in", {"text": PROMPTS})
    job("--task", "embed", "--pooling", "last", "--model", str(gpt2), "--input", str(tmp_path / "in"),
        "--output", str(tmp_path / "emb"))
    body = transformers.GPT2Model.from_pretrained(gpt2).eval()
    embeddings = np.array(_outputs(tmp_path / "emb")["embedding"].to_pylist())
    for row, prompt in enumerate(PROMPTS):
        with torch.no_grad():
            hidden = body(tokenizer(prompt, return_tensors="pt")["input_ids"]).last_hidden_state[0, -1]
        np.testing.assert_allclose(embeddings[row], hidden.numpy(), atol=1e-5)

    classifier_dir = tmp_path / "classifier"
    torch.manual_seed(1)
    config = transformers.GPT2Config.from_pretrained(gpt2, num_labels=3)
    transformers.GPT2ForSequenceClassification(config).eval().save_pretrained(classifier_dir)
    for name in ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json"):
        if (gpt2 / name).exists():
            (classifier_dir / name).write_bytes((gpt2 / name).read_bytes())
    job("--task", "classify", "--return-probs", "--model", str(classifier_dir), "--input", str(tmp_path / "in"),
        "--output", str(tmp_path / "cls"))
    reference = transformers.GPT2ForSequenceClassification.from_pretrained(classifier_dir).eval()
    probs = np.array(_outputs(tmp_path / "cls")["probs"].to_pylist())
    for row, prompt in enumerate(PROMPTS):
        with torch.no_grad():
            expected = reference(tokenizer(prompt, return_tensors="pt")["input_ids"]).logits.softmax(-1)[0]
        np.testing.assert_allclose(probs[row], expected.numpy(), atol=1e-5)


def test_generate_on_an_encoder_is_refused_before_ray(minilm: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the job started the pipeline")

    monkeypatch.setattr(pipeline, "run", refuse)
    monkeypatch.setattr(infer, "_connect", refuse)
    write_shards(tmp_path / "in", {"text": PROMPTS})
    for task in ("generate", "score"):
        with pytest.raises(ModelError, match=rf"--task {task} can't run on .*: it needs a causal language model, and "
                                             r"bert is an encoder"):
            job("--task", task, "--model", minilm, "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o"))
