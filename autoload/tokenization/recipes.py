"""Per-family recipes: how each reference tokenizer class builds its pipeline from native files.

A model file's contract names its recipe (``ModelContract.tokenizer``) and the reference class
it stands for (``tokenizer_class``). A recipe builds exactly what its classes build, or it is
not used: families whose native files no recipe reads are refused with the supported list.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional

import tokenizers
from tokenizers import decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE, WordPiece

from .api import token_content
from .files import BPE_FILES, WORDPIECE_FILES, Layout

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


def _prepare_roberta(backend: tokenizers.Tokenizer, settings: dict[str, Any]) -> None:
    settings.setdefault("add_prefix_space", False)
    settings.setdefault("trim_offsets", True)
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=settings["add_prefix_space"])
    backend.decoder = decoders.ByteLevel()


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


# -- SentencePiece families: their native file is a .model; a saved tokenizer.json is used as is ---

ALBERT = Recipe(name="albert", classes={"AlbertTokenizer": WITHOUT_TYPES})
CAMEMBERT = Recipe(name="camembert", classes={"CamembertTokenizer": WITHOUT_TYPES})
XLM_ROBERTA = Recipe(name="xlm-roberta", classes={"XLMRobertaTokenizer": WITHOUT_TYPES})

RECIPES: dict[str, Recipe] = {r.name: r for r in (BERT, ROBERTA, ALBERT, CAMEMBERT, XLM_ROBERTA)}


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
