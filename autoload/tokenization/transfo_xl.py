"""Transformer-XL's word-level tokenizer, token for token the reference's Python
``TransfoXLTokenizer`` (transformers 4.37, the last that has it).

Each text piece between special tokens is stripped, lower-cased when ``lower_case``, then run
through Moses as the reference does (``sacremoses``: punctuation normalisation, tokenisation
with aggressive dash splits and no escaping, then numbers split as ``1 @,@ 000`` and
``1 @.@ 5``); each word is looked up in the vocabulary (unknown ones are ``unk_idx``'s).
Nothing is added around a text. Decoding is Moses detokenisation with the numbers joined back.

The vocabulary comes from ``vocab.txt`` (a symbol per line, its first field) or from the
reference's pickled tokenizer state (``vocab.pkl``, or a torch-saved ``vocab.bin``). Pickles
are read by :class:`VocabUnpickler`, which builds plain containers, strings and numbers, plus
``collections.Counter`` / ``OrderedDict``; the tokenizer objects a 4.x ``save_pretrained``
also pickles (Moses instances, compiled patterns, a trie, AddedTokens) become inert
placeholders, never the classes themselves; any other global is refused before anything in
the file runs.
"""
from __future__ import annotations

import collections
import logging
import pickle
import re
from pathlib import Path
from typing import Any, Optional, Union

import tokenizers
from tokenizers import NormalizedString, PreTokenizedString, decoders, pre_tokenizers, processors
from tokenizers.models import WordLevel

from .api import PythonPartsTokenizer, Tokenizer

logger = logging.getLogger(__name__)

VOCAB_TXT = "vocab.txt"
PICKLED_NAMES = ("vocab.pkl", "vocab.bin")
UNKNOWN_SYMBOLS = ("<UNK>", "<unk>")  # the reference's order of preference for vocab.txt
DEFAULT_SPECIALS = {"unk_token": "<unk>", "eos_token": "<eos>"}
DEFAULT_EXTRA_SPECIALS = ["<formula>"]
_NUMBER_INNER = re.compile(r"(?<=\d)[,.](?=\d)")
_NUMBER_JOIN = ((re.compile(r" @\,@ "), ","), (re.compile(r" @\.@ "), "."))


# -- the restricted unpickler ---------------------------------------------------------------------

class _Inert:
    """Stands for an object of the reference tokenizer's pickled state that the vocabulary does
    not need: built from nothing, its arguments and state dropped."""

    def __new__(cls, *args: Any, **kwargs: Any) -> "_Inert":
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


_CONTAINERS = {("collections", "OrderedDict"): collections.OrderedDict, ("collections", "Counter"): collections.Counter}
# Tokenizer machinery a transformers 4.x save_pretrained pickles beside the vocabulary.
_INERT_MODULES = ("sacremoses.", "transformers.", "tokenizers")
_INERT_GLOBALS = {("re", "_compile")}


class CodeInPickleError(pickle.UnpicklingError):
    """A pickled vocabulary that needs a global autoload does not admit (code)."""


class VocabUnpickler(pickle.Unpickler):
    """Unpickles data, never code: plain containers, strings and numbers (no globals needed),
    Counter and OrderedDict, and inert placeholders for known tokenizer objects."""

    def __init__(self, file: Any, path: Path):
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _CONTAINERS:
            return _CONTAINERS[(module, name)]
        if (module, name) in _INERT_GLOBALS or module.startswith(_INERT_MODULES):
            return _Inert
        raise CodeInPickleError(
            f"{self.path}: the pickled vocabulary refers to {module}.{name}, which is code, not vocabulary data; "
            "autoload never runs code from a model repository, so it does not unpickle this file. Use a vocab.txt "
            "(one symbol per line) instead, or a vocab.pkl holding only the vocabulary (idx2sym, sym2idx).")


def read_pickled_vocab(path: Path) -> dict[str, Any]:
    """The reference's pickled tokenizer state as a dict, read without running code."""
    with open(path, "rb") as handle:
        if handle.read(2) == b"PK":  # torch.save's zip format
            return _torch_vocab(path)
        handle.seek(0)
        try:
            state = VocabUnpickler(handle, path).load()
        except CodeInPickleError:
            raise
        except Exception as err:  # truncated or not a pickle at all
            raise ValueError(f"{path}: not a readable pickled vocabulary ({type(err).__name__}: {err})") from err
    if isinstance(state, int):  # torch.save's legacy format starts with a magic number
        return _torch_vocab(path)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: a pickled vocabulary must hold a dict (idx2sym, sym2idx, ...), found "
                         f"{type(state).__name__}")
    return state


def _torch_vocab(path: Path) -> dict[str, Any]:
    import torch  # only the torch-saved vocab.bin needs it

    try:
        with torch.serialization.safe_globals([collections.Counter]):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CodeInPickleError(f"{path}: refused by torch.load(weights_only=True): it needs more than "
                                     f"vocabulary data ({err})") from err
    if not isinstance(state, dict):
        raise ValueError(f"{path}: a torch-saved vocabulary must hold a dict, found {type(state).__name__}")
    return state


# -- the vocabulary ---------------------------------------------------------------------------------

def vocab_from_txt(path: Path) -> tuple[dict[str, int], Optional[str]]:
    """Symbols of vocab.txt in order (a repeat keeps its first id), and the unknown symbol."""
    symbols: dict[str, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.strip().split()
        if not fields:
            raise ValueError(f"{path} line {number} is empty: each line of a Transformer-XL vocab.txt holds a symbol")
        symbols.setdefault(fields[0], len(symbols))
    unknown = next((s for s in UNKNOWN_SYMBOLS if s in symbols), None)
    if unknown is None:
        raise ValueError(f"{path}: the vocabulary has no <unk> (or <UNK>) symbol for unknown words")
    return symbols, unknown


def vocab_from_state(state: dict[str, Any], path: Path) -> tuple[dict[str, int], Optional[str]]:
    """sym2idx (or idx2sym) of a pickled state, and the unknown symbol (unk_idx's, else <unk>/<UNK>)."""
    sym2idx, idx2sym = state.get("sym2idx"), state.get("idx2sym")
    if isinstance(sym2idx, dict) and sym2idx:
        symbols = dict(sym2idx)
    elif isinstance(idx2sym, list) and idx2sym:
        symbols = {}
        for i, s in enumerate(idx2sym):
            symbols.setdefault(s, i)
    else:
        raise ValueError(f"{path}: the pickled vocabulary has neither sym2idx nor idx2sym")
    if not all(isinstance(s, str) and isinstance(i, int) for s, i in symbols.items()):
        raise ValueError(f"{path}: sym2idx must map strings to integer ids")
    by_id = {i: s for s, i in symbols.items()}
    unk_idx = state.get("unk_idx")
    unknown = by_id.get(unk_idx) if isinstance(unk_idx, int) else None
    if unknown is None:  # the reference's fallback for old pickles
        unknown = next((s for s in ("<unk>", "<UNK>") if s in symbols), None)
    return symbols, unknown


def build_backend(files: dict[str, Path], settings: dict[str, Any]) -> tokenizers.Tokenizer:
    """A WordLevel backend over vocab.txt, else the pickled vocabulary (vocab.txt wins, as in the
    reference, which rebuilds from it last)."""
    if VOCAB_TXT in files:
        symbols, unknown = vocab_from_txt(files[VOCAB_TXT])
    else:
        path = next(files[name] for name in PICKLED_NAMES if name in files)
        symbols, unknown = vocab_from_state(read_pickled_vocab(path), path)
    for name, value in DEFAULT_SPECIALS.items():
        settings.setdefault(name, value)
    if not any(settings.get(k) for k in ("additional_special_tokens", "extra_special_tokens")):
        settings["additional_special_tokens"] = list(DEFAULT_EXTRA_SPECIALS)
    settings.setdefault("clean_up_tokenization_spaces", True)  # the 4.x default, which this class kept
    settings["base_vocab_size"] = len(symbols)
    if unknown is None:
        logger.warning("the Transformer-XL vocabulary has no unknown symbol: a word outside it cannot be encoded")
    return tokenizers.Tokenizer(WordLevel(symbols, unk_token=unknown or "<unk>"))


# -- the pipeline -----------------------------------------------------------------------------------

class MosesPipeline:
    """The reference's ``_tokenize`` (without eos options) and ``convert_tokens_to_string``."""

    def __init__(self, language: str, lower_case: bool, delimiter: Optional[str], never_split: list[str]):
        import sacremoses  # a runtime dependency of this family only

        self.lower_case, self.delimiter, self.never_split = lower_case, delimiter, list(never_split)
        self.normalizer = sacremoses.MosesPunctNormalizer(language)
        self.moses = sacremoses.MosesTokenizer(language)
        self.detokenizer = sacremoses.MosesDetokenizer(language)

    def words(self, text: str) -> list[str]:
        line = text.strip()
        if self.lower_case:
            line = line.lower()
        if self.delimiter == "":  # the reference then takes the line's characters as symbols
            return list(line)
        line = self.normalizer.normalize(line)
        tokens = self.moses.tokenize(line, aggressive_dash_splits=True, return_str=False, escape=False,
                                     protected_patterns=self.never_split)
        return [piece for token in tokens for piece in _NUMBER_INNER.sub(r" @\g<0>@ ", token).split()]

    def text(self, tokens: list[str]) -> str:
        out = self.detokenizer.detokenize(tokens)
        for pattern, joined in _NUMBER_JOIN:
            out = pattern.sub(joined, out)
        return out.strip()


class _MosesWords:
    """Pre-tokenizer: the reference's words of each piece between special tokens. A word that is
    the text's own characters points at them; one Moses rewrote (normalised quotes, ``@-@``,
    ``@,@``) points at the character where it stands."""

    def __init__(self, pipeline: MosesPipeline):
        self.pipeline = pipeline

    def pre_tokenize(self, pretok: PreTokenizedString) -> None:
        pretok.split(self._split)

    def _split(self, index: int, text: NormalizedString) -> list[NormalizedString]:
        original = str(text)
        words = self.pipeline.words(original)
        seen = original.lower() if self.pipeline.lower_case else original
        pieces, cursor = [], 0
        for word in words:
            while cursor < len(seen) and seen[cursor].isspace():
                cursor += 1
            if seen.startswith(word, cursor):
                start, end = cursor, cursor + len(word)
            else:
                start = min(cursor, len(seen) - 1)
                end = start + 1
            piece = text[start:end]
            if str(piece) != word:
                piece.replace(str(piece), word)
            pieces.append(piece)
            cursor = max(cursor, end)
        return pieces


class _MosesText:
    """Decoder: the reference's decode: runs of ordinary tokens detokenised, tokens added beyond
    the vocabulary kept apart, the parts joined by spaces."""

    def __init__(self, pipeline: MosesPipeline, apart: set[str]):
        self.pipeline, self.apart = pipeline, apart

    def decode_chain(self, tokens: list[str]) -> list[str]:
        parts, run = [], []
        for token in tokens:
            if token in self.apart:
                if run:
                    text = self.pipeline.text(run)
                    if text:
                        parts.append(text)
                    run = []
                parts.append(token)
            else:
                run.append(token)
        if run:
            parts.append(self.pipeline.text(run))
        return [" ".join(parts)]


class TransfoXLTokenizer(PythonPartsTokenizer):
    """:class:`Tokenizer` over a WordLevel backend with the Moses pipeline attached
    (``init_kwargs``: lower_case, delimiter, language, never_split as the reference reads them)."""

    def __init__(self, backend: tokenizers.Tokenizer, **kwargs: Any):
        super().__init__(backend, **kwargs)
        self._attach()

    def _attach(self) -> None:
        options = self.init_kwargs
        never_split = options.get("never_split") or self.all_special_tokens
        self.pipeline = MosesPipeline(options.get("language") or "en", bool(options.get("lower_case", False)),
                                      options.get("delimiter"), never_split)
        base = int(options.get("base_vocab_size", self.backend.get_vocab_size(with_added_tokens=False)))
        vocab = self.backend.get_vocab(with_added_tokens=True)
        special = set(self.all_special_tokens)
        # As the reference: added tokens that are not special, and extra special ones beyond the vocabulary.
        apart = {t for t, i in vocab.items() if i >= base and (t not in special or t in self.additional_special_tokens)}
        self.backend.pre_tokenizer = pre_tokenizers.PreTokenizer.custom(_MosesWords(self.pipeline))
        self.backend.decoder = decoders.Decoder.custom(_MosesText(self.pipeline, apart))

    def tokenize(self, text: str, pair: Optional[str] = None, add_special_tokens: bool = False, **kwargs: Any
                 ) -> list[str]:
        """The reference's tokens: the words before the vocabulary lookup (an unknown word stays
        itself; its id is unk's), special tokens split out first."""
        if pair is not None or add_special_tokens:
            return super().tokenize(text, pair, add_special_tokens, **kwargs)
        added = sorted(self.backend.get_added_tokens_decoder().values(), key=lambda t: -len(t.content))
        if not added:
            return self.pipeline.words(text)
        splitter = re.compile("(" + "|".join(re.escape(t.content) for t in added) + ")")
        specials = {t.content for t in added}
        return [word for part in splitter.split(text) if part
                for word in ([part] if part in specials else self.pipeline.words(part))]

    def save_pretrained(self, save_directory: Union[str, Path], **kwargs: Any) -> tuple[str, ...]:
        """vocab.txt (symbols in id order), tokenizer_config.json and special_tokens_map.json:
        plain text that autoload and the reference both load (never a pickle)."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        vocab = self.backend.get_vocab(with_added_tokens=False)
        vocab_file = directory / VOCAB_TXT
        vocab_file.write_text("".join(f"{s}\n" for s, _ in sorted(vocab.items(), key=lambda item: item[1])),
                              encoding="utf-8")
        config = self._config_to_save()
        config.pop("base_vocab_size", None)
        return (*self._save_slow_configs(directory, config), str(vocab_file))

    @property
    def do_lower_case(self) -> bool:
        return bool(self.init_kwargs.get("lower_case", False))

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("pipeline", None)
        return state

    def _reattach(self) -> None:
        self._attach()


def finish(tokenizer: Tokenizer, settings: dict[str, Any]) -> None:
    """Nothing around a text; a pair is its two texts back to back, typed 0 then 1 (the reference's defaults)."""
    tokenizer.backend.post_processor = processors.TemplateProcessing(single="$A:0", pair="$A:0 $B:1")
