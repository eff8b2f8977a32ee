"""The stage classes called directly on Arrow tables (no Ray), against the reference libraries."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from actors.classify import Classify
from actors.common import ERROR, INPUT_IDS, PADDED, ROW, SOURCE, TOKEN_TYPE_IDS, TOKENS, TRUNCATED, BadRowError, micro_batches, pad_rows
from actors.embed import Embed, pool
from actors.fused import TokenizeAndRun
from actors.tokenize import Tokenize

SENTENCES = [
    "A short one.",
    "The river carries water from the mountain to the ocean through a long and quiet valley, past villages and forests.",
    "Hello world",
    "Data science measures how markets change over a season, and the report explains it simply.",
    "Yes",
    "Ancient bridges over northern rivers were built by local teams during early centuries of modern history.",
]


def _tokenized(model: str, texts: list, **kwargs) -> pa.Table:
    table = pa.table({"text": texts})
    return Tokenize(model, text_column="text", max_length=kwargs.pop("max_length", 256), **kwargs)(table)


# -- micro-batching ------------------------------------------------------------------------------
def test_micro_batches_cover_every_row_once_within_the_budget() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 300, size=500)
    groups = micro_batches(lengths, max_tokens=2048, max_rows=64)
    seen = np.concatenate(groups)
    assert sorted(seen.tolist()) == list(range(500))
    for group in groups:
        assert len(group) <= 64
        assert len(group) * lengths[group].max() <= 2048 or len(group) == 1
    # Longest first: each group's rows are no longer than the previous group's.
    maxima = [lengths[g].max() for g in groups]
    assert maxima == sorted(maxima, reverse=True)


def test_a_row_longer_than_the_budget_still_runs_alone() -> None:
    groups = micro_batches(np.array([10, 5000, 3]), max_tokens=100, max_rows=8)
    assert [g.tolist() for g in groups] == [[1], [0, 2]]


def test_pad_rows_pads_right_and_masks() -> None:
    ids = pa.array([[1, 2, 3], [4], [5, 6]], type=pa.list_(pa.int32()))
    padded, mask = pad_rows(ids, np.array([2, 0]), pad_id=9)
    assert padded.tolist() == [[5, 6, 9], [1, 2, 3]]
    assert mask.tolist() == [[1, 1, 0], [1, 1, 1]]


# -- tokenize ------------------------------------------------------------------------------------
def test_tokenize_matches_the_reference_tokenizer(minilm: str) -> None:
    from transformers import AutoTokenizer as ReferenceTokenizer

    reference = ReferenceTokenizer.from_pretrained(minilm)
    out = _tokenized(minilm, SENTENCES, max_length=16)
    expected = reference(SENTENCES, truncation=True, max_length=16)["input_ids"]
    assert out[INPUT_IDS].type == pa.list_(pa.int32())
    assert out[INPUT_IDS].to_pylist() == expected
    assert out[TOKENS].to_pylist() == [len(e) for e in expected]
    assert out["text"].to_pylist() == SENTENCES  # kept unless asked to drop


def test_tokenize_pairs_match_the_reference(minilm: str) -> None:
    from transformers import AutoTokenizer as ReferenceTokenizer

    reference = ReferenceTokenizer.from_pretrained(minilm)
    table = pa.table({"q": SENTENCES[:3], "a": SENTENCES[3:]})
    out = Tokenize(minilm, text_column="q", text_pair_column="a", max_length=24, drop_columns=["q", "a"])(table)
    expected = reference(SENTENCES[:3], SENTENCES[3:], truncation=True, max_length=24)
    assert out[INPUT_IDS].to_pylist() == expected["input_ids"]
    assert out[TOKEN_TYPE_IDS].to_pylist() == expected["token_type_ids"]
    assert "q" not in out.column_names and "a" not in out.column_names


def test_bad_row_error_names_file_and_row(minilm: str) -> None:
    table = pa.table({"text": ["fine", None], SOURCE: ["in/part-3.parquet"] * 2, ROW: pa.array([40, 41], pa.int64())})
    with pytest.raises(BadRowError, match=r"in/part-3\.parquet row 41: column 'text' is null.*--on-bad-row flag"):
        Tokenize(minilm, text_column="text", max_length=32)(table)


def test_bad_rows_are_flagged_not_dropped(minilm: str) -> None:
    table = pa.table({"text": pa.array([b"ok", None, b"\xff\xfe bad", b"also ok"], pa.binary())})
    out = Tokenize(minilm, text_column="text", max_length=32, on_bad_row="flag")(table)
    assert out.num_rows == 4
    errors = out[ERROR].to_pylist()
    assert errors[0] is None and errors[3] is None
    assert "null" in errors[1] and "not valid UTF-8" in errors[2]
    assert out[TOKENS].to_pylist()[1:3] == [0, 0]


def test_empty_text_is_a_bad_row(minilm: str) -> None:
    table = pa.table({"text": ["fine", "", " \t\n"], "pair": ["a", "b", "c"]})
    out = Tokenize(minilm, text_column="text", text_pair_column="pair", max_length=32, on_bad_row="flag")(table)
    assert out[ERROR].to_pylist() == [None, "column 'text' is empty", "column 'text' holds only whitespace"]
    assert out[TOKENS].to_pylist()[1:] == [0, 0]
    binary = pa.table({"text": pa.array([b"", b"ok"], pa.binary())})
    with pytest.raises(BadRowError, match="row 0 of the batch: column 'text' is empty"):
        Tokenize(minilm, text_column="text", max_length=32)(binary)


def test_long_text_is_truncated_and_marked(minilm: str) -> None:
    """Over the limit: cut to max_length tokens and marked; a text of megabytes is cut to
    characters first (quickly), with the same tokens kept."""
    long_text = " ".join(["river"] * 40)
    huge = "mountain " * 200_000  # 1.8 MB
    out = _tokenized(minilm, ["short text", long_text, huge], max_length=16)
    assert out[TRUNCATED].to_pylist() == [False, True, True]
    assert out[TOKENS].to_pylist()[1:] == [16, 16]
    whole = _tokenized(minilm, ["mountain " * 20], max_length=16)
    assert out[INPUT_IDS][2].as_py() == whole[INPUT_IDS][0].as_py()
    pairs = Tokenize(minilm, text_column="q", text_pair_column="a", max_length=16)(
        pa.table({"q": ["a question", "a question"], "a": ["short", long_text]}))
    assert pairs[TRUNCATED].to_pylist() == [False, True]


def test_a_non_string_column_is_a_bad_row_per_row(minilm: str) -> None:
    table = pa.table({"text": pa.array([1, None], pa.int64())})
    out = Tokenize(minilm, text_column="text", max_length=32, on_bad_row="flag")(table)
    assert out[ERROR].to_pylist() == ["column 'text' holds int64, not a string", "column 'text' is null"]
    with pytest.raises(BadRowError, match="row 0 of the batch: column 'text' holds int64"):
        Tokenize(minilm, text_column="text", max_length=32)(table)


# -- embed ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference_embeddings(minilm: str) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(minilm, device="cpu").encode(SENTENCES, batch_size=4, convert_to_numpy=True)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("max_batch_tokens", [1, 64, 100_000])
def test_embed_equals_sentence_transformers_in_input_order(minilm: str, reference_embeddings: np.ndarray,
                                                           max_batch_tokens: int) -> None:
    """Any micro-batching (one row per forward, a few, all at once) gives the reference's
    vectors, back in input order."""
    embed = Embed(minilm, pooling="mean", normalize=True, max_batch_tokens=max_batch_tokens, threads=1)
    out = embed(_tokenized(minilm, SENTENCES))
    assert out["embedding"].type == pa.list_(pa.float32(), 384)
    assert INPUT_IDS not in out.column_names
    ours = np.array(out["embedding"].to_pylist(), dtype=np.float32)
    assert _cosine(ours, reference_embeddings).min() >= 0.99999
    np.testing.assert_allclose(ours, reference_embeddings, atol=2e-5)
    assert all(p >= t for p, t in zip(out[PADDED].to_pylist(), out[TOKENS].to_pylist()))


def test_tokenize_and_run_is_the_two_stages_in_one_actor(minilm: str, reference_embeddings: np.ndarray) -> None:
    """The CPU clusters' fused actor: same columns and values as Tokenize then Embed, bad rows
    flagged the same way, and the reference's vectors."""
    texts = [*SENTENCES[:3], None, *SENTENCES[3:]]
    tokenize = {"model": minilm, "text_column": "text", "max_length": 256, "on_bad_row": "flag", "drop_columns": ["text"]}
    embed = {"model": minilm, "pooling": "mean", "normalize": True, "threads": 1}
    fused = TokenizeAndRun(tokenize=tokenize, stage=Embed, stage_kwargs=embed)(pa.table({"text": texts}))
    apart = Embed(**embed)(Tokenize(**tokenize)(pa.table({"text": texts})))
    assert fused.column_names == apart.column_names
    for name in fused.column_names:
        if not name.startswith("__seconds"):
            assert fused[name].equals(apart[name]), name
    ours = np.array([v for v in fused["embedding"].to_pylist() if v is not None], dtype=np.float32)
    np.testing.assert_allclose(ours, reference_embeddings, atol=2e-5)
    assert fused["embedding"].is_null().to_pylist() == [t is None for t in texts]


def test_embed_float16_output_and_null_for_bad_rows(minilm: str) -> None:
    table = _tokenized(minilm, ["fine", None, "also fine"], on_bad_row="flag")
    out = Embed(minilm, embedding_dtype="float16")(table)
    assert out["embedding"].type == pa.list_(pa.float16(), 384)
    assert out["embedding"].is_null().to_pylist() == [False, True, False]


@pytest.mark.parametrize("mode", ["cls", "max", "last", "mean"])
def test_pooling_modes(mode: str) -> None:
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)  # (B=2, T=3, H=2)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    expected = {
        "cls": hidden[:, 0],
        "max": torch.stack([hidden[0].max(0).values, hidden[1, :2].max(0).values]),
        "last": torch.stack([hidden[0, 2], hidden[1, 1]]),
        "mean": torch.stack([hidden[0].mean(0), hidden[1, :2].mean(0)]),
    }[mode]
    torch.testing.assert_close(pool(hidden, mask, mode), expected)


# -- classify ------------------------------------------------------------------------------------
def test_classify_equals_the_reference_model(tiny_classifier: Path, reference_predictions) -> None:
    model = str(tiny_classifier)
    out = Classify(model, return_probs=True, max_batch_tokens=40)(_tokenized(model, SENTENCES, max_length=128))
    label_ids, probs = reference_predictions(tiny_classifier, SENTENCES)
    assert out["label_id"].to_pylist() == label_ids
    id2label = json.loads((tiny_classifier / "config.json").read_text())["id2label"]
    assert out["label"].to_pylist() == [id2label[str(i)] for i in label_ids]
    assert len(set(label_ids)) > 1
    np.testing.assert_allclose(out["score"].to_numpy(), probs.max(1), atol=1e-5)
    np.testing.assert_allclose(np.array(out["probs"].to_pylist()), probs, atol=1e-5)
    assert out["score"].type == pa.float32() and out["label_id"].type == pa.int32()


def test_classify_pairs_equal_the_reference_model(tiny_classifier: Path, reference_predictions) -> None:
    model = str(tiny_classifier)
    table = pa.table({"q": SENTENCES[:3], "a": SENTENCES[3:]})
    tokenized = Tokenize(model, text_column="q", text_pair_column="a", max_length=128)(table)
    out = Classify(model)(tokenized)
    label_ids, probs = reference_predictions(tiny_classifier, SENTENCES[:3], SENTENCES[3:])
    assert out["label_id"].to_pylist() == label_ids
    np.testing.assert_allclose(out["score"].to_numpy(), probs.max(1), atol=1e-5)
    assert "probs" not in out.column_names


def test_classify_refuses_changed_weights(tiny_classifier: Path) -> None:
    with pytest.raises(RuntimeError, match="changed while the job ran"):
        Classify(str(tiny_classifier), expected_weights_digest="0" * 64)


def test_classify_refuses_a_checkpoint_without_a_trained_head(minilm: str) -> None:
    """Random head weights would give confident nonsense: refuse instead."""
    with pytest.raises(ValueError, match=r"no trained weights for classifier\.bias, classifier\.weight: it is not a sequence-classification"):
        Classify(minilm)
