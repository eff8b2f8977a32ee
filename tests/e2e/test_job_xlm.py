"""XLM through the embed job (real Ray, Parquet in and out): each row's language from a column
(--lang-column) or one for all rows (--lang) reaches the tokenizer (its Moses rules) and the
model (``langs``, the id in the config's lang2id), equal to the reference model on the
reference tokenizer's pieces in that language; an unknown language is a flagged row naming the
value and the known ones, and --lang with an unknown code, or on a model without languages,
is refused before Ray starts."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from jobs.infer import run_job
from jobs.spec import SpecError, parse_spec

transformers = pytest.importorskip("transformers")
pytest.importorskip("sacremoses")
import tokenizers  # noqa: E402
from tokenizers import pre_tokenizers, trainers  # noqa: E402
from tokenizers.models import BPE  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]

LANG2ID = {"en": 0, "fr": 1}
ROWS = [("The dog's toy, isn't it?", "en"), ("L'homme qu'il a vu aujourd'hui.", "fr"), ("C'est « génial » !", "fr"),
        ("It's 3.14 -- really", "en"), ("Bonjour, l'ami", "fr"), ("don't stop", "en")]


@pytest.fixture(scope="module")
def xlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny two-language XLM checkpoint with its native tokenizer files (a BPE with </w> word
    ends trained on the rows' Moses words)."""
    directory = tmp_path_factory.mktemp("xlm")
    backend = tokenizers.Tokenizer(BPE(unk_token="<unk>", end_of_word_suffix="</w>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    specials = ["<s>", "</s>", "<pad>", "<unk>"] + [f"<special{i}>" for i in range(10)]
    words = " ".join(text.lower() for text, _ in ROWS).replace("'", " ' ").split() * 3
    backend.train_from_iterator(words, trainers.BpeTrainer(vocab_size=120, special_tokens=specials,
                                                           end_of_word_suffix="</w>", show_progress=False))
    backend.model.save(str(directory))
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "XLMTokenizer",
                                                                 "lang2id": LANG2ID}))
    torch.manual_seed(0)
    config = transformers.XLMConfig(vocab_size=backend.get_vocab_size(), emb_dim=32, n_layers=2, n_heads=4,
                                    n_langs=2, lang2id=LANG2ID, id2lang={v: k for k, v in LANG2ID.items()},
                                    max_position_embeddings=64)
    model = transformers.XLMModel(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    model.save_pretrained(directory)
    return directory


def _expected(xlm: Path, text: str, lang: str) -> np.ndarray:
    """Mean of the reference model's states over the reference tokenizer's pieces in ``lang``
    (5.24's call drops ``lang=``; its ``_tokenize(text, lang=...)`` honours it)."""
    tokenizer = transformers.XLMTokenizer(str(xlm / "vocab.json"), str(xlm / "merges.txt"), lang2id=LANG2ID)
    model = transformers.XLMModel.from_pretrained(xlm).eval()
    ids = tokenizer.build_inputs_with_special_tokens(tokenizer.convert_tokens_to_ids(tokenizer._tokenize(text, lang=lang)))
    with torch.no_grad():
        states = model(torch.tensor([ids]), langs=torch.full((1, len(ids)), LANG2ID[lang])).last_hidden_state
    return states[0].mean(0).numpy()


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
