"""The qa stage (no Ray) against golden fixtures of transformers 4.57.6's question-answering
pipeline (tests/fixtures/qa/make_fixtures.py: 5.x has no such pipeline): answers, scores and
character offsets on tiny WordPiece BERT and byte-level RoBERTa models, including contexts of
several windows, --top-k, --max-answer-length and the null answer; padded and unpadded
forwards; bad rows."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from actors.common import ERROR, ROW, SOURCE, WORD_IDS
from actors.qa import QuestionAnswer
from actors.tokenize import Tokenize, Windows

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "qa"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
MAX_LENGTH = 64  # the fixtures' model_max_length


def _tokenized(model_dir: Path, questions: list, contexts: list, max_seq_len: int, doc_stride: int,
               on_bad_row: str = "error") -> pa.Table:
    table = pa.table({"question": questions, "context": contexts, SOURCE: ["in.parquet"] * len(questions),
                      ROW: list(range(len(questions)))})
    windows = Windows(max_length=max_seq_len, stride=doc_stride, truncation="only_second")
    return Tokenize(str(model_dir), text_column="question", text_pair_column="context", max_length=MAX_LENGTH,
                    on_bad_row=on_bad_row, windows=windows)(table)


def _ours(table: pa.Table, row: int, top_k: int) -> list[dict]:
    if top_k > 1:
        return table["answers"][row].as_py()
    return [{name: table[name][row].as_py() for name in ("answer", "score", "start", "end")}]


def _reference(answers: list[dict]) -> list[dict]:
    """The reference's null answer ("", 0, 0) as ours writes it: no text, no offsets."""
    return [{**a, "answer": None, "start": None, "end": None} if a["answer"] == "" and a["end"] == 0 else a
            for a in answers]


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_answers_equal_the_reference_pipeline(family: str) -> None:
    model_dir = FIXTURES / family
    several_windows = null_wins = 0
    stages: dict[tuple, QuestionAnswer] = {}
    for case in EXPECTED[family]:
        kwargs = case["kwargs"]
        max_seq_len = kwargs.get("max_seq_len", MAX_LENGTH)
        tokenized = _tokenized(model_dir, [case["question"]], [case["context"]], max_seq_len,
                               kwargs.get("doc_stride", max_seq_len // 2))
        windows = len(tokenized[WORD_IDS][0].as_py())
        assert windows == case["windows"]
        options = (kwargs.get("top_k", 1), kwargs.get("max_answer_len", 15), kwargs.get("handle_impossible_answer", False))
        if options not in stages:
            stages[options] = QuestionAnswer(str(model_dir), top_k=options[0], max_answer_length=options[1],
                                             handle_impossible_answer=options[2], threads=1, dtype="float32")
        stage = stages[options]
        expected = _reference(case["answers"])
        for flat in (True, False):  # unpadded and padded forwards
            stage.flat = flat
            ours = _ours(stage(tokenized), 0, options[0])
            assert [{k: v for k, v in a.items() if k != "score"} for a in ours] == \
                   [{k: v for k, v in a.items() if k != "score"} for a in expected], case
            np.testing.assert_allclose([a["score"] for a in ours], [a["score"] for a in expected], rtol=1e-4)
        stage.flat = True
        several_windows += windows > 2
        null_wins += expected[0]["answer"] is None
    assert several_windows and null_wins  # the fixtures cover long contexts and the null answer


def test_a_block_of_rows_and_bad_rows() -> None:
    """Several rows in one block (windows of different rows batched together) give each row's
    own answers; a null context or question is flagged, not dropped."""
    model_dir = FIXTURES / "bert"
    cases = [c for c in EXPECTED["bert"] if c["kwargs"].get("top_k", 1) == 3 and "max_seq_len" not in c["kwargs"]
             and not c["kwargs"].get("handle_impossible_answer")]
    questions = [c["question"] for c in cases] + ["Where?", None]
    contexts = [c["context"] for c in cases] + [None, "Paris."]
    tokenized = _tokenized(model_dir, questions, contexts, MAX_LENGTH, MAX_LENGTH // 2, on_bad_row="flag")
    out = QuestionAnswer(str(model_dir), top_k=3, threads=1, max_batch_tokens=100, dtype="float32")(tokenized)
    for row, case in enumerate(cases):
        got = out["answers"][row].as_py()
        assert [(a["answer"], a["start"], a["end"]) for a in got] == \
               [(a["answer"], a["start"], a["end"]) for a in case["answers"]]
        assert out["answer"][row].as_py() == got[0]["answer"]
    assert out[ERROR].to_pylist()[len(cases):] == ["column 'context' is null", "column 'question' is null"]
    assert out["answer"].to_pylist()[len(cases):] == [None, None]
    assert out["answers"].to_pylist()[len(cases):] == [None, None]


def test_qa_on_a_model_whose_seed_qa_head_is_the_beam_head(tmp_path: Path) -> None:
    """XLNet's AutoModelForQuestionAnswering is the seed's SQuAD beam head (top-k spans, no logits
    per token): the qa stage loads the span head its contract declares beside it, and answers
    with spans of the context across windows, left padding and all."""
    import torch
    import transformers

    from sentencepiece_data import family_dir, train

    directory = family_dir(tmp_path / "xlnet", "xlnet", train("xlnet", "unigram"))
    torch.manual_seed(0)
    config = transformers.XLNetConfig(vocab_size=300, d_model=16, n_layer=2, n_head=2, d_inner=32, num_labels=2)
    transformers.XLNetForQuestionAnsweringSimple(config).eval().save_pretrained(directory)
    contexts = ["the river runs from the mountain to the sea past an old village " * 6, "a short one"]
    tokenized = _tokenized(directory, ["where does the river run?", "what?"], contexts, 32, 8)
    stage = QuestionAnswer(str(directory), threads=1, dtype="float32")
    assert type(stage.model).__name__ == "XLNetForQuestionAnsweringSimple"
    out = stage(tokenized)
    assert len(tokenized[WORD_IDS][0].as_py()) > 1  # the first context takes several windows
    for row, context in enumerate(contexts):
        start, end = out["start"][row].as_py(), out["end"][row].as_py()
        assert 0 <= start < end <= len(context) and out["answer"][row].as_py() == context[start:end]
