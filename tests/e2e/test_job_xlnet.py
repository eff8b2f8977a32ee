"""XLNet classify through the job (real Ray, Parquet in and out) on a tiny random checkpoint with
the tokenizer.json transformers' XLNetTokenizer saves from a trained spiece.model: labels and
probabilities equal the reference model's on the reference tokenizer's ids, row by row; the
same rows in another order and other micro-batches give the same results (memories are per row:
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


def _shard(path: Path, texts: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": texts}), path)


def test_classify_job_equals_the_reference_whatever_the_order_and_batching(xlnet_classifier: Path,
                                                                           tmp_path: Path) -> None:
    """One job over the rows in order (shard 0) and reversed (shard 1), in small micro-batches of
    mixed rows: every row's labels and probabilities are the reference's on that row alone."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(xlnet_classifier))
    reference = transformers.XLNetForSequenceClassification.from_pretrained(xlnet_classifier).eval()
    expected = []
    for text in TEXTS:
        with torch.no_grad():
            expected.append(reference(**tokenizer(text, return_tensors="pt")).logits.softmax(-1)[0].numpy())
    expected = np.array(expected)
    lengths = [len(tokenizer(t)["input_ids"]) for t in TEXTS]
    assert max(lengths) < 48 < sum(lengths)  # several micro-batches, each with several rows

    _shard(tmp_path / "in" / "part-0.parquet", TEXTS)
    _shard(tmp_path / "in" / "part-1.parquet", TEXTS[::-1])
    manifest = run_job(parse_spec(["--task", "classify", "--return-probs", "--model", str(xlnet_classifier),
                                   "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                                   "--max-batch-tokens", "48"]))
    assert manifest["model"]["model_class"] == "XLNetForSequenceClassification"
    assert manifest["summary"]["rows"] == 2 * len(TEXTS)
    in_order, reversed_rows = (pq.read_table(tmp_path / "out" / f"part-{k}.parquet") for k in range(2))
    for table, order in ((in_order, slice(None)), (reversed_rows, slice(None, None, -1))):
        np.testing.assert_allclose(np.array(table["probs"].to_pylist())[order], expected, atol=1e-5)
        assert table["label"].to_pylist()[order] == [LABELS[i] for i in expected.argmax(1)]
        assert table["label_id"].to_pylist()[order] == expected.argmax(1).tolist()
    assert len(set(in_order["label"].to_pylist())) > 1  # the rows do not all look alike
