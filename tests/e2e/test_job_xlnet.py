"""XLNet classify through the job (real Ray, Parquet in and out) on a tiny random checkpoint with
the tokenizer.json transformers' XLNetTokenizer saves from a trained spiece.model: labels and
probabilities equal the reference model's on the reference tokenizer's ids, row by row; the
same rows in another order and one row per forward give the same results (memories are per row:
the stage never carries ``mems`` from one row or micro-batch to the next)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from jobs.infer import run_job
from jobs.spec import parse_spec
from sentencepiece_data import family_dir, train

transformers = pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]

TEXTS = ["Hello world, the quick brown fox.", "kalomi neru tashi vope dazu gri ent ion", "a",
         "Café naïve straße 北京 欢迎", "the lazy dog", "ka lo mi ne ru ta shi vo pe da zu gri ent ion ung ber",
         "HELLO World 2026 3.14", "don't it's", "ru", "emoji 👍 fun 🎉 and more words after the emoji"]
LABELS = {0: "negative", 1: "neutral", 2: "positive"}


@pytest.fixture(scope="module")
def xlnet_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny XLNetForSequenceClassification (summary of the last token, <cls>) and the reference
    tokenizer's saved files (tokenizer.json + tokenizer_config.json; the .model removed)."""
    directory = family_dir(tmp_path_factory.mktemp("xlnet"), "xlnet", train("xlnet", "unigram"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
    tokenizer.save_pretrained(directory)
    (directory / "spiece.model").unlink()
    torch.manual_seed(0)
    config = transformers.XLNetConfig(vocab_size=len(tokenizer), d_model=32, n_layer=2, n_head=4, d_inner=37,
                                      pad_token_id=tokenizer.pad_token_id, id2label=LABELS, initializer_range=0.3)
    transformers.XLNetForSequenceClassification(config).eval().save_pretrained(directory)
    return directory


def _write(directory: Path, texts: list[str], shards: int = 2) -> Path:
    directory.mkdir(parents=True)
    cut = -(-len(texts) // shards)
    for shard in range(shards):
        pq.write_table(pa.table({"text": texts[shard * cut:(shard + 1) * cut]}), directory / f"part-{shard}.parquet")
    return directory


def _read(directory: Path, shards: int = 2) -> pa.Table:
    return pa.concat_tables([pq.read_table(directory / f"part-{k}.parquet") for k in range(shards)])


def test_classify_job_equals_the_reference_whatever_the_order_and_batching(xlnet_classifier: Path,
                                                                           tmp_path: Path) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(xlnet_classifier))
    reference = transformers.XLNetForSequenceClassification.from_pretrained(xlnet_classifier).eval()
    expected = []
    for text in TEXTS:
        with torch.no_grad():
            expected.append(reference(**tokenizer(text, return_tensors="pt")).logits.softmax(-1)[0].numpy())
    expected = np.array(expected)

    manifest = run_job(parse_spec(["--task", "classify", "--return-probs", "--model", str(xlnet_classifier),
                                   "--input", str(_write(tmp_path / "in", TEXTS)), "--output", str(tmp_path / "out")]))
    assert manifest["model"]["model_class"] == "XLNetForSequenceClassification"
    table = _read(tmp_path / "out")
    np.testing.assert_allclose(np.array(table["probs"].to_pylist()), expected, atol=1e-5)
    assert table["label"].to_pylist() == [LABELS[i] for i in expected.argmax(1)]
    assert len(set(table["label"].to_pylist())) > 1  # the rows do not all look alike
    assert table["label_id"].to_pylist() == expected.argmax(1).tolist()

    # Reversed rows, one row per forward: each row's result is unchanged.
    run_job(parse_spec(["--task", "classify", "--return-probs", "--model", str(xlnet_classifier), "--batch-size", "1",
                        "--input", str(_write(tmp_path / "reversed", TEXTS[::-1])),
                        "--output", str(tmp_path / "out-reversed")]))
    again = _read(tmp_path / "out-reversed")
    np.testing.assert_allclose(np.array(again["probs"].to_pylist())[::-1], expected, atol=1e-5)
    assert again["label"].to_pylist()[::-1] == table["label"].to_pylist()
