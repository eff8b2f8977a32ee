"""OpenAI GPT and CTRL tokenizers from their native files (and OpenAI GPT's saved tokenizer.json),
token-exact with transformers 5.24 on a varied corpus: ids, token types, masks, offsets where the
reference gives them (its CTRL tokenizer is Python-only: no offsets), tokens and decoding.
The vocabularies are tiny BPEs trained here and written in each family's format."""
from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")
import tokenizers  # noqa: E402
from tokenizers import normalizers, pre_tokenizers, trainers  # noqa: E402
from tokenizers.models import BPE  # noqa: E402

from autoload.tokenization import AutoTokenizer  # noqa: E402

CORPUS = [
    "Hello world!", "The quick brown fox jumps over the lazy dog.", "HELLO World, MiXeD CaSe lower UPPER",
    "Café résumé naïve über straße Ærøskøbing", "Привет, мир! Ελληνικά γράμματα", "北京欢迎你 東京 日本語のテキスト",
    "مرحبا بالعالم", "नमस्ते दुनिया", "emoji 👍🏽 fun 👨‍👩‍👧 🎉🎉", "tabs\tand   many    spaces",
    "new\nlines\n\nand\r\nreturns\n", "  leading and trailing  ", "x" * 300, "supercalifragilisticexpialidocious" * 4,
    "punctuation!!! (yes) -- 'quoted' \"double\" ... ?! a.b,c;d:e", "don't can't I'm we're they've it's",
    "control\x1cchars\x1f and \u00a0nbsp \u3000ideographic \u200bzero-width", "Opinion My dog is cute",
    "a@@b @@ </w> tricky@@", "<unk> special <unk>token", "", " ", "a", "ab", "\n",
]
# Trained on the plain texts: marks ("@@", "</w>") and special tokens stay out of the vocabularies.
TRAINING = [text for text in CORPUS if "@@" not in text and "<" not in text] * 5


def _assert_same_calls(ours, reference, texts: list[str], offsets: bool) -> None:
    options = {"return_offsets_mapping": True} if offsets else {}
    expected, got = reference(texts, **options), ours(texts, **options)
    assert list(got.keys()) == list(expected.keys())
    for key in expected:
        assert [list(map(tuple, r)) if key == "offset_mapping" else r for r in got[key]] == \
               [list(map(tuple, r)) if key == "offset_mapping" else r for r in expected[key]], key
    pairs = (texts[:6], texts[6:12])
    assert dict(ours(*pairs)) == dict(reference(*pairs))
    assert dict(ours(*pairs, return_token_type_ids=True)) == dict(reference(*pairs, return_token_type_ids=True))


def _assert_same_decoding(ours, reference, texts: list[str]) -> None:
    for ids in reference(texts)["input_ids"]:
        assert ours.convert_ids_to_tokens(ids) == reference.convert_ids_to_tokens(ids)
        for skip in (False, True):
            for clean in (None, False, True):
                assert ours.decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=clean) == \
                       reference.decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=clean), (ids, skip,
                                                                                                             clean)
    batch = reference(texts)["input_ids"]
    assert ours.batch_decode(batch) == reference.batch_decode(batch)


# ---- OpenAI GPT ---------------------------------------------------------------------------------------------


def write_openai_gpt_files(directory: Path) -> None:
    """vocab.json + merges.txt as openai-gpt has them: lower-cased, BERT-split words, ``</w>`` word ends."""
    trainer = tokenizers.Tokenizer(BPE(unk_token="<unk>", end_of_word_suffix="</w>"))
    trainer.normalizer = normalizers.BertNormalizer(lowercase=True)
    trainer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer.train_from_iterator(TRAINING, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>"],
                                                              end_of_word_suffix="</w>", show_progress=False))
    trainer.model.save(str(directory))
    assert (directory / "merges.txt").read_text().startswith("#version: 0.2\n")


@pytest.fixture(scope="module")
def openai_gpt_files(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("openai-gpt-files")
    write_openai_gpt_files(directory)
    return directory


def _named(directory: Path, tmp_path: Path, named_by: str, model_type: str, tokenizer_class: str) -> Path:
    """A copy of the files that names its family one way: config.json, tokenizer_config.json or its name."""
    target = tmp_path / (f"org-{model_type}-tiny" if named_by == "name" else "tokenizer")
    target.mkdir()
    for name in ("vocab.json", "merges.txt"):
        (target / name).write_bytes((directory / name).read_bytes())
    if named_by == "model_type":
        (target / "config.json").write_text(json.dumps({"model_type": model_type}))
    elif named_by == "tokenizer_class":
        (target / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": tokenizer_class}))
    return target


@pytest.mark.parametrize("named_by", ["model_type", "tokenizer_class", "name"])
def test_openai_gpt_from_native_files(openai_gpt_files: Path, tmp_path: Path, named_by: str) -> None:
    directory = _named(openai_gpt_files, tmp_path, named_by, "openai-gpt", "OpenAIGPTTokenizer")
    ours = AutoTokenizer.from_pretrained(directory)
    reference = transformers.OpenAIGPTTokenizer.from_pretrained(str(directory))
    assert ours.tokenizer_class == "OpenAIGPTTokenizer"
    assert ours.model_input_names == list(reference.model_input_names)
    assert ours.padding_side == reference.padding_side == "right"
    assert ours.special_tokens_map == reference.special_tokens_map and len(ours) == len(reference)
    _assert_same_calls(ours, reference, CORPUS, offsets=True)
    _assert_same_decoding(ours, reference, CORPUS)


def test_openai_gpt_from_saved_tokenizer_json(openai_gpt_files: Path, tmp_path: Path) -> None:
    transformers.OpenAIGPTTokenizer.from_pretrained(str(openai_gpt_files)).save_pretrained(tmp_path)
    assert not (tmp_path / "vocab.json").exists() and (tmp_path / "tokenizer.json").exists()
    ours = AutoTokenizer.from_pretrained(tmp_path)
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert ours.tokenizer_class == type(reference).__name__ == "OpenAIGPTTokenizer"
    _assert_same_calls(ours, reference, CORPUS, offsets=True)
    _assert_same_decoding(ours, reference, CORPUS)


def test_openai_gpt_lower_cases_and_splits_like_bert(openai_gpt_files: Path, tmp_path: Path) -> None:
    ours = AutoTokenizer.from_pretrained(_named(openai_gpt_files, tmp_path, "model_type", "openai-gpt", ""))
    assert ours("HeLLo, Wörld")["input_ids"] == ours("hello , world")["input_ids"]
    assert ours.decode(ours("HeLLo, Wörld")["input_ids"]) == "hello , world"


# ---- CTRL ---------------------------------------------------------------------------------------------------


def _ctrl_token(internal: str) -> str:
    """A ``</w>``-marked BPE symbol as CTRL's vocab.json spells it: word ends bare, other pieces ``@@``."""
    if internal == "<unk>":
        return internal
    return internal[:-len("</w>")] if internal.endswith("</w>") else internal + "@@"


def write_ctrl_files(directory: Path) -> None:
    """vocab.json (``hel@@``, ``lo``) + merges.txt (``l o</w>``) as CTRL has them, trained per
    whitespace-separated word."""
    words = [word for text in TRAINING for word in re.findall(r"\S+", text)]
    trainer = tokenizers.Tokenizer(BPE(unk_token="<unk>", end_of_word_suffix="</w>"))
    trainer.train_from_iterator(words, trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>"],
                                                           end_of_word_suffix="</w>", show_progress=False))
    model = json.loads(trainer.to_str())["model"]
    vocab = {_ctrl_token(token): i for token, i in model["vocab"].items()}
    assert len(vocab) == len(model["vocab"])  # no two symbols spelled alike
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (directory / "merges.txt").write_text("\n".join(["#version: 0.2", *merges]) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def ctrl_files(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("ctrl-files")
    write_ctrl_files(directory)
    return directory


@pytest.fixture()
def ctrl_pair(ctrl_files: Path, tmp_path: Path, request) -> tuple:
    directory = _named(ctrl_files, tmp_path, getattr(request, "param", "model_type"), "ctrl", "CTRLTokenizer")
    return AutoTokenizer.from_pretrained(directory), transformers.CTRLTokenizer.from_pretrained(str(directory))


@pytest.mark.parametrize("ctrl_pair", ["model_type", "tokenizer_class", "name"], indirect=True)
def test_ctrl_from_native_files(ctrl_pair) -> None:
    ours, reference = ctrl_pair
    assert ours.tokenizer_class == "CTRLTokenizer"
    assert ours.model_input_names == list(reference.model_input_names) == ["input_ids", "attention_mask"]
    assert ours.padding_side == reference.padding_side == "right"
    assert ours.special_tokens_map == reference.special_tokens_map and len(ours) == len(reference)
    _assert_same_calls(ours, reference, CORPUS, offsets=False)
    _assert_same_decoding(ours, reference, CORPUS)


def test_ctrl_pieces_are_the_references(ctrl_pair) -> None:
    """Known pieces as the reference spells them, unknown ones as <unk>; each offset covers the
    piece's characters ("@@" is not in the text)."""
    ours, reference = ctrl_pair
    for text in CORPUS:
        pieces = reference.tokenize(text)
        encoding = ours(text)[0]
        assert encoding.tokens == [p if p in reference.encoder else "<unk>" for p in pieces], text
        assert [text[a:b] for a, b in encoding.offsets] == [p.removesuffix("@@") for p in pieces], text


def test_ctrl_padding_truncation_and_words(ctrl_files: Path, tmp_path: Path) -> None:
    directory = _named(ctrl_files, tmp_path, "model_type", "ctrl", "")
    ours = AutoTokenizer.from_pretrained(directory, pad_token="<unk>")
    reference = transformers.CTRLTokenizer.from_pretrained(str(directory), pad_token="<unk>")
    options = dict(padding="max_length", truncation=True, max_length=12)
    assert dict(ours(CORPUS, **options)) == dict(reference(CORPUS, **options))
    words = [text.split() for text in CORPUS if text.split()]
    assert ours(words, is_split_into_words=True)["input_ids"] == reference(words, is_split_into_words=True)["input_ids"]


def test_ctrl_pickles_and_saves_like_the_reference(ctrl_pair, tmp_path: Path) -> None:
    ours, reference = ctrl_pair
    ours.add_tokens(["<new>"], special_tokens=True)
    reference.add_tokens(["<new>"], special_tokens=True)
    texts = CORPUS + ["a <new> token"]
    clone = pickle.loads(pickle.dumps(ours))
    assert clone(texts)["input_ids"] == ours(texts)["input_ids"] == reference(texts)["input_ids"]
    assert clone.decode(clone("Hello world!")["input_ids"]) == "Hello world!"
    ours.save_pretrained(tmp_path / "saved")
    assert {p.name for p in (tmp_path / "saved").iterdir()} >= {"vocab.json", "merges.txt", "tokenizer_config.json"}
    for again in (AutoTokenizer.from_pretrained(tmp_path / "saved"),
                  transformers.AutoTokenizer.from_pretrained(str(tmp_path / "saved"))):
        assert again(texts)["input_ids"] == reference(texts)["input_ids"], type(again).__name__
