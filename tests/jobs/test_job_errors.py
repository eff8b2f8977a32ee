"""Bad settings and bad input fail before any actor starts, with a message that says what to do."""
from __future__ import annotations

import json
import logging
import os
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
    (["--keep-columns", "__row"], "reserved for the job's own use"),
    (["--keep-columns", "doc,body", "--id-column", "doc"], "names the id column 'doc'"),
    (["--task", "classify", "--pooling", "cls"], "--pooling (command line) applies to --task embed, not to --task classify"),
    (["--normalize", "--task", "classify"], "--normalize (command line) applies to --task embed"),
    (["--task", "no-such-task"], "Unknown task 'no-such-task'. Known tasks: classify, embed"),
    (["--task", "task_token_stats:TokenStatsTask", "--text-pair-column", "b"], "takes single texts, not pairs"),
])
def test_bad_settings(argv: list[str], message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_spec(argv)


def test_an_option_of_another_task_in_a_spec_file_names_both_tasks(tmp_path: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text("task: classify\nreturn_probs: true\nembedding_dtype: float16\n")
    with pytest.raises(SpecError, match=r"--embedding-dtype \(.*job.yaml / command line\) applies to --task embed, "
                                        r"not to --task classify"):
        parse_spec(["--spec", str(spec)])


@pytest.mark.parametrize("argv, message", [
    (["--keep-columns", "label", "--task", "classify"], "would hold column(s) label twice (--task classify writes id, "
                                                        "label, label_id, score, truncated)"),
    (["--keep-columns", "embedding"], "would hold column(s) embedding twice"),
    (["--keep-columns", "id"], "would hold column(s) id twice"),
])
def test_output_column_clashes_are_refused_before_ray(argv: list[str], message: str, shards: Path, tmp_path: Path,
                                                      minilm: str, tiny_classifier: Path, no_pipeline: None) -> None:
    model = tiny_classifier if "classify" in argv else minilm
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _run(["--model", str(model), "--input", str(shards), "--text-column", "body", "--output", str(tmp_path / "out"),
              *argv])


def test_bad_choice_is_an_argparse_error() -> None:
    with pytest.raises(SystemExit):
        parse_spec(["--pooling", "median"])


def test_spec_file_then_flags(tmp_path: Path) -> None:
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text("task: classify\ninput: [s3://b/in/, s3://b/more/]\nkeep-columns: a,b\nactors: [2, 4]\n"
                         "batch_size: 16\nstorage_options: {endpoint_url: 'http://x', secret: s3cr3t}\n")
    spec = parse_spec(["--spec", str(spec_file), "--batch-size", "32", "--output", "s3://b/out"])
    assert (spec.task, spec.input, spec.keep_columns, spec.placement.actors, spec.batch_size) == (
        "classify", ["s3://b/in/", "s3://b/more/"], ["a", "b"], (2, 4), 32)
    assert spec.to_dict()["storage_options"] == {"endpoint_url": "http://x", "secret": "***"}


def test_the_manifests_job_section_reads_back_as_a_spec(tmp_path: Path) -> None:
    """Settings are grouped (placement, the task's options) in the manifest; a spec file may
    use those groups too, so a manifest's job section reruns the job."""
    spec = parse_spec(["--task", "embed", "--pooling", "cls", "--actors", "1,3", "--output", "o", "--input", "i"])
    dumped = spec.to_dict()
    assert dumped["placement"]["actors"] == [1, 3] and dumped["task_options"] == {"pooling": "cls"}
    (tmp_path / "job.json").write_text(json.dumps(dumped))
    again = parse_spec(["--spec", str(tmp_path / "job.json")])
    assert again == spec


def test_unknown_spec_key(tmp_path: Path) -> None:
    spec_file = tmp_path / "job.json"
    spec_file.write_text(json.dumps({"modle": "x"}))
    with pytest.raises(SpecError, match=r"Unknown setting modle in the .*job.json / command line. Settings of --task "
                                        r"embed: task, model, input"):
        parse_spec(["--spec", str(spec_file)])


def test_max_length_beyond_the_model(shards: Path, tmp_path: Path, minilm: str, no_pipeline: None) -> None:
    with pytest.raises(ModelError, match=r"--max-length 4096 is longer than the model allows \(512 tokens\)"):
        infer.run_job(make_spec({"model": minilm, "input": [str(shards)], "text_column": "body",
                                 "output": str(tmp_path / "out"), "max_length": 4096}))


# -- every kind of bad input, answered before Ray starts -------------------------------------------
def _model_copy(source: Path, directory: Path) -> Path:
    directory.mkdir(parents=True)
    for path in source.iterdir():
        if path.is_file():
            (directory / path.name).write_bytes(path.read_bytes())
    return directory


def _run_on(model: Path, shards: Path, tmp_path: Path, *extra: str) -> None:
    _run(["--model", str(model), "--input", str(shards), "--text-column", "body", "--output", str(tmp_path / "out"),
          *extra])


def test_text_column_of_the_wrong_type(tmp_path: Path, minilm: str, no_pipeline: None) -> None:
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"text": [1, 2, 3]}), tmp_path / "in" / "numbers.parquet")
    with pytest.raises(InputError, match=r"Column 'text' in .*numbers\.parquet holds int64, not text"):
        _run(["--model", minilm, "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")])


def test_empty_input_commits_an_empty_output_without_starting_ray(tmp_path: Path, minilm: str, no_pipeline: None,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "in" / "empty.parquet")
    with caplog.at_level(logging.WARNING):
        manifest = infer.run_job(parse_spec(["--model", minilm, "--input", str(tmp_path / "in"),
                                             "--output", str(tmp_path / "out")]))
    assert "empty.parquet has no rows" in caplog.text and "the input has no rows to process" in caplog.text
    assert manifest["summary"]["rows"] == 0 and manifest["summary"]["files"] == 0
    assert (tmp_path / "out" / "_SUCCESS").exists()


def _corrupt_footer(path: Path) -> None:
    pq.write_table(pa.table({"body": ["x", "y"]}), path)
    data = bytearray(path.read_bytes())
    data[-12:-8] = b"\xff\xff\xff\x7f"  # the footer length: now pointing far before the file's start
    path.write_bytes(bytes(data))


def test_corrupt_parquet_footer_fails_naming_the_file_or_is_skipped(shards: Path, tmp_path: Path, minilm: str,
                                                                     no_pipeline: None) -> None:
    _corrupt_footer(shards / "part-1.parquet")
    with pytest.raises(InputError, match=r"(?s)Can't read the Parquet footer of .*part-1\.parquet: .*--on-bad-shard skip"):
        _run_on(Path(minilm), shards, tmp_path)
    # Skipped: recorded in the manifest and counted (the good file is empty here, so Ray is not needed).
    pq.write_table(pa.table({"body": pa.array([], pa.string())}), shards / "part-0.parquet")
    manifest = infer.run_job(parse_spec(["--model", minilm, "--input", str(shards), "--text-column", "body",
                                         "--output", str(tmp_path / "out"), "--on-bad-shard", "skip"]))
    assert manifest["summary"]["unreadable_inputs"] == 1
    (problem,) = manifest["errors"]["unreadable_inputs"]
    assert "part-1.parquet" in problem and "footer" in problem
    assert [s["unreadable"] != [] for s in manifest["shards"]] == [False, True]


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[: len(data) // 2], r"model\.safetensors: the safetensors file is corrupt or truncated"),
    (lambda data: b"\x00" * 8 + data[8:], r"model\.safetensors: the safetensors file is corrupt or truncated"),
])
def test_corrupt_or_truncated_safetensors(damage, message: str, tiny_classifier: Path, shards: Path, tmp_path: Path,
                                          no_pipeline: None) -> None:
    model = _model_copy(tiny_classifier, tmp_path / "model")
    (model / "model.safetensors").write_bytes(damage((model / "model.safetensors").read_bytes()))
    with pytest.raises(ModelError, match=message):
        _run_on(model, shards, tmp_path)


class _Payload:
    """Unpickling this runs a shell command: what weights_only must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_carrying_code_is_refused_and_safetensors_preferred(tiny_classifier: Path, shards: Path,
                                                                     tmp_path: Path, no_pipeline: None) -> None:
    import torch
    from safetensors.torch import load_file

    from jobs.model import resolve

    model = _model_copy(tiny_classifier, tmp_path / "model")
    marker = tmp_path / "pwned"
    state = dict(load_file(str(model / "model.safetensors")))
    state["evil"] = _Payload(marker)
    torch.save(state, model / "pytorch_model.bin")
    # Both formats: the safetensors file is the one used; the pickle is never opened.
    spec = make_spec({"model": str(model), "input": [str(shards)], "text_column": "body"})
    resolved = resolve(spec, spec.make_task())
    assert resolved.weight_files == ["model.safetensors"]
    (model / "model.safetensors").unlink()
    with pytest.raises(ModelError, match=r"Refused to load .*pytorch_model\.bin: it is a pickle that needs code to run.*"
                                         r"never executes code from a model file"):
        _run_on(model, shards, tmp_path)
    assert not marker.exists()


def test_config_that_needs_remote_code_is_refused(tiny_classifier: Path, shards: Path, tmp_path: Path,
                                                  no_pipeline: None) -> None:
    model = _model_copy(tiny_classifier, tmp_path / "model")
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_custom.CustomBert"}
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"config\.json has 'auto_map' \(AutoModel\): this model needs Python code from "
                                         r"its own repository, and autoload never runs code from a model repository"):
        _run_on(model, shards, tmp_path)


def test_config_and_weights_of_different_shapes(tiny_classifier: Path, shards: Path, tmp_path: Path,
                                                no_pipeline: None) -> None:
    model = _model_copy(tiny_classifier, tmp_path / "model")
    config = json.loads((model / "config.json").read_text())
    config["intermediate_size"] = 48
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"do not fit the model built from its config \(.*intermediate\.dense\.weight: "
                                         r"checkpoint \(64, 32\) vs model \(48, 32\)"):
        _run_on(model, shards, tmp_path)


def test_output_inside_the_input_is_refused(shards: Path, tmp_path: Path, no_pipeline: None) -> None:
    for output in (shards, shards / "embeddings"):
        with pytest.raises(InputError, match=r"The output .* is (the same as|inside) the input .*in: the next run would "
                                             r"read this job's output files as input"):
            _run(["--model", str(tmp_path / "not-even-resolved"), "--input", str(shards), "--output", str(output)])
    with pytest.raises(InputError, match="inside the input s3://bucket/data/"):
        _run(["--model", "x", "--input", "s3://bucket/data/*.parquet", "--output", "s3://bucket/data/out/"])


def test_output_of_another_job_is_refused(tiny_classifier: Path, shards: Path, tmp_path: Path,
                                          no_pipeline: None) -> None:
    from jobs.output import OutputError, prepare

    prepare(str(tmp_path / "out"), {}, {"task": "embed", "weights_sha256": "0" * 64}, {}, overwrite=False)
    with pytest.raises(OutputError, match=r"holds results of a different job \(.*weights_sha256: \"00000000000000… there"):
        _run_on(tiny_classifier, shards, tmp_path)


def test_score_on_an_encoder_decoder_without_a_target_fails_before_ray(shards: Path, tmp_path: Path,
                                                                      no_pipeline: None) -> None:
    """T5 scores a target given a source: without --text-pair-column the job is refused up front
    (before, the stage failed inside Ray)."""
    from t5_data import tiny_t5

    model = tiny_t5(tmp_path / "t5")
    with pytest.raises(SpecError, match=r"--task score on t5 \(an encoder-decoder\) scores a target given a source: "
                                        "name the target column with --text-pair-column"):
        _run(["--task", "score", "--model", str(model), "--input", str(shards), "--text-column", "body",
              "--output", str(tmp_path / "out")])
