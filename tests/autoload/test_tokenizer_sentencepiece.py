"""SentencePiece ``.model`` files (autoload/tokenization/sentencepiece.py) for T5, ALBERT, XLNet,
CamemBERT and XLM-R, token-exact with transformers 5.24's AutoTokenizer on a directory holding
only the ``.model`` (and a config naming the family), which converts it: ids, masks, offsets,
token types, pairs, padding, tokens, decoding, special tokens, vocabulary. The models are tiny
unigram and bpe SentencePiece models trained here, with each family's id layout."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")
spm = pytest.importorskip("sentencepiece")
from sentencepiece import sentencepiece_model_pb2  # noqa: E402

from autoload import registry  # noqa: E402
from autoload.tokenization import AutoTokenizer  # noqa: E402
from autoload.tokenization.sentencepiece import SentencePieceError, read_model  # noqa: E402
from sentencepiece_data import CLASSES, FILE_NAMES, LAYOUTS, family_dir, train  # noqa: E402

CORPUS = [
    "Hello world!", "The quick brown fox jumps over the lazy dog.", "HELLO World, MiXeD CaSe lower UPPER",
    "Café résumé naïve über straße Ærøskøbing", "Привет, мир! Ελληνικά γράμματα", "北京欢迎你 東京 日本語のテキスト",
    "emoji 👍🏽 fun 👨‍👩‍👧 🎉🎉", "digits 1234567 3.14 2,000 ①② ＦＵＬＬ width", "tabs\tand   many    spaces",
    "new\nlines\n\nand\r\nreturns\n", "  leading and trailing  ", "``quoted'' \"double\" don't it's",
    "control\x1cchars \u00a0nbsp \u3000ideographic \u200bzero-width", "x" * 120,
    "specials <s> </s> <pad> <unk> [CLS] [SEP] [MASK] <mask> <sep> <cls> <eod> <extra_id_0> a<extra_id_1>b",
    "<s>NOTUSED </s>NOTUSED", "", " ", "a", "\n",
]
# transformers 5.24's CamembertTokenizer can't load a bpe-type .model (a TypeError in its
# conversion): nothing to compare with there.
CASES = [(family, kind) for family in LAYOUTS for kind in ("unigram", "bpe") if (family, kind) != ("camembert", "bpe")]


@pytest.fixture(scope="module")
def models() -> dict[tuple[str, str], bytes]:
    return {(family, kind): train(family, kind) for family in LAYOUTS for kind in ("unigram", "bpe")}


def _rows(batch, key):
    return [list(map(tuple, r)) if key == "offset_mapping" else list(r) for r in batch[key]]


def assert_same(ours, reference, texts=CORPUS) -> None:
    assert type(reference).__name__ == ours.tokenizer_class
    assert ours.get_vocab() == reference.get_vocab() and len(ours) == len(reference)
    assert ours.special_tokens_map == {k: str(v) for k, v in reference.special_tokens_map.items()}
    assert ours.all_special_tokens == reference.all_special_tokens
    assert ours.model_input_names == list(reference.model_input_names)
    assert ours.padding_side == reference.padding_side
    for options in ({"return_offsets_mapping": True}, {"return_token_type_ids": True, "add_special_tokens": False}):
        expected, got = reference(texts, **options), ours(texts, **options)
        assert list(got.keys()) == list(expected.keys())
        for key in expected:
            assert _rows(got, key) == _rows(expected, key), (key, options)
    half = len(texts) // 2
    for first, second in ((texts[:half], texts[half:2 * half]), (texts[half:2 * half][::-1], texts[:half])):
        for options in ({"return_token_type_ids": True, "padding": True}, {"truncation": True, "max_length": 9,
                                                                            "padding": "max_length"}):
            assert dict(ours(first, second, **options)) == dict(reference(first, second, **options)), options
    for ids in reference(texts)["input_ids"]:
        assert ours.convert_ids_to_tokens(ids) == reference.convert_ids_to_tokens(ids)
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == reference.decode(ids, skip_special_tokens=skip)
    batch = reference(texts)["input_ids"]
    assert ours.batch_decode(batch, skip_special_tokens=True) == reference.batch_decode(batch, skip_special_tokens=True)


@pytest.mark.parametrize("family, kind", CASES, ids=[f"{f}-{k}" for f, k in CASES])
def test_family_from_its_model_file_equals_the_reference(models, tmp_path: Path, family: str, kind: str) -> None:
    directory = family_dir(tmp_path / family, family, models[family, kind])
    assert 200 <= read_model(directory / FILE_NAMES[family]).pieces.__len__() <= 400
    assert_same(AutoTokenizer.from_pretrained(directory), transformers.AutoTokenizer.from_pretrained(str(directory)))


def test_the_families_special_layouts(models, tmp_path: Path) -> None:
    """What each family adds, spelled out (the parity test compares it with the reference)."""
    tok = {family: AutoTokenizer.from_pretrained(family_dir(tmp_path / family, family, models[family, "unigram"]))
           for family in LAYOUTS}
    pieces = {family: read_model(tmp_path / family / FILE_NAMES[family]).pieces for family in LAYOUTS}
    t5 = tok["t5"]
    ids = t5("hello", "world")["input_ids"]
    assert t5.convert_ids_to_tokens(ids).count("</s>") == 2 and ids[-1] == t5.eos_token_id == 1
    assert t5.convert_tokens_to_ids("<extra_id_0>") == len(pieces["t5"]) + 99
    assert t5.convert_tokens_to_ids("<extra_id_99>") == len(pieces["t5"])
    albert = tok["albert"]
    tokens = albert.convert_ids_to_tokens(albert("a", "b")["input_ids"])
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and tokens.count("[SEP]") == 2
    assert albert.tokenize("CAFÉ") == albert.tokenize("cafe")
    xlnet = tok["xlnet"].__call__(["a b c", "a"], return_token_type_ids=True, padding=True)
    assert tok["xlnet"].convert_ids_to_tokens(xlnet["input_ids"][1])[-2:] == ["<sep>", "<cls>"]
    assert xlnet["token_type_ids"][0][-1] == 2 and xlnet["attention_mask"][1][0] == 0  # padded on the left
    camembert, xlmr = tok["camembert"], tok["xlm-roberta"]
    assert camembert.convert_ids_to_tokens(list(range(5))) == ["<s>NOTUSED", "<pad>", "</s>NOTUSED", "<unk>",
                                                               "<unk>NOTUSED"]
    assert camembert.convert_tokens_to_ids(pieces["camembert"][5].text) == 5 + 4  # the fairseq offset
    assert xlmr.convert_ids_to_tokens(list(range(4))) == ["<s>", "<pad>", "</s>", "<unk>"]
    assert xlmr.convert_tokens_to_ids(pieces["xlm-roberta"][5].text) == 5 + 1
    assert xlmr.mask_token_id == len(xlmr) - 1 and camembert.mask_token_id == len(camembert) - 1


@pytest.mark.parametrize("family", ["t5", "camembert", "xlm-roberta"])
def test_unigram_pieces_equal_sentencepiece_itself(models, tmp_path: Path, family: str) -> None:
    # Families whose only normalization is the model's own charsmap cut texts as sentencepiece does.
    directory = family_dir(tmp_path, family, models[family, "unigram"])
    processor = spm.SentencePieceProcessor(model_file=str(directory / FILE_NAMES[family]))
    ours = AutoTokenizer.from_pretrained(directory)
    plain = [text for text in CORPUS if "<" not in text]
    assert [ours.tokenize(text) for text in plain] == [processor.encode(text, out_type=str) for text in plain]


@pytest.mark.parametrize("family, options", [
    ("albert", {"do_lower_case": False}), ("albert", {"keep_accents": True}),
    ("albert", {"add_prefix_space": False}), ("xlnet", {"do_lower_case": True}),
    ("xlnet", {"keep_accents": True, "remove_space": False}), ("t5", {"extra_ids": 7}),
    ("xlm-roberta", {"add_prefix_space": False}), ("camembert", {"add_prefix_space": False}),
])
def test_family_options_equal_the_reference(models, tmp_path: Path, family: str, options: dict) -> None:
    directory = family_dir(tmp_path, family, models[family, "unigram"])
    config = json.loads((directory / "tokenizer_config.json").read_text())
    (directory / "tokenizer_config.json").write_text(json.dumps({**config, **options}))
    assert_same(AutoTokenizer.from_pretrained(directory), transformers.AutoTokenizer.from_pretrained(str(directory)))
    # The same options as keywords.
    family_dir(tmp_path / "kw", family, models[family, "unigram"])
    assert_same(AutoTokenizer.from_pretrained(tmp_path / "kw", **options),
                transformers.AutoTokenizer.from_pretrained(str(tmp_path / "kw"), **options), CORPUS[:6])


@pytest.mark.parametrize("family", ["albert", "xlm-roberta", "t5", "xlnet", "camembert"])
def test_saved_directory_without_tokenizer_json(models, tmp_path: Path, family: str) -> None:
    """The tokenizer_config.json the reference saves (its options and extra special tokens) beside
    the .model, as a released checkpoint ships them, without tokenizer.json; the family named by
    config.json's model_type."""
    source = family_dir(tmp_path / "source", family, models[family, "unigram"])
    saved = tmp_path / "saved"
    transformers.AutoTokenizer.from_pretrained(str(source)).save_pretrained(saved)
    (saved / "tokenizer.json").unlink()
    (saved / FILE_NAMES[family]).write_bytes(models[family, "unigram"])  # 5.24 does not save the .model itself
    config = json.loads((saved / "tokenizer_config.json").read_text())
    config.pop("tokenizer_class")
    (saved / "tokenizer_config.json").write_text(json.dumps(config))
    (saved / "config.json").write_text(json.dumps({"model_type": family}))
    assert registry.contract(family).tokenizer_class == CLASSES[family]
    assert_same(AutoTokenizer.from_pretrained(saved), transformers.AutoTokenizer.from_pretrained(str(saved)))


VARIANTS = [("t5", {"user_defined_symbols": ["<sep2>", "@@"]}), ("xlnet", {"user_defined_symbols": ["<sep2>"]}),
            ("albert", {"normalization_rule_name": "identity", "split_digits": True}),
            ("xlm-roberta", {"normalization_rule_name": "identity"}),
            ("camembert", {"byte_fallback": True, "vocab_size": 600})]


@pytest.mark.parametrize("family, options", VARIANTS, ids=[f"{f}-{'-'.join(o)}" for f, o in VARIANTS])
def test_trainer_variants_equal_the_reference(tmp_path: Path, family: str, options: dict) -> None:
    """User-defined pieces (added, not special), no charsmap (identity), byte fallback (ignored, as the reference)."""
    directory = family_dir(tmp_path, family, train(family, "unigram", **options))
    assert_same(AutoTokenizer.from_pretrained(directory), transformers.AutoTokenizer.from_pretrained(str(directory)),
                CORPUS + ["a <sep2> b@@c <sep2>"])


def _saved_token(content: str, **flags) -> dict:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
            "special": True, **flags}


def _released_config(family: str, pieces: int) -> dict:
    """tokenizer_config.json as released t5 / albert checkpoints have it (written by transformers 4.x)."""
    if family == "t5":
        decoder = {"0": _saved_token("<pad>"), "1": _saved_token("</s>"), "2": _saved_token("<unk>")}
        decoder.update({str(pieces + 99 - i): _saved_token(f"<extra_id_{i}>") for i in range(100)})
        return {"added_tokens_decoder": decoder, "additional_special_tokens": [f"<extra_id_{i}>" for i in range(100)],
                "clean_up_tokenization_spaces": True, "eos_token": "</s>", "extra_ids": 100, "legacy": True,
                "model_max_length": 512, "pad_token": "<pad>", "tokenizer_class": "T5Tokenizer", "unk_token": "<unk>"}
    decoder = {str(i): _saved_token(t) for i, t in enumerate(["<pad>", "<unk>", "[CLS]", "[SEP]"])}
    decoder["4"] = _saved_token("[MASK]", lstrip=True)
    return {"added_tokens_decoder": decoder, "bos_token": "[CLS]", "cls_token": "[CLS]", "do_lower_case": True,
            "eos_token": "[SEP]", "keep_accents": False, "mask_token": "[MASK]", "model_max_length": 512,
            "pad_token": "<pad>", "remove_space": True, "sep_token": "[SEP]", "tokenizer_class": "AlbertTokenizer",
            "unk_token": "<unk>"}


@pytest.mark.parametrize("family", ["t5", "albert"])
def test_released_tokenizer_config_beside_the_model_file(models, tmp_path: Path, family: str) -> None:
    """added_tokens_decoder (a mask that strips left), 100 sentinels listed, model_max_length."""
    directory = family_dir(tmp_path, family, models[family, "unigram"])
    config = _released_config(family, len(read_model(directory / FILE_NAMES[family]).pieces))
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    ours = AutoTokenizer.from_pretrained(directory)
    assert ours.model_max_length == 512
    assert_same(ours, transformers.AutoTokenizer.from_pretrained(str(directory)))


@pytest.mark.parametrize("family", ["t5", "xlnet", "camembert"])
def test_save_pretrained_round_trip(models, tmp_path: Path, family: str) -> None:
    """Built from the .model and saved (tokenizer.json): reloaded by us, pickled (as Ray ships it)
    and loaded by the reference, it still equals the reference on the .model."""
    import pickle

    ours = AutoTokenizer.from_pretrained(family_dir(tmp_path / "src", family, models[family, "unigram"]))
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "src"))
    ours.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "tokenizer.json").exists()
    assert_same(AutoTokenizer.from_pretrained(tmp_path / "saved"), reference)
    assert_same(pickle.loads(pickle.dumps(ours)), reference)
    assert_same(ours, transformers.AutoTokenizer.from_pretrained(str(tmp_path / "saved")))


def test_family_by_name_pattern(models, tmp_path: Path) -> None:
    directory = tmp_path / "org-xlm-roberta-tiny"
    directory.mkdir()
    (directory / "sentencepiece.bpe.model").write_bytes(models["xlm-roberta", "unigram"])
    ours = AutoTokenizer.from_pretrained(directory)
    assert ours.tokenizer_class == "XLMRobertaTokenizer"
    reference_dir = family_dir(tmp_path / "reference", "xlm-roberta", models["xlm-roberta", "unigram"])
    assert_same(ours, transformers.AutoTokenizer.from_pretrained(str(reference_dir)))


@pytest.mark.parametrize("family, kind", [("t5", "unigram"), ("albert", "bpe"), ("xlnet", "unigram")])
def test_reader_equals_sentencepieces_own_parser(models, tmp_path: Path, family: str, kind: str) -> None:
    path = tmp_path / "m.model"
    path.write_bytes(models[family, kind])
    ours, proto = read_model(path), sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(models[family, kind])
    assert [(p.text, p.score, p.kind) for p in ours.pieces] == [(p.piece, p.score, p.type) for p in proto.pieces]
    spec, normalizer = proto.trainer_spec, proto.normalizer_spec
    assert (ours.model_type, ours.unk_id, ours.bos_id, ours.eos_id, ours.pad_id, ours.byte_fallback) == \
           (spec.model_type, spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id, spec.byte_fallback)
    assert (ours.precompiled_charsmap, ours.normalizer_name, ours.add_dummy_prefix, ours.remove_extra_whitespaces) == \
           (normalizer.precompiled_charsmap, normalizer.name, normalizer.add_dummy_prefix,
            normalizer.remove_extra_whitespaces)
    assert ours.precompiled_charsmap  # nmt_nfkc's table is there


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "text"])
def test_corrupt_model_file_names_the_file(models, tmp_path: Path, damage: str) -> None:
    good = models["albert", "unigram"]
    data = {"truncated": good[: len(good) // 2], "garbage": bytes(range(7, 250)) * 3, "empty": b"",
            "text": b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 760289\n"}[damage]
    directory = family_dir(tmp_path / "albert-tiny", "albert", data)
    with pytest.raises(SentencePieceError, match="is not a readable SentencePiece model") as err:
        AutoTokenizer.from_pretrained(directory)
    assert str(directory / "spiece.model") in str(err.value) and "Traceback" not in str(err.value)


def test_damaged_model_files_load_or_fail_naming_the_file(models, tmp_path: Path) -> None:
    """Bytes changed, cut or inserted anywhere (in pieces, specs, the charsmap): the result is a
    working tokenizer or a SentencePieceError naming the file, never an error from deep inside."""
    good, rng, failed = models["albert", "unigram"], random.Random(0), 0
    for case in range(45):
        data = bytearray(good)
        if case % 3 == 0:
            for _ in range(rng.randint(1, 5)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif case % 3 == 1:
            data = data[:rng.randrange(len(data))]
        else:
            at = rng.randrange(len(data))
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        directory = family_dir(tmp_path / str(case), "albert", bytes(data))
        try:
            AutoTokenizer.from_pretrained(directory)("hello world café")
        except SentencePieceError as err:
            assert str(directory / "spiece.model") in str(err)
            failed += 1
    assert 15 <= failed < 45


@pytest.mark.parametrize("kind", ["char", "word"])
def test_unsupported_model_type_names_the_file(tmp_path: Path, kind: str) -> None:
    directory = family_dir(tmp_path, "xlm-roberta", train("xlm-roberta", kind, vocab_size=200))
    with pytest.raises(SentencePieceError, match=f"model type {kind} is not supported") as err:
        AutoTokenizer.from_pretrained(directory)
    assert str(directory / "sentencepiece.bpe.model") in str(err.value)


def test_unknown_model_type_number_names_the_file(models, tmp_path: Path) -> None:
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(models["t5", "unigram"])
    # A second trainer_spec on the wire (protobuf merges them) with model_type 9, which the schema has no name for.
    data = proto.SerializeToString() + b"\x12\x02\x18\x09"
    directory = family_dir(tmp_path, "t5", data)
    with pytest.raises(SentencePieceError, match=r"model type unknown \(9\) is not supported") as err:
        AutoTokenizer.from_pretrained(directory)
    assert str(directory / "spiece.model") in str(err.value)


def test_a_single_model_file_as_the_seed_allows(models, tmp_path: Path) -> None:
    """A path to the .model itself: the family from the file's name or tokenizer_class=...; files
    next to it do not count (as for any single vocabulary file)."""
    reference = transformers.AutoTokenizer.from_pretrained(
        str(family_dir(tmp_path / "dir", "xlnet", models["xlnet", "unigram"])))
    named = tmp_path / "xlnet-base-cased-spiece.model"
    named.write_bytes(models["xlnet", "unigram"])
    assert_same(AutoTokenizer.from_pretrained(named), reference)
    assert_same(AutoTokenizer.from_pretrained(tmp_path / "dir" / "spiece.model", tokenizer_class="XLNetTokenizer"),
                reference)
    with pytest.raises(OSError, match=r"only a SentencePiece model \(spiece\.model\).*Pass tokenizer_class="):
        AutoTokenizer.from_pretrained(tmp_path / "dir" / "spiece.model")


def test_a_model_file_naming_no_family_is_refused_with_a_way_out(models, tmp_path: Path) -> None:
    (tmp_path / "spiece.model").write_bytes(models["t5", "unigram"])
    with pytest.raises(OSError, match="SentencePiece") as err:
        AutoTokenizer.from_pretrained(tmp_path)
    assert "spiece.model" in str(err.value) and "model_type" in str(err.value)
