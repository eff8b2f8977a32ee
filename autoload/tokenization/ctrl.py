"""CTRL's tokenizer, token for token the reference's Python ``CTRLTokenizer``.

The reference splits text with ``regex``'s ``\\S+\\n?``, runs BPE per word over merges.txt (the
word's last symbol carries ``</w>``), and writes every piece but a word's last with ``@@``
(``hel@@ lo``). The ``tokenizers`` BPE model marks word ends, not continuations, so the per-word
BPE runs here, in Python with a cache as in the reference, as a custom pre-tokenizer whose
pieces a ``WordLevel`` model over vocab.json looks up; offsets come for free. Decoding joins
tokens with spaces, drops ``"@@ "`` and strips, as the reference does.

Custom components can't be serialised by ``tokenizers``: :class:`CTRLTokenizer` pickles the
backend without them and re-attaches them, and saves vocab.json + merges.txt as the reference does.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Union

import tokenizers
from tokenizers import NormalizedString, PreTokenizedString, decoders, pre_tokenizers

from .api import PythonPartsTokenizer

# The reference's ``regex`` \S+\n?: ``regex`` counts \x1c-\x1f as non-space (Unicode White_Space), ``re`` doesn't.
_WORD = re.compile(r"[\S\x1c-\x1f]+\n?")
_END = "</w>"
_CONTINUES = "@@"
MERGES_HEADER = "#version: 0.2"


def read_merges(path: Path) -> list[tuple[str, ...]]:
    """merges.txt as the reference reads it: the first line is a header, the last (after the final
    newline) is dropped, each line splits on whitespace."""
    lines = path.read_text(encoding="utf-8").split("\n")[1:-1]
    return [tuple(line.split()) for line in lines]


class WordBPE:
    """The reference's ``CTRLTokenizer.bpe``: merge a word's lowest-ranked adjacent pair until none
    is ranked, every occurrence left to right; results cached per word."""

    def __init__(self, merges: list[tuple[str, ...]]):
        self.merges = merges
        self.ranks = dict(zip(merges, range(len(merges))))  # a repeated merge keeps its last rank, as there
        self.cache: dict[str, tuple[str, ...]] = {}

    def symbols(self, word: str) -> tuple[str, ...]:
        """The word's symbols after BPE; the last ends with ``</w>``."""
        if word not in self.cache:
            self.cache[word] = self._merge(tuple(word[:-1]) + (word[-1] + _END,))
        return self.cache[word]

    def _merge(self, symbols: tuple[str, ...]) -> tuple[str, ...]:
        while len(symbols) > 1:
            pairs = set(zip(symbols, symbols[1:]))
            best = min(pairs, key=lambda pair: self.ranks.get(pair, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(symbols):
                if i < len(symbols) - 1 and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = tuple(merged)
        return symbols


class _SplitWords:
    """Pre-tokenizer: each word's BPE pieces, continuing ones written ``piece@@``, the last one
    without ``</w>``: exactly the reference's tokens (``"@@ ".join(symbols)[:-4].split(" ")``, as
    no symbol holds a space), each still pointing at its characters in the text."""

    def __init__(self, bpe: WordBPE):
        self.bpe = bpe

    def pre_tokenize(self, pretok: PreTokenizedString) -> None:
        pretok.split(self._split)

    def _split(self, index: int, text: NormalizedString) -> list[NormalizedString]:
        pieces = []
        for word in _WORD.finditer(str(text)):
            start = word.start()
            symbols = self.bpe.symbols(word.group())
            for symbol in symbols[:-1]:
                piece = text[start:start + len(symbol)]
                piece.append(_CONTINUES)
                pieces.append(piece)
                start += len(symbol)
            pieces.append(text[start:word.end()])
        return pieces


class _JoinPieces:
    """Decoder: the reference's ``" ".join(tokens).replace("@@ ", "").strip()``."""

    def decode_chain(self, tokens: list[str]) -> list[str]:
        return [" ".join(tokens).replace(_CONTINUES + " ", "").strip()]


def attach(backend: tokenizers.Tokenizer, bpe: WordBPE) -> None:
    backend.pre_tokenizer = pre_tokenizers.PreTokenizer.custom(_SplitWords(bpe))
    backend.decoder = decoders.Decoder.custom(_JoinPieces())


class CTRLTokenizer(PythonPartsTokenizer):
    """:class:`Tokenizer` over a backend with the Python BPE attached (``init_kwargs["merges_file"]``
    names the merges it reads)."""

    def __init__(self, backend: tokenizers.Tokenizer, **kwargs: Any):
        super().__init__(backend, **kwargs)
        self.bpe = WordBPE(read_merges(Path(self.init_kwargs["merges_file"])))
        attach(backend, self.bpe)

    def _reattach(self) -> None:
        attach(self.backend, self.bpe)

    def save_pretrained(self, save_directory: Union[str, Path], **kwargs: Any) -> tuple[str, ...]:
        """As the reference saves a CTRL tokenizer: its merges.txt starts with a version line."""
        return self._save_word_bpe(save_directory, self.bpe.merges, MERGES_HEADER)
