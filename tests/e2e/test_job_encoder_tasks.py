"""The encoder tasks of issue 13 through the job (real Ray, Parquet in and out): fill-mask
through the S3 server, multi-label classify, and embed for retrieval (a Dense
sentence-transformers model with a prompt and --dimensions, then int8 calibrated on that run's
output), each against the reference libraries, with the bad-row policy (flag) and the summary's
counts, and every new column read back by DuckDB and pandas.

Under the default policy a row without a mask stops the job from inside the model actor, the
same actor and path as the tokenize stage's bad rows (tests/e2e/test_job_bad_input.py); the
fill-mask stage's message is checked in tests/actors/test_encoder_tasks.py."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import encoder_task_data
from job_io import read_back, write_shards
from jobs.infer import run_job
from jobs.spec import parse_spec

transformers = pytest.importorskip("transformers")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]

MASKED = ["The capital of France is [MASK].", "No mask in this one.", "A [MASK] walks over the old [MASK].", None,
          "Rivers run to the [MASK]."]
TEXTS = ["A short one.", None, "The river carries water to the ocean.", "Hello world", "   ",
         "Markets change over a season."]


def job(*argv: str) -> dict:
    return run_job(parse_spec(list(argv)))


@pytest.fixture(scope="module")
def tiny_mlm(tmp_path_factory: pytest.TempPathFactory, minilm: str) -> Path:
    return encoder_task_data.tiny_mlm(tmp_path_factory.mktemp("mlm"), minilm)


def test_fill_mask_job_through_s3_equals_the_reference_pipeline(tiny_mlm: Path, s3_server, tmp_path: Path) -> None:
    local = write_shards(tmp_path / "in", {"text": MASKED})
    fs = s3_server.filesystem()
    fs.put(str(local) + "/", f"{s3_server.bucket}/fill/in/", recursive=True)
    manifest = job("--task", "fill-mask", "--model", str(tiny_mlm), "--input", f"s3://{s3_server.bucket}/fill/in/",
                   "--output", f"s3://{s3_server.bucket}/fill/out", "--top-k", "3", "--on-bad-row", "flag",
                   "--storage-options", json.dumps(s3_server.storage_options))
    fs.get(f"{s3_server.bucket}/fill/out/", str(tmp_path / "out"), recursive=True)
    table = pa.concat_tables([pq.read_table(tmp_path / "out" / f"part-{k}.parquet") for k in range(2)])
    assert table.column_names == ["id", "predictions", "truncated", "error"]
    fill = transformers.pipeline("fill-mask", model=str(tiny_mlm), device="cpu")
    ours = table["predictions"].to_pylist()
    for text, row in zip(MASKED, ours):
        if text is None or "[MASK]" not in text:
            assert row is None
            continue
        expected = fill(text, top_k=3)
        expected = [expected] if isinstance(expected[0], dict) else expected
        assert [[(p["token"], p["token_str"], p["sequence"]) for p in mask] for mask in row] == \
               [[(p["token"], p["token_str"], p["sequence"]) for p in mask] for mask in expected]
        np.testing.assert_allclose([p["score"] for m in row for p in m], [p["score"] for m in expected for p in m],
                                   rtol=1e-4)
    errors = table["error"].to_pylist()
    assert errors[1].startswith("the text has no mask token [MASK]") and errors[3] == "column 'text' is null"
    assert manifest["summary"]["bad_rows"] == 2 and manifest["summary"]["rows"] == 5
    assert any("row 1: the text has no mask token" in e for e in manifest["errors"]["examples"])
    assert manifest["task"]["settings"] == {"top_k": 3, "targets": []}
    by_duckdb, by_pandas = read_back(tmp_path / "out", "predictions")
    assert by_duckdb[0][0][0]["token_str"] == ours[0][0][0]["token_str"] and by_duckdb[1] is None
    assert len(by_duckdb[2]) == 2 and list(by_pandas[2][1][0].keys()) == ["token", "token_str", "score", "sequence"]


def test_multi_label_classify_job_equals_the_reference_pipeline(minilm: str, tmp_path: Path) -> None:
    model = encoder_task_data.multi_label_classifier(tmp_path / "model", minilm)
    write_shards(tmp_path / "in", {"text": TEXTS})
    manifest = job("--task", "classify", "--model", str(model), "--input", str(tmp_path / "in"), "--output",
                   str(tmp_path / "out"), "--threshold", "0.4", "--return-logits", "--on-bad-row", "flag")
    table = pa.concat_tables([pq.read_table(tmp_path / "out" / f"part-{k}.parquet") for k in range(2)])
    assert table.column_names == ["id", "label", "label_id", "score", "logits", "labels", "truncated", "error"]
    assert manifest["task"]["settings"]["function"] == "sigmoid"  # from problem_type
    assert manifest["summary"]["bad_rows"] == 2
    classify = transformers.pipeline("text-classification", model=str(model), device="cpu")
    passed = 0
    for text, logits, labels in zip(TEXTS, table["logits"].to_pylist(), table["labels"].to_pylist()):
        if text is None or not text.strip():
            assert logits is None and labels is None
            continue
        reference = classify(text, top_k=None)  # sorted best first
        expected = [r for r in reference if r["score"] > 0.4]
        assert [r["label"] for r in labels] == [r["label"] for r in expected]
        np.testing.assert_allclose([r["score"] for r in labels], [r["score"] for r in expected], rtol=1e-5)
        by_label = {r["label"]: r["score"] for r in reference}
        np.testing.assert_allclose(1 / (1 + np.exp(-np.array(logits))),
                                   [by_label[encoder_task_data.LABELS[i]] for i in range(4)], rtol=1e-5)
        passed += len(labels)
    assert 0 < passed < 16
    by_duckdb, by_pandas = read_back(tmp_path / "out", "labels")
    assert [[r["label"] for r in row] if row is not None else None for row in by_duckdb] == \
           [[r["label"] for r in row] if row is not None else None for row in table["labels"].to_pylist()]
    assert by_pandas[1] is None and len(by_pandas[0]) == len(table["labels"][0].as_py())


def test_embed_job_dense_model_prompt_dimensions_then_int8_calibrated_on_its_output(tiny_mlm: Path,
                                                                                   tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.quantization import quantize_embeddings

    model = encoder_task_data.dense_sentence_model(tmp_path / "model", tiny_mlm)
    write_shards(tmp_path / "in", {"text": TEXTS})
    common = ["--model", str(model), "--input", str(tmp_path / "in"), "--on-bad-row", "flag", "--prompt-name",
              "passage", "--dimensions", "8"]
    floats = job(*common, "--output", str(tmp_path / "float"))
    assert floats["task"]["settings"]["prompt_text"] == "passage: " and floats["summary"]["bad_rows"] == 2
    table = pa.concat_tables([pq.read_table(tmp_path / "float" / f"part-{k}.parquet") for k in range(2)])
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 8)
    good = [i for i, t in enumerate(TEXTS) if t and t.strip()]
    ours = np.array([table["embedding"][i].as_py() for i in good], dtype=np.float32)
    reference = SentenceTransformer(str(model), device="cpu").encode(
        [TEXTS[i] for i in good], prompt_name="passage", truncate_dim=8, normalize_embeddings=True)
    np.testing.assert_allclose(ours, reference, atol=2e-5)

    manifest = job(*common, "--output", str(tmp_path / "int8"), "--precision", "int8", "--calibration",
                   str(tmp_path / "float"))
    ranges = np.array(manifest["task"]["settings"]["calibration_ranges"])
    np.testing.assert_allclose(ranges, np.vstack([ours.min(0), ours.max(0)]), rtol=1e-6)  # from the float run
    quantized = pa.concat_tables([pq.read_table(tmp_path / "int8" / f"part-{k}.parquet") for k in range(2)])
    assert quantized.schema.field("embedding").type == pa.list_(pa.int8(), 8)
    np.testing.assert_array_equal(np.array([quantized["embedding"][i].as_py() for i in good]),
                                  quantize_embeddings(ours, precision="int8", ranges=ranges))
    assert manifest["summary"]["bad_rows"] == 2 and quantized["embedding"][1].as_py() is None
    by_duckdb, by_pandas = read_back(tmp_path / "int8", "embedding")
    assert list(by_duckdb[0]) == quantized["embedding"][0].as_py() and by_duckdb[1] is None
    assert list(by_pandas[0]) == quantized["embedding"][0].as_py()
