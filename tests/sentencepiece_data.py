"""Tiny SentencePiece models trained with the ``sentencepiece`` trainer (a test-only dependency)
in each family's id layout, and directories that hold them as the families ship them; shared by
tests/autoload/test_tokenizer_sentencepiece.py and tests/e2e/test_job_sentencepiece.py."""
from __future__ import annotations

import io
import json
import random
from pathlib import Path

SYLLABLES = "ka lo mi ne ru ta shi vo pe da zu gri ent ion ung ber ré ça ñu øy".split()
SCRIPT_WORDS = ("Привет мир Ελληνικά 北京 欢迎 東京 日本語 テキスト café naïve straße 👍 🎉 don't it's 3.14 2026 "
                "HELLO World the quick brown fox lazy dog").split()

# Each family's id layout, as its released .model files have it.
LAYOUTS = {
    "t5": dict(pad_id=0, eos_id=1, unk_id=2, bos_id=-1),
    "albert": dict(pad_id=0, unk_id=1, bos_id=2, eos_id=3, bos_piece="[CLS]", eos_piece="[SEP]",
                   control_symbols=["[MASK]"]),
    "xlnet": dict(unk_id=0, bos_id=1, eos_id=2, control_symbols=["<cls>", "<sep>", "<pad>", "<mask>", "<eod>", "<eop>"]),
    "camembert": dict(),  # sentencepiece's defaults: <unk> 0, <s> 1, </s> 2
    "xlm-roberta": dict(),
}
FILE_NAMES = {"t5": "spiece.model", "albert": "spiece.model", "xlnet": "spiece.model",
              "camembert": "sentencepiece.bpe.model", "xlm-roberta": "sentencepiece.bpe.model"}
CLASSES = {"t5": "T5Tokenizer", "albert": "AlbertTokenizer", "xlnet": "XLNetTokenizer",
           "camembert": "CamembertTokenizer", "xlm-roberta": "XLMRobertaTokenizer"}


def sentences(count: int = 400, seed: int = 0) -> list[str]:
    """Generated sentences: made-up words (accented syllables), words of several scripts, emoji,
    digits, some capitalised."""
    rng = random.Random(seed)
    words = ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(150)] + SCRIPT_WORDS
    return [" ".join(rng.choice(words).capitalize() if rng.random() < 0.2 else rng.choice(words)
                     for _ in range(rng.randint(3, 14))) for _ in range(count)]


def train(family: str, kind: str, vocab_size: int = 300, **options) -> bytes:
    """A ``.model`` file's bytes: ``kind`` unigram / bpe / char / word, in ``family``'s layout."""
    import sentencepiece as spm

    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences()), model_writer=writer, model_type=kind,
                                   vocab_size=vocab_size, hard_vocab_limit=False, character_coverage=0.9995,
                                   num_threads=1, minloglevel=2, **{**LAYOUTS[family], **options})
    return writer.getvalue()


def family_dir(directory: Path, family: str, model: bytes) -> Path:
    """The .model under the family's file name, and the family named by the tokenizer class."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / FILE_NAMES[family]).write_bytes(model)
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": CLASSES[family]}))
    return directory
