"""The tokenize stage's windows (actors.tokenize.Windows) against the reference tokenizer's
``return_overflowing_tokens=True`` sequences: ids, token types, offsets, sequence ids and word
ids of every window, single texts and question/context pairs (only the context cut), WordPiece
and byte-level BPE; rows the windows can't hold are bad rows."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from actors.common import (ERROR, INPUT_IDS, OFFSETS, ROW, SEQUENCE_IDS, SOURCE, TEXT, TEXT_PAIR, TOKEN_TYPE_IDS,
                           TOKENS, TRUNCATED, WORD_IDS, BadRowError)
from actors.tokenize import Tokenize, Windows
from ner_qa_data import TEXTS, long_text, tokenizer_files

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module", params=["bert", "roberta"])
def model_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tokenizer and a config naming its family (the stage reads the model's declared inputs)."""
    directory = tmp_path_factory.mktemp(f"windows-{request.param}")
    tokenizer_files(directory, request.param, max_length=512)
    config = transformers.BertConfig() if request.param == "bert" else transformers.RobertaConfig()
    config.save_pretrained(directory)
    return directory


def _reference_windows(reference, text, pair, **kwargs) -> list[dict]:
    encoded = reference(text, pair, return_overflowing_tokens=True, return_offsets_mapping=True, **kwargs)
    windows = []
    for k, ids in enumerate(encoded["input_ids"]):
        windows.append({"ids": ids, "offsets": [c for o in encoded["offset_mapping"][k] for c in o],
                        "sequence_ids": [-1 if s is None else s for s in encoded.sequence_ids(k)],
                        "word_ids": [-1 if w is None else w for w in encoded.word_ids(k)],
                        "type_ids": encoded["token_type_ids"][k] if "token_type_ids" in encoded else None})
    return windows


def _ours(table: pa.Table, row: int, pairs: bool) -> list[dict]:
    columns = {"ids": INPUT_IDS, "offsets": OFFSETS, "sequence_ids": SEQUENCE_IDS, "word_ids": WORD_IDS}
    values = {name: table[column][row].as_py() for name, column in columns.items()}
    types = table[TOKEN_TYPE_IDS][row].as_py() if pairs and TOKEN_TYPE_IDS in table.column_names else None
    return [{**{name: values[name][k] for name in columns}, "type_ids": types[k] if types else None}
            for k in range(len(values["ids"]))]


def test_single_texts_in_windows_equal_the_reference(model_dir: Path) -> None:
    reference = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    texts = [long_text(), TEXTS[2], long_text()[:40]]
    table = pa.table({"text": texts, SOURCE: ["in.parquet"] * 3, ROW: [0, 1, 2]})
    out = Tokenize(str(model_dir), text_column="text", max_length=512, windows=Windows(max_length=20, stride=5))(table)
    for row, text in enumerate(texts):
        expected = _reference_windows(reference, text, None, truncation=True, max_length=20, stride=5)
        assert [{**w, "type_ids": None} for w in _ours(out, row, False)] == [{**w, "type_ids": None} for w in expected]
        assert out[TOKENS][row].as_py() == sum(len(w["ids"]) for w in expected)
    assert len(out[INPUT_IDS][0].as_py()) > 3 and out[TEXT].to_pylist() == texts
    assert not any(out[TRUNCATED].to_pylist())
    # overflow=False: the first window only, the row marked truncated.
    first = Tokenize(str(model_dir), text_column="text", max_length=512,
                     windows=Windows(max_length=20, overflow=False))(table)
    assert first[INPUT_IDS][0].as_py() == out[INPUT_IDS][0].as_py()[:1]
    assert first[TRUNCATED].to_pylist()[:2] == [True, len(out[INPUT_IDS][1].as_py()) > 1]


def test_question_context_windows_equal_the_reference(model_dir: Path) -> None:
    reference = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    questions, contexts = ["Who met Picard?", "Where?"], [long_text(), TEXTS[0]]
    table = pa.table({"q": questions, "c": contexts, SOURCE: ["in.parquet"] * 2, ROW: [0, 1]})
    windows = Windows(max_length=32, stride=8, truncation="only_second")
    out = Tokenize(str(model_dir), text_column="q", text_pair_column="c", max_length=512, windows=windows)(table)
    for row, (question, context) in enumerate(zip(questions, contexts)):
        expected = _reference_windows(reference, question, context, truncation="only_second", max_length=32, stride=8)
        ours = _ours(out, row, True)
        if TOKEN_TYPE_IDS not in out.column_names:  # RoBERTa takes no token types
            expected = [{**w, "type_ids": None} for w in expected]
        assert ours == expected
        # Every window holds the whole question.
        assert all(w["sequence_ids"].count(0) == expected[0]["sequence_ids"].count(0) for w in ours)
    assert out[TEXT_PAIR].to_pylist() == contexts


def test_rows_the_windows_cannot_hold_are_bad_rows(model_dir: Path) -> None:
    """A question that leaves less room than the stride: the backend panics on the whole batch;
    the stage finds the row and applies the bad-row policy."""
    long_question = " ".join(["Who met Picard in New York City?"] * 4)
    table = pa.table({"q": ["Who?", long_question], "c": [TEXTS[0], TEXTS[1]], SOURCE: ["in.parquet"] * 2,
                      ROW: [0, 1]})
    windows = Windows(max_length=32, stride=8, truncation="only_second")
    flagged = Tokenize(str(model_dir), text_column="q", text_pair_column="c", max_length=512, windows=windows,
                       on_bad_row="flag")(table)
    assert flagged[ERROR][0].as_py() is None and len(flagged[INPUT_IDS][0].as_py()) >= 1
    assert flagged[ERROR][1].as_py().startswith("it can't be cut into windows of 32 tokens with stride 8")
    assert flagged[INPUT_IDS][1].as_py() == [] and flagged[TEXT][1].as_py() is None
    with pytest.raises(BadRowError, match=r"in.parquet row 1: it can't be cut into windows of 32 tokens"):
        Tokenize(str(model_dir), text_column="q", text_pair_column="c", max_length=512, windows=windows)(table)
