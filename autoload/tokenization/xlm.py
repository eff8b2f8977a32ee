"""XLM's and FlauBERT's tokenizers, token for token the reference's Python ``XLMTokenizer`` and
``FlaubertTokenizer``.

Both run Moses in Python (``sacremoses``, the library the reference uses): the reference's
unicode-punctuation replacements, Moses punctuation normalisation for the text's language,
non-printing characters removed, Moses tokenisation (``escape=False``); XLM then lower-cases
and strips accents when the vocabulary says so (``do_lowercase_and_remove_accent``, true by
default), and a Romanian text gets Sennrich's diacritic rules; FlauBERT first replaces `` and
'' with ", NFC-normalises and lower-cases when ``do_lowercase`` says so, and is always French.
Each Moses token then runs through BPE over merges.txt with ``</w>`` on its last symbol
(``ctrl.WordBPE``, the same merge loop), and a ``WordLevel`` model over vocab.json looks the
pieces up, so the rest (special tokens, templates, padding, truncation) is the ``tokenizers``
machinery every family shares.

The language is per call (``lang=``, English by default as in the reference): a tokenizer holds
one backend per language it has seen, built on first use. Chinese, Japanese and Thai need
word segmenters the reference imports on demand (rjieba, KyTea, PyThaiNLP): refused by name.
Like the reference's Python tokenizers these give no character offsets.
"""
from __future__ import annotations

import logging
import re
import threading
import unicodedata
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional, Union

import tokenizers
from tokenizers import NormalizedString, PreTokenizedString, decoders, pre_tokenizers

from .api import PythonPartsTokenizer, Tokenizer
from .ctrl import WordBPE

logger = logging.getLogger(__name__)

_END = "</w>"
DEFAULT_LANGUAGE = "en"
FLAUBERT_LANGUAGE = "fr"
# Languages the reference segments with a third-party word segmenter instead of Moses.
SEGMENTED_LANGUAGES = {"zh": "rjieba", "ja": "KyTea (Mykytea)", "th": "PyThaiNLP"}
ADDITIONAL_SPECIAL_TOKENS = [f"<special{i}>" for i in range(10)]
SPECIAL_DEFAULTS = {"unk_token": "<unk>", "bos_token": "<s>", "sep_token": "</s>", "pad_token": "<pad>",
                    "cls_token": "</s>", "mask_token": "<special1>"}

# The reference's replace_unicode_punct (a port of Moses' replace-unicode-punctuation.perl), in order.
_PUNCT_REPLACEMENTS: tuple[tuple[str, str], ...] = (
    ("，", ","), ("。", None), ("、", ","), ("”", '"'), ("“", '"'), ("∶", ":"), ("：", ":"), ("？", "?"),
    ("《", '"'), ("》", '"'), ("）", ")"), ("！", "!"), ("（", "("), ("；", ";"), ("１", "1"), ("」", '"'),
    ("「", '"'), ("０", "0"), ("３", "3"), ("２", "2"), ("５", "5"), ("６", "6"), ("９", "9"), ("７", "7"),
    ("８", "8"), ("４", "4"), ("．", None), ("～", "~"), ("’", "'"), ("…", "..."), ("━", "-"), ("〈", "<"),
    ("〉", ">"), ("【", "["), ("】", "]"), ("％", "%"),
)
_FULL_STOPS = {"。": re.compile(r"。\s*"), "．": re.compile(r"．\s*")}


def replace_unicode_punct(text: str) -> str:
    for old, new in _PUNCT_REPLACEMENTS:
        text = _FULL_STOPS[old].sub(". ", text) if new is None else text.replace(old, new)
    return text


def remove_non_printing_char(text: str) -> str:
    return "".join(char for char in text if not unicodedata.category(char).startswith("C"))


def romanian_preprocessing(text: str) -> str:
    """Sennrich's WMT16 Romanian normalisation and diacritic removal, as the reference applies it."""
    for old, new in (("\u015e", "\u0218"), ("\u015f", "\u0219"), ("\u0162", "\u021a"), ("\u0163", "\u021b"),
                     ("\u0218", "S"), ("\u0219", "s"), ("\u021a", "T"), ("\u021b", "t"), ("\u0102", "A"),
                     ("\u0103", "a"), ("\u00c2", "A"), ("\u00e2", "a"), ("\u00ce", "I"), ("\u00ee", "i")):
        text = text.replace(old, new)
    return text


def lowercase_and_remove_accent(tokens: list[str]) -> list[str]:
    """XLM's: the tokens joined by spaces, lower-cased, NFD, combining marks dropped, lower-cased
    again, split on spaces (so a token is never merged with its neighbour)."""
    text = unicodedata.normalize("NFD", " ".join(tokens).lower())
    return "".join(char for char in text if unicodedata.category(char) != "Mn").lower().split(" ")


def flaubert_preprocess(text: str, lowercase: bool) -> str:
    text = unicodedata.normalize("NFC", text.replace("``", '"').replace("''", '"'))
    return text.lower() if lowercase else text


class Moses:
    """The reference's Moses pipeline for one language (``sacremoses``, imported on first use)."""

    def __init__(self, lang: str):
        try:
            import sacremoses
        except ImportError as err:  # a runtime dependency: only a broken install lacks it
            raise ImportError("XLM and FlauBERT tokenizers need sacremoses (pip install sacremoses==0.2.0)") from err
        self.lang = lang
        self.normalizer = sacremoses.MosesPunctNormalizer(lang=lang)
        self.tokenizer = sacremoses.MosesTokenizer(lang=lang)

    def words(self, text: str) -> list[str]:
        text = remove_non_printing_char(self.normalizer.normalize(replace_unicode_punct(text)))
        if self.lang == "ro":
            text = romanian_preprocessing(text)
        return self.tokenizer.tokenize(text, return_str=False, escape=False)


class _Pieces:
    """Pre-tokenizer: a text's BPE pieces, computed by ``pieces`` (the whole reference pipeline)."""

    def __init__(self, pieces: Callable[[str], list[str]]):
        self.pieces = pieces

    def pre_tokenize(self, pretok: PreTokenizedString) -> None:
        pretok.split(self._split)

    def _split(self, index: int, text: NormalizedString) -> list[NormalizedString]:
        return [NormalizedString(piece) for piece in self.pieces(str(text))]


class _JoinWords:
    """Decoder: the reference's ``"".join(tokens).replace("</w>", " ").strip()``."""

    def decode_chain(self, tokens: list[str]) -> list[str]:
        return ["".join(tokens).replace(_END, " ").strip()]


class XLMTokenizer(PythonPartsTokenizer):
    """:class:`Tokenizer` with the Python Moses + BPE pipeline attached (``init_kwargs`` name the
    merges file and the options); ``lang=`` on a call picks the language's Moses settings."""

    flaubert = False

    def __init__(self, backend: tokenizers.Tokenizer, **kwargs: Any):
        super().__init__(backend, **kwargs)
        self.bpe = WordBPE(read_merges(Path(self.init_kwargs["merges_file"])))
        self.lang2id: Optional[dict[str, int]] = self.init_kwargs.get("lang2id")
        self._moses: dict[str, Moses] = {}
        self._backends: dict[str, tokenizers.Tokenizer] = {}
        self.default_language = FLAUBERT_LANGUAGE if self.flaubert else DEFAULT_LANGUAGE
        self._attach(backend, self.default_language)

    @property
    def do_lowercase_and_remove_accent(self) -> bool:
        return False if self.flaubert else bool(self.init_kwargs.get("do_lowercase_and_remove_accent", True))

    @property
    def do_lowercase(self) -> bool:
        return bool(self.init_kwargs.get("do_lowercase", False))

    # -- the pipeline ---------------------------------------------------------------------
    def pieces(self, lang: str, text: str) -> list[str]:
        """``text``'s BPE pieces in language ``lang``, as the reference's ``_tokenize``."""
        if self.flaubert:
            text = flaubert_preprocess(text, self.do_lowercase)
        words = self._moses_for(lang).words(text)
        if self.do_lowercase_and_remove_accent:
            words = lowercase_and_remove_accent(words)
        # The reference's bpe(word).split(" "); its special case for a word of a newline and a
        # space never arises, since Moses tokens hold no whitespace.
        return [piece for word in words if word for piece in self.bpe.symbols(word)]

    def _moses_for(self, lang: str) -> Moses:
        if lang not in self._moses:
            self._moses[lang] = Moses(lang)
        return self._moses[lang]

    def _attach(self, backend: tokenizers.Tokenizer, lang: str) -> None:
        backend.pre_tokenizer = pre_tokenizers.PreTokenizer.custom(_Pieces(partial(self.pieces, lang)))
        backend.decoder = decoders.Decoder.custom(_JoinWords())

    def check_language(self, lang: str) -> None:
        """A clear error for a language this tokenizer can't segment; a warning (as the
        reference logs) for one outside the vocabulary's ``lang2id``."""
        if lang in SEGMENTED_LANGUAGES:
            raise ValueError(f"language {lang!r}: the reference segments it with {SEGMENTED_LANGUAGES[lang]}, "
                             "which autoload does not support; Moses languages only")
        if self.lang2id and lang not in self.lang2id:
            logger.warning("language %r is not in the vocabulary's lang2id (%s)", lang, ", ".join(self.lang2id))

    def for_language(self, lang: Optional[str]) -> "XLMTokenizer":
        """This tokenizer with ``lang``'s Moses settings (FlauBERT is always French)."""
        lang = self.default_language if lang is None or self.flaubert else str(lang)
        if lang == self.default_language:
            return self
        if lang not in self._backends:
            self.check_language(lang)
            backend = tokenizers.Tokenizer.from_str(self._backend_json())
            self._attach(backend, lang)
            view = object.__new__(type(self))
            view.__dict__.update(self.__dict__)
            view.backend = backend
            view.backend_lock = threading.Lock()
            view._backends = {}
            view.default_language = lang
            self._backends[lang] = view
        return self._backends[lang]

    # -- the reference's call API ---------------------------------------------------------
    def __call__(self, text: Any, text_pair: Any = None, *, lang: Optional[str] = None, **kwargs: Any):
        if kwargs.get("return_offsets_mapping"):
            raise NotImplementedError("return_offset_mapping is not available with Python tokenizers (as the "
                                      "reference's XLMTokenizer / FlaubertTokenizer): they give no offsets")
        target = self.for_language(lang)
        return Tokenizer.__call__(target, text, text_pair, **kwargs)

    def tokenize(self, text: str, pair: Optional[str] = None, add_special_tokens: bool = False,
                 lang: Optional[str] = None, **kwargs: Any) -> list[str]:
        """The reference's pieces: as the ids' tokens, except that a piece outside the
        vocabulary stays itself (the reference looks pieces up only when making ids)."""
        target = self.for_language(lang)
        if pair is not None or add_special_tokens or kwargs:
            return Tokenizer.tokenize(target, text, pair, add_special_tokens, **kwargs)
        added = sorted((t.content for t in target.backend.get_added_tokens_decoder().values()), key=len, reverse=True)
        if not added:
            return target.pieces(target.default_language, text)
        tokens: list[str] = []
        for i, chunk in enumerate(re.split("(" + "|".join(map(re.escape, added)) + ")", text)):
            tokens += [chunk] if i % 2 else target.pieces(target.default_language, chunk)
        return tokens

    # -- pickling and saving --------------------------------------------------------------
    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_backends"] = {}
        state["_moses"] = {}
        return state

    def _reattach(self) -> None:
        self._attach(self.backend, self.default_language)

    def save_pretrained(self, save_directory: Union[str, Path], **kwargs: Any) -> tuple[str, ...]:
        """As the reference saves these tokenizers: no header line in merges.txt (the reference
        reads every line as a merge, and writes none)."""
        return self._save_word_bpe(save_directory, self.bpe.merges, None)


class FlaubertTokenizer(XLMTokenizer):
    flaubert = True


def read_merges(path: Path) -> list[tuple[str, ...]]:
    """merges.txt as the reference reads it: every line but the text after the final newline,
    each split on whitespace, its first two fields.  Unlike GPT-2's there is no header line: the
    reference ranks the first line too (a ``#version`` header, never a pair of word pieces that
    occur, ranks harmlessly)."""
    lines = path.read_text(encoding="utf-8").split("\n")[:-1]
    return [tuple(line.split()[:2]) for line in lines]
