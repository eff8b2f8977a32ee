"""Transformer-XL's tokenizer against transformers 4.37.2's TransfoXLTokenizer (golden ids,
tokens and decodes in tests/fixtures/transfo_xl/tokenizer/expected.json, from make_fixtures.py)
on a varied corpus, from vocab.txt and from the reference's pickled vocab.pkl; pickles that
need code are refused before anything in them runs."""
from __future__ import annotations

import collections
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from autoload import AutoTokenizer
from autoload.tokenization.transfo_xl import read_pickled_vocab

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "transfo_xl"
EXPECTED = json.loads((FIXTURES / "tokenizer" / "expected.json").read_text(encoding="utf-8"))
SOURCES = {
    "vocab_txt": (FIXTURES / "div1", {}),  # vocab.txt beside a transfo-xl config.json
    "vocab_pkl": (FIXTURES / "tokenizer" / "saved", {}),  # the reference's save_pretrained: vocab.pkl + config
    "lower_case": (FIXTURES / "div1", {"lower_case": True}),
}


@pytest.mark.parametrize("case", sorted(SOURCES))
def test_ids_tokens_and_decodes_equal_the_reference(case: str) -> None:
    source, kwargs = SOURCES[case]
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    assert type(tokenizer).__name__ == "TransfoXLTokenizer" and len(tokenizer) == EXPECTED["vocab_size"]
    for text, want in zip(EXPECTED["corpus"], EXPECTED["cases"][case]):
        encoded = tokenizer(text)
        assert list(encoded) == ["input_ids"], "the reference returns ids only"
        assert encoded["input_ids"] == want["ids"], text
        assert tokenizer.tokenize(text) == want["tokens"], text
        assert tokenizer.decode(want["ids"]) == want["decode"], text
        assert tokenizer.decode(want["ids"], skip_special_tokens=True) == want["decode_skip"], text


def test_a_batch_pads_and_the_tokenizer_pickles_for_ray() -> None:
    tokenizer = AutoTokenizer.from_pretrained(FIXTURES / "div1", pad_token="<eos>")
    again = pickle.loads(pickle.dumps(tokenizer))
    texts = EXPECTED["corpus"][:3]
    rows = [tokenizer(t)["input_ids"] for t in texts]
    assert again(texts)["input_ids"] == rows
    padded = again(texts, padding=True, return_attention_mask=True)
    width = max(map(len, rows))
    assert all(len(r) == width for r in padded["input_ids"])
    assert [sum(m) for m in padded["attention_mask"]] == [len(r) for r in rows]


def test_save_pretrained_writes_text_that_loads_back(tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(FIXTURES / "tokenizer" / "saved")
    tokenizer.save_pretrained(tmp_path)
    assert not list(tmp_path.glob("*.pkl"))
    again = AutoTokenizer.from_pretrained(tmp_path)
    for text, want in zip(EXPECTED["corpus"], EXPECTED["cases"]["vocab_pkl"]):
        assert again(text)["input_ids"] == want["ids"]
        assert again.decode(want["ids"]) == want["decode"]


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_a_torch_saved_vocab_bin_loads_with_weights_only(tmp_path: Path, zipped: bool) -> None:
    """The released vocab.bin files are torch.save'd dicts of plain data, Counter and OrderedDict
    (in torch's legacy format, for the oldest)."""
    symbols = ["<unk>", "<eos>", "the", "cat", "ran"]
    state = {"idx2sym": symbols, "sym2idx": collections.OrderedDict((s, i) for i, s in enumerate(symbols)),
             "counter": collections.Counter({"the": 3}), "unk_idx": 0, "lower_case": False}
    torch.save(state, tmp_path / "vocab.bin", _use_new_zipfile_serialization=zipped)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "TransfoXLTokenizer"}))
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert tokenizer("the cat sat")["input_ids"] == [2, 3, 0]
    assert read_pickled_vocab(tmp_path / "vocab.bin")["counter"] == collections.Counter({"the": 3})


class _RunsCode:
    """Unpickling this calls os.system: a vocab.pkl that runs a command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("where", ["top", "nested"])
def test_a_pickled_vocabulary_carrying_code_is_refused_and_never_runs(tmp_path: Path, where: str) -> None:
    marker = tmp_path / "ran"
    payload = _RunsCode(marker)
    state = payload if where == "top" else {"idx2sym": ["<unk>", "a"], "sym2idx": {"<unk>": 0, "a": 1},
                                            "extra": [payload]}
    model = tmp_path / "model"
    model.mkdir()
    (model / "vocab.pkl").write_bytes(pickle.dumps(state))
    shutil.copy(FIXTURES / "tokenizer" / "saved" / "tokenizer_config.json", model)
    with pytest.raises(pickle.UnpicklingError, match=r"vocab\.pkl.*posix\.system|vocab\.pkl.*os\.system") as err:
        AutoTokenizer.from_pretrained(model)
    assert "never runs code" in str(err.value)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):  # the same file as a torch-saved vocab.bin name
        shutil.copy(model / "vocab.pkl", model / "vocab.bin")
        read_pickled_vocab(model / "vocab.bin")
    assert not marker.exists()


def test_bad_vocab_files_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "transfo-xl"}))
    (tmp_path / "vocab.txt").write_text("the\ncat\n")
    with pytest.raises(ValueError, match=r"vocab\.txt.*no <unk>"):
        AutoTokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("<unk>\n\ncat\n")
    with pytest.raises(ValueError, match=r"vocab\.txt line 2 is empty"):
        AutoTokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.txt").unlink()
    (tmp_path / "vocab.pkl").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=r"vocab\.pkl: not a readable pickled vocabulary"):
        AutoTokenizer.from_pretrained(tmp_path)
