"""Tokenizer files: which layout a source holds, and the settings and saved tokens next to it.

Layouts read: ``tokenizer.json`` (the full pipeline, as the reference saves it), ``vocab.txt``
(WordPiece), ``vocab.json`` + ``merges.txt`` (BPE) and, when nothing else is there, a
SentencePiece ``.model`` (under any of its usual names; the family's recipe builds it, see
.sentencepiece).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tokenizers

from ..sources import ModelSource
from .api import SPECIAL_TOKEN_NAMES, SPECIAL_TOKENS_MAP_FILE, TOKENIZER_CONFIG_FILE, TOKENIZER_FILE, added_token, \
    token_content

logger = logging.getLogger(__name__)

ADDED_TOKENS_FILE = "added_tokens.json"
MODEL_CONFIG_FILE = "config.json"
SENTENCEPIECE_NAMES = ("spiece.model", "sentencepiece.bpe.model", "sentencepiece.model", "tokenizer.model")
CONVERT_HINT = ("Convert it once with the reference library: "
                "transformers.AutoTokenizer.from_pretrained(...).save_pretrained(dir) writes a tokenizer.json.")


@dataclass(frozen=True)
class Layout:
    name: str
    files: tuple[str, ...]
    any_of: bool = False  # one of the files is enough (a SentencePiece model under any of its names)

    def describe(self) -> str:
        return (" or " if self.any_of else " + ").join(self.files)


TOKENIZER_JSON = Layout("tokenizer.json", (TOKENIZER_FILE,))
WORDPIECE_FILES = Layout("wordpiece", ("vocab.txt",))
BPE_FILES = Layout("bpe", ("vocab.json", "merges.txt"))
SENTENCEPIECE = Layout("sentencepiece", SENTENCEPIECE_NAMES, any_of=True)
# Transformer-XL's pickled tokenizer state (vocab.pkl, or torch-saved vocab.bin), read without running code.
PICKLED_VOCAB = Layout("pickled vocabulary", ("vocab.pkl", "vocab.bin"), any_of=True)
# In the order a directory is searched.
READABLE = (TOKENIZER_JSON, WORDPIECE_FILES, BPE_FILES, PICKLED_VOCAB)


def detect(source: ModelSource) -> tuple[Layout, dict[str, Path]]:
    """The first readable layout the source holds, with its local files by name."""
    if source.single_file is not None:
        layout = _single_file_layout(source.single_file)
        return layout, {layout.files[0]: source.single_file}
    for layout in READABLE:
        names = [name for name in layout.files if source.has(name)] if layout.any_of else layout.files
        if names and all(source.has(name) for name in names):
            return layout, {name: source.fetch(name) for name in names}
    found = [name for name in SENTENCEPIECE_NAMES if source.has(name)]
    if found:
        return SENTENCEPIECE, {name: source.fetch(name) for name in found}
    raise OSError(f"Can't load a tokenizer from {source.where()}: looked for "
                  f"{', '.join(layout.describe() for layout in READABLE)}, and found none of them.")


def _single_file_layout(path: Path) -> Layout:
    if path.name.endswith(TOKENIZER_FILE):
        return TOKENIZER_JSON
    if path.suffix == ".model":
        return SENTENCEPIECE
    if path.suffix == ".json":
        raise OSError(f"{path}: a BPE vocab.json needs its merges.txt; pass the directory holding both")
    return WORDPIECE_FILES


def read_json(source: ModelSource, name: str) -> dict[str, Any]:
    if source.single_file is not None:
        return {}  # as in the reference, a single file is read alone: nothing next to it counts
    path = source.fetch_optional(name)
    if path is None:
        return {}
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def read_settings(source: ModelSource) -> dict[str, Any]:
    """tokenizer_config.json, overridden by special_tokens_map.json as the reference does (that
    legacy file only counts when the config has no added_tokens_decoder)."""
    settings = read_json(source, TOKENIZER_CONFIG_FILE)
    if "added_tokens_decoder" not in settings:
        settings.update(read_json(source, SPECIAL_TOKENS_MAP_FILE))
    return settings


def add_saved_tokens(backend: tokenizers.Tokenizer, settings: dict[str, Any], source: ModelSource) -> None:
    """Tokens a saved vocab-file tokenizer added beyond its vocabulary (added_tokens_decoder in
    tokenizer_config.json, or the legacy added_tokens.json), in id order so they get their ids."""
    saved = {int(i): t for i, t in settings.get("added_tokens_decoder", {}).items()}
    if not saved:
        special = {token_content(settings.get(name)) for name in SPECIAL_TOKEN_NAMES}
        saved = {int(i): {"content": t, "special": t in special, "normalized": t not in special}
                 for t, i in read_json(source, ADDED_TOKENS_FILE).items()}
    for index in sorted(saved):
        entry = saved[index]
        token = added_token(entry)
        if isinstance(entry, dict) and not entry.get("special", True):
            token.special = False
            backend.add_tokens([token])
        else:
            backend.add_special_tokens([token])
        if backend.token_to_id(token.content) != index:
            logger.warning("added token %r got id %s, its saved id is %d", token.content,
                           backend.token_to_id(token.content), index)
