"""Languages through the tokenize and embed stages without Ray (XLM): each row's code from a
column, or one for all rows, picks the tokenizer's Moses rules and the model's language id;
the stages' output equals the reference model on the reference tokenizer's pieces in that
language, padded or unpadded; unknown, null and non-string codes are bad rows under either
policy; models without languages, and both options at once, are refused."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

pytest.importorskip("transformers")
pytest.importorskip("sacremoses")
from xlm_data import LANG2ID, ROWS, reference_ids, reference_mean_state, tiny_xlm  # noqa: E402

from actors.common import ERROR, INPUT_IDS, LANGS, BadRowError  # noqa: E402
from actors.embed import Embed  # noqa: E402
from actors.tokenize import Tokenize  # noqa: E402


@pytest.fixture(scope="module")
def xlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_xlm(tmp_path_factory.mktemp("xlm"))


def _table(langs: list) -> pa.Table:
    return pa.table({"text": [t for t, _ in ROWS][:len(langs)], "lang": langs})


@pytest.mark.parametrize("max_batch_tokens", [4096, 24], ids=["one-forward", "micro-batches"])
def test_language_column_through_tokenize_and_embed(xlm: Path, max_batch_tokens: int) -> None:
    langs = [c for _, c in ROWS]
    tokenized = Tokenize(str(xlm), text_column="text", max_length=64, lang_column="lang")(_table(langs))
    for row, (text, lang) in enumerate(ROWS):
        ids = tokenized[INPUT_IDS][row].as_py()
        assert ids == reference_ids(xlm, text, lang)
        assert tokenized[LANGS][row].as_py() == [LANG2ID[lang]] * len(ids)
    stage = Embed(str(xlm), pooling="mean", device="cpu", max_batch_tokens=max_batch_tokens)
    for flat in (True, False):  # the unpadded path and the padded one
        stage.flat = flat
        out = stage(tokenized)
        assert LANGS not in out.column_names
        for row, (text, lang) in enumerate(ROWS):
            np.testing.assert_allclose(out["embedding"][row].as_py(), reference_mean_state(xlm, text, lang),
                                       rtol=1e-4, atol=1e-5)


def test_one_language_for_every_row(xlm: Path) -> None:
    tokenized = Tokenize(str(xlm), text_column="text", max_length=64, lang="fr")(_table(["en", "en"]))
    assert tokenized[INPUT_IDS][0].as_py() == reference_ids(xlm, ROWS[0][0], "fr")
    assert set(tokenized[LANGS][0].as_py()) == {LANG2ID["fr"]}
    english = Tokenize(str(xlm), text_column="text", max_length=64)(_table(["en", "en"]))
    assert LANGS not in english.column_names  # no language given: none reaches the model (the reference default)


def test_bad_languages_are_bad_rows(xlm: Path) -> None:
    table = _table(["en", "xx", None, "fr"])
    with pytest.raises(BadRowError, match=r"row 1 of the batch: language 'xx' in column 'lang' is not one of the "
                                          r"model's languages \(en, fr"):
        Tokenize(str(xlm), text_column="text", max_length=64, lang_column="lang")(table)
    flagged = Tokenize(str(xlm), text_column="text", max_length=64, lang_column="lang", on_bad_row="flag")(table)
    errors = flagged[ERROR].to_pylist()
    assert errors[0] is None and errors[3] is None
    assert "'xx'" in errors[1] and "column 'lang' is null" in errors[2]
    assert flagged[INPUT_IDS][1].as_py() == [] and flagged[LANGS][1].as_py() == []
    numbers = pa.table({"text": ["a"], "lang": [3]})
    with pytest.raises(BadRowError, match="language 3 in column 'lang' is not a language code"):
        Tokenize(str(xlm), text_column="text", max_length=64, lang_column="lang")(numbers)


def test_languages_refused_where_they_mean_nothing(xlm: Path, minilm: str) -> None:
    with pytest.raises(ValueError, match="bert models take no languages"):
        Tokenize(minilm, text_column="text", max_length=64, lang="en")
    with pytest.raises(ValueError, match="not both"):
        Tokenize(str(xlm), text_column="text", max_length=64, lang="en", lang_column="lang")
    with pytest.raises(ValueError, match="--lang: language 'de' is not one of the model's languages"):
        Tokenize(str(xlm), text_column="text", max_length=64, lang="de")
    with pytest.raises(ValueError, match="language column 'language' is not in the input"):
        Tokenize(str(xlm), text_column="text", max_length=64, lang_column="language")(_table(["en"]))
