"""Tokenize stage: text column(s) → token ids as Arrow list<int32>, with the bad-row policy and
truncation to the model's maximum length (marked per row); or, when a task asks for
:class:`Windows`, each row cut into overlapping model sequences with what maps their tokens back
to characters (token-classification strides, question-answering context windows)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from autoload import AutoConfig, AutoTokenizer, registry
from autoload.tokenization import EncodeOptions, encode_batch
from autoload.tokenization.encode import TRUNCATION_STRATEGIES, windows_of

from .common import (
    BAD_ROW_POLICIES,
    ERROR,
    INPUT_IDS,
    LANGS,
    OFFSETS,
    PROMPT_TOKENS,
    ROW,
    SECONDS,
    SEQUENCE_IDS,
    SOURCE,
    TOKEN_TYPE_IDS,
    TOKENS,
    TEXT,
    TEXT_PAIR,
    TRUNCATED,
    WORD_IDS,
    BadRowError,
    seconds_column,
)

logger = logging.getLogger(__name__)

TOKEN_TYPE_INPUT = "token_type_ids"  # the model's input name; TOKEN_TYPE_IDS is this stage's column
LANGS_INPUT = "langs"  # the input of models with language embeddings (XLM, FlauBERT); LANGS is this stage's column

_TEXT_TYPES = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)
_BINARY_TYPES = (pa.types.is_binary, pa.types.is_large_binary, pa.types.is_binary_view)
# Characters kept per token of the maximum length before tokenizing.  Tokenizing a
# multi-megabyte text only to keep its first few hundred tokens costs seconds and gigabytes;
# tokens span a few characters, so this cut changes nothing but for texts padded with
# thousands of spaces or made of words longer than this (which become a single unknown token).
_CHARS_PER_TOKEN = 100


@dataclass(frozen=True)
class Windows:
    """A task's request to cut each row into several model sequences (``Task.tokenize_kwargs``
    returns ``{"windows": Windows(...)}``), as the reference pipelines do with
    ``return_overflowing_tokens=True``: windows of at most ``max_length`` tokens (special tokens
    included), consecutive ones sharing ``stride`` tokens.  With pairs, ``truncation`` says
    which text is cut into windows (``"only_second"``: each window holds the whole first text,
    e.g. the question, and a piece of the second, the context).  ``overflow=False`` keeps only
    the first window: the rest of the text is cut and the row marked ``truncated``.

    The stage then gives, per row, a list of windows in each of ``__input_ids`` (and
    ``__token_type_ids`` for pairs of a model that takes them), ``__offsets`` (each token's
    ``start, end`` character offsets into its own text, flattened), ``__sequence_ids`` (-1 for
    special tokens, else 0 or 1: which text of the pair), ``__word_ids`` (the word of its text
    a token belongs to, -1 for special tokens) and, per row, ``__text`` (and ``__text_pair``):
    the texts the offsets point into, so a later stage maps tokens back to characters.
    """

    max_length: int
    stride: int = 0
    truncation: str = "longest_first"
    overflow: bool = True
    # Longest text kept (in tokens, as characters at _CHARS_PER_TOKEN each) before tokenizing.
    max_text_tokens: int = 1 << 20

    def __post_init__(self) -> None:
        if self.truncation not in TRUNCATION_STRATEGIES[:3]:
            raise ValueError(f"Windows.truncation must be one of {TRUNCATION_STRATEGIES[:3]}, got {self.truncation!r}")
        if not 0 <= self.stride < self.max_length:
            raise ValueError(f"Windows.stride must be in [0, max_length={self.max_length}), got {self.stride}")


class Tokenize:
    """Callable on an Arrow table; adds ``__input_ids`` (list<int32>), ``__tokens`` (int32),
    ``truncated`` (bool: the text was longer than ``max_length`` tokens and was cut) and, for
    text pairs of a model that takes token types, ``__token_type_ids`` (list<int8>); then
    removes ``drop_columns`` (text that no later stage needs, so it doesn't travel on).

    A row whose text is null, empty (or only whitespace), not a string or not valid UTF-8
    raises :class:`BadRowError` naming the file and row (``on_bad_row="error"``), or gets an
    ``error`` message and no tokens (``"flag"``): it is never dropped.
    """

    def __init__(
        self,
        model: str,
        *,
        text_column: str,
        text_pair_column: Optional[str] = None,
        max_length: int,
        on_bad_row: str = "error",
        drop_columns: Sequence[str] = (),
        storage_options: Optional[dict] = None,
        cache_dir: Optional[str] = None,
        prompt_boundary: bool = False,
        windows: Optional[Windows] = None,
        prefix: str = "",
        lang: Optional[str] = None,
        lang_column: Optional[str] = None,
    ) -> None:
        if on_bad_row not in BAD_ROW_POLICIES:
            raise ValueError(f"on_bad_row must be one of {BAD_ROW_POLICIES}, got {on_bad_row!r}")
        fetch = {"storage_options": storage_options or {}, "cache_dir": cache_dir}
        self.tokenizer = AutoTokenizer.from_pretrained(model, **fetch)
        # What the model stage passes to forward: token types only where the model takes them.
        config = AutoConfig.from_pretrained(model, **fetch)
        self.input_names = registry.contract(config.model_type).input_names
        self.languages = Languages(config, self.input_names, lang, lang_column)
        if windows is not None and (lang is not None or lang_column is not None):
            raise ValueError("--lang / --lang-column are not supported with tasks that cut rows into windows yet")
        self.options = EncodeOptions(truncation="longest_first", max_length=max_length)
        self.windows = windows
        if windows is not None:
            self.options = EncodeOptions(truncation=windows.truncation, max_length=windows.max_length,
                                         stride=windows.stride)
        self.text_column = text_column
        self.text_pair_column = text_pair_column
        self.on_bad_row = on_bad_row
        self.drop_columns = list(drop_columns)
        self.max_chars = _CHARS_PER_TOKEN * (windows.max_text_tokens if windows is not None else max_length)
        # Pairs as prompt + continuation (the score task): mark where the second text starts.
        self.prompt_boundary = prompt_boundary and text_pair_column is not None
        # A prompt put before every text of the text column (embed --prompt), as sentence-transformers does.
        self.prefix = prefix

    def __call__(self, table: pa.Table) -> pa.Table:
        started = time.perf_counter()
        texts, problems = self._texts(table, self.text_column)
        if self.text_pair_column is not None:
            pairs, pair_problems = self._texts(table, self.text_pair_column)
            problems = [a or b for a, b in zip(problems, pair_problems)]
        codes = self.languages.codes(table)
        if codes is not None:
            problems = [problem or self.languages.problem(code) for problem, code in zip(problems, codes)]
        bad = [i for i, problem in enumerate(problems) if problem]
        if bad and self.on_bad_row == "error":
            raise BadRowError(
                f"{self._where(table, bad[0])}: {problems[bad[0]]}. Fix the input, or rerun with "
                f"--on-bad-row flag to write such rows with a null output and an '{ERROR}' column."
            )
        good = [i for i, problem in enumerate(problems) if not problem]
        cut = np.zeros(table.num_rows, dtype=bool)
        texts = self._cut(texts, good, cut)
        if self.text_pair_column is None:
            inputs = [texts[i] for i in good]
        else:
            pairs = self._cut(pairs, good, cut)
            inputs = [(texts[i], pairs[i]) for i in good]
        if self.windows is not None:
            table = self._windowed(table, good, inputs, problems, cut)
        else:
            encodings = self._encode(inputs, None if codes is None else [codes[i] for i in good])
            slots: list = [None] * table.num_rows
            for i, encoding in zip(good, encodings):
                slots[i] = encoding
                # The backend keeps what truncation cut off as overflowing encodings.
                cut[i] |= bool(encoding.overflowing)
            table = table.append_column(INPUT_IDS, _list_column(slots, "ids", pa.int32()))
            table = table.append_column(TOKENS, pa.array([len(e.ids) if e else 0 for e in slots], type=pa.int32()))
            table = table.append_column(TRUNCATED, pa.array(cut))
            if self.text_pair_column is not None and TOKEN_TYPE_INPUT in self.input_names:
                table = table.append_column(TOKEN_TYPE_IDS, _list_column(slots, "type_ids", pa.int8()))
            if codes is not None and self.languages.lang2id:
                table = table.append_column(LANGS, self.languages.column(slots, codes))
        if self.prompt_boundary and self.windows is None:
            table = table.append_column(PROMPT_TOKENS, pa.array([_second_start(e) for e in slots], type=pa.int32()))
        if self.on_bad_row == "flag":
            table = table.append_column(ERROR, pa.array([p or None for p in problems], type=pa.string()))
        if self.drop_columns:
            table = table.drop_columns(self.drop_columns)
        elapsed = time.perf_counter() - started
        return table.append_column(SECONDS + "tokenize", seconds_column(elapsed, table.num_rows))

    def _windowed(self, table: pa.Table, good: list[int], inputs: list, problems: list[str], cut: np.ndarray
                  ) -> pa.Table:
        """The windows' columns (see :class:`Windows`).  A row the windows can't hold (a first
        text that leaves no room for the second) becomes a bad row, like a null text."""
        try:
            encodings = encode_batch(self.tokenizer, inputs, self.options)
        # The backend refuses the whole batch (a Rust panic, not an Exception, when the first text
        # leaves less room than the stride): find the rows it refuses.
        except BaseException as err:  # noqa: B036
            if isinstance(err, (KeyboardInterrupt, SystemExit)):
                raise
            encodings = []
            for i, item in zip(good, inputs):
                try:
                    encodings.extend(encode_batch(self.tokenizer, [item], self.options))
                except BaseException as err:  # noqa: B036
                    if isinstance(err, (KeyboardInterrupt, SystemExit)):
                        raise
                    encodings.append(None)
                    problems[i] = (f"it can't be cut into windows of {self.windows.max_length} tokens with stride "
                                   f"{self.windows.stride} ({err}); shorten the first text or raise the window length")
            bad = [i for i, e in zip(good, encodings) if e is None]
            if bad and self.on_bad_row == "error":
                raise BadRowError(f"{self._where(table, bad[0])}: {problems[bad[0]]}. Or rerun with --on-bad-row flag "
                                  f"to write such rows with a null output and an '{ERROR}' column.")
        slots: list = [None] * table.num_rows
        for i, encoding in zip(good, encodings):
            if encoding is None:
                continue
            slots[i] = windows_of(encoding) if self.windows.overflow else [encoding]
            cut[i] |= not self.windows.overflow and bool(encoding.overflowing)
        table = table.append_column(INPUT_IDS, _nested_column(slots, lambda e: e.ids, pa.int32()))
        table = table.append_column(TOKENS, pa.array([sum(len(e.ids) for e in w) if w else 0 for w in slots],
                                                     type=pa.int32()))
        table = table.append_column(TRUNCATED, pa.array(cut))
        if self.text_pair_column is not None and TOKEN_TYPE_INPUT in self.input_names:
            table = table.append_column(TOKEN_TYPE_IDS, _nested_column(slots, lambda e: e.type_ids, pa.int8()))
        table = table.append_column(OFFSETS, _nested_column(slots, lambda e: [c for o in e.offsets for c in o],
                                                            pa.int32()))
        none_as = lambda values: [-1 if v is None else v for v in values]  # noqa: E731
        table = table.append_column(SEQUENCE_IDS, _nested_column(slots, lambda e: none_as(e.sequence_ids), pa.int8()))
        table = table.append_column(WORD_IDS, _nested_column(slots, lambda e: none_as(e.word_ids), pa.int32()))
        # The texts the offsets point into (the input's, or its first max_text_tokens' worth).
        for column, part in ((TEXT, 0), (TEXT_PAIR, 1)):
            if part == 1 and self.text_pair_column is None:
                break
            values: list = [None] * table.num_rows
            for i, item in zip(good, inputs):
                if slots[i] is not None:
                    values[i] = item[part] if isinstance(item, tuple) else item
            table = table.append_column(column, pa.array(values, type=pa.large_string()))
        return table

    def _encode(self, inputs: list, codes: Optional[list]) -> list:
        """Encodings of ``inputs``; with languages, each language's rows by its tokenizer (XLM's
        Moses settings differ per language), back in the rows' order."""
        if codes is None:
            return encode_batch(self.tokenizer, inputs, self.options)
        encodings: list = [None] * len(inputs)
        for code in dict.fromkeys(codes):
            rows = [k for k, c in enumerate(codes) if c == code]
            tokenizer = self.tokenizer.for_language(code) if hasattr(self.tokenizer, "for_language") else self.tokenizer
            for k, encoding in zip(rows, encode_batch(tokenizer, [inputs[k] for k in rows], self.options)):
                encodings[k] = encoding
        return encodings

    def _cut(self, texts: list, rows: list[int], cut: np.ndarray) -> list:
        """``texts`` with the given rows cut to ``max_chars`` characters, marked in ``cut``."""
        for i in rows:
            if len(texts[i]) > self.max_chars:
                texts[i] = texts[i][:self.max_chars]
                cut[i] = True
        return texts

    def _texts(self, table: pa.Table, column: str) -> tuple[list, list[str]]:
        """The column as Python strings, and per row a problem description ("" when fine)."""
        texts, problems = _column_texts(table[column], column)
        if self.prefix and column == self.text_column:
            texts = [t if problem else self.prefix + t for t, problem in zip(texts, problems)]
        return texts, problems

    @staticmethod
    def _where(table: pa.Table, index: int) -> str:
        if SOURCE in table.column_names and ROW in table.column_names:
            return f"{table[SOURCE][index].as_py()} row {table[ROW][index].as_py()}"
        return f"row {index} of the batch"


class Languages:
    """Each row's language, for a model that declares a ``langs`` input: one code for every row
    (``lang``) or a column of codes (``lang_column``), mapped to ids by the config's ``lang2id``
    (``id2lang`` in older configs). Without either the model gets no languages, as the
    reference's forward without ``langs``."""

    def __init__(self, config: Any, input_names: Sequence[str], lang: Optional[str], lang_column: Optional[str]):
        if lang is not None and lang_column is not None:
            raise ValueError("give a language for every row (--lang) or a column of languages (--lang-column), "
                             "not both")
        if (lang is not None or lang_column is not None) and LANGS_INPUT not in input_names:
            raise ValueError(f"--lang / --lang-column: {config.model_type} models take no languages (only models "
                             f"with a {LANGS_INPUT!r} input do, e.g. xlm and flaubert)")
        self.lang, self.column_name = lang, lang_column
        self.lang2id = language_ids(config)
        if lang is not None and self.problem(lang):
            raise ValueError(f"--lang: {self.problem(lang)}")

    def codes(self, table: pa.Table) -> Optional[list]:
        """The language code of every row (None: no languages)."""
        if self.column_name is not None:
            if self.column_name not in table.column_names:
                raise ValueError(f"the language column {self.column_name!r} is not in the input (columns: "
                                 f"{', '.join(c for c in table.column_names if not c.startswith('__'))})")
            return table[self.column_name].to_pylist()
        return None if self.lang is None else [self.lang] * table.num_rows

    def problem(self, code: Any) -> str:
        """Why a row's language can't be used ("" when it can)."""
        where = f" in column {self.column_name!r}" if self.column_name else ""
        if code is None:
            return f"column {self.column_name!r} is null: the row has no language"
        if not isinstance(code, str):
            return f"language {code!r}{where} is not a language code (a string such as 'en')"
        if self.lang2id and code not in self.lang2id:
            return (f"language {code!r}{where} is not one of the model's languages "
                    f"({', '.join(sorted(self.lang2id))}: its config's lang2id)")
        return ""

    def column(self, slots: list, codes: list) -> pa.ListArray:
        """list<int32>: each token's language id (its row's); an empty list for a row without tokens."""
        lengths = np.array([len(e.ids) if e else 0 for e in slots], dtype=np.int64)
        ids = np.array([self.lang2id[c] if e else 0 for e, c in zip(slots, codes)], dtype=np.int32)
        offsets = np.zeros(len(slots) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.repeat(ids, lengths), type=pa.int32()))


def language_ids(config: Any) -> dict[str, int]:
    """The config's language code → id table: ``lang2id``, else ``id2lang`` inverted; {} for none."""
    lang2id = getattr(config, "lang2id", None)
    if lang2id:
        return {str(code): int(i) for code, i in lang2id.items()}
    id2lang = getattr(config, "id2lang", None) or {}
    return {str(code): int(i) for i, code in id2lang.items()}


def _column_texts(data: Union[pa.Array, pa.ChunkedArray], column: str) -> tuple[list, list[str]]:
    kind = data.type
    if pa.types.is_dictionary(kind):
        return _dictionary_texts(data, column)
    if any(check(kind) for check in _TEXT_TYPES):
        texts = data.to_pylist()
        return texts, [_problem(t, column) for t in texts]
    if any(check(kind) for check in _BINARY_TYPES):
        return _decode_utf8(data.to_pylist(), column)
    if pa.types.is_null(kind):
        return [None] * len(data), [f"column {column!r} is null"] * len(data)
    problem = f"column {column!r} holds {kind}, not a string"
    nulls = pc.is_null(data).to_pylist()
    return [None] * len(data), [f"column {column!r} is null" if n else problem for n in nulls]


def _dictionary_texts(data: Union[pa.Array, pa.ChunkedArray], column: str) -> tuple[list, list[str]]:
    """A dictionary column without decoding it to one string per row first: each distinct value
    is converted and checked once, and its rows share that one Python string.  Each chunk (a
    Parquet row group) may have its own dictionary."""
    texts: list = []
    problems: list[str] = []
    for chunk in data.chunks if isinstance(data, pa.ChunkedArray) else [data]:
        values, value_problems = _column_texts(chunk.dictionary, column)
        for index in chunk.indices.to_pylist():
            texts.append(None if index is None else values[index])
            problems.append(f"column {column!r} is null" if index is None else value_problems[index])
    return texts, problems


def _second_start(encoding: Any) -> int:
    """Index of the first token of a pair's second text (its length when the second is empty
    or cut away; 0 for a row without an encoding)."""
    if encoding is None:
        return 0
    ids = encoding.sequence_ids
    return next((i for i, s in enumerate(ids) if s == 1), len(ids))


def _problem(text: Optional[str], column: str) -> str:
    """Why a text can't be embedded or classified ("" when it can)."""
    if text is None:
        return f"column {column!r} is null"
    if not text.strip():
        # A model would still give an output for it, but one no input text stands behind.
        return f"column {column!r} is empty" if not text else f"column {column!r} holds only whitespace"
    return ""


def _decode_utf8(values: list, column: str) -> tuple[list, list[str]]:
    texts: list = []
    problems: list[str] = []
    for value in values:
        if value is None:
            texts.append(None)
            problems.append(f"column {column!r} is null")
            continue
        try:
            texts.append(value.decode("utf-8"))
            problems.append(_problem(texts[-1], column))
        except UnicodeDecodeError as err:
            texts.append(None)
            problems.append(f"column {column!r} is not valid UTF-8 ({err.reason} at byte {err.start})")
    return texts, problems


def _list_column(encodings: list, field: str, value_type: pa.DataType) -> pa.ListArray:
    """One list per row from each encoding's ``field``; an empty list for rows without one."""
    lengths = np.array([len(getattr(e, field)) if e else 0 for e in encodings], dtype=np.int32)
    offsets = np.zeros(len(encodings) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    parts = [np.asarray(getattr(e, field), dtype=value_type.to_pandas_dtype()) for e in encodings if e]
    values = np.concatenate(parts) if parts else np.zeros(0, dtype=value_type.to_pandas_dtype())
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=value_type))


def _nested_column(rows: list, read: Callable[[Any], Sequence[int]], value_type: pa.DataType) -> pa.ListArray:
    """list<list<value_type>>: per row, per window (an encoding) ``read(window)``; an empty list
    for rows without windows."""
    dtype = value_type.to_pandas_dtype()
    windows = [w for row in rows if row for w in row]
    inner = np.zeros(len(windows) + 1, dtype=np.int32)
    parts = [np.asarray(read(w), dtype=dtype) for w in windows]
    np.cumsum([len(p) for p in parts], out=inner[1:])
    outer = np.zeros(len(rows) + 1, dtype=np.int32)
    np.cumsum([len(row) if row else 0 for row in rows], out=outer[1:])
    values = np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
    per_window = pa.ListArray.from_arrays(pa.array(inner), pa.array(values, type=value_type))
    return pa.ListArray.from_arrays(pa.array(outer), per_window)
