"""SentencePiece ``.model`` files → ``tokenizers`` pipelines, as the reference's five SentencePiece
families (T5, ALBERT, XLNet, CamemBERT, XLM-R) build them in transformers 5.24.

A ``.model`` file is a protobuf ``ModelProto`` (sentencepiece's ``sentencepiece_model.proto``).
It is read here by a small reader of the protobuf wire format for the few fields a tokenizer
needs, not through ``protobuf`` + a generated schema or the ``sentencepiece`` package: neither is
a runtime dependency of autoload, the fields used are few and stable (the schema numbers them
for compatibility), and a reader of our own can name the file and what is wrong with it when
the bytes are not a model (tests check it against sentencepiece's own parser).

What is built follows the reference classes, not sentencepiece itself, where they differ:
every family's model is a ``Unigram`` over the pieces and their scores (also for a ``.model``
trained as BPE, as the reference classes do), each family's own normalizer sequence around the
precompiled charsmap, ``WhitespaceSplit`` + ``Metaspace`` pre-tokenization, the family's id
layout (CamemBERT's and XLM-R's fairseq offsets, T5's sentinels appended in reverse) and its
post-processor. The pieces sentencepiece marks as control or user-defined symbols become added
tokens (never split, never normalized), as the reference's extractor adds them.
"""
from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, NamedTuple, Optional

import tokenizers
from tokenizers import AddedToken, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import Unigram

if TYPE_CHECKING:
    from .api import Tokenizer

logger = logging.getLogger(__name__)

SPIECE_UNDERLINE = "▁"

# sentencepiece_model.proto: ModelProto.SentencePiece.Type and TrainerSpec.ModelType.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
PIECE_TYPES = frozenset({NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE})
UNIGRAM, BPE, WORD, CHAR = 1, 2, 3, 4
MODEL_TYPE_NAMES = {UNIGRAM: "unigram", BPE: "bpe", WORD: "word", CHAR: "char"}
# The model types the reference's SentencePiece tokenizers convert (as Unigram pipelines).
SUPPORTED_MODEL_TYPES = (UNIGRAM, BPE)


class SentencePieceError(OSError):
    """A ``.model`` file that is not a SentencePiece model autoload can build (names the file)."""


class Piece(NamedTuple):
    text: str
    score: float
    kind: int  # NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED or BYTE


@dataclass(frozen=True)
class SentencePieceModel:
    """The fields of a ``ModelProto`` a tokenizer is built from (proto defaults where absent)."""

    path: Path
    pieces: tuple[Piece, ...]
    model_type: int = UNIGRAM
    unk_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = -1
    byte_fallback: bool = False
    precompiled_charsmap: bytes = b""
    normalizer_name: str = ""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True

    @property
    def vocab(self) -> list[tuple[str, float]]:
        return [(p.text, p.score) for p in self.pieces]

    def added_tokens(self) -> list[AddedToken]:
        """Control and user-defined pieces as the reference's extractor adds them: never normalized,
        control ones special."""
        return [AddedToken(p.text, normalized=False, special=p.kind == CONTROL)
                for p in self.pieces if p.kind in (CONTROL, USER_DEFINED)]


# -- the wire format ---------------------------------------------------------------------------

class _Malformed(ValueError):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise _Malformed("a number runs past the end of the data (truncated file?)")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _Malformed("a number longer than 10 bytes")


def _fields(data: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of one message: an int (varint), bytes (length-delimited)
    or the raw 4 / 8 bytes of a fixed-width field."""
    pos, end = 0, len(data)
    while pos < end:
        key = data[pos]
        if key < 0x80:  # one-byte numbers, the common case, without a call
            pos += 1
        else:
            key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Malformed(f"field number 0 at byte {pos}")
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            if pos < end and data[pos] < 0x80:
                size, pos = data[pos], pos + 1
            else:
                size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise _Malformed(f"field {number} claims {size} bytes, past the end of the data (truncated file?)")
            value, pos = data[pos:pos + size], pos + size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > len(data):
                raise _Malformed(f"field {number} runs past the end of the data (truncated file?)")
            value, pos = data[pos:pos + width], pos + width
        else:
            raise _Malformed(f"wire type {wire} (field {number}) is not used by SentencePiece models")
        yield number, wire, value


def _int32(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _text(value: bytes, what: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _Malformed(f"{what} is not UTF-8 text") from err


def _expect(wire: int, wanted: int, what: str) -> None:
    if wire != wanted:
        raise _Malformed(f"{what} has wire type {wire}, the schema says {wanted}")


_PIECE_WIRES = {1: 2, 2: 5, 3: 0}  # text: length-delimited, score: fixed32 float, type: varint
_FLOAT = struct.Struct("<f")


def _piece(data: bytes, index: int) -> Piece:
    # The layout sentencepiece writes (short text, score, type unless NORMAL), read directly:
    # the general reader below costs ~2 s on a 250k-piece model, this path a fraction of it.
    size = len(data)
    if size >= 7 and data[0] == 0x0A and data[1] < 0x80:
        end = 2 + data[1]
        rest = size - end - 5
        if rest >= 0 and data[end] == 0x15 and (rest == 0 or (rest == 2 and data[end + 5] == 0x18
                                                               and data[end + 6] < 0x80)):
            kind = data[end + 6] if rest else NORMAL
            try:
                text = data[2:end].decode("utf-8")
            except UnicodeDecodeError:
                raise _Malformed(f"piece {index} is not UTF-8 text") from None
            if text and kind in PIECE_TYPES:
                return Piece(text, _FLOAT.unpack_from(data, end + 1)[0], kind)
    return _general_piece(data, index)


def _general_piece(data: bytes, index: int) -> Piece:
    text, score, kind = None, 0.0, NORMAL
    # (The hot loop of a 250k-piece model: messages are built only on the error path.)
    for number, wire, value in _fields(data):
        if number in _PIECE_WIRES and wire != _PIECE_WIRES[number]:
            _expect(wire, _PIECE_WIRES[number], f"piece {index}'s field {number}")
        if number == 1:
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError:
                raise _Malformed(f"piece {index} is not UTF-8 text") from None
        elif number == 2:
            score = _FLOAT.unpack(value)[0]
        elif number == 3:
            kind = value
    if not text:
        raise _Malformed(f"piece {index} has no text")
    if kind not in PIECE_TYPES:
        raise _Malformed(f"piece {index} ({text!r}) has an unknown type {kind}")
    return Piece(text, score, kind)


# TrainerSpec and NormalizerSpec fields read: number → (attribute, wire type, converter).
_TRAINER_FIELDS = {3: ("model_type", 0, int), 35: ("byte_fallback", 0, bool), 40: ("unk_id", 0, _int32),
                   41: ("bos_id", 0, _int32), 42: ("eos_id", 0, _int32), 43: ("pad_id", 0, _int32)}
_NORMALIZER_FIELDS = {1: ("normalizer_name", 2, lambda v: _text(v, "the normalizer name")),
                      2: ("precompiled_charsmap", 2, bytes), 3: ("add_dummy_prefix", 0, bool),
                      4: ("remove_extra_whitespaces", 0, bool)}


def _spec(data: bytes, table: dict, what: str) -> dict[str, Any]:
    found = {}
    for number, wire, value in _fields(data):
        if number in table:
            name, wanted, convert = table[number]
            _expect(wire, wanted, f"{what}.{name}")
            found[name] = convert(value)
    return found


def parse_model(data: bytes, path: Path) -> SentencePieceModel:
    """A ``SentencePieceModel`` from a ``.model`` file's bytes (``path`` only names it in errors)."""
    try:
        pieces: list[Piece] = []
        settings: dict[str, Any] = {}
        for number, wire, value in _fields(data):
            if number == 1:
                _expect(wire, 2, "a piece")
                pieces.append(_piece(value, len(pieces)))
            elif number == 2:
                _expect(wire, 2, "trainer_spec")
                settings.update(_spec(value, _TRAINER_FIELDS, "trainer_spec"))
            elif number == 3:
                _expect(wire, 2, "normalizer_spec")
                settings.update(_spec(value, _NORMALIZER_FIELDS, "normalizer_spec"))
        if not pieces:
            raise _Malformed("it holds no pieces")
    except _Malformed as err:
        raise SentencePieceError(f"{path} is not a readable SentencePiece model: {err}. Replace it with the "
                                 f"model's original file (or save its tokenizer.json with the reference library "
                                 f"and use that).") from None
    model = SentencePieceModel(path=path, pieces=tuple(pieces), **settings)
    if model.model_type not in SUPPORTED_MODEL_TYPES:
        kind = MODEL_TYPE_NAMES.get(model.model_type, f"unknown ({model.model_type})")
        raise SentencePieceError(f"{path}: SentencePiece model type {kind} is not supported; the reference's "
                                 f"tokenizers convert unigram and bpe models only. Use a tokenizer.json instead.")
    if not 0 <= model.unk_id < len(model.pieces):
        raise SentencePieceError(f"{path}: its unk_id {model.unk_id} is outside its {len(model.pieces)} pieces; "
                                 f"the file is damaged or not a SentencePiece model")
    if model.byte_fallback:
        logger.warning("%s uses byte fallback, which the reference's fast tokenizers do not implement either: "
                       "characters outside the vocabulary become the unknown token", path)
    return model


def read_model(path: Path) -> SentencePieceModel:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise SentencePieceError(f"can't read the SentencePiece model {path}: {err}") from err
    return parse_model(data, path)


def model_file(files: dict[str, Path], preferred: str) -> Path:
    """The ``.model`` among a directory's SentencePiece files: the family's own name first."""
    if preferred in files:
        return files[preferred]
    if len(files) > 1:
        logger.warning("several SentencePiece models (%s); using %s", ", ".join(sorted(files)), sorted(files)[0])
    return files[sorted(files)[0]]


# -- the families ------------------------------------------------------------------------------

def _damaged(model: SentencePieceModel, what: str, err: Exception) -> SentencePieceError:
    return SentencePieceError(f"{model.path}: its {what} can't be used ({err}); the file is damaged or not a "
                              f"SentencePiece model. Replace it with the model's original file.")


def _unigram(vocab: list[tuple[str, float]], unk_id: int, model: SentencePieceModel) -> tokenizers.Tokenizer:
    try:
        backend = tokenizers.Tokenizer(Unigram(vocab, unk_id=unk_id, byte_fallback=False))
    except Exception as err:  # tokenizers raises plain Exceptions
        raise _damaged(model, "vocabulary", err) from None
    # Control and user-defined pieces first, so they keep the extractor's flags when the
    # family's special tokens are registered after them.
    backend.add_special_tokens([t for t in model.added_tokens() if t.special])
    backend.add_tokens([t for t in model.added_tokens() if not t.special])
    return backend


def _layout_unk_id(model: SentencePieceModel, family: str, unk_id: int) -> int:
    """The unknown token's id the family's reference class fixes, whatever the model says (a
    model in another layout tokenizes as the reference does, which may not be what it meant)."""
    if model.unk_id != unk_id:
        logger.warning("%s: its unk_id is %d, but %s tokenizers take id %d (%r) as unknown, as the reference does",
                       model.path, model.unk_id, family, unk_id, model.pieces[unk_id].text
                       if unk_id < len(model.pieces) else None)
    return unk_id


def _normalizer(model: SentencePieceModel, quotes: bool = False, strip_accents: bool = False,
                lowercase: bool = False) -> Optional[normalizers.Normalizer]:
    steps: list[normalizers.Normalizer] = []
    if quotes:  # ALBERT's and XLNet's: `` and '' are quotes, as their original preprocessing did
        steps += [normalizers.Replace("``", '"'), normalizers.Replace("''", '"')]
    if strip_accents:
        steps += [normalizers.NFKD(), normalizers.StripAccents()]
    if lowercase:
        steps.append(normalizers.Lowercase())
    if model.precompiled_charsmap:
        try:
            steps.append(normalizers.Precompiled(model.precompiled_charsmap))
        except Exception as err:  # tokenizers raises plain Exceptions
            raise _damaged(model, "normalization table (precompiled_charsmap)", err) from None
    if quotes:  # ALBERT and XLNet: a sequence, as the reference builds it
        return normalizers.Sequence(steps)
    return steps[0] if steps else None  # the others: the charsmap alone, when the model has one


def _metaspace(backend: tokenizers.Tokenizer, prepend_scheme: str) -> None:
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Metaspace(replacement=SPIECE_UNDERLINE, prepend_scheme=prepend_scheme, split=True),
    ])
    backend.decoder = decoders.Metaspace(replacement=SPIECE_UNDERLINE, prepend_scheme=prepend_scheme, split=True)


def _prepend_scheme(settings: dict[str, Any]) -> str:
    settings.setdefault("add_prefix_space", True)
    return "always" if settings["add_prefix_space"] else "never"


def _name(settings: dict[str, Any], key: str, default: str) -> str:
    value = settings.get(key, default)
    return str(value.content if isinstance(value, AddedToken) else value.get("content") if isinstance(value, dict)
               else value)


def _mask_strips_left(settings: dict[str, Any]) -> None:
    """XLNet's and CamemBERT's classes make a mask token given as text eat the space before it."""
    value = settings.get("mask_token", "<mask>")
    if isinstance(value, str):
        settings["mask_token"] = AddedToken(value, lstrip=True, rstrip=False, special=True)


def _extras(settings: dict[str, Any], model: SentencePieceModel) -> None:
    # As the reference's extractor: the model's own control / user-defined pieces are the extra
    # special tokens, whatever a tokenizer_config.json lists.
    settings["additional_special_tokens"] = model.added_tokens()
    settings.pop("extra_special_tokens", None)


def _template(tokenizer: "Tokenizer", single: str, pair: str, tokens: dict[str, Optional[int]]) -> None:
    missing = [name for name, index in tokens.items() if index is None]
    if missing:
        raise ValueError(f"{tokenizer.name_or_path}: the post-processor's token(s) {', '.join(missing)} are not in "
                         f"the vocabulary")
    tokenizer.backend.post_processor = processors.TemplateProcessing(single=single, pair=pair,
                                                                     special_tokens=list(tokens.items()))


# ALBERT: [CLS] A [SEP] B [SEP]; lower-cased and accents stripped unless told otherwise.

ALBERT_FILE = "spiece.model"
ALBERT_SPECIAL_DEFAULTS = {"bos_token": "[CLS]", "eos_token": "[SEP]", "unk_token": "<unk>", "sep_token": "[SEP]",
                           "pad_token": "<pad>", "cls_token": "[CLS]", "mask_token": "[MASK]"}


def build_albert(files: dict[str, Path], settings: dict[str, Any]) -> tokenizers.Tokenizer:
    model = read_model(model_file(files, ALBERT_FILE))
    settings.setdefault("do_lower_case", True)
    settings.setdefault("keep_accents", False)
    # The reference's AlbertTokenizer takes id 1 as unknown (ALBERT's layout: <pad> 0, <unk> 1).
    backend = _unigram(model.vocab, _layout_unk_id(model, "ALBERT", 1), model)
    backend.normalizer = _normalizer(model, quotes=True, strip_accents=not settings["keep_accents"],
                                     lowercase=settings["do_lower_case"])
    _metaspace(backend, _prepend_scheme(settings))
    _extras(settings, model)
    return backend


def finish_albert(tokenizer: "Tokenizer", settings: dict[str, Any]) -> None:
    # The reference's template names its tokens [CLS] and [SEP] whatever the cls / sep tokens are.
    _template(tokenizer, "[CLS]:0 $A:0 [SEP]:0", "[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
              {"[CLS]": tokenizer.cls_token_id, "[SEP]": tokenizer.sep_token_id})


# T5: A </s> B </s>, no BOS; extra_ids sentinels <extra_id_N> appended to the vocabulary in reverse.

T5_FILE = "spiece.model"
T5_SPECIAL_DEFAULTS = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}


def build_t5(files: dict[str, Path], settings: dict[str, Any]) -> tokenizers.Tokenizer:
    model = read_model(model_file(files, T5_FILE))
    extra_ids = int(settings.setdefault("extra_ids", 100))
    sentinels = [f"<extra_id_{i}>" for i in range(extra_ids)]
    vocab = model.vocab + [(token, 0.0) for token in reversed(sentinels)]
    backend = _unigram(vocab, _layout_unk_id(model, "T5", 2), model)  # T5's layout: <pad> 0, </s> 1, <unk> 2
    backend.normalizer = _normalizer(model)
    _metaspace(backend, "always")
    _extras(settings, model)
    settings["additional_special_tokens"] += sentinels
    return backend


def finish_t5(tokenizer: "Tokenizer", settings: dict[str, Any]) -> None:
    _template(tokenizer, "$A </s>", "$A </s> $B </s>", {"</s>": tokenizer.eos_token_id})


# XLNet: A <sep> B <sep> <cls> (cls typed 2), padded on the left.

XLNET_FILE = "spiece.model"
XLNET_SPECIAL_DEFAULTS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "<sep>",
                          "pad_token": "<pad>", "cls_token": "<cls>", "mask_token": "<mask>"}


def build_xlnet(files: dict[str, Path], settings: dict[str, Any]) -> tokenizers.Tokenizer:
    model = read_model(model_file(files, XLNET_FILE))
    settings.setdefault("do_lower_case", False)
    settings.setdefault("remove_space", True)  # WhitespaceSplit already drops the spaces around a text
    settings.setdefault("keep_accents", False)
    if settings["keep_accents"]:
        # transformers 5.24's XLNetTokenizer strips accents whatever keep_accents says; so do we.
        logger.info("XLNet tokenizer: keep_accents=True is ignored, as by the reference (accents are stripped)")
    settings.setdefault("padding_side", "left")
    _mask_strips_left(settings)
    # The model's own unk_id (the reference's extractor sets it over any unk_id option).
    settings["unk_id"] = model.unk_id
    backend = _unigram(model.vocab, model.unk_id, model)
    backend.normalizer = _normalizer(model, quotes=True, strip_accents=True, lowercase=settings["do_lower_case"])
    _metaspace(backend, "always")
    _extras(settings, model)
    return backend


def finish_xlnet(tokenizer: "Tokenizer", settings: dict[str, Any]) -> None:
    sep, cls = tokenizer.sep_token, tokenizer.cls_token
    _template(tokenizer, f"$A:0 {sep}:0 {cls}:2", f"$A:0 {sep}:0 $B:1 {sep}:1 {cls}:2",
              {sep: tokenizer.sep_token_id, cls: tokenizer.cls_token_id})


# CamemBERT: fairseq's four tokens (<s>NOTUSED, <pad>, </s>NOTUSED, <unk>) and <unk>NOTUSED before
# the pieces after the model's own <unk>; <mask> last. <s> A </s></s> B </s>.

CAMEMBERT_FILE = "sentencepiece.bpe.model"
ROBERTA_SPECIAL_DEFAULTS = {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
                            "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>"}


def build_camembert(files: dict[str, Path], settings: dict[str, Any]) -> tokenizers.Tokenizer:
    model = read_model(model_file(files, CAMEMBERT_FILE))
    if model.model_type != UNIGRAM:
        # transformers 5.24's CamembertTokenizer fails on a bpe-type model; we build the same
        # Unigram-over-scores pipeline as for the other families.
        logger.info("%s is a bpe-type SentencePiece model; built as a Unigram over its scores", model.path)
    _mask_strips_left(settings)
    pad, unk, mask = (_name(settings, key, ROBERTA_SPECIAL_DEFAULTS[key]) for key in
                      ("pad_token", "unk_token", "mask_token"))
    vocab = [("<s>NOTUSED", 0.0), (pad, 0.0), ("</s>NOTUSED", 0.0), (unk, 0.0), ("<unk>NOTUSED", -100.0)]
    vocab += model.vocab[1:] + [(mask, 0.0)]
    unk_id = next((i for i, (token, _) in enumerate(vocab) if token == unk), 0)
    backend = _unigram(vocab, unk_id, model)
    backend.normalizer = _normalizer(model)
    _metaspace(backend, _prepend_scheme(settings))
    _extras(settings, model)
    return backend


def finish_roberta_like(tokenizer: "Tokenizer", settings: dict[str, Any]) -> None:
    """CamemBERT's and XLM-R's template: <s> A </s> and <s> A </s> </s> B </s>."""
    bos, eos = tokenizer.bos_token, tokenizer.eos_token
    _template(tokenizer, f"{bos} $A {eos}", f"{bos} $A {eos} {eos} $B {eos}",
              {bos: tokenizer.bos_token_id, eos: tokenizer.eos_token_id})


# XLM-R: fairseq's <s> <pad> </s> <unk>, then the pieces after the model's first three (its
# <unk> <s> </s>), <mask> last: every piece one id further than in the .model.

XLM_ROBERTA_FILE = "sentencepiece.bpe.model"


def build_xlm_roberta(files: dict[str, Path], settings: dict[str, Any]) -> tokenizers.Tokenizer:
    model = read_model(model_file(files, XLM_ROBERTA_FILE))
    bos, pad, eos, unk, mask = (_name(settings, key, ROBERTA_SPECIAL_DEFAULTS[key]) for key in
                                ("bos_token", "pad_token", "eos_token", "unk_token", "mask_token"))
    vocab = [(bos, 0.0), (pad, 0.0), (eos, 0.0), (unk, 0.0)] + model.vocab[3:] + [(mask, 0.0)]
    backend = _unigram(vocab, 3, model)
    backend.normalizer = _normalizer(model)
    _metaspace(backend, _prepend_scheme(settings))
    _extras(settings, model)
    return backend
