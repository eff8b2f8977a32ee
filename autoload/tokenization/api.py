"""The tokenizer API: :class:`Tokenizer` (the reference fast tokenizers' call, vocabulary,
special-token, decode and save API over a ``tokenizers.Tokenizer``) and :class:`BatchEncoding`.

Encoding goes through :func:`.encode.encode_batch`, the entry point the job's tokenize stage
uses too; building a tokenizer from files is :mod:`.auto`'s job.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import tokenizers
from tokenizers import AddedToken

from .encode import FIELDS, VERY_LARGE_INTEGER, call_options, checked_side, encode_batch, fields

logger = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"

SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
EXTRA_SPECIAL_KEYS = ("additional_special_tokens", "extra_special_tokens")

# Keys of a saved tokenizer_config.json that describe files or the save itself, not the tokenizer.
_CONFIG_KEYS_NOT_KEPT = ("name_or_path", "tokenizer_file", "vocab_file", "merges_file", "special_tokens_map_file",
                         "added_tokens_decoder", "init_inputs", "tokenizer_class", "auto_map") + EXTRA_SPECIAL_KEYS


TextInput = Union[str, Sequence[str]]


# --------------------------------------------------------------------------------------------
# BatchEncoding
# --------------------------------------------------------------------------------------------


class BatchEncoding(dict):
    """The output of a tokenizer call: a dict of model inputs with attribute access.

    ``encodings`` keeps the backend ``tokenizers.Encoding`` of every row, for ``tokens()`` and
    ``word_ids()``; ``batch[i]`` returns the i-th one as the reference does.
    """

    def __init__(self, data: Optional[Mapping[str, Any]] = None, encodings: Optional[list] = None,
                 tensor_type: Optional[str] = None):
        super().__init__(data or {})
        self._encodings = encodings
        if tensor_type is not None:
            self.convert_to_tensors(tensor_type)

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, key: Union[str, int]) -> Any:
        if isinstance(key, int):
            return self._encodings[key]
        return super().__getitem__(key)

    @property
    def encodings(self) -> Optional[list]:
        return self._encodings

    def tokens(self, batch_index: int = 0) -> list[str]:
        return self._encodings[batch_index].tokens

    def word_ids(self, batch_index: int = 0) -> list[Optional[int]]:
        return self._encodings[batch_index].word_ids

    def convert_to_tensors(self, tensor_type: Optional[str]) -> "BatchEncoding":
        """Turn every value into a ``"pt"`` (torch) or ``"np"`` (numpy) tensor, in place."""
        if tensor_type is None:
            return self
        tensor_type = str(getattr(tensor_type, "value", tensor_type))  # the reference's TensorType enum too
        for key, value in self.items():
            self[key] = _as_tensor(key, value, tensor_type)
        return self

    def to(self, device: Any, *, non_blocking: bool = False) -> "BatchEncoding":
        """Move every torch tensor to ``device`` (values without ``.to`` stay as they are)."""
        for key, value in self.items():
            if hasattr(value, "to") and callable(value.to):
                self[key] = value.to(device=device, non_blocking=non_blocking)
        return self


def _as_tensor(key: str, value: Any, tensor_type: str) -> Any:
    if tensor_type not in ("pt", "np"):
        raise ValueError(f"return_tensors={tensor_type!r} is not supported; use 'pt', 'np' or None")
    try:
        array = np.asarray(value, dtype=np.int64)
    except ValueError as err:  # numpy refuses ragged nested lists
        if tensor_type == "np":
            # The reference hands ragged rows back as an object array of per-row arrays.
            ragged = np.empty(len(value), dtype=object)
            ragged[:] = [np.asarray(row, dtype=np.int64) for row in value]
            return ragged
        raise ValueError(
            f"Unable to create a tensor from `{key}`: the rows have different lengths. Activate padding "
            "(padding=True) and/or truncation (truncation=True) to get batched tensors of one length."
        ) from err
    if tensor_type == "np":
        return array
    import torch

    return torch.from_numpy(array)


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


class _SpecialToken:
    """``tokenizer.pad_token`` (the string) or ``tokenizer.pad_token_id`` (its id), read and written
    through the tokenizer's special-token map, as the reference's attributes are."""

    def __set_name__(self, owner: type, attribute: str) -> None:
        self.as_id = attribute.endswith("_id")
        self.name = attribute[: -len("_id")] if self.as_id else attribute

    def __get__(self, tokenizer: Optional["Tokenizer"], owner: type) -> Any:
        if tokenizer is None:
            return self
        token = tokenizer._special_tokens.get(self.name)
        if token is None or not self.as_id:
            return token
        return tokenizer.convert_tokens_to_ids(token)

    def __set__(self, tokenizer: "Tokenizer", value: Any) -> None:
        if self.as_id and value is not None:
            value = tokenizer.convert_ids_to_tokens(value)
        tokenizer._special_tokens[self.name] = None if value is None else str(value)


class Tokenizer:
    """A fast tokenizer over a ``tokenizers.Tokenizer`` (``.backend``), with the reference's call API.

    ``.backend`` is left with no padding and no truncation after every call; calls set their own
    and reset both, so settings put on ``.backend`` directly do not survive a call.
    """

    bos_token = _SpecialToken()
    eos_token = _SpecialToken()
    unk_token = _SpecialToken()
    sep_token = _SpecialToken()
    pad_token = _SpecialToken()
    cls_token = _SpecialToken()
    mask_token = _SpecialToken()
    bos_token_id = _SpecialToken()
    eos_token_id = _SpecialToken()
    unk_token_id = _SpecialToken()
    sep_token_id = _SpecialToken()
    pad_token_id = _SpecialToken()
    cls_token_id = _SpecialToken()
    mask_token_id = _SpecialToken()

    is_fast = True
    pad_token_type_id = 0

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        special_tokens: Optional[Mapping[str, Any]] = None,
        extra_special_tokens: Sequence[Any] = (),
        model_input_names: Sequence[str] = ("input_ids", "attention_mask"),
        model_max_length: int = VERY_LARGE_INTEGER,
        padding_side: str = "right",
        truncation_side: str = "right",
        clean_up_tokenization_spaces: bool = False,
        name_or_path: str = "",
        init_kwargs: Optional[dict[str, Any]] = None,
    ):
        self.backend = backend
        # State set by a tokenizer.json (e.g. padding fixed to 128) would leak into every call.
        backend.no_padding()
        backend.no_truncation()
        # Guards the backend's padding / truncation state during one encode_batch call.
        self.backend_lock = threading.Lock()
        self._special_tokens: dict[str, Optional[str]] = dict.fromkeys(SPECIAL_TOKEN_NAMES)
        self._extra_special_tokens: list[str] = []
        self.model_input_names = list(model_input_names)
        self.model_max_length = int(model_max_length)
        self.padding_side = checked_side("padding_side", padding_side)
        self.truncation_side = checked_side("truncation_side", truncation_side)
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        self.name_or_path = name_or_path
        self.init_kwargs = dict(init_kwargs or {})
        self._warned_too_long = False
        self._register_special_tokens(special_tokens or {}, extra_special_tokens)

    def _register_special_tokens(self, special_tokens: Mapping[str, Any], extras: Sequence[Any]) -> None:
        # Like the reference: every special token becomes a special added token of the backend
        # (new ones get fresh ids in this order), so it is never split and decode can skip it.
        to_add = []
        for name in SPECIAL_TOKEN_NAMES:
            if special_tokens.get(name) is not None:
                token = added_token(special_tokens[name])
                self._special_tokens[name] = token.content
                to_add.append(token)
        for value in extras:
            token = added_token(value)
            if token.content not in self._extra_special_tokens:
                self._extra_special_tokens.append(token.content)
                to_add.append(token)
        # Tokens already added (special or not) keep their flags, as in the reference.
        already = {t.content for t in self.backend.get_added_tokens_decoder().values()}
        self.backend.add_special_tokens([t for t in to_add if t.content not in already])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name_or_path={self.name_or_path!r}, vocab_size={self.vocab_size}, "
                f"model_max_length={self.model_max_length}, special_tokens={self.special_tokens_map})")

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        del state["backend_lock"]  # locks do not pickle (Ray ships tokenizers to workers)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.backend_lock = threading.Lock()

    @property
    def tokenizer_class(self) -> str:
        """The reference tokenizer class this one stands for (e.g. ``"DistilBertTokenizer"``)."""
        return self.init_kwargs.get("tokenizer_class") or "PreTrainedTokenizerFast"

    # -- vocabulary ------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary, without added tokens."""
        return self.backend.get_vocab_size(with_added_tokens=False)

    def get_vocab(self) -> dict[str, int]:
        return self.backend.get_vocab(with_added_tokens=True)

    @property
    def vocab(self) -> dict[str, int]:
        return self.get_vocab()

    def get_added_vocab(self) -> dict[str, int]:
        decoder = self.backend.get_added_tokens_decoder()
        return {decoder[i].content: i for i in sorted(decoder)}

    def convert_tokens_to_ids(self, tokens: Union[str, Iterable[str]]) -> Union[int, None, list]:
        if isinstance(tokens, str):
            return self._token_to_id(tokens)
        return [self._token_to_id(token) for token in tokens]

    def _token_to_id(self, token: str) -> Optional[int]:
        index = self.backend.token_to_id(token)
        return self.unk_token_id if index is None else index

    def convert_ids_to_tokens(self, ids: Union[int, Iterable[int]], skip_special_tokens: bool = False):
        ids = _id_list(ids)
        if isinstance(ids, int):
            return self.backend.id_to_token(ids)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self.backend.id_to_token(int(i)) for i in ids if int(i) not in skip]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        decoder = self.backend.decoder
        return decoder.decode(tokens) if decoder is not None else " ".join(tokens)

    # -- special tokens --------------------------------------------------------------------

    @property
    def special_tokens_map(self) -> dict[str, str]:
        return {name: token for name, token in self._special_tokens.items() if token is not None}

    @property
    def additional_special_tokens(self) -> list[str]:
        return list(self._extra_special_tokens)

    @additional_special_tokens.setter
    def additional_special_tokens(self, tokens: Optional[Sequence[str]]) -> None:
        self._extra_special_tokens = [str(t) for t in tokens or []]

    extra_special_tokens = additional_special_tokens

    @property
    def additional_special_tokens_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self._extra_special_tokens)

    @property
    def all_special_tokens(self) -> list[str]:
        """Named special tokens (bos, eos, unk, sep, pad, cls, mask order), then the extra ones."""
        tokens = [t for t in self._special_tokens.values() if t is not None] + self._extra_special_tokens
        return list(dict.fromkeys(tokens))

    @property
    def all_special_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.all_special_tokens)

    def add_tokens(self, new_tokens: Union[str, AddedToken, Sequence[Union[str, AddedToken]]],
                   special_tokens: bool = False) -> int:
        """Add tokens to the vocabulary (those not in it yet); returns how many were new."""
        if isinstance(new_tokens, (str, AddedToken)):
            new_tokens = [new_tokens]
        if special_tokens:
            return self.backend.add_special_tokens([added_token(t) for t in new_tokens])
        return self.backend.add_tokens(list(new_tokens))

    def add_special_tokens(self, special_tokens_dict: Mapping[str, Any],
                           replace_additional_special_tokens: bool = True) -> int:
        """Set named special tokens (``{"pad_token": "[PAD]"}``) and extra ones
        (``{"additional_special_tokens": [...]}``), adding new ones to the vocabulary."""
        to_add = []
        # The reference renames additional_special_tokens, which moves it last: new ids follow that order.
        items = sorted(special_tokens_dict.items(), key=lambda item: item[0] == "additional_special_tokens")
        for key, value in items:
            if key in EXTRA_SPECIAL_KEYS:
                tokens = [added_token(v) for v in value]
                kept = [] if replace_additional_special_tokens else self._extra_special_tokens
                self._extra_special_tokens = list(dict.fromkeys(kept + [t.content for t in tokens]))
                to_add.extend(tokens)
            elif key in SPECIAL_TOKEN_NAMES:
                token = added_token(value)
                self._special_tokens[key] = token.content
                to_add.append(token)
            else:
                raise ValueError(f"{key!r} is not a special token name; valid: "
                                 f"{', '.join(SPECIAL_TOKEN_NAMES + EXTRA_SPECIAL_KEYS)}")
        return self.backend.add_special_tokens(to_add)

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return self.backend.num_special_tokens_to_add(pair)

    # -- encoding --------------------------------------------------------------------------

    def __call__(
        self,
        text: Union[TextInput, Sequence[TextInput]],
        text_pair: Optional[Union[TextInput, Sequence[TextInput]]] = None,
        *,
        add_special_tokens: bool = True,
        padding: Union[bool, str] = False,
        truncation: Union[bool, str, None] = None,
        max_length: Optional[int] = None,
        stride: int = 0,
        is_split_into_words: bool = False,
        pad_to_multiple_of: Optional[int] = None,
        padding_side: Optional[str] = None,
        return_tensors: Optional[str] = None,
        return_token_type_ids: Optional[bool] = None,
        return_attention_mask: Optional[bool] = None,
        return_overflowing_tokens: bool = False,
        return_special_tokens_mask: bool = False,
        return_offsets_mapping: bool = False,
        return_length: bool = False,
        verbose: bool = True,
    ) -> BatchEncoding:
        """Tokenize one text, a pair, or a batch of texts / pairs (lists), like the reference."""
        if return_overflowing_tokens:
            raise NotImplementedError("return_overflowing_tokens is not supported by autoload tokenizers")
        options = call_options(self, padding=padding, truncation=truncation, max_length=max_length, stride=stride,
                               pad_to_multiple_of=pad_to_multiple_of, padding_side=padding_side,
                               add_special_tokens=add_special_tokens, is_split_into_words=is_split_into_words)
        inputs, is_batched = _batch_inputs(text, text_pair, is_split_into_words)
        encodings = encode_batch(self, inputs, options)
        if options.truncation is None and options.max_length is None and verbose:
            self._warn_if_too_long(encodings)
        data = fields(encodings, self._output_names(return_token_type_ids, return_attention_mask,
                                                    return_special_tokens_mask, return_offsets_mapping, return_length))
        if not is_batched and return_tensors is None:
            # A single input drops the batch axis of per-token lists (``length`` stays a list).
            data = {k: v[0] if v and isinstance(v[0], list) else v for k, v in data.items()}
        return BatchEncoding(data, encodings, tensor_type=return_tensors)

    def _output_names(self, token_type_ids: Optional[bool], attention_mask: Optional[bool], special_tokens_mask: bool,
                      offsets: bool, length: bool) -> list[str]:
        """The model's input names, changed by the call's ``return_*`` flags (None: as the model has it)."""
        wanted = {"input_ids": True, "special_tokens_mask": special_tokens_mask, "offset_mapping": offsets,
                  "length": length}
        for name, flag in (("token_type_ids", token_type_ids), ("attention_mask", attention_mask)):
            wanted[name] = name in self.model_input_names if flag is None else flag
        return [name for name in FIELDS if wanted.get(name)]

    def encode(self, text: TextInput, text_pair: Optional[TextInput] = None, add_special_tokens: bool = True,
               **kwargs: Any) -> Any:
        """The ``input_ids`` of one text or pair (a tensor with a batch axis if return_tensors is set)."""
        return self(text, text_pair, add_special_tokens=add_special_tokens, **kwargs)["input_ids"]

    def encode_plus(self, text: TextInput, text_pair: Optional[TextInput] = None, **kwargs: Any) -> BatchEncoding:
        """Tokenize one text or pair (the reference's older name for ``__call__`` on one input)."""
        return self(text, text_pair, **kwargs)

    def batch_encode_plus(self, batch_text_or_text_pairs: Sequence[Union[str, tuple]], **kwargs: Any
                          ) -> BatchEncoding:
        """Tokenize a batch of texts or of ``(text, text_pair)`` tuples."""
        items = list(batch_text_or_text_pairs)
        if items and isinstance(items[0], tuple):
            return self([a for a, _ in items], [b for _, b in items], **kwargs)
        return self(items, **kwargs)

    def tokenize(self, text: str, pair: Optional[str] = None, add_special_tokens: bool = False,
                 **kwargs: Any) -> list[str]:
        return self(text, pair, add_special_tokens=add_special_tokens, **kwargs).tokens()

    def _warn_if_too_long(self, encodings: list) -> None:
        longest = max((len(e.ids) for e in encodings), default=0)
        if longest > self.model_max_length and not self._warned_too_long:
            self._warned_too_long = True  # once per tokenizer, as the reference does
            logger.warning("Token indices sequence length is longer than the specified maximum sequence length "
                           "for this model (%d > %d). Running it through the model will fail; pass "
                           "truncation=True.", longest, self.model_max_length)

    # -- decoding --------------------------------------------------------------------------

    def decode(self, token_ids: Any, skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: Optional[bool] = None) -> Union[str, list[str]]:
        """Text of one id sequence (or a list of texts for a batch of sequences)."""
        ids = _id_list(token_ids)
        if isinstance(ids, int):
            ids = [ids]
        if ids and isinstance(ids[0], list):
            return self.batch_decode(ids, skip_special_tokens, clean_up_tokenization_spaces)
        text = self.backend.decode(ids, skip_special_tokens=skip_special_tokens)
        return self._clean_up(text, clean_up_tokenization_spaces)

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: Optional[bool] = None) -> list[str]:
        """Texts of a batch of id sequences, decoded in parallel by the backend."""
        texts = self.backend.decode_batch(_id_list(sequences), skip_special_tokens=skip_special_tokens)
        return [self._clean_up(text, clean_up_tokenization_spaces) for text in texts]

    def _clean_up(self, text: str, clean_up: Optional[bool]) -> str:
        if not (self.clean_up_tokenization_spaces if clean_up is None else clean_up):
            return text
        # The reference skips this for BPE models: it was made for WordPiece and would eat real spaces.
        if type(self.backend.model).__name__ == "BPE":
            return text
        for spaced, joined in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                               (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
            text = text.replace(spaced, joined)
        return text

    # -- saving ----------------------------------------------------------------------------

    def save_pretrained(self, save_directory: Union[str, os.PathLike], **kwargs: Any) -> tuple[str, ...]:
        """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json, loadable by
        autoload and by the reference ``AutoTokenizer``."""
        if kwargs:
            logger.info("save_pretrained ignores %s", ", ".join(sorted(kwargs)))
        directory = Path(save_directory)
        if directory.is_file():
            raise ValueError(f"save_pretrained needs a directory, {directory} is a file")
        directory.mkdir(parents=True, exist_ok=True)
        tokenizer_file = directory / TOKENIZER_FILE
        self.backend.save(str(tokenizer_file))
        config_file = directory / TOKENIZER_CONFIG_FILE
        _write_json(config_file, self._config_to_save())
        map_file = directory / SPECIAL_TOKENS_MAP_FILE
        special_map: dict[str, Any] = dict(self.special_tokens_map)
        if self._extra_special_tokens:
            special_map["additional_special_tokens"] = list(self._extra_special_tokens)
        _write_json(map_file, special_map)
        logger.info("tokenizer saved to %s", directory)
        return str(config_file), str(map_file), str(tokenizer_file)

    def _config_to_save(self) -> dict[str, Any]:
        config = {k: v for k, v in self.init_kwargs.items() if k not in _CONFIG_KEYS_NOT_KEPT}
        config.update(self.special_tokens_map)
        if self._extra_special_tokens:
            # The name both reference generations read (the newer one maps it to extra_special_tokens).
            config["additional_special_tokens"] = list(self._extra_special_tokens)
        config.update(
            model_max_length=self.model_max_length,
            model_input_names=self.model_input_names,
            padding_side=self.padding_side,
            truncation_side=self.truncation_side,
            clean_up_tokenization_spaces=self.clean_up_tokenization_spaces,
            tokenizer_class=self.tokenizer_class,
        )
        return config



# --------------------------------------------------------------------------------------------
# helpers of the call path
# --------------------------------------------------------------------------------------------

def _batch_inputs(text: Any, text_pair: Any, is_split_into_words: bool) -> tuple[list, bool]:
    """The inputs as a list for ``encode_batch``, and whether the caller passed a batch."""
    if is_split_into_words:
        is_batched = isinstance(text, (list, tuple)) and bool(text) and isinstance(text[0], (list, tuple))
    else:
        is_batched = isinstance(text, (list, tuple))
    if not is_batched:
        # An empty text_pair means "no pair", as in the reference.
        return ([(text, text_pair)] if text_pair else [text]), False
    if isinstance(text_pair, str):
        raise TypeError("when tokenizing a batch, text_pair must be a list of the same length as text")
    if text_pair is None:
        return list(text), True
    if len(text) != len(text_pair):
        raise ValueError(f"batch length of text ({len(text)}) does not match that of text_pair ({len(text_pair)})")
    return list(zip(text, text_pair)), True



def _id_list(ids: Any) -> Any:
    """Token ids from a tensor, array, list or int, as plain Python ints / lists."""
    if hasattr(ids, "tolist"):
        return ids.tolist()
    if isinstance(ids, (list, tuple)):
        return [_id_list(i) for i in ids] if ids and hasattr(ids[0], "tolist") else list(ids)
    return ids


def added_token(value: Any) -> AddedToken:
    """A special AddedToken from a str, an AddedToken, or its JSON form in a tokenizer config."""
    if isinstance(value, AddedToken):  # a copy: the caller's token is left as it was
        value = {"content": value.content, "single_word": value.single_word, "lstrip": value.lstrip,
                 "rstrip": value.rstrip, "normalized": value.normalized}
    if isinstance(value, dict):
        flags = {k: value[k] for k in ("single_word", "lstrip", "rstrip", "normalized") if k in value}
        return AddedToken(value["content"], special=True, **flags)
    return AddedToken(str(value), special=True, normalized=False)


def token_content(value: Any) -> Optional[str]:
    """The text of a token given as a str, an AddedToken, or its JSON form."""
    if isinstance(value, dict):
        return value.get("content")
    if isinstance(value, AddedToken):
        return value.content
    return None if value is None else str(value)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


class PythonPartsTokenizer(Tokenizer):
    """A :class:`Tokenizer` whose backend carries Python parts (a pre-tokenizer or decoder:
    CTRL's BPE, Moses for XLM, FlauBERT and Transformer-XL), which ``tokenizers`` can neither
    pickle nor write.  It pickles (and hashes, jobs/model.py) as the backend's JSON without
    them; :meth:`_reattach` puts them back."""

    def _reattach(self) -> None:
        raise NotImplementedError

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["backend"] = self._backend_json()
        return state

    def __setstate__(self, state: dict) -> None:
        state["backend"] = tokenizers.Tokenizer.from_str(state["backend"])
        super().__setstate__(state)
        self._reattach()

    def _backend_json(self) -> str:
        """The backend as JSON, without the Python parts."""
        with self.backend_lock:
            self.backend.pre_tokenizer = None
            self.backend.decoder = None
            try:
                return self.backend.to_str()
            finally:
                self._reattach()

    def _save_word_bpe(self, save_directory: Union[str, Path], merges: Iterable[Sequence[str]],
                       merges_header: Optional[str]) -> tuple[str, ...]:
        """vocab.json, merges.txt (after ``merges_header``, when the family writes one),
        tokenizer_config.json (added tokens included) and special_tokens_map.json, as the
        reference saves its Python BPE tokenizers; both load them back."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        vocab_file, merges_file = directory / "vocab.json", directory / "merges.txt"
        vocab = self.backend.get_vocab(with_added_tokens=False)
        vocab_file.write_text(json.dumps(dict(sorted(vocab.items(), key=lambda item: item[1])), ensure_ascii=False),
                              encoding="utf-8")
        lines = ([merges_header] if merges_header is not None else []) + [" ".join(m) for m in merges]
        merges_file.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return (*self._save_slow_configs(directory, self._config_to_save()), str(vocab_file), str(merges_file))

    def _save_slow_configs(self, directory: Path, config: dict[str, Any]) -> tuple[str, str]:
        """tokenizer_config.json (``config`` with the added tokens, which these families keep
        there, having no tokenizer.json) and special_tokens_map.json, as the reference writes them."""
        config["added_tokens_decoder"] = {
            str(i): {"content": t.content, "special": t.special, "normalized": t.normalized, "lstrip": t.lstrip,
                     "rstrip": t.rstrip, "single_word": t.single_word}
            for i, t in sorted(self.backend.get_added_tokens_decoder().items())}
        config_file, map_file = directory / TOKENIZER_CONFIG_FILE, directory / SPECIAL_TOKENS_MAP_FILE
        _write_json(config_file, config)
        _write_json(map_file, dict(self.special_tokens_map))
        return str(config_file), str(map_file)
