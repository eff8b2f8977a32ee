"""The one batch-encoding entry point: ``Tokenizer.__call__`` and the job's tokenize stage both
encode through :func:`encode_batch`, so padding side, truncation strategy, input names and
offsets are decided here and nowhere else.

The backend ``tokenizers.Tokenizer`` keeps padding and truncation as state; each call sets what
it needs under the tokenizer's lock and resets both, so no call sees another's settings.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Union

from tokenizers import Encoding

if TYPE_CHECKING:
    from .api import Tokenizer

# The reference's "no limit" model_max_length, and the bound above which it means "unset".
VERY_LARGE_INTEGER = int(1e30)
LARGE_INTEGER = int(1e20)

PADDING_STRATEGIES = ("longest", "max_length", "do_not_pad")
TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second", "do_not_truncate")
SIDES = ("right", "left")

# Output name → how to read it from one encoding, in the reference's key order.
FIELDS: dict[str, Callable[[Encoding], Any]] = {
    "input_ids": lambda e: e.ids,
    "token_type_ids": lambda e: e.type_ids,
    "attention_mask": lambda e: e.attention_mask,
    "special_tokens_mask": lambda e: e.special_tokens_mask,
    "offset_mapping": lambda e: e.offsets,
    "length": lambda e: len(e.ids),
}


@dataclass(frozen=True)
class EncodeOptions:
    """How one batch is encoded; ``None`` strategies mean "off"."""

    truncation: Optional[str] = None  # "longest_first", "only_first" or "only_second"
    max_length: Optional[int] = None
    stride: int = 0
    padding: Optional[str] = None  # "longest" or "max_length"
    pad_to_multiple_of: Optional[int] = None
    padding_side: Optional[str] = None  # None: the tokenizer's own
    add_special_tokens: bool = True
    is_pretokenized: bool = False


def encode_batch(tokenizer: "Tokenizer", inputs: list, options: EncodeOptions) -> list[Encoding]:
    """One Rust ``encode_batch`` call (parallel over rows) with these options.

    ``inputs`` holds texts, ``(text, pair)`` tuples, or word lists when ``is_pretokenized``.
    What truncation cut off is in each encoding's ``overflowing``.
    """
    backend = tokenizer.backend
    truncation = _truncation(tokenizer, options)
    padding = _padding(tokenizer, options)
    with tokenizer.backend_lock:
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
            return backend.encode_batch(inputs, add_special_tokens=options.add_special_tokens,
                                        is_pretokenized=options.is_pretokenized)
        except TypeError as err:
            raise ValueError(_bad_input_message(inputs)) from err
        finally:
            backend.no_truncation()
            backend.no_padding()


def windows_of(encoding: Encoding) -> list[Encoding]:
    """An encoding truncated with a stride and the windows truncation cut off after it, in text
    order: the reference's ``return_overflowing_tokens=True`` sequences for one input."""
    return [encoding, *encoding.overflowing]


def fields(encodings: list[Encoding], names: Iterable[str]) -> dict[str, list]:
    """The named outputs (see :data:`FIELDS`) of every encoding, in the reference's key order."""
    wanted = set(names)
    unknown = wanted - FIELDS.keys()
    if unknown:
        raise ValueError(f"unknown tokenizer outputs {sorted(unknown)}; known: {', '.join(FIELDS)}")
    return {name: [read(e) for e in encodings] for name, read in FIELDS.items() if name in wanted}


def call_options(tokenizer: "Tokenizer", *, padding: Union[bool, str], truncation: Union[bool, str, None],
                 max_length: Optional[int], stride: int, pad_to_multiple_of: Optional[int],
                 padding_side: Optional[str], add_special_tokens: bool, is_split_into_words: bool) -> EncodeOptions:
    """The reference call's padding / truncation arguments, resolved as the reference resolves them."""
    if max_length is not None and padding is False and truncation is None:
        truncation = "longest_first"  # the reference's legacy rule: max_length alone truncates
    pad = _strategy("padding", padding, PADDING_STRATEGIES, "longest", "do_not_pad")
    trunc = _strategy("truncation", truncation, TRUNCATION_STRATEGIES, "longest_first", "do_not_truncate")
    if max_length is None:
        unlimited = tokenizer.model_max_length > LARGE_INTEGER
        if pad == "max_length":
            pad, max_length = (None, None) if unlimited else (pad, tokenizer.model_max_length)
        if trunc is not None:
            trunc, max_length = (None, max_length) if unlimited else (trunc, tokenizer.model_max_length)
    if trunc and pad and pad_to_multiple_of and max_length and max_length % pad_to_multiple_of:
        raise ValueError(f"Truncation and padding are both activated but truncation length ({max_length}) "
                         f"is not a multiple of pad_to_multiple_of ({pad_to_multiple_of}).")
    return EncodeOptions(truncation=trunc, max_length=max_length, stride=stride, padding=pad,
                         pad_to_multiple_of=pad_to_multiple_of, padding_side=padding_side,
                         add_special_tokens=add_special_tokens, is_pretokenized=is_split_into_words)


def checked_side(name: str, side: str) -> str:
    if side not in SIDES:
        raise ValueError(f"{name} must be 'right' or 'left', got {side!r}")
    return side


def _truncation(tokenizer: "Tokenizer", options: EncodeOptions) -> Optional[dict]:
    if options.truncation is None:
        return None
    return {"max_length": options.max_length, "stride": options.stride, "strategy": options.truncation,
            "direction": tokenizer.truncation_side}


def _padding(tokenizer: "Tokenizer", options: EncodeOptions) -> Optional[dict]:
    if options.padding is None:
        return None
    if tokenizer.pad_token_id is None:
        raise ValueError("Asking to pad but the tokenizer has no padding token: set one, e.g. "
                         "`tokenizer.pad_token = tokenizer.eos_token`, or pass pad_token=... to from_pretrained.")
    return {
        "length": options.max_length if options.padding == "max_length" else None,
        "direction": checked_side("padding_side", options.padding_side or tokenizer.padding_side),
        "pad_id": tokenizer.pad_token_id,
        "pad_token": tokenizer.pad_token,
        "pad_type_id": tokenizer.pad_token_type_id,
        "pad_to_multiple_of": options.pad_to_multiple_of,
    }


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


def _bad_input_message(inputs: list) -> str:
    def ok(item: Any) -> bool:
        if isinstance(item, tuple):
            return all(ok(part) for part in item)
        return isinstance(item, str) or (isinstance(item, list) and all(isinstance(w, str) for w in item))

    index = next((i for i, item in enumerate(inputs) if not ok(item)), None)
    where = f"item {index} is {type(inputs[index]).__name__}" if index is not None else "unexpected input"
    return f"text input must be a str, a list of str, or pairs of them ({where})"
