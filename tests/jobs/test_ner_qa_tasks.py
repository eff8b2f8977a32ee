"""The ner and qa task declarations (no Ray, no model): parsing, defaults read from the model,
settings the reference refuses, the tokenize stage's windows and the columns qa reads."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from actors.tokenize import Windows
from jobs.options import SpecError
from jobs.spec import parse_spec


def _model(max_length: int = 512, model_type: str = "bert") -> SimpleNamespace:
    return SimpleNamespace(max_length=max_length, model_type=model_type)


def _task(*argv: str):
    return parse_spec(["--model", "m", "--input", "in", "--output", "out", *argv]).make_task()


def test_ner_settings_and_windows() -> None:
    task = _task("--task", "ner", "--stride", "16", "--ignore-labels", "O,MISC")
    settings = task.settings(_model(128))
    assert settings == {"aggregation": "simple", "ignore_labels": ["O", "MISC"], "stride": 16}
    assert task.tokenize_kwargs(settings, _model(128)) == {"windows": Windows(max_length=128, stride=16)}
    plain = _task("--task", "ner", "--ignore-labels", "")
    settings = plain.settings(_model(128))
    assert settings["ignore_labels"] == [] and settings["stride"] is None
    # Without --stride: one window, the rest cut (and marked truncated).
    assert plain.tokenize_kwargs(settings, _model(128))["windows"] == Windows(max_length=128, overflow=False,
                                                                              max_text_tokens=128)
    with pytest.raises(SpecError, match="--stride needs an --aggregation other than none"):
        _task("--task", "ner", "--stride", "4", "--aggregation", "none").settings(_model())
    with pytest.raises(SpecError, match="--stride 128 must be less than the model's length"):
        _task("--task", "ner", "--stride", "128").settings(_model(128))
    with pytest.raises(SystemExit):  # argparse's choices
        _task("--task", "ner", "--aggregation", "longest")


def test_qa_defaults_columns_and_refusals() -> None:
    task = _task("--task", "qa", "--question-column", "q", "--top-k", "2")
    settings = task.settings(_model(512))
    # The reference's defaults: windows of min(length, 384), stride min(window // 2, 128).
    assert (settings["max_seq_len"], settings["doc_stride"], settings["max_answer_length"]) == (384, 128, 15)
    assert task.settings(_model(64))["max_seq_len"] == 64 and task.settings(_model(64))["doc_stride"] == 32
    assert task.text_columns(settings, _model()) == ("q", "context")
    assert task.tokenize_kwargs(settings, _model())["windows"] == Windows(max_length=384, stride=128,
                                                                          truncation="only_second")
    assert task.output_schema(settings, _model()).names == ["answer", "score", "start", "end", "answers"]
    # A left-padding model (XLNet-style) takes the context first, as the reference.
    assert task.text_columns(settings, _model(model_type="xlnet")) == ("context", "q")
    with pytest.raises(SpecError, match="--doc-stride 64 must be less than the window"):
        _task("--task", "qa", "--doc-stride", "64", "--max-seq-len", "64").settings(_model())
    with pytest.raises(SpecError, match="--max-seq-len 600 is longer than the model allows"):
        _task("--task", "qa", "--max-seq-len", "600").settings(_model())
    with pytest.raises(SpecError, match="both name 'x'"):
        _task("--task", "qa", "--question-column", "x", "--context-column", "x").settings(_model())
    with pytest.raises(SpecError, match="takes single texts, not pairs"):
        _task("--task", "qa", "--text-pair-column", "p")
    # qa reads its own columns: a --text-column would be silently ignored, so it is refused.
    with pytest.raises(SpecError, match="--task qa reads its text from --question-column, --context-column, not "
                                        "--text-column"):
        _task("--task", "qa", "--text-column", "body")
