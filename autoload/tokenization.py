"""AutoTokenizer over the `tokenizers` library (Rust), API-compatible with the reference fast tokenizers.

Three file layouts are read:

* ``tokenizer.json`` (the full pipeline, as the reference library saves it);
* ``vocab.txt`` alone: a BERT-style WordPiece pipeline is built around it;
* ``vocab.json`` + ``merges.txt``: a RoBERTa-style byte-level BPE pipeline is built around them.

``tokenizer_config.json`` and ``special_tokens_map.json`` supply special tokens and options.
The backend ``tokenizers.Tokenizer`` never keeps padding or truncation between calls: each call
sets what it needs and resets it, so ``Tokenizer.backend`` can be used directly for speed.
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
from tokenizers import AddedToken, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE, WordPiece

from .sources import FetchOptions, ModelSource, open_source

logger = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
ADDED_TOKENS_FILE = "added_tokens.json"
WORDPIECE_VOCAB = "vocab.txt"
BPE_VOCAB, BPE_MERGES = "vocab.json", "merges.txt"
SENTENCEPIECE_FILES = ("spiece.model", "sentencepiece.bpe.model", "sentencepiece.model", "tokenizer.model")

# The reference's "no limit" model_max_length, and the bound above which it means "unset".
VERY_LARGE_INTEGER = int(1e30)
LARGE_INTEGER = int(1e20)

SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
EXTRA_SPECIAL_KEYS = ("additional_special_tokens", "extra_special_tokens")

# Download and hub options that have no meaning for local or fsspec sources.
_IGNORED_OPTIONS = ("use_fast", "token", "use_auth_token", "trust_remote_code", "_from_auto", "_from_pipeline",
                    "_commit_hash")
# Keys of a saved tokenizer_config.json that describe files or the save itself, not the tokenizer.
_CONFIG_KEYS_NOT_KEPT = ("name_or_path", "tokenizer_file", "vocab_file", "merges_file", "special_tokens_map_file",
                         "added_tokens_decoder", "init_inputs", "tokenizer_class", "auto_map") + EXTRA_SPECIAL_KEYS

# Reference tokenizer classes (names without "Fast") that rebuild a BERT WordPiece pipeline from
# tokenizer_config.json (BertTokenizer, its subclasses and aliases).
BERT_CLASSES = frozenset({
    "BertTokenizer", "DistilBertTokenizer", "ElectraTokenizer", "ConvBertTokenizer", "LayoutLMTokenizer",
    "SqueezeBertTokenizer", "MobileBertTokenizer", "LxmertTokenizer",
})
ROBERTA_CLASSES = frozenset({"RobertaTokenizer", "BartTokenizer", "LongformerTokenizer"})
# Reference classes whose model_input_names include token_type_ids.
TOKEN_TYPE_CLASSES = frozenset(BERT_CLASSES - {"DistilBertTokenizer"}) | {
    "DebertaTokenizer", "DebertaV2Tokenizer", "MarkupLMTokenizer", "LayoutLMv2Tokenizer", "TapasTokenizer",
    "CanineTokenizer",
}
# config.json model_type → reference tokenizer class, used when tokenizer_config.json names none.
MODEL_TYPE_CLASSES = {
    "bert": "BertTokenizer", "distilbert": "BertTokenizer", "electra": "BertTokenizer",
    "roberta": "RobertaTokenizer", "xlm-roberta": "XLMRobertaTokenizer", "camembert": "CamembertTokenizer",
    "albert": "AlbertTokenizer",
}
BERT_SPECIAL_DEFAULTS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                         "mask_token": "[MASK]"}
ROBERTA_SPECIAL_DEFAULTS = {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
                            "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>"}

PADDING_STRATEGIES = ("longest", "max_length", "do_not_pad")
TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second", "do_not_truncate")

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
        self._lock = threading.Lock()
        self._special_tokens: dict[str, Optional[str]] = dict.fromkeys(SPECIAL_TOKEN_NAMES)
        self._extra_special_tokens: list[str] = []
        self.model_input_names = list(model_input_names)
        self.model_max_length = int(model_max_length)
        self.padding_side = _checked_side("padding_side", padding_side)
        self.truncation_side = _checked_side("truncation_side", truncation_side)
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
                token = _added_token(special_tokens[name])
                self._special_tokens[name] = token.content
                to_add.append(token)
        for value in extras:
            token = _added_token(value)
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
        del state["_lock"]  # locks do not pickle (Ray ships tokenizers to workers)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

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
            return self.backend.add_special_tokens([_added_token(t) for t in new_tokens])
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
                tokens = [_added_token(v) for v in value]
                kept = [] if replace_additional_special_tokens else self._extra_special_tokens
                self._extra_special_tokens = list(dict.fromkeys(kept + [t.content for t in tokens]))
                to_add.extend(tokens)
            elif key in SPECIAL_TOKEN_NAMES:
                token = _added_token(value)
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
        pad, trunc, max_length = self._strategies(padding, truncation, max_length, pad_to_multiple_of)
        inputs, is_batched = _batch_inputs(text, text_pair, is_split_into_words)
        encodings = self._encode(
            inputs,
            add_special_tokens=add_special_tokens,
            is_pretokenized=is_split_into_words,
            truncation=self._truncation_params(trunc, max_length, stride),
            padding=self._padding_params(pad, max_length, pad_to_multiple_of, padding_side),
        )
        if trunc is None and max_length is None and verbose:
            self._warn_if_too_long(encodings)
        data = self._encodings_to_dict(
            encodings,
            token_type_ids=("token_type_ids" in self.model_input_names if return_token_type_ids is None
                            else return_token_type_ids),
            attention_mask=("attention_mask" in self.model_input_names if return_attention_mask is None
                            else return_attention_mask),
            special_tokens_mask=return_special_tokens_mask,
            offsets=return_offsets_mapping,
            length=return_length,
        )
        if not is_batched and return_tensors is None:
            # A single input drops the batch axis of per-token lists (``length`` stays a list).
            data = {k: v[0] if v and isinstance(v[0], list) else v for k, v in data.items()}
        return BatchEncoding(data, encodings, tensor_type=return_tensors)

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

    def _strategies(self, padding: Union[bool, str], truncation: Union[bool, str, None], max_length: Optional[int],
                    pad_to_multiple_of: Optional[int]) -> tuple[Optional[str], Optional[str], Optional[int]]:
        """(padding, truncation, max_length) as the reference resolves them; None means "off"."""
        if max_length is not None and padding is False and truncation is None:
            truncation = "longest_first"  # the reference's legacy rule: max_length alone truncates
        pad = _strategy("padding", padding, PADDING_STRATEGIES, "longest", "do_not_pad")
        trunc = _strategy("truncation", truncation, TRUNCATION_STRATEGIES, "longest_first", "do_not_truncate")
        if max_length is None:
            unlimited = self.model_max_length > LARGE_INTEGER
            if pad == "max_length":
                pad, max_length = (None, None) if unlimited else (pad, self.model_max_length)
            if trunc is not None:
                trunc, max_length = (None, max_length) if unlimited else (trunc, self.model_max_length)
        if pad is not None and self.pad_token_id is None:
            raise ValueError("Asking to pad but the tokenizer has no padding token: set one, e.g. "
                             "`tokenizer.pad_token = tokenizer.eos_token`, or pass pad_token=... to from_pretrained.")
        if trunc and pad and pad_to_multiple_of and max_length and max_length % pad_to_multiple_of:
            raise ValueError(f"Truncation and padding are both activated but truncation length ({max_length}) "
                             f"is not a multiple of pad_to_multiple_of ({pad_to_multiple_of}).")
        return pad, trunc, max_length

    def _truncation_params(self, strategy: Optional[str], max_length: Optional[int], stride: int) -> Optional[dict]:
        if strategy is None:
            return None
        return {"max_length": max_length, "stride": stride, "strategy": strategy, "direction": self.truncation_side}

    def _padding_params(self, strategy: Optional[str], max_length: Optional[int], pad_to_multiple_of: Optional[int],
                        padding_side: Optional[str]) -> Optional[dict]:
        if strategy is None:
            return None
        return {
            "length": max_length if strategy == "max_length" else None,
            "direction": _checked_side("padding_side", padding_side or self.padding_side),
            "pad_id": self.pad_token_id,
            "pad_token": self.pad_token,
            "pad_type_id": self.pad_token_type_id,
            "pad_to_multiple_of": pad_to_multiple_of,
        }

    def _encode(self, inputs: list, *, add_special_tokens: bool, is_pretokenized: bool, truncation: Optional[dict],
                padding: Optional[dict]) -> list:
        """One Rust ``encode_batch`` call (parallel) with this call's padding/truncation, reset after."""
        backend = self.backend
        with self._lock:
            # Set both explicitly: state someone put on .backend must not change this call.
            try:
                if truncation is None:
                    backend.no_truncation()
                else:
                    backend.enable_truncation(**truncation)
                if padding is None:
                    backend.no_padding()
                else:
                    backend.enable_padding(**padding)
                return backend.encode_batch(inputs, add_special_tokens=add_special_tokens,
                                            is_pretokenized=is_pretokenized)
            except TypeError as err:
                raise ValueError(_bad_input_message(inputs)) from err
            finally:
                backend.no_truncation()
                backend.no_padding()

    @staticmethod
    def _encodings_to_dict(encodings: list, *, token_type_ids: bool, attention_mask: bool,
                           special_tokens_mask: bool, offsets: bool, length: bool) -> dict[str, list]:
        data = {"input_ids": [e.ids for e in encodings]}
        if token_type_ids:
            data["token_type_ids"] = [e.type_ids for e in encodings]
        if attention_mask:
            data["attention_mask"] = [e.attention_mask for e in encodings]
        if special_tokens_mask:
            data["special_tokens_mask"] = [e.special_tokens_mask for e in encodings]
        if offsets:
            data["offset_mapping"] = [e.offsets for e in encodings]
        if length:
            data["length"] = [len(e.ids) for e in encodings]
        return data

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
            tokenizer_class=self.init_kwargs.get("tokenizer_class") or "PreTrainedTokenizerFast",
        )
        return config


# --------------------------------------------------------------------------------------------
# helpers of the call path
# --------------------------------------------------------------------------------------------


def _checked_side(name: str, side: str) -> str:
    if side not in ("right", "left"):
        raise ValueError(f"{name} must be 'right' or 'left', got {side!r}")
    return side


def _strategy(name: str, value: Union[bool, str, None], allowed: tuple[str, ...], on: str, off: str
              ) -> Optional[str]:
    """A padding/truncation argument as a strategy name, or None when it is off."""
    if value is None or value is False:
        return None
    if value is True:
        return on
    value = getattr(value, "value", value)  # the reference's enums carry their name in .value
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of True, False, {', '.join(map(repr, allowed))}")
    return None if value == off else value


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


def _bad_input_message(inputs: list) -> str:
    def ok(item: Any) -> bool:
        if isinstance(item, tuple):
            return all(ok(part) for part in item)
        return isinstance(item, str) or (isinstance(item, list) and all(isinstance(w, str) for w in item))

    index = next((i for i, item in enumerate(inputs) if not ok(item)), None)
    where = f"item {index} is {type(inputs[index]).__name__}" if index is not None else "unexpected input"
    return f"text input must be a str, a list of str, or pairs of them ({where})"


def _id_list(ids: Any) -> Any:
    """Token ids from a tensor, array, list or int, as plain Python ints / lists."""
    if hasattr(ids, "tolist"):
        return ids.tolist()
    if isinstance(ids, (list, tuple)):
        return [_id_list(i) for i in ids] if ids and hasattr(ids[0], "tolist") else list(ids)
    return ids


def _added_token(value: Any) -> AddedToken:
    """A special AddedToken from a str, an AddedToken, or its JSON form in a tokenizer config."""
    if isinstance(value, AddedToken):  # a copy: the caller's token is left as it was
        value = {"content": value.content, "single_word": value.single_word, "lstrip": value.lstrip,
                 "rstrip": value.rstrip, "normalized": value.normalized}
    if isinstance(value, dict):
        flags = {k: value[k] for k in ("single_word", "lstrip", "rstrip", "normalized") if k in value}
        return AddedToken(value["content"], special=True, **flags)
    return AddedToken(str(value), special=True, normalized=False)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


class AutoTokenizer:
    """Builds a :class:`Tokenizer` from a model directory, file, fsspec URL or cached name."""

    def __init__(self) -> None:
        raise EnvironmentError(
            "AutoTokenizer is designed to be instantiated using the "
            "`AutoTokenizer.from_pretrained(pretrained_model_name_or_path)` method."
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, os.PathLike], *inputs: Any,
                        **kwargs: Any) -> Tokenizer:
        """Load a tokenizer from tokenizer.json, vocab.txt, or vocab.json + merges.txt.

        Fetch options (cache_dir, force_download, revision, storage_options, ...) choose where
        files come from; special-token kwargs (pad_token=..., additional_special_tokens=[...])
        and tokenizer options (model_max_length, do_lower_case, add_prefix_space, ...) override
        tokenizer_config.json. ``use_fast`` is accepted; the tokenizer is always the fast one.
        """
        if inputs:
            raise TypeError("AutoTokenizer.from_pretrained takes no positional inputs besides the model "
                            "reference; pass tokenizer options as keyword arguments")
        if kwargs.get("subfolder"):
            raise ValueError("subfolder is not supported: pass the path of the subfolder itself")
        options = FetchOptions.pop_from(kwargs)
        for name in _IGNORED_OPTIONS + ("subfolder",):
            kwargs.pop(name, None)
        source = open_source(pretrained_model_name_or_path, options)
        return _load(source, str(pretrained_model_name_or_path), kwargs)


def _load(source: ModelSource, name_or_path: str, user_kwargs: dict[str, Any]) -> Tokenizer:
    if source.single_file is not None:
        # As in the reference, a single file is read alone: no config next to it is consulted.
        fmt, files = _single_file_format(source.single_file), {"main": source.single_file}
        settings, model_config = {}, {}
    else:
        fmt, files = _directory_format(source)
        settings, model_config = _read_settings(source), _read_json(source, "config.json")
    settings.update(user_kwargs)
    tokenizer_class = _tokenizer_class(settings, model_config, fmt)
    settings["tokenizer_class"] = tokenizer_class
    logger.info("loading tokenizer from %s (%s, as %s)", source.where(), fmt, tokenizer_class)
    if fmt == "tokenizer.json":
        backend = tokenizers.Tokenizer.from_file(str(files["main"]))
    elif fmt == "wordpiece":
        backend = tokenizers.Tokenizer(WordPiece.from_file(str(files["main"]), unk_token=str(
            _token_content(settings.get("unk_token")) or BERT_SPECIAL_DEFAULTS["unk_token"])))
    else:
        backend = tokenizers.Tokenizer(BPE.from_file(str(files["main"]), str(files["merges"]), dropout=None,
                                                     continuing_subword_prefix="", end_of_word_suffix="",
                                                     fuse_unk=False))
    recipe = _recipe(tokenizer_class, fmt, backend, name_or_path)
    if recipe is not None:
        recipe.prepare(backend, settings)
    if fmt != "tokenizer.json":
        _add_saved_tokens(backend, settings, source)
    tokenizer = _make_tokenizer(backend, settings, name_or_path, recipe)
    if recipe is not None:
        recipe.finish(tokenizer, settings)
    return tokenizer


def _single_file_format(path: Path) -> str:
    if path.name.endswith(TOKENIZER_FILE):
        return "tokenizer.json"
    if path.suffix == ".model":
        raise OSError(f"{path} is a SentencePiece model; autoload reads tokenizer.json, vocab.txt, "
                      "or vocab.json + merges.txt. " + _CONVERT_HINT)
    if path.suffix == ".json":
        raise OSError(f"{path}: a BPE vocab.json needs its merges.txt; pass the directory holding both")
    return "wordpiece"


_CONVERT_HINT = ("Convert it once with the reference library: "
                 "transformers.AutoTokenizer.from_pretrained(...).save_pretrained(dir) writes a tokenizer.json.")


def _directory_format(source: ModelSource) -> tuple[str, dict[str, Path]]:
    if source.has(TOKENIZER_FILE):
        return "tokenizer.json", {"main": source.fetch(TOKENIZER_FILE)}
    if source.has(WORDPIECE_VOCAB):
        return "wordpiece", {"main": source.fetch(WORDPIECE_VOCAB)}
    if source.has(BPE_VOCAB) and source.has(BPE_MERGES):
        return "bpe", {"main": source.fetch(BPE_VOCAB), "merges": source.fetch(BPE_MERGES)}
    sentencepiece = [name for name in SENTENCEPIECE_FILES if source.has(name)]
    if sentencepiece:
        raise OSError(f"{source.where()} has only a SentencePiece model ({', '.join(sentencepiece)}); autoload "
                      f"reads {TOKENIZER_FILE}, {WORDPIECE_VOCAB}, or {BPE_VOCAB} + {BPE_MERGES}. " + _CONVERT_HINT)
    raise OSError(f"Can't load a tokenizer from {source.where()}: looked for {TOKENIZER_FILE}, "
                  f"{WORDPIECE_VOCAB}, and {BPE_VOCAB} + {BPE_MERGES}, and found none of them.")


def _read_json(source: ModelSource, name: str) -> dict[str, Any]:
    path = source.fetch_optional(name)
    if path is None:
        return {}
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _read_settings(source: ModelSource) -> dict[str, Any]:
    """tokenizer_config.json, overridden by special_tokens_map.json as the reference does (that
    legacy file only counts when the config has no added_tokens_decoder)."""
    settings = _read_json(source, TOKENIZER_CONFIG_FILE)
    if "added_tokens_decoder" not in settings:
        settings.update(_read_json(source, SPECIAL_TOKENS_MAP_FILE))
    return settings


def _tokenizer_class(settings: dict[str, Any], model_config: dict[str, Any], fmt: str) -> str:
    """The reference class this tokenizer stands for (its name decides defaults and inputs):
    tokenizer_config.json's, else config.json's, else the one of config.json's model_type."""
    named = settings.get("tokenizer_class") or model_config.get("tokenizer_class")
    if named:
        return named if named == "PreTrainedTokenizerFast" else named.removesuffix("Fast")
    if model_config.get("model_type") in MODEL_TYPE_CLASSES:
        return MODEL_TYPE_CLASSES[model_config["model_type"]]
    return {"wordpiece": "BertTokenizer", "bpe": "RobertaTokenizer"}.get(fmt, "PreTrainedTokenizerFast")


class _BertRecipe:
    """The reference BertTokenizer pipeline: options from tokenizer_config, [CLS] A [SEP] B [SEP]."""

    special_defaults = BERT_SPECIAL_DEFAULTS

    @staticmethod
    def prepare(backend: tokenizers.Tokenizer, settings: dict[str, Any]) -> None:
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

    @staticmethod
    def finish(tokenizer: Tokenizer, settings: dict[str, Any]) -> None:
        cls, sep = tokenizer.cls_token, tokenizer.sep_token
        if cls is None or sep is None:
            raise ValueError("a BERT-style tokenizer needs cls_token and sep_token")
        tokenizer.backend.post_processor = processors.TemplateProcessing(
            single=f"{cls}:0 $A:0 {sep}:0",
            pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
            special_tokens=[(cls, tokenizer.cls_token_id), (sep, tokenizer.sep_token_id)],
        )


class _RobertaRecipe:
    """The reference RobertaTokenizer pipeline: byte-level BPE, <s> A </s></s> B </s>."""

    special_defaults = ROBERTA_SPECIAL_DEFAULTS

    @staticmethod
    def prepare(backend: tokenizers.Tokenizer, settings: dict[str, Any]) -> None:
        settings.setdefault("add_prefix_space", False)
        settings.setdefault("trim_offsets", True)
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=settings["add_prefix_space"])
        backend.decoder = decoders.ByteLevel()

    @staticmethod
    def finish(tokenizer: Tokenizer, settings: dict[str, Any]) -> None:
        cls, sep = tokenizer.cls_token, tokenizer.sep_token
        if cls is None or sep is None:
            raise ValueError("a RoBERTa-style tokenizer needs cls_token and sep_token")
        tokenizer.backend.post_processor = processors.RobertaProcessing(
            (sep, tokenizer.sep_token_id), (cls, tokenizer.cls_token_id),
            trim_offsets=settings["trim_offsets"], add_prefix_space=settings["add_prefix_space"],
        )


def _recipe(tokenizer_class: str, fmt: str, backend: tokenizers.Tokenizer, where: str):
    """The pipeline the reference class rebuilds from its options, or None to keep tokenizer.json's.

    For tokenizer.json only when the file's model matches (the reference class would rebuild it
    around the same vocabulary); vocab files always need one, and only BERT / RoBERTa are known.
    """
    model = type(backend.model).__name__
    if tokenizer_class in BERT_CLASSES and model == "WordPiece":
        return _BertRecipe
    if tokenizer_class in ROBERTA_CLASSES and model == "BPE":
        return _RobertaRecipe
    if fmt == "tokenizer.json":
        return None
    raise OSError(f"{where}: tokenizer class {tokenizer_class} with {fmt} vocabulary files is not supported "
                  "(autoload builds BERT WordPiece from vocab.txt and RoBERTa BPE from vocab.json + merges.txt). "
                  + _CONVERT_HINT)


def _token_content(value: Any) -> Optional[str]:
    if isinstance(value, dict):
        return value.get("content")
    if isinstance(value, AddedToken):
        return value.content
    return None if value is None else str(value)


def _add_saved_tokens(backend: tokenizers.Tokenizer, settings: dict[str, Any], source: ModelSource) -> None:
    """Tokens a saved vocab-file tokenizer added beyond its vocabulary (added_tokens_decoder in
    tokenizer_config.json, or the legacy added_tokens.json), in id order so they get their ids."""
    saved = {int(i): t for i, t in settings.get("added_tokens_decoder", {}).items()}
    if not saved and source.single_file is None:
        special = {_token_content(settings.get(name)) for name in SPECIAL_TOKEN_NAMES}
        saved = {int(i): {"content": t, "special": t in special, "normalized": t not in special}
                 for t, i in _read_json(source, ADDED_TOKENS_FILE).items()}
    for index in sorted(saved):
        entry = saved[index]
        token = _added_token(entry)
        if isinstance(entry, dict) and not entry.get("special", True):
            token.special = False
            backend.add_tokens([token])
        else:
            backend.add_special_tokens([token])
        if backend.token_to_id(token.content) != index:
            logger.warning("added token %r got id %s, its saved id is %d", token.content,
                           backend.token_to_id(token.content), index)


def _make_tokenizer(backend: tokenizers.Tokenizer, settings: dict[str, Any], name_or_path: str,
                    recipe: Any) -> Tokenizer:
    defaults = recipe.special_defaults if recipe is not None else {}
    special = {name: settings.get(name, defaults.get(name)) for name in SPECIAL_TOKEN_NAMES}
    extras = next((settings[key] for key in EXTRA_SPECIAL_KEYS if settings.get(key)), [])
    if isinstance(extras, dict):  # model-specific named tokens: kept as extra special tokens
        extras = list(extras.values())
    tokenizer_class = settings["tokenizer_class"]
    model_input_names = settings.get("model_input_names") or (
        ["input_ids", "token_type_ids", "attention_mask"] if tokenizer_class in TOKEN_TYPE_CLASSES
        else ["input_ids", "attention_mask"])
    init_kwargs = {k: v for k, v in settings.items() if k not in SPECIAL_TOKEN_NAMES}
    return Tokenizer(
        backend,
        special_tokens=special,
        extra_special_tokens=extras,
        model_input_names=model_input_names,
        model_max_length=settings.get("model_max_length") or settings.get("max_len") or VERY_LARGE_INTEGER,
        padding_side=settings.get("padding_side", "right"),
        truncation_side=settings.get("truncation_side", "right"),
        clean_up_tokenization_spaces=settings.get("clean_up_tokenization_spaces", False),
        name_or_path=name_or_path,
        init_kwargs=init_kwargs,
    )
