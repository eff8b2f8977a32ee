"""Per-family recipes: how each reference tokenizer class builds its pipeline from native files.

A model file's contract names its recipe (``ModelContract.tokenizer``) and the reference class
it stands for (``tokenizer_class``). A recipe builds exactly what its classes build, or it is
not used: families whose native files no recipe reads are refused with the supported list.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional

import tokenizers
from tokenizers import decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE, WordLevel, WordPiece

from .api import token_content
from . import sentencepiece as spm
from .ctrl import CTRLTokenizer
from . import xlm as xlm_tokenization
from . import transfo_xl
from .files import BPE_FILES, PICKLED_VOCAB, SENTENCEPIECE, WORDPIECE_FILES, Layout

if TYPE_CHECKING:
    from .api import Tokenizer

WITH_TYPES = ("input_ids", "token_type_ids", "attention_mask")
WITHOUT_TYPES = ("input_ids", "attention_mask")

# Reference classes without a recipe (their tokenizer.json is used as saved) whose
# model_input_names include token_type_ids.
OTHER_TOKEN_TYPE_CLASSES = frozenset({
    "DebertaTokenizer", "DebertaV2Tokenizer", "MarkupLMTokenizer", "LayoutLMv2Tokenizer", "TapasTokenizer",
    "CanineTokenizer",
})


@dataclass(frozen=True)
class Recipe:
    """One family's pipeline. ``native`` is the file layout it builds from (None: it reads only a
    saved tokenizer.json); ``prepare`` sets normalizer / pre-tokenizer / decoder before special
    tokens are added and ``finish`` the post-processor after, as the reference classes do.
    ``rebuilds`` names the tokenizers model whose tokenizer.json the reference class rebuilds
    from tokenizer_config.json options (so we do too)."""

    name: str
    classes: Mapping[str, tuple[str, ...]]  # reference class → its model_input_names
    native: Optional[Layout] = None
    build: Optional[Callable[[dict[str, Path], dict[str, Any]], tokenizers.Tokenizer]] = None
    rebuilds: Optional[str] = None
    prepare: Optional[Callable[[tokenizers.Tokenizer, dict[str, Any]], None]] = None
    finish: Optional[Callable[["Tokenizer", dict[str, Any]], None]] = None
    special_defaults: Mapping[str, str] = field(default_factory=dict)
    api_class: Optional[type] = None  # a Tokenizer subclass, for a family with Python parts
    also_reads: tuple[Layout, ...] = ()  # native layouts besides ``native`` (Transformer-XL's pickled vocabulary)

    def applies_to(self, backend: tokenizers.Tokenizer) -> bool:
        return self.prepare is not None and type(backend.model).__name__ == self.rebuilds


# -- BERT: WordPiece from vocab.txt, [CLS] A [SEP] B [SEP] -----------------------------------------

BERT_SPECIAL_DEFAULTS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                         "mask_token": "[MASK]"}


def _build_wordpiece(files: dict[str, Path], settings: dict[str, Any]) -> tokenizers.Tokenizer:
    unk = token_content(settings.get("unk_token")) or BERT_SPECIAL_DEFAULTS["unk_token"]
    return tokenizers.Tokenizer(WordPiece.from_file(str(files["vocab.txt"]), unk_token=unk))


def _prepare_bert(backend: tokenizers.Tokenizer, settings: dict[str, Any]) -> None:
    settings.setdefault("do_lower_case", True)
    settings.setdefault("strip_accents", None)
    settings.setdefault("tokenize_chinese_chars", True)
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=settings["tokenize_chinese_chars"],
        strip_accents=settings["strip_accents"],
        lowercase=settings["do_lower_case"],
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")


def _finish_bert(tokenizer: "Tokenizer", settings: dict[str, Any]) -> None:
    cls, sep = tokenizer.cls_token, tokenizer.sep_token
    if cls is None or sep is None:
        raise ValueError("a BERT-style tokenizer needs cls_token and sep_token")
    tokenizer.backend.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, tokenizer.cls_token_id), (sep, tokenizer.sep_token_id)],
    )


BERT = Recipe(
    name="bert",
    # BertTokenizer, its subclasses and aliases in the reference.
    classes={"BertTokenizer": WITH_TYPES, "DistilBertTokenizer": WITHOUT_TYPES, "ElectraTokenizer": WITH_TYPES,
             "ConvBertTokenizer": WITH_TYPES, "LayoutLMTokenizer": WITH_TYPES, "SqueezeBertTokenizer": WITH_TYPES,
             "MobileBertTokenizer": WITH_TYPES, "LxmertTokenizer": WITH_TYPES},
    native=WORDPIECE_FILES, build=_build_wordpiece, rebuilds="WordPiece",
    prepare=_prepare_bert, finish=_finish_bert, special_defaults=BERT_SPECIAL_DEFAULTS,
)


# -- RoBERTa: byte-level BPE from vocab.json + merges.txt, <s> A </s></s> B </s> --------------------

def _build_byte_level_bpe(files: dict[str, Path], settings: dict[str, Any]) -> tokenizers.Tokenizer:
    return tokenizers.Tokenizer(BPE.from_file(str(files["vocab.json"]), str(files["merges.txt"]), dropout=None,
                                              continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))


def _prepare_byte_level(backend: tokenizers.Tokenizer, settings: dict[str, Any]) -> None:
    settings.setdefault("add_prefix_space", False)
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=settings["add_prefix_space"])
    backend.decoder = decoders.ByteLevel()


def _prepare_roberta(backend: tokenizers.Tokenizer, settings: dict[str, Any]) -> None:
    settings.setdefault("trim_offsets", True)
    _prepare_byte_level(backend, settings)


def _finish_roberta(tokenizer: "Tokenizer", settings: dict[str, Any]) -> None:
    cls, sep = tokenizer.cls_token, tokenizer.sep_token
    if cls is None or sep is None:
        raise ValueError("a RoBERTa-style tokenizer needs cls_token and sep_token")
    tokenizer.backend.post_processor = processors.RobertaProcessing(
        (sep, tokenizer.sep_token_id), (cls, tokenizer.cls_token_id),
        trim_offsets=settings["trim_offsets"], add_prefix_space=settings["add_prefix_space"],
    )


ROBERTA = Recipe(
    name="roberta",
    classes={"RobertaTokenizer": WITHOUT_TYPES, "BartTokenizer": WITHOUT_TYPES, "LongformerTokenizer": WITHOUT_TYPES},
    native=BPE_FILES, build=_build_byte_level_bpe, rebuilds="BPE",
    prepare=_prepare_roberta, finish=_finish_roberta,
    special_defaults={"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
                      "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>"},
)


# -- GPT-2: the same byte-level BPE, no special tokens around a text -----------------------------

def _finish_gpt2(tokenizer: "Tokenizer", settings: dict[str, Any]) -> None:
    # A saved tokenizer.json keeps its post-processor (the released one's ByteLevel, untrimmed
    # offsets), as the reference does; built from vocab.json + merges.txt, the reference's is a
    # template that adds nothing and types a pair's second text 1.
    if tokenizer.backend.post_processor is None:
        tokenizer.backend.post_processor = processors.TemplateProcessing(single="$A:0", pair="$A:0 $B:1")


GPT2 = Recipe(
    name="gpt2",
    classes={"GPT2Tokenizer": WITHOUT_TYPES},
    native=BPE_FILES, build=_build_byte_level_bpe, rebuilds="BPE",
    prepare=_prepare_byte_level, finish=_finish_gpt2,
    special_defaults={"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"},
)


# -- OpenAI GPT: lower-cased BPE with </w> word ends, BERT's basic split, nothing around a text ----

def _build_word_end_bpe(files: dict[str, Path], settings: dict[str, Any]) -> tokenizers.Tokenizer:
    unk = token_content(settings.get("unk_token")) or "<unk>"
    return tokenizers.Tokenizer(BPE.from_file(str(files["vocab.json"]), str(files["merges.txt"]), dropout=None,
                                              continuing_subword_prefix="", end_of_word_suffix="</w>", fuse_unk=False,
                                              unk_token=unk))


def _prepare_openai_gpt(backend: tokenizers.Tokenizer, settings: dict[str, Any]) -> None:
    # The reference (5.24) always sets these, whatever tokenizer_config.json says: it always lower-cases
    # (and so strips accents) and splits like BERT's basic tokenizer (ftfy and spaCy are not used).
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.BPEDecoder(suffix="</w>")


OPENAI_GPT = Recipe(
    name="openai-gpt",
    classes={"OpenAIGPTTokenizer": WITHOUT_TYPES},
    native=BPE_FILES, build=_build_word_end_bpe, rebuilds="BPE",
    prepare=_prepare_openai_gpt, finish=_finish_gpt2,  # GPT-2's: the template adding nothing, unless saved
    special_defaults={"unk_token": "<unk>"},
)


# -- CTRL: per-word BPE with @@ continuation marks, in Python (see .ctrl); nothing around a text --

def _build_ctrl(files: dict[str, Path], settings: dict[str, Any]) -> tokenizers.Tokenizer:
    settings["vocab_file"], settings["merges_file"] = str(files["vocab.json"]), str(files["merges.txt"])
    vocab = json.loads(files["vocab.json"].read_text(encoding="utf-8"))
    return tokenizers.Tokenizer(WordLevel(vocab, unk_token=token_content(settings.get("unk_token")) or "<unk>"))


def _finish_ctrl(tokenizer: "Tokenizer", settings: dict[str, Any]) -> None:
    # The reference adds no special tokens and, asked for token types, types both texts of a pair 0.
    tokenizer.backend.post_processor = processors.TemplateProcessing(single="$A:0", pair="$A:0 $B:0")


CTRL = Recipe(
    name="ctrl",
    classes={"CTRLTokenizer": WITHOUT_TYPES},
    native=BPE_FILES, build=_build_ctrl, finish=_finish_ctrl, api_class=CTRLTokenizer,
    special_defaults={"unk_token": "<unk>"},
)


# -- XLM / FlauBERT: Moses + BPE with </w> word ends, in Python (see .xlm); <s> A </s> B </s> -----

def _build_xlm(files: dict[str, Path], settings: dict[str, Any]) -> tokenizers.Tokenizer:
    settings["vocab_file"], settings["merges_file"] = str(files["vocab.json"]), str(files["merges.txt"])
    if not any(settings.get(key) for key in ("additional_special_tokens", "extra_special_tokens")):
        settings["additional_special_tokens"] = list(xlm_tokenization.ADDITIONAL_SPECIAL_TOKENS)
    vocab = json.loads(files["vocab.json"].read_text(encoding="utf-8"))
    return tokenizers.Tokenizer(WordLevel(vocab, unk_token=token_content(settings.get("unk_token")) or "<unk>"))


def _finish_xlm(tokenizer: "Tokenizer", settings: dict[str, Any]) -> None:
    bos, sep = tokenizer.bos_token, tokenizer.sep_token
    if bos is None or sep is None:
        raise ValueError("an XLM-style tokenizer needs bos_token and sep_token")
    # Token types (only when asked for: the reference's model_input_names have none) type the
    # second text and its </s> 1.
    tokenizer.backend.post_processor = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0 {sep}:0", pair=f"{bos}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(bos, tokenizer.bos_token_id), (sep, tokenizer.sep_token_id)])


XLM = Recipe(
    name="xlm",
    classes={"XLMTokenizer": WITHOUT_TYPES},
    native=BPE_FILES, build=_build_xlm, finish=_finish_xlm, api_class=xlm_tokenization.XLMTokenizer,
    special_defaults=xlm_tokenization.SPECIAL_DEFAULTS,
)
FLAUBERT = Recipe(
    name="flaubert",
    classes={"FlaubertTokenizer": WITHOUT_TYPES},
    native=BPE_FILES, build=_build_xlm, finish=_finish_xlm, api_class=xlm_tokenization.FlaubertTokenizer,
    special_defaults=xlm_tokenization.SPECIAL_DEFAULTS,
)


# -- SentencePiece families: built from their .model (see .sentencepiece); a saved tokenizer.json is
# used as is ------------------------------------------------------------------------------------------

ALBERT = Recipe(name="albert", classes={"AlbertTokenizer": WITHOUT_TYPES}, native=SENTENCEPIECE,
                build=spm.build_albert, finish=spm.finish_albert, special_defaults=spm.ALBERT_SPECIAL_DEFAULTS)
CAMEMBERT = Recipe(name="camembert", classes={"CamembertTokenizer": WITHOUT_TYPES}, native=SENTENCEPIECE,
                   build=spm.build_camembert, finish=spm.finish_roberta_like,
                   special_defaults=spm.ROBERTA_SPECIAL_DEFAULTS)
XLM_ROBERTA = Recipe(name="xlm-roberta", classes={"XLMRobertaTokenizer": WITHOUT_TYPES}, native=SENTENCEPIECE,
                     build=spm.build_xlm_roberta, finish=spm.finish_roberta_like,
                     special_defaults=spm.ROBERTA_SPECIAL_DEFAULTS)
T5 = Recipe(name="t5", classes={"T5Tokenizer": WITHOUT_TYPES}, native=SENTENCEPIECE, build=spm.build_t5,
            finish=spm.finish_t5, special_defaults=spm.T5_SPECIAL_DEFAULTS)
# transformers 5.24's XLNetTokenizer returns token types only when asked (return_token_type_ids=True).
XLNET = Recipe(name="xlnet", classes={"XLNetTokenizer": WITHOUT_TYPES}, native=SENTENCEPIECE, build=spm.build_xlnet,
               finish=spm.finish_xlnet, special_defaults=spm.XLNET_SPECIAL_DEFAULTS)

# -- Transformer-XL: Moses words over a word vocabulary (see .transfo_xl); nothing around a text -----

TRANSFO_XL = Recipe(
    name="transfo-xl",
    classes={"TransfoXLTokenizer": ("input_ids",)},  # the reference returns no attention mask
    native=WORDPIECE_FILES, also_reads=(PICKLED_VOCAB,), build=transfo_xl.build_backend,
    finish=transfo_xl.finish, api_class=transfo_xl.TransfoXLTokenizer,
    special_defaults=transfo_xl.DEFAULT_SPECIALS,
)

RECIPES: dict[str, Recipe] = {r.name: r for r in (BERT, ROBERTA, GPT2, OPENAI_GPT, CTRL, ALBERT, CAMEMBERT,
                                                   XLM_ROBERTA, T5, XLNET, TRANSFO_XL, XLM, FLAUBERT)}


def recipe_for_class(tokenizer_class: str) -> Optional[Recipe]:
    return next((r for r in RECIPES.values() if tokenizer_class in r.classes), None)


def model_input_names(tokenizer_class: str) -> tuple[str, ...]:
    """The reference class's model_input_names (its recipe's, else the reference default)."""
    recipe = recipe_for_class(tokenizer_class)
    if recipe is not None:
        return recipe.classes[tokenizer_class]
    return WITH_TYPES if tokenizer_class in OTHER_TOKEN_TYPE_CLASSES else WITHOUT_TYPES


def native_layouts() -> list[str]:
    """What autoload builds from native files, for error messages."""
    return [f"{recipe.name} from {recipe.native.describe()}" for recipe in RECIPES.values() if recipe.native]
