"""Models that ship only a SentencePiece ``.model`` (no tokenizer.json) through the embed job on
Ray, Parquet in and out: a tiny ALBERT and a tiny XLM-R, saved with transformers; the mean-pooled
embeddings and the token counts equal the reference model's on the reference tokenizer's ids."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from jobs.infer import run_job
from jobs.model import ModelError
from jobs.spec import parse_spec
from sentencepiece_data import FILE_NAMES, family_dir, train

transformers = pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]

TEXTS = ["Hello world, the quick brown fox.", "Café résumé naïve über straße", "北京欢迎你 東京 日本語のテキスト",
         "emoji 👍🏽 fun 🎉 digits 1234567 3.14", "tabs\tand   many    spaces\nnew lines", "MiXeD CaSe lower UPPER",
         "kalomi neru tashi vope dazu", "a"]


def tiny_model(model_type: str, directory: Path) -> Path:
    """The .model, the tokenizer_config.json the reference saves, a random tiny model; no tokenizer.json."""
    family_dir(directory, model_type, train(model_type, "unigram"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
    tokenizer.save_pretrained(directory)
    (directory / "tokenizer.json").unlink()
    sizes = dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=37, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id)
    if model_type == "albert":
        sizes.update(embedding_size=16)
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(model_type, **sizes)
    transformers.AutoModel.from_config(config).eval().save_pretrained(directory)
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        ["config.json", "model.safetensors", "tokenizer_config.json", FILE_NAMES[model_type]])
    return directory


def reference_mean_pooled(directory: Path, texts: list[str]) -> tuple[np.ndarray, int]:
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
    model = transformers.AutoModel.from_pretrained(str(directory)).eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return ((hidden * mask).sum(1) / mask.sum(1)).numpy(), int(batch["attention_mask"].sum())


def test_albert_and_xlm_roberta_with_only_their_model_file_embed_through_the_job(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"doc": [f"d{n}" for n in range(len(TEXTS))], "text": TEXTS}),
                   tmp_path / "in" / "docs.parquet")
    for model_type in ("albert", "xlm-roberta"):
        model_dir = tiny_model(model_type, tmp_path / model_type)
        out = tmp_path / f"out-{model_type}"
        manifest = run_job(parse_spec([
            "--task", "embed", "--model", str(model_dir), "--input", str(tmp_path / "in"), "--output", str(out),
            "--text-column", "text", "--id-column", "doc", "--pooling", "mean", "--actors", "1",
            "--max-batch-tokens", "64"]))
        assert manifest["model"]["model_type"] == model_type
        expected, tokens = reference_mean_pooled(model_dir, TEXTS)
        assert manifest["summary"]["rows"] == len(TEXTS) and manifest["summary"]["tokens"] == tokens
        table = pq.read_table(out / "docs.parquet")
        assert table["doc"].to_pylist() == [f"d{n}" for n in range(len(TEXTS))]
        np.testing.assert_allclose(np.array(table["embedding"].to_pylist()), expected, atol=1e-5, rtol=1e-4)


def test_a_damaged_model_file_stops_the_job_before_ray_naming_it(tmp_path: Path) -> None:
    model_dir = tiny_model("albert", tmp_path / "albert")
    (model_dir / "spiece.model").write_bytes((model_dir / "spiece.model").read_bytes()[:5000])
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"text": TEXTS}), tmp_path / "in" / "docs.parquet")
    with pytest.raises(ModelError, match="spiece.model is not a readable SentencePiece model") as err:
        run_job(parse_spec(["--task", "embed", "--model", str(model_dir), "--input", str(tmp_path / "in"),
                            "--output", str(tmp_path / "out")]))
    assert str(model_dir / "spiece.model") in str(err.value) and not (tmp_path / "out").exists()
