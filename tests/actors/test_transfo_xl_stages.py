"""Transformer-XL through the embed and classify stages called directly (no Ray): texts
tokenized by our TransfoXLTokenizer, run right-padded in one micro-batch, equal to transformers
4.37.2's states and logits of each text alone (tests/fixtures/transfo_xl/encoder_tasks.json);
a left-padded batch, which the model (no attention mask) can't run, is refused."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

import autoload
from actors.classify import Classify
from actors.common import ROW, SOURCE
from actors.embed import Embed
from actors.tokenize import Tokenize

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "transfo_xl"
GOLDEN = json.loads((FIXTURES / "encoder_tasks.json").read_text(encoding="utf-8"))
TEXTS = [row["text"] for row in GOLDEN["rows"]]


def _tokenized(model: Path) -> pa.Table:
    table = pa.table({"text": TEXTS, SOURCE: ["in.parquet"] * len(TEXTS), ROW: list(range(len(TEXTS)))})
    return Tokenize(str(model), text_column="text", max_length=1024)(table)


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_embed_stage_equals_the_reference_states_of_each_text_alone(pooling: str) -> None:
    model = FIXTURES / GOLDEN["embed_model"]
    stage = Embed(str(model), pooling=pooling, threads=1)
    assert not stage.flat  # no flat forward: padded, right-padded
    out = stage(_tokenized(model))
    got = np.array(out["embedding"].to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(got, [row[pooling] for row in GOLDEN["rows"]], rtol=1e-5, atol=1e-5)


def test_classify_stage_equals_the_reference_logits_of_each_text_alone() -> None:
    model = FIXTURES / GOLDEN["classify_model"]
    out = Classify(str(model), return_logits=True, threads=1)(_tokenized(model))
    got = np.array(out["logits"].to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(got, [row["logits"] for row in GOLDEN["rows"]], rtol=1e-5, atol=1e-5)
    assert out["label_id"].to_pylist() == [int(np.argmax(row["logits"])) for row in GOLDEN["rows"]]


def test_a_left_padded_batch_is_refused() -> None:
    body = autoload.AutoModel.from_pretrained(FIXTURES / GOLDEN["embed_model"])
    ids = torch.tensor([[0, 5, 6], [7, 8, 9]])
    with pytest.raises(ValueError, match="must be right-padded"):
        body(ids, attention_mask=torch.tensor([[0, 1, 1], [1, 1, 1]]))
    right = body(ids, attention_mask=torch.tensor([[1, 1, 0], [1, 1, 1]])).last_hidden_state
    torch.testing.assert_close(right, body(ids).last_hidden_state)  # the mask changes nothing: causal
