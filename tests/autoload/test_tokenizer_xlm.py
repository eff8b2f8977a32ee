"""XLM and FlauBERT tokenizers from their native files (vocab.json + merges.txt), token-exact with
transformers 5.24's Python XLMTokenizer / FlaubertTokenizer on a varied corpus (accents,
punctuation, apostrophes, numbers, quotes, full-width forms, control characters, CJK, emoji):
ids, masks, token types when asked, pairs, padding, truncation, tokens and decoding; XLM in
several languages (Moses settings per language, Romanian's diacritic rules) with and without
lower-casing and accent removal; FlauBERT with and without its lower-casing; saving both ways;
pickling. The vocabularies are tiny BPEs with </w> word ends trained here."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")
pytest.importorskip("sacremoses")
import tokenizers  # noqa: E402
from tokenizers import pre_tokenizers, trainers  # noqa: E402
from tokenizers.models import BPE  # noqa: E402

from autoload.tokenization import AutoTokenizer  # noqa: E402
from autoload.tokenization.xlm import ADDITIONAL_SPECIAL_TOKENS  # noqa: E402

CORPUS = [
    "Hello world!", "The quick brown fox jumps over the lazy dog.", "HELLO World, MiXeD CaSe lower UPPER",
    "Café résumé naïve über straße Ærøskøbing", "L'homme qu'il a vu aujourd'hui, c'est « génial » !",
    "don't can't I'm we're they've it's", "Il a dit : « Bonjour ! » ; puis… rien ?",
    "3.14159 1,000,000 12:30 50% $5.99 2nd 1er", "“smart quotes” ‘single’ „low“ — dash – en",
    "Ｆｕｌｌ－ｗｉｄｔｈ：１２３，４５６。终于！（括号）", "北京欢迎你 東京 日本語のテキスト", "emoji 👍🏽 fun 🎉🎉 😀",
    "tabs\tand   many    spaces", "new\nlines\n\nand\r\nreturns\n", "control\x1cchars and \u200bzero-width \u00a0nbsp",
    "Привет, мир! Ελληνικά", "Ştiinţă şi ţară în România, îngheţată", "e-mail: someone@example.com http://x.y/z?q=1",
    "punctuation!!! (yes) -- 'quoted' \"double\" ... ?! a.b,c;d:e", "``Latex quotes'' and '' more",
    "<special3> in text and <unk> too", "a", "ab", " ",
]
TEXTS = [t for t in CORPUS if t.strip()]


def _train(directory: Path, words: list[str]) -> None:
    """A small BPE over ``words`` with </w> on word ends, saved as XLM's vocab.json + merges.txt
    (specials first at XLM's ids; merges with the library's ``#version`` header line, which the
    reference reads as a first merge and so must we)."""
    backend = tokenizers.Tokenizer(BPE(unk_token="<unk>", end_of_word_suffix="</w>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    specials = ["<s>", "</s>", "<pad>", "<unk>", *ADDITIONAL_SPECIAL_TOKENS]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, end_of_word_suffix="</w>",
                                  show_progress=False)
    backend.train_from_iterator(words * 3, trainer)
    directory.mkdir(parents=True, exist_ok=True)
    backend.model.save(str(directory))


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory) -> Path:
    """One vocabulary for every variant: trained on the reference's own pre-tokenised words of
    the corpus (cased and lower-cased), so most pieces are in it and some are unknown."""
    directory = tmp_path_factory.mktemp("xlm-bpe")
    probe = tmp_path_factory.mktemp("xlm-probe")
    _train(probe, ["x"])
    reference = transformers.XLMTokenizer(str(probe / "vocab.json"), str(probe / "merges.txt"),
                                          do_lowercase_and_remove_accent=False)
    words = []
    for text in TEXTS:
        for lang in ("en", "fr"):
            pieces = reference.moses_tokenize(reference.moses_pipeline(text, lang), lang)
            words += pieces + [w.lower() for w in pieces]
    _train(directory, words)
    return directory


def _ours(bpe_dir: Path, tmp_path: Path, tokenizer_class: str, **options) -> object:
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / name).write_bytes((bpe_dir / name).read_bytes())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": tokenizer_class, **options}))
    return AutoTokenizer.from_pretrained(tmp_path)


def _reference(bpe_dir: Path, tokenizer_class: str, **options):
    return getattr(transformers, tokenizer_class)(str(bpe_dir / "vocab.json"), str(bpe_dir / "merges.txt"), **options)


def _assert_same(ours, reference, texts: list[str], **call) -> None:
    for text in texts:
        assert ours.tokenize(text, **call) == reference.tokenize(text, **call), text
    expected, got = reference(texts, **call), ours(texts, **call)
    assert list(got.keys()) == list(expected.keys())
    assert dict(got) == dict(expected)
    pairs = (texts[:8], texts[8:16])
    # Cut pairs are left out: when a "longest_first" cut must split evenly, ``tokenizers`` takes
    # the odd token from the first text and the Python reference from the second; "only_second"
    # on a too short second text is an error in ``tokenizers``, a warning in the reference.
    for options in ({}, {"return_token_type_ids": True}, {"padding": True}, {"padding": "max_length", "max_length": 60}):
        assert dict(ours(*pairs, **options, **call)) == dict(reference(*pairs, **options, **call)), options
    for options in ({"truncation": True, "max_length": 9}, {"padding": "max_length", "max_length": 12}):
        assert dict(ours(texts, **options, **call)) == dict(reference(texts, **options, **call)), options
    for ids in expected["input_ids"]:
        assert ours.convert_ids_to_tokens(ids) == reference.convert_ids_to_tokens(ids)
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == reference.decode(ids, skip_special_tokens=skip)


XLM_VARIANTS = [
    pytest.param({}, "en", id="lowercase-accents-en"),
    pytest.param({}, "fr", id="lowercase-accents-fr"),
    pytest.param({"do_lowercase_and_remove_accent": False}, "en", id="cased-en"),
    pytest.param({"do_lowercase_and_remove_accent": False}, "fr", id="cased-fr"),
    pytest.param({"do_lowercase_and_remove_accent": False}, "de", id="cased-de"),
    pytest.param({"do_lowercase_and_remove_accent": False}, "ro", id="cased-ro"),
]


@pytest.mark.parametrize("options, lang", XLM_VARIANTS)
def test_xlm_matches_the_reference(bpe_dir: Path, tmp_path: Path, options: dict, lang: str) -> None:
    ours = _ours(bpe_dir, tmp_path, "XLMTokenizer", **options)
    reference = _reference(bpe_dir, "XLMTokenizer", **options)
    assert ours.tokenizer_class == "XLMTokenizer"
    assert ours.model_input_names == reference.model_input_names
    assert ours.all_special_tokens == reference.all_special_tokens
    if lang == "en":  # the default language: the reference's whole call API
        _assert_same(ours, reference, TEXTS)
    else:
        _assert_same_in_language(ours, reference, TEXTS, lang)


def _assert_same_in_language(ours, reference, texts: list[str], lang: str) -> None:
    """transformers 5.24's ``tokenize`` / ``__call__`` drop ``lang=`` (its ``_tokenize`` is called
    without it, so every text is English); its ``_tokenize(text, lang=...)`` still runs the
    language's pipeline. Ours takes ``lang=`` on the call: its pieces, ids and pairs are the
    reference's ``_tokenize`` in that language with the reference's special-token template."""
    plain = [t for t in texts if "<" not in t]  # no added tokens: _tokenize does not split them
    for text in plain:
        pieces = reference._tokenize(text, lang=lang)
        assert ours.tokenize(text, lang=lang) == pieces, text
        assert ours(text, lang=lang)["input_ids"] == \
            reference.build_inputs_with_special_tokens(reference.convert_tokens_to_ids(pieces)), text
    for a, b in zip(plain[:8], plain[8:16]):
        ids_a, ids_b = (reference.convert_tokens_to_ids(reference._tokenize(t, lang=lang)) for t in (a, b))
        assert ours(a, b, lang=lang)["input_ids"] == reference.build_inputs_with_special_tokens(ids_a, ids_b)
    english = [ours(t)["input_ids"] for t in plain]
    assert [ours(t, lang=lang)["input_ids"] for t in plain] != english  # the language mattered


def test_languages_tokenize_differently(bpe_dir: Path, tmp_path: Path) -> None:
    """Moses settings differ per language (French apostrophes, Romanian diacritics): the same
    text gives other tokens in another language, as in the reference."""
    ours = _ours(bpe_dir, tmp_path, "XLMTokenizer", do_lowercase_and_remove_accent=False)
    text = "L'homme Ştiinţă aujourd'hui"
    assert ours.tokenize(text, lang="fr") != ours.tokenize(text, lang="en")
    assert ours.tokenize(text, lang="ro") != ours.tokenize(text, lang="en")
    assert ours.for_language("fr") is ours.for_language("fr")  # one backend per language
    with pytest.raises(ValueError, match="'zh'.*rjieba"):
        ours.tokenize(text, lang="zh")


@pytest.mark.parametrize("options", [{}, {"do_lowercase": True}], ids=["cased", "lowercase"])
def test_flaubert_matches_the_reference(bpe_dir: Path, tmp_path: Path, options: dict) -> None:
    ours = _ours(bpe_dir, tmp_path, "FlaubertTokenizer", **options)
    reference = _reference(bpe_dir, "FlaubertTokenizer", **options)
    assert ours.tokenizer_class == "FlaubertTokenizer"
    _assert_same(ours, reference, TEXTS)


def test_named_by_model_type_and_saved_both_ways(bpe_dir: Path, tmp_path: Path) -> None:
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / name).write_bytes((bpe_dir / name).read_bytes())
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "flaubert"}))
    ours = AutoTokenizer.from_pretrained(tmp_path)
    assert ours.tokenizer_class == "FlaubertTokenizer"
    # Ours saved → the reference loads it; the reference's save → ours loads it.
    ours.save_pretrained(tmp_path / "ours")
    again = transformers.AutoTokenizer.from_pretrained(tmp_path / "ours")
    assert type(again).__name__ == "FlaubertTokenizer"
    reference = _reference(bpe_dir, "XLMTokenizer", lang2id={"en": 0, "fr": 1}, id2lang={0: "en", 1: "fr"})
    reference.save_pretrained(tmp_path / "ref")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "ref")
    assert loaded.tokenizer_class == "XLMTokenizer" and loaded.lang2id == {"en": 0, "fr": 1}
    for text in TEXTS[:6]:
        assert again(text)["input_ids"] == ours(text)["input_ids"]
        assert loaded(text)["input_ids"] == reference(text)["input_ids"]
    # Pickled (as Ray ships it) and per-language views too.
    restored = pickle.loads(pickle.dumps(loaded.for_language("fr")))
    french = reference._tokenize(TEXTS[4], lang="fr")
    assert restored(TEXTS[4])["input_ids"] == reference.build_inputs_with_special_tokens(
        reference.convert_tokens_to_ids(french))


def test_offsets_are_refused_as_the_reference_does(bpe_dir: Path, tmp_path: Path) -> None:
    ours = _ours(bpe_dir, tmp_path, "XLMTokenizer")
    with pytest.raises(NotImplementedError, match="offset"):
        ours("hello", return_offsets_mapping=True)
