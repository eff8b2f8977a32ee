"""XLM through the embed job (real Ray, Parquet in and out): each row's language from a column
(--lang-column) or one for all rows (--lang) reaches the tokenizer (its Moses rules) and the
model (``langs``, the id in the config's lang2id), equal to the reference model on the
reference tokenizer's pieces in that language; an unknown language is a flagged row naming the
value and the known ones, and --lang with an unknown code, or on a model without languages,
is refused before Ray starts."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.infer import run_job
from jobs.spec import SpecError, parse_spec

transformers = pytest.importorskip("transformers")
pytest.importorskip("sacremoses")
from xlm_data import ROWS, reference_mean_state, tiny_xlm  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]


@pytest.fixture(scope="module")
def xlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_xlm(tmp_path_factory.mktemp("xlm"))


def _expected(xlm: Path, text: str, lang: str) -> np.ndarray:
    return reference_mean_state(xlm, text, lang)


def _write(directory: Path, columns: dict) -> Path:
    directory.mkdir(parents=True)
    half = len(next(iter(columns.values()))) // 2
    for shard, part in enumerate((slice(0, half), slice(half, None))):
        pq.write_table(pa.table({k: v[part] for k, v in columns.items()}), directory / f"part-{shard}.parquet")
    return directory


def _read(directory: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(directory / f"part-{k}.parquet") for k in range(2)])


def test_language_column_and_one_language(xlm: Path, tmp_path: Path) -> None:
    texts = [t for t, _ in ROWS] + ["unknown language row", "no language row"]
    langs = [c for _, c in ROWS] + ["xx", None]
    _write(tmp_path / "in", {"text": texts, "lang": langs})
    run_job(parse_spec(["--task", "embed", "--model", str(xlm), "--input", str(tmp_path / "in"), "--output",
                        str(tmp_path / "out"), "--lang-column", "lang", "--keep-columns", "lang",
                        "--on-bad-row", "flag"]))
    table = _read(tmp_path / "out")
    assert table["lang"].to_pylist() == langs
    for row, (text, lang) in enumerate(ROWS):
        np.testing.assert_allclose(table["embedding"][row].as_py(), _expected(xlm, text, lang), rtol=1e-4, atol=1e-5)
    errors = table["error"].to_pylist()
    assert errors[:len(ROWS)] == [None] * len(ROWS)
    assert "language 'xx' in column 'lang' is not one of the model's languages (en, fr" in errors[-2]
    assert "column 'lang' is null" in errors[-1]
    assert table["embedding"][len(ROWS)].as_py() is None

    # One language for every row: French pieces and the French id, whatever the row.
    run_job(parse_spec(["--task", "embed", "--model", str(xlm), "--input", str(tmp_path / "in"), "--output",
                        str(tmp_path / "out-fr"), "--lang", "fr", "--text-column", "text"]))
    french = _read(tmp_path / "out-fr")
    for row in (0, 3):  # English texts, read as French
        np.testing.assert_allclose(french["embedding"][row].as_py(), _expected(xlm, texts[row], "fr"), rtol=1e-4,
                                   atol=1e-5)
        assert not np.allclose(french["embedding"][row].as_py(), table["embedding"][row].as_py())


def test_languages_refused_before_ray(xlm: Path, minilm: str, tmp_path: Path) -> None:
    _write(tmp_path / "in", {"text": ["a", "b"]})
    base = ["--task", "embed", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]
    with pytest.raises(SpecError, match=r"--lang: language 'de' is not one of the model's languages \(en, fr"):
        run_job(parse_spec([*base, "--model", str(xlm), "--lang", "de"]))
    with pytest.raises(SpecError, match="bert models take no languages"):
        run_job(parse_spec([*base, "--model", minilm, "--lang", "en"]))
    with pytest.raises(SpecError, match="not both"):
        parse_spec([*base, "--model", str(xlm), "--lang", "en", "--lang-column", "lang"])
    assert not (tmp_path / "out").exists()
