"""Bad settings and bad input fail before any actor starts, with a message that says what to do."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import infer, pipeline
from jobs.model import ModelError
from jobs.plan import InputError
from jobs.spec import SpecError, make_spec, parse_spec


@pytest.fixture
def no_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the job gets as far as starting Ray or the pipeline."""
    def refuse(*args, **kwargs):
        raise AssertionError("the job started Ray/actors although its input or model is unusable")

    monkeypatch.setattr(pipeline, "run", refuse)
    monkeypatch.setattr(infer, "_connect", refuse)


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    directory = tmp_path / "in"
    directory.mkdir()
    pq.write_table(pa.table({"id": ["a", "b"], "body": ["x", "y"]}), directory / "part-0.parquet")
    return directory


def _run(argv: list[str]) -> None:
    infer.run_job(parse_spec(argv))


def test_missing_text_column_names_file_and_columns(shards: Path, tmp_path: Path, minilm: str, no_pipeline: None) -> None:
    with pytest.raises(InputError, match=r"Column\(s\) 'text' not found in .*part-0\.parquet; its columns are id, body"):
        _run(["--model", minilm, "--input", str(shards), "--output", str(tmp_path / "out")])


def test_prefix_without_parquet_files(tmp_path: Path, minilm: str, no_pipeline: None) -> None:
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("not parquet")
    with pytest.raises(InputError, match=r"No Parquet files found in input .*empty"):
        _run(["--model", minilm, "--input", str(empty), "--output", str(tmp_path / "out")])


def test_input_that_does_not_exist(tmp_path: Path, minilm: str, no_pipeline: None) -> None:
    with pytest.raises(InputError, match=r"Input .*nowhere does not exist"):
        _run(["--model", minilm, "--input", str(tmp_path / "nowhere"), "--output", str(tmp_path / "out")])


def test_unreachable_model(shards: Path, tmp_path: Path, no_pipeline: None) -> None:
    with pytest.raises(ModelError, match=r"Can't use model .*no-such-model"):
        _run(["--model", str(tmp_path / "no-such-model"), "--input", str(shards), "--text-column", "body",
              "--output", str(tmp_path / "out")])


@pytest.mark.slow
def test_unreachable_model_on_s3(s3_server, shards: Path, tmp_path: Path, no_pipeline: None) -> None:
    with pytest.raises(ModelError, match=r"Can't use model s3://test/models/missing/"):
        _run(["--model", f"s3://{s3_server.bucket}/models/missing/", "--input", str(shards), "--text-column", "body",
              "--output", str(tmp_path / "out"), "--storage-options", json.dumps(s3_server.storage_options)])


def test_a_model_without_the_task_head_fails_before_ray(shards: Path, tmp_path: Path, minilm: str,
                                                        no_pipeline: None) -> None:
    with pytest.raises(ModelError, match=r"has no trained weights for classifier\.bias, classifier\.weight: it is not a "
                                         r"sequence-classification checkpoint for BertForSequenceClassification"):
        _run(["--task", "classify", "--model", minilm, "--input", str(shards), "--text-column", "body",
              "--output", str(tmp_path / "out")])


def test_classify_needs_a_model_type_with_a_classification_head(shards: Path, tmp_path: Path, no_pipeline: None) -> None:
    model = tmp_path / "odd-model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "no-such-type"}))
    with pytest.raises(ModelError, match=r"Unknown model type 'no-such-type'. Known model types: .*bert"):
        _run(["--task", "classify", "--model", str(model), "--input", str(shards), "--text-column", "body",
              "--output", str(tmp_path / "out")])


def test_cli_reports_errors_and_exits_2(shards: Path, tmp_path: Path, minilm: str, no_pipeline: None,
                                        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        code = infer.main(["--model", minilm, "--input", str(shards), "--output", str(tmp_path / "out")])
    assert code == 2
    assert "Column(s) 'text' not found" in caplog.text
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, message", [
    (["--actors", "3,1"], "1 <= MIN <= MAX"),
    (["--batch-size", "0"], "positive int"),
    (["--storage-options", "{not json"], "must be a JSON object"),
    (["--keep-columns", "label", "--task", "classify"], "would write column(s) label twice"),
    (["--keep-columns", "__row"], "reserved for the job's own use"),
])
def test_bad_settings(argv: list[str], message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_spec(argv)


def test_bad_choice_is_an_argparse_error() -> None:
    with pytest.raises(SystemExit):
        parse_spec(["--pooling", "median"])


def test_spec_file_then_flags(tmp_path: Path) -> None:
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text("task: classify\ninput: [s3://b/in/, s3://b/more/]\nkeep-columns: a,b\nactors: [2, 4]\n"
                         "batch_size: 16\nstorage_options: {endpoint_url: 'http://x', secret: s3cr3t}\n")
    spec = parse_spec(["--spec", str(spec_file), "--batch-size", "32", "--output", "s3://b/out"])
    assert (spec.task, spec.input, spec.keep_columns, spec.actors, spec.batch_size) == (
        "classify", ["s3://b/in/", "s3://b/more/"], ["a", "b"], (2, 4), 32)
    assert spec.to_dict()["storage_options"] == {"endpoint_url": "http://x", "secret": "***"}


def test_unknown_spec_key(tmp_path: Path) -> None:
    spec_file = tmp_path / "job.json"
    spec_file.write_text(json.dumps({"modle": "x"}))
    with pytest.raises(SpecError, match=r"Unknown setting\(s\) modle"):
        parse_spec(["--spec", str(spec_file)])


def test_max_length_beyond_the_model(shards: Path, tmp_path: Path, minilm: str, no_pipeline: None) -> None:
    with pytest.raises(ModelError, match=r"--max-length 4096 is longer than the model allows \(512 tokens\)"):
        infer.run_job(make_spec({"model": minilm, "input": [str(shards)], "text_column": "body",
                                 "output": str(tmp_path / "out"), "max_length": 4096}))
