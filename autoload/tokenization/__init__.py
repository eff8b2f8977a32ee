"""Tokenizers over the `tokenizers` library (Rust), API-compatible with the reference fast tokenizers.

- :mod:`.api`: :class:`Tokenizer` (call, vocabulary, special tokens, decode, save) and :class:`BatchEncoding`;
- :mod:`.encode`: :func:`encode_batch`, the one batch-encoding entry point (the tokenizer's call
  and the job's tokenize stage both use it);
- :mod:`.files`: file layouts and the settings saved next to them;
- :mod:`.recipes`: how each family builds its pipeline from native files;
- :mod:`.auto`: :class:`AutoTokenizer`, which picks the family and builds it.
"""
from .api import BatchEncoding, Tokenizer
from .auto import AutoTokenizer
from .encode import EncodeOptions, encode_batch, fields

__all__ = ["AutoTokenizer", "BatchEncoding", "EncodeOptions", "Tokenizer", "encode_batch", "fields"]
