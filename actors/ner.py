"""Token-classification (NER) stage: per row an ``entities`` list of spans with character offsets.

It follows the reference's ``pipeline("token-classification")`` (transformers 5.24) step for
step, so its entities are the reference's: per window, each non-special token's softmax scores;
tokens grouped into words (``first``, ``average``, ``max``) and adjacent tokens or words of one
entity type into spans (``simple`` and the word strategies; B-/I- prefixes); the
``ignore_labels`` dropped; and, for a text cut into overlapping windows, the entities of all
windows merged: of overlapping spans the longest (then the highest-scoring) stays, so a span
seen by two windows comes back once and a span cut at a window's edge loses to the whole one.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import pyarrow as pa
import torch

from autoload import AutoModelForTokenClassification, AutoTokenizer
from autoload.modeling import Segments

from .model_stage import ModelStage, Results, unpad
from .windows import Window, row_windows

AGGREGATIONS = ("none", "simple", "first", "average", "max")
WORD_AGGREGATIONS = ("first", "average", "max")

# The Arrow type of one entity, per aggregation: "none" gives tokens (with their index in the
# window), the others spans named by their entity group, as the reference names them.
TOKEN_ENTITY = pa.struct([("entity", pa.string()), ("score", pa.float32()), ("index", pa.int32()),
                          ("word", pa.string()), ("start", pa.int32()), ("end", pa.int32())])
SPAN_ENTITY = pa.struct([("entity_group", pa.string()), ("score", pa.float32()), ("word", pa.string()),
                         ("start", pa.int32()), ("end", pa.int32())])


def entity_type(aggregation: str) -> pa.DataType:
    return pa.list_(TOKEN_ENTITY if aggregation == "none" else SPAN_ENTITY)


class TokenClassify(ModelStage):
    """Adds ``entities`` (list<struct>, see :data:`TOKEN_ENTITY` / :data:`SPAN_ENTITY`); null for
    bad rows, an empty list for a text without entities."""

    auto_class = AutoModelForTokenClassification
    checkpoint_kind = "token-classification"
    per_token = ("logits",)

    def __init__(self, model: str, *, aggregation: str = "simple", ignore_labels: Sequence[str] = ("O",),
                 **kwargs: Any) -> None:
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        self.aggregation = aggregation
        self.ignore_labels = set(ignore_labels)
        super().__init__(model, **kwargs)
        self.tokenizer = AutoTokenizer.from_pretrained(model, storage_options=kwargs.get("storage_options") or {},
                                                       cache_dir=kwargs.get("cache_dir"))
        self.id2label = {int(k): str(v) for k, v in self.model.config.id2label.items()}
        # A word-aware tokenizer (WordPiece's "##") marks sub-words itself; others fall back to
        # the reference's heuristic: a token not after a space continues a word.
        self.word_aware = bool(getattr(self.tokenizer.backend.model, "continuing_subword_prefix", None))
        self.unk_token_id = self.tokenizer.unk_token_id

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"logits": unpad(self.model(**inputs).logits.float(), inputs["attention_mask"])}

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.model.forward_flat(input_ids, segments, **inputs).float()}

    def columns(self, results: Results) -> dict[str, pa.Array]:
        entities: list[Optional[list[dict]]] = [None] * results.num_rows
        logits = results.per_token.get("logits")
        for row, text, _, windows in row_windows(results):
            found: list[dict] = []
            for window in windows:
                found.extend(self._window_entities(text, window, logits[window.sequence]))
            entities[row] = merge_overlapping(found) if len(windows) > 1 else found
        return {"entities": pa.array(entities, type=entity_type(self.aggregation))}

    # -- the reference's postprocessing, per window ------------------------------------------
    def _window_entities(self, text: str, window: Window, logits: np.ndarray) -> list[dict]:
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))  # (T, labels)
        scores = shifted / shifted.sum(axis=-1, keepdims=True)
        tokens = self._tokens(text, window, scores)
        if self.aggregation in ("none", "simple"):
            entities = [self._token_entity(token) for token in tokens]
        else:
            entities = [self._word_entity(word) for word in _words(tokens)]
        if self.aggregation != "none":
            entities = self._group(entities)
        return [e for e in entities if e.get("entity", e.get("entity_group")) not in self.ignore_labels]

    def _tokens(self, text: str, window: Window, scores: np.ndarray) -> list[dict]:
        """The window's non-special tokens with their scores, offsets and whether each continues
        the word before it."""
        tokens = []
        for index in np.flatnonzero(window.sequence_ids >= 0):
            token_id = int(window.ids[index])
            word = self.tokenizer.convert_ids_to_tokens(token_id)
            start, end = (int(v) for v in window.offsets[index])
            reference = text[start:end]
            if self.word_aware:
                subword = len(word) != len(reference)
            else:
                subword = start > 0 and " " not in text[start - 1:start + 1]
            if token_id == self.unk_token_id:
                word, subword = reference, False
            tokens.append({"word": word, "scores": scores[index], "start": start, "end": end, "index": int(index),
                           "is_subword": subword})
        return tokens

    def _token_entity(self, token: dict) -> dict:
        label = int(token["scores"].argmax())
        return {"entity": self.id2label[label], "score": token["scores"][label], "index": token["index"],
                "word": token["word"], "start": token["start"], "end": token["end"]}

    def _word_entity(self, tokens: list[dict]) -> dict:
        """One word's tokens → one entity by the aggregation (first token's label, the label of
        the most confident token, or the label of the averaged scores)."""
        if self.aggregation == "first":
            scores = tokens[0]["scores"]
        elif self.aggregation == "max":
            scores = max(tokens, key=lambda token: token["scores"].max())["scores"]
        else:
            scores = np.nanmean(np.stack([token["scores"] for token in tokens]), axis=0)
        label = int(scores.argmax())
        return {"entity": self.id2label[label], "score": scores[label],
                "word": self.tokenizer.convert_tokens_to_string([token["word"] for token in tokens]),
                "start": tokens[0]["start"], "end": tokens[-1]["end"]}

    def _group(self, entities: list[dict]) -> list[dict]:
        """Adjacent entities of one type into spans: a token or word joins the span before it
        unless its label starts with B- or names another type."""
        groups: list[dict] = []
        current: list[dict] = []
        for entity in entities:
            if current:
                bi, tag = _tag(entity["entity"])
                if tag != _tag(current[-1]["entity"])[1] or bi == "B":
                    groups.append(self._span(current))
                    current = []
            current.append(entity)
        if current:
            groups.append(self._span(current))
        return groups

    def _span(self, entities: list[dict]) -> dict:
        return {"entity_group": entities[0]["entity"].split("-", 1)[-1],
                "score": np.mean(np.nanmean([entity["score"] for entity in entities])),
                "word": self.tokenizer.convert_tokens_to_string([entity["word"] for entity in entities]),
                "start": entities[0]["start"], "end": entities[-1]["end"]}


def _words(tokens: list[dict]) -> list[list[dict]]:
    """Tokens grouped into words: a sub-word token joins the word before it."""
    words: list[list[dict]] = []
    for token in tokens:
        if words and token["is_subword"]:
            words[-1].append(token)
        else:
            words.append([token])
    return words


def _tag(label: str) -> tuple[str, str]:
    """``B-PER`` → ("B", "PER"); a label without a B-/I- prefix continues ("I", label)."""
    if label.startswith(("B-", "I-")):
        return label[0], label[2:]
    return "I", label


def merge_overlapping(entities: list[dict]) -> list[dict]:
    """The entities of overlapping windows, by start, with overlapping spans resolved: a span
    starting inside the one kept before it replaces it only when longer, or as long and more
    confident (the reference's ``aggregate_overlapping_entities``).  One deliberate difference:
    an empty span found twice comes back once (the reference keeps both)."""
    if not entities:
        return entities
    ordered = sorted(entities, key=lambda entity: entity["start"])
    merged = []
    kept = ordered[0]
    for entity in ordered:
        # The reference tests only the start inside the kept span, so an empty span (a
        # byte-level BPE token of a lone space) seen by two windows would come back twice.
        same = (entity["start"], entity["end"]) == (kept["start"], kept["end"])
        if kept["start"] <= entity["start"] < kept["end"] or (same and entity is not kept):
            length, kept_length = entity["end"] - entity["start"], kept["end"] - kept["start"]
            if length > kept_length or (length == kept_length and entity["score"] > kept["score"]):
                kept = entity
        else:
            merged.append(kept)
            kept = entity
    merged.append(kept)
    return merged
