"""The encoder tasks' stages called directly (no Ray) against the reference libraries:
fill-mask (transformers' fill-mask pipeline), classify's functions and multi-label threshold
(the text-classification pipeline), and embed for retrieval (sentence-transformers)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import encoder_task_data
from actors.common import ERROR, ROW, SOURCE, BadRowError
from actors.fill_mask import FillMask
from actors.tokenize import Tokenize

transformers = pytest.importorskip("transformers")

MASKED = [
    "The capital of France is [MASK].",
    "A [MASK] walks over the old stone [MASK] near the river.",
    "[MASK]",
    "Rivers carry water to the [MASK], and the [MASK] report [MASK] it simply.",
]


def _tokenized(model: str, texts: list, on_bad_row: str = "error", max_length: int = 128) -> pa.Table:
    table = pa.table({"text": texts, SOURCE: ["in.parquet"] * len(texts), ROW: list(range(len(texts)))})
    return Tokenize(model, text_column="text", max_length=max_length, on_bad_row=on_bad_row)(table)


@pytest.fixture(scope="module")
def tiny_mlm(tmp_path_factory: pytest.TempPathFactory, minilm: str) -> Path:
    return encoder_task_data.tiny_mlm(tmp_path_factory.mktemp("tiny-mlm"), minilm)


def _reference_fill(model_dir: Path, texts: list[str], **kwargs) -> list:
    fill = transformers.pipeline("fill-mask", model=str(model_dir), device="cpu")
    out = []
    for text in texts:
        result = fill(text, **kwargs)
        out.append([result] if isinstance(result[0], dict) else result)  # one list per mask
    return out


def _assert_same_predictions(ours: list, reference: list) -> None:
    assert len(ours) == len(reference)
    for row_ours, row_reference in zip(ours, reference):
        assert len(row_ours) == len(row_reference)
        for mask_ours, mask_reference in zip(row_ours, row_reference):
            assert [p["token"] for p in mask_ours] == [p["token"] for p in mask_reference]
            assert [p["token_str"] for p in mask_ours] == [p["token_str"] for p in mask_reference]
            assert [p["sequence"] for p in mask_ours] == [p["sequence"] for p in mask_reference]
            np.testing.assert_allclose([p["score"] for p in mask_ours], [p["score"] for p in mask_reference],
                                       rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("flat", [True, False], ids=["unpadded", "padded"])
def test_fill_mask_equals_the_reference_pipeline_one_and_several_masks(tiny_mlm: Path, flat: bool) -> None:
    stage = FillMask(str(tiny_mlm), top_k=4, threads=1, max_batch_tokens=48)
    stage.flat = flat and stage.flat
    out = stage(_tokenized(str(tiny_mlm), MASKED))
    assert out["predictions"].type == pa.list_(pa.list_(pa.struct([
        ("token", pa.int32()), ("token_str", pa.string()), ("score", pa.float32()), ("sequence", pa.string())])))
    ours = out["predictions"].to_pylist()
    assert [len(r) for r in ours] == [1, 2, 1, 3] and all(len(m) == 4 for r in ours for m in r)
    _assert_same_predictions(ours, _reference_fill(tiny_mlm, MASKED, top_k=4))


def test_fill_mask_on_roberta_equals_the_reference_pipeline(tmp_path: Path) -> None:
    model = str(encoder_task_data.tiny_roberta_mlm(tmp_path / "roberta"))
    texts = ["Marie Curie worked in <mask> with Pierre Curie.", "The river<mask> runs through <mask> to the sea.",
             "<mask> Zoë Saldaña in São Paulo"]
    out = FillMask(model, top_k=3, threads=1)(_tokenized(model, texts, max_length=40))
    _assert_same_predictions(out["predictions"].to_pylist(), _reference_fill(Path(model), texts, top_k=3))


def test_fill_mask_targets_equal_the_reference_pipeline(tiny_mlm: Path) -> None:
    # "paris" and "bridge" are vocabulary words; "zzyzx" is not (its first token is scored).
    targets = ["paris", "bridge", "the", "zzyzx"]
    out = FillMask(str(tiny_mlm), top_k=10, targets=targets, threads=1)(_tokenized(str(tiny_mlm), MASKED[:2]))
    ours = out["predictions"].to_pylist()
    assert all(len(m) == 4 for r in ours for m in r)  # top_k capped at the number of targets
    _assert_same_predictions(ours, _reference_fill(tiny_mlm, MASKED[:2], top_k=10, targets=targets))


def test_fill_mask_a_row_without_a_mask_is_a_bad_row(tiny_mlm: Path) -> None:
    texts = ["No mask here.", "One [MASK] here.", None]
    with pytest.raises(BadRowError, match=r"in.parquet row 0: the text has no mask token \[MASK\]"):
        FillMask(str(tiny_mlm), threads=1)(_tokenized(str(tiny_mlm), texts[:2]))
    out = FillMask(str(tiny_mlm), top_k=2, threads=1)(_tokenized(str(tiny_mlm), texts, on_bad_row="flag"))
    assert out[ERROR].to_pylist()[0].startswith("the text has no mask token [MASK]")
    assert out[ERROR].to_pylist()[1:] == [None, "column 'text' is null"]
    assert out["predictions"].is_null().to_pylist() == [True, False, True]
    # A mask cut away by truncation says so.
    cut = FillMask(str(tiny_mlm), threads=1)(_tokenized(str(tiny_mlm), ["word " * 20 + "[MASK]"], "flag", max_length=8))
    assert "the text was cut to the model's maximum length" in cut[ERROR][0].as_py()


# -- classify: functions, multi-label, logits ----------------------------------------------------
SENTENCES = ["A short one.", "The river carries water from the mountain to the ocean.", "Hello world",
             "Markets change over a season, and the report explains it simply.", "Yes"]
LABELS = encoder_task_data.LABELS


@pytest.fixture(scope="module")
def multi_label(tmp_path_factory: pytest.TempPathFactory, minilm: str) -> Path:
    return encoder_task_data.multi_label_classifier(tmp_path_factory.mktemp("multi-label"), minilm)


@pytest.fixture(scope="module")
def single_logit(tmp_path_factory: pytest.TempPathFactory, minilm: str) -> Path:
    return encoder_task_data.tiny_classifier(tmp_path_factory.mktemp("single-logit"), minilm, num_labels=1)


def _reference_classify(model_dir: Path, texts: list[str], **kwargs) -> list[dict[str, float]]:
    classify = transformers.pipeline("text-classification", model=str(model_dir), device="cpu")
    return [{r["label"]: r["score"] for r in classify(text, top_k=None, **kwargs)} for text in texts]


def test_multi_label_classify_equals_the_reference_pipeline_with_sigmoid(multi_label: Path) -> None:
    from actors.classify import Classify

    stage = Classify(str(multi_label), threshold=0.5, multi_label=True, return_probs=True, return_logits=True, threads=1)
    assert stage.function == "sigmoid"  # the config's problem_type decides, as in the reference
    out = stage(_tokenized(str(multi_label), SENTENCES))
    reference = _reference_classify(multi_label, SENTENCES)  # default function: sigmoid for this config
    probs = np.array(out["probs"].to_pylist())
    expected = np.array([[row[LABELS[i]] for i in range(4)] for row in reference])
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(1 / (1 + np.exp(-np.array(out["logits"].to_pylist()))), expected, rtol=1e-5, atol=1e-6)
    chosen = out["labels"].to_pylist()
    for row, scores in zip(chosen, reference):
        best_first = sorted((s, label) for label, s in scores.items() if s > 0.5)[::-1]
        assert [r["label"] for r in row] == [label for _, label in best_first]
        np.testing.assert_allclose([r["score"] for r in row], [s for s, _ in best_first], rtol=1e-5)
    # Not a vacuous threshold: some labels pass it and some don't.
    assert 0 < sum(map(len, chosen)) < 4 * len(SENTENCES)
    assert out["label"].to_pylist() == [max(r, key=r.get) for r in reference]


@pytest.mark.parametrize("function", [None, "none", "softmax"])
def test_single_logit_scores_follow_the_reference_function(single_logit: Path, function) -> None:
    from actors.classify import Classify

    out = Classify(str(single_logit), function=function, return_logits=True, threads=1)(
        _tokenized(str(single_logit), SENTENCES))
    reference = _reference_classify(single_logit, SENTENCES, **({"function_to_apply": function} if function else {}))
    np.testing.assert_allclose(out["score"].to_numpy(), [r["LABEL_0"] for r in reference], rtol=1e-5, atol=1e-6)
    logits = np.array(out["logits"].to_pylist())[:, 0]
    if function is None:  # sigmoid of the logit: the cross-encoder's relevance, ranking as the logit does
        np.testing.assert_allclose(out["score"].to_numpy(), 1 / (1 + np.exp(-logits)), rtol=1e-5)
    assert "labels" not in out.column_names


# -- embed for retrieval: Dense / Normalize modules, truncation, precisions, prompts ---------------
def _st(model_dir: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_dir, device="cpu")


def _steps(model_dir: str) -> dict:
    import json

    from actors.sentence_modules import after_pooling

    def read(name: str):
        path = Path(model_dir) / name
        return json.loads(path.read_text()) if path.is_file() else None

    return after_pooling(read("modules.json"), read)


@pytest.fixture(scope="module")
def minilm_floats(minilm: str) -> dict:
    """sentence-transformers' own float32 MiniLM embeddings of SENTENCES: whole, and truncated to 128."""
    model = _st(minilm)
    return {"full": model.encode(SENTENCES, convert_to_numpy=True),
            128: model.encode(SENTENCES, truncate_dim=128, normalize_embeddings=True, convert_to_numpy=True),
            "query": model.encode(SENTENCES, prompt="query: ", convert_to_numpy=True)}


def _embed(model: str, texts: list, prefix: str = "", **kwargs) -> pa.Table:
    from actors.embed import Embed

    table = pa.table({"text": texts})
    tokenized = Tokenize(model, text_column="text", max_length=256, prefix=prefix)(table)
    return Embed(model, pooling="mean", threads=1, **kwargs)(tokenized)


def test_minilm_modules_json_ends_with_normalize(minilm: str) -> None:
    assert _steps(minilm) == {"steps": [], "normalize": True, "dimension": None}


@pytest.mark.parametrize("dimensions", [None, 128])
def test_dimensions_equal_sentence_transformers_truncate_dim(minilm: str, minilm_floats: dict, dimensions) -> None:
    out = _embed(minilm, SENTENCES, normalize=True, dimensions=dimensions)
    ours = np.array(out["embedding"].to_pylist(), dtype=np.float32)
    expected = minilm_floats[dimensions or "full"]
    assert out["embedding"].type == pa.list_(pa.float32(), dimensions or 384)
    np.testing.assert_allclose(ours, expected, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-5)  # re-normalised after truncation


@pytest.mark.parametrize("precision", ["float16", "int8", "uint8", "binary", "ubinary"])
def test_precisions_equal_sentence_transformers_quantize_embeddings(minilm: str, minilm_floats: dict,
                                                                    precision: str) -> None:
    from sentence_transformers.quantization import quantize_embeddings

    from actors.sentence_modules import quantize

    floats = minilm_floats[128]
    # Calibration ranges as from a larger sample: a little wider than these rows' own (the rows' own
    # extremes would sit exactly on the end buckets' edges).
    ranges = np.vstack([floats.min(0) - 0.05, floats.max(0) + 0.05]) if precision in ("int8", "uint8") else None
    out = _embed(minilm, SENTENCES, normalize=True, dimensions=128, precision=precision,
                 calibration_ranges=ranges.tolist() if ranges is not None else None)
    width = 16 if precision.endswith("binary") else 128
    value_type = {"float16": pa.float16(), "int8": pa.int8(), "uint8": pa.uint8(), "binary": pa.int8(),
                  "ubinary": pa.uint8()}[precision]
    assert out["embedding"].type == pa.list_(value_type, width)
    ours = np.array(out["embedding"].to_pylist())
    if precision == "float16":
        np.testing.assert_allclose(ours, floats.astype(np.float16).astype(np.float64), atol=1e-3)
        return
    expected = quantize_embeddings(floats, precision=precision, ranges=ranges)
    assert expected.shape == ours.shape
    # Our floats differ from sentence-transformers' by ~1e-7, which can move a value sitting on a
    # bucket edge (or at 0 for the sign bits) by one bucket: the quantisation itself is the
    # same function (checked exactly on our floats), and the outputs agree but for such edges.
    our_floats = np.array(_embed(minilm, SENTENCES, normalize=True, dimensions=128)["embedding"].to_pylist(),
                          dtype=np.float32)
    np.testing.assert_array_equal(ours, quantize_embeddings(our_floats, precision=precision, ranges=ranges))
    np.testing.assert_array_equal(quantize(our_floats, precision, ranges), ours)
    if precision.endswith("int8"):
        assert np.abs(ours.astype(np.int64) - expected.astype(np.int64)).max() <= 1
        assert (ours == expected).mean() > 0.99
    else:
        assert (np.unpackbits(ours.astype(np.uint8)) != np.unpackbits(expected.astype(np.uint8))).sum() <= 2


def test_prompt_equals_sentence_transformers_prompt(minilm: str, minilm_floats: dict) -> None:
    out = _embed(minilm, SENTENCES, prefix="query: ", normalize=True)
    np.testing.assert_allclose(np.array(out["embedding"].to_pylist()), minilm_floats["query"], atol=2e-5)


@pytest.fixture(scope="module")
def dense_model(tmp_path_factory: pytest.TempPathFactory, tiny_mlm: Path) -> Path:
    return encoder_task_data.dense_sentence_model(tmp_path_factory.mktemp("dense-st"), tiny_mlm)


def test_a_model_with_dense_modules_equals_sentence_transformers(dense_model: Path) -> None:
    found = _steps(str(dense_model))
    assert [s["type"] for s in found["steps"]] == ["Dense", "Dense"] and found["dimension"] == 12
    assert found["normalize"] is True
    model = _st(str(dense_model))
    for prompt, dimensions in (("query: ", None), ("passage: ", 8)):
        expected = model.encode(SENTENCES, prompt=prompt, truncate_dim=dimensions, normalize_embeddings=True,
                                convert_to_numpy=True)
        out = _embed(str(dense_model), SENTENCES, prefix=prompt, normalize=True, steps=found["steps"],
                     dimensions=dimensions)
        assert out["embedding"].type == pa.list_(pa.float32(), dimensions or 12)
        np.testing.assert_allclose(np.array(out["embedding"].to_pylist()), expected, atol=2e-5)


def test_cross_encoder_pairs_rerank_as_the_reference_pipeline(single_logit: Path) -> None:
    """Reranking: (query, passage) pairs through a single-logit model; score = sigmoid(logit)."""
    from actors.classify import Classify

    query = "where does the river go"
    passages = SENTENCES
    table = pa.table({"q": [query] * len(passages), "p": passages})
    tokenized = Tokenize(str(single_logit), text_column="q", text_pair_column="p", max_length=128)(table)
    out = Classify(str(single_logit), return_logits=True, threads=1)(tokenized)
    classify = transformers.pipeline("text-classification", model=str(single_logit), device="cpu")
    expected = [classify({"text": query, "text_pair": p}, top_k=None)[0]["score"] for p in passages]
    np.testing.assert_allclose(out["score"].to_numpy(), expected, rtol=1e-5)
    logits = np.array(out["logits"].to_pylist())[:, 0]
    assert np.argsort(-logits).tolist() == np.argsort(-np.array(expected)).tolist()  # the same ranking


def test_a_dense_activation_outside_the_torch_table_is_refused_not_imported() -> None:
    from actors.sentence_modules import SentenceModuleError, after_pooling

    modules = [{"type": "sentence_transformers.models.Transformer", "path": ""},
               {"type": "sentence_transformers.models.Pooling", "path": "1_Pooling"},
               {"type": "sentence_transformers.models.Dense", "path": "2_Dense"}]
    config = {"in_features": 4, "out_features": 2, "bias": True, "activation_function": "builtins.exec"}
    with pytest.raises(SentenceModuleError, match="the Dense activation 'builtins.exec' is not one of"):
        after_pooling(modules, lambda name: config if name == "2_Dense/config.json" else None)
    with pytest.raises(SentenceModuleError, match="Dense module at 2_Dense/ without a config.json"):
        after_pooling(modules, lambda name: None)
    # Normalize between two Dense modules stays a step; a final one is the task's --normalize.
    config["activation_function"] = "torch.nn.modules.activation.Tanh"
    found = after_pooling(modules[:2] + [modules[2], {"type": "sentence_transformers.models.Normalize"},
                                         {**modules[2], "path": "3_Dense"}],
                          lambda name: {**config, "in_features": 2} if name.startswith("3_") else config)
    assert [s["type"] for s in found["steps"]] == ["Dense", "Normalize", "Dense"] and found["normalize"] is False
