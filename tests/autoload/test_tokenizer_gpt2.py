"""GPT-2's tokenizer from native files (vocab.json + merges.txt) and from a saved tokenizer.json:
token-exact with the reference (ids, offsets, pairs, padding, truncation) and decoding alike, on a
corpus of many scripts, emoji, whitespace runs and very long words."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")
from tokenizers import ByteLevelBPETokenizer  # noqa: E402

from autoload.tokenization import AutoTokenizer  # noqa: E402

EOT = "<|endoftext|>"
CORPUS = [
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "  leading spaces, trailing spaces   ",
    "tabs\tand\nnewlines\r\n\n  mixed \t \n runs",
    "Café résumé naïve façade Ærøskøbing",
    "日本語のテキストと中文文本，还有한국어 문장도 있어요。",
    "Привет, как дела? Ελληνικά κείμενα. עברית וערבية",
    "emoji 😀👍🏽 family 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵 and ❤️‍🔥",
    "supercalifragilisticexpialidocious" * 12,
    "x" * 300 + " " + "ab" * 150,
    "numbers 1234567890 3.14159 -42 1e-9 and code: def f(x): return x**2  # done",
    f"special {EOT} inside text{EOT}and after",
    "combining e\u0301 a\u0308 zero\u200bwidth non\u00a0breaking",
    "I'm can't we've they'll it's 'quoted' \"double\"",
    "",
    " ",
    "a",
]
PAIR = (["What is it?", "  second  question "], ["It is a test.", "😀 answer"])


@pytest.fixture(scope="module")
def gpt2_files(tmp_path_factory) -> Path:
    """vocab.json + merges.txt of a tiny byte-level BPE trained on the corpus (its start only, so
    rare words fall back to shorter pieces and bytes)."""
    directory = tmp_path_factory.mktemp("gpt2-files")
    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator([text[:60] for text in CORPUS] * 10, vocab_size=600, special_tokens=[EOT],
                                show_progress=False)
    trainer.save_model(str(directory))
    return directory


def _native_dir(directory: Path, files: Path, named_by: str, **settings) -> Path:
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(files / name, directory / name)
    if named_by == "model_type":
        (directory / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    elif named_by == "tokenizer_class":
        settings["tokenizer_class"] = "GPT2Tokenizer"
    if settings:
        (directory / "tokenizer_config.json").write_text(json.dumps(settings))
    return directory


def _reference(files: Path, **kwargs):
    return transformers.GPT2Tokenizer(str(files / "vocab.json"), str(files / "merges.txt"), **kwargs)


def assert_same(ours, reference) -> None:
    """Ids, masks and offsets for each text, a batch, pairs, padding and truncation; decoding."""
    assert ours.model_input_names == list(reference.model_input_names) == ["input_ids", "attention_mask"]
    assert ours.padding_side == reference.padding_side
    assert ours.special_tokens_map == reference.special_tokens_map
    calls = [((CORPUS,), {"return_offsets_mapping": True}), (PAIR, {"return_offsets_mapping": True}),
             ((CORPUS,), {"truncation": True, "max_length": 7})]
    if reference.pad_token is not None:
        calls.append(((CORPUS,), {"padding": True}))
    for args, options in calls:
        expected, got = reference(*args, **options), ours(*args, **options)
        assert list(got.keys()) == list(expected.keys()), options
        for key in expected:
            assert [list(map(tuple, r)) if key == "offset_mapping" else list(r) for r in got[key]] == \
                   [list(map(tuple, r)) if key == "offset_mapping" else list(r) for r in expected[key]], (key, options)
    for text in CORPUS:
        ids = reference(text)["input_ids"]
        assert ours.convert_ids_to_tokens(ids) == reference.convert_ids_to_tokens(ids)
        for options in ({}, {"skip_special_tokens": True}, {"clean_up_tokenization_spaces": True}):
            assert ours.decode(ids, **options) == reference.decode(ids, **options), (text, options)
        # One token at a time: a multi-byte character split across tokens decodes as the reference's
        # replacement characters.
        assert [ours.decode([i]) for i in ids] == [reference.decode([i]) for i in ids]


@pytest.mark.parametrize("named_by", ["model_type", "tokenizer_class", "name"])
def test_native_files(gpt2_files, tmp_path, named_by):
    directory = tmp_path / "my-gpt2-tokenizer" if named_by == "name" else tmp_path
    directory.mkdir(exist_ok=True)
    ours = AutoTokenizer.from_pretrained(_native_dir(directory, gpt2_files, named_by))
    assert ours.tokenizer_class == "GPT2Tokenizer"
    assert ours.bos_token == ours.eos_token == ours.unk_token == EOT and ours.pad_token is None
    assert_same(ours, _reference(gpt2_files))


@pytest.mark.parametrize("settings", [{"add_prefix_space": True}, {"pad_token": EOT},
                                      {"pad_token": EOT, "padding_side": "left", "clean_up_tokenization_spaces": True}],
                         ids=["prefix-space", "pad", "pad-left-cleanup"])
def test_native_files_with_settings(gpt2_files, tmp_path, settings):
    ours = AutoTokenizer.from_pretrained(_native_dir(tmp_path, gpt2_files, "model_type", **settings))
    assert_same(ours, _reference(gpt2_files, **settings))


def test_add_prefix_space_as_a_keyword(gpt2_files, tmp_path):
    ours = AutoTokenizer.from_pretrained(_native_dir(tmp_path, gpt2_files, "model_type"), add_prefix_space=True)
    reference = _reference(gpt2_files, add_prefix_space=True)
    assert ours("Hello world")["input_ids"] == reference("Hello world")["input_ids"] == \
        _reference(gpt2_files)(" Hello world")["input_ids"]


@pytest.mark.parametrize("post_processor", [None, "released"])
def test_saved_tokenizer_json(gpt2_files, tmp_path, post_processor):
    """The reference's save_pretrained (tokenizer.json + tokenizer_config.json); "released" edits
    it to what the published GPT-2 tokenizer.json holds (a ByteLevel post-processor, untrimmed
    offsets, add_prefix_space in the pre-tokenizer that the config overrides)."""
    reference = _reference(gpt2_files, pad_token=EOT)
    reference.save_pretrained(tmp_path)
    if post_processor == "released":
        saved = json.loads((tmp_path / "tokenizer.json").read_text())
        saved["post_processor"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                                   "use_regex": True}
        saved["pre_tokenizer"]["add_prefix_space"] = True
        (tmp_path / "tokenizer.json").write_text(json.dumps(saved))
        for name in ("vocab.json", "merges.txt"):  # only tokenizer.json is read
            (tmp_path / name).unlink(missing_ok=True)
        reference = transformers.GPT2Tokenizer.from_pretrained(tmp_path)
    ours = AutoTokenizer.from_pretrained(tmp_path)
    assert ours.tokenizer_class == "GPT2Tokenizer"
    assert_same(ours, reference)


def test_tokenizer_json_named_by_model_type_only(gpt2_files, tmp_path):
    """A tokenizer.json whose config names no class: config.json's model_type picks GPT-2's recipe."""
    _reference(gpt2_files).save_pretrained(tmp_path)
    settings = json.loads((tmp_path / "tokenizer_config.json").read_text())
    del settings["tokenizer_class"]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(settings))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    ours = AutoTokenizer.from_pretrained(tmp_path)
    assert ours.tokenizer_class == "GPT2Tokenizer"
    assert_same(ours, transformers.GPT2Tokenizer.from_pretrained(tmp_path))


def test_no_pad_token_means_no_padding(gpt2_files, tmp_path):
    ours = AutoTokenizer.from_pretrained(_native_dir(tmp_path, gpt2_files, "model_type"))
    with pytest.raises(ValueError, match="pad"):
        ours(CORPUS[:2], padding=True)
