"""ner and qa through the job (real Ray, Parquet in and out): entities equal to the reference
token-classification pipeline for a text three times the model's length (--stride), answers
equal to the golden fixtures of the question-answering pipeline for a context of several
windows (through the S3 server), with the bad-row policy, the summary's counts, the task
settings in the manifest, and every new column read back by DuckDB and pandas."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from job_io import read_back, write_shards
from jobs.infer import run_job
from jobs.spec import parse_spec
from ner_qa_data import TEXTS, long_text, tiny_token_classifier

transformers = pytest.importorskip("transformers")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]

QA_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "qa"


def job(*argv: str) -> dict:
    return run_job(parse_spec(list(argv)))


def test_ner_job_equals_the_reference_pipeline(tmp_path: Path) -> None:
    model = tiny_token_classifier(tmp_path / "model", "bert")
    texts = [TEXTS[0], None, long_text(), TEXTS[2], "  "]
    local = write_shards(tmp_path / "in", {"text": texts})
    manifest = job("--task", "ner", "--model", str(model), "--input", str(local), "--output", str(tmp_path / "out"),
                   "--aggregation", "first", "--stride", "8", "--on-bad-row", "flag", "--actors", "1,1")
    table = pa.concat_tables([pq.read_table(tmp_path / "out" / f"part-{k}.parquet") for k in range(2)])
    assert table.column_names == ["id", "entities", "truncated", "error"]
    assert manifest["task"]["settings"] == {"aggregation": "first", "ignore_labels": ["O"], "stride": 8}
    assert manifest["summary"]["rows"] == 5 and manifest["summary"]["bad_rows"] == 2
    assert table["error"].to_pylist() == [None, "column 'text' is null", None, None, "column 'text' holds only whitespace"]
    pipe = transformers.pipeline("token-classification", model=str(model), aggregation_strategy="first", stride=8,
                                 device="cpu")
    ours = table["entities"].to_pylist()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for text, entities in zip(texts, ours):
            if text is None or not text.strip():
                assert entities is None
                continue
            expected = pipe(text)
            assert [(e["entity_group"], e["word"], e["start"], e["end"]) for e in entities] == \
                   [(e["entity_group"], e["word"], e["start"], e["end"]) for e in expected]
            np.testing.assert_allclose([e["score"] for e in entities], [e["score"] for e in expected], rtol=1e-5)
    assert len(ours[2]) > len(ours[0]) and not any(table["truncated"].to_pylist())
    by_duckdb, by_pandas = read_back(tmp_path / "out", "entities")
    assert by_duckdb[1] is None and [dict(e) for e in by_duckdb[0]] == ours[0]
    assert list(by_pandas[2][0].keys()) == ["entity_group", "score", "word", "start", "end"]


def test_qa_job_through_s3_equals_the_reference_answers(s3_server, tmp_path: Path) -> None:
    cases = [c for c in json.loads((QA_FIXTURES / "expected.json").read_text())["bert"]
             if c["kwargs"] == {"top_k": 3} or c["kwargs"] == {"handle_impossible_answer": True, "top_k": 3}]
    plain, impossible = [c for c in cases if "handle_impossible_answer" not in c["kwargs"]], \
        [c for c in cases if "handle_impossible_answer" in c["kwargs"]]
    assert plain and impossible and max(c["windows"] for c in cases) > 2
    questions = [c["question"] for c in cases] + ["Where is it?", None]
    contexts = [c["context"] for c in cases] + [None, "In Paris."]
    local = write_shards(tmp_path / "in", {"q": questions, "ctx": contexts})
    fs = s3_server.filesystem()
    fs.put(str(local) + "/", f"{s3_server.bucket}/qa/in/", recursive=True)
    manifest = job("--task", "qa", "--model", str(QA_FIXTURES / "bert"), "--input", f"s3://{s3_server.bucket}/qa/in/",
                   "--output", f"s3://{s3_server.bucket}/qa/out", "--question-column", "q", "--context-column", "ctx",
                   "--top-k", "3", "--handle-impossible-answer", "--on-bad-row", "flag", "--keep-columns", "q",
                   "--actors", "1,1", "--storage-options", json.dumps(s3_server.storage_options))
    fs.get(f"{s3_server.bucket}/qa/out/", str(tmp_path / "out"), recursive=True)
    table = pa.concat_tables([pq.read_table(tmp_path / "out" / f"part-{k}.parquet") for k in range(2)])
    assert table.column_names == ["id", "q", "answer", "score", "start", "end", "answers", "truncated", "error"]
    assert manifest["summary"]["rows"] == len(questions) and manifest["summary"]["bad_rows"] == 2
    settings = manifest["task"]["settings"]
    assert (settings["doc_stride"], settings["max_seq_len"], settings["handle_impossible_answer"]) == (32, 64, True)
    assert table["error"].to_pylist()[-2:] == ["column 'ctx' is null", "column 'q' is null"]
    assert table["answer"].to_pylist()[-2:] == [None, None] and table["answers"].to_pylist()[-2:] == [None, None]
    for row, case in enumerate(cases):
        got = table["answers"][row].as_py()
        want = [{**a, "answer": a["answer"] or None, "start": a["start"] if a["answer"] else None,
                 "end": a["end"] if a["answer"] else None} for a in case["answers"]]
        if case in plain:
            # The fixture ran without the null answer: here it competes, so compare the others.
            got = [a for a in got if a["answer"] is not None]
            want = want[:len(got)]
        assert [(a["answer"], a["start"], a["end"]) for a in got] == [(a["answer"], a["start"], a["end"]) for a in want]
        np.testing.assert_allclose([a["score"] for a in got], [a["score"] for a in want], rtol=1e-4)
        assert (table["answer"][row].as_py(), table["score"][row].as_py()) == \
               (table["answers"][row][0]["answer"].as_py(), table["answers"][row][0]["score"].as_py())
    local_out = tmp_path / "out"
    # The null answer competed: in the n-best lists it has a score and no text.
    assert any(a["answer"] is None and a["score"] > 0 for row in table["answers"].to_pylist() if row for a in row)
    by_duckdb, by_pandas = read_back(local_out, "answers")
    assert by_duckdb[-1] is None and [dict(a) for a in by_duckdb[0]] == table["answers"][0].as_py()
    assert list(by_pandas[0][0].keys()) == ["answer", "score", "start", "end"]
    answers_duckdb, _ = read_back(local_out, "answer")
    assert answers_duckdb == table["answer"].to_pylist()
