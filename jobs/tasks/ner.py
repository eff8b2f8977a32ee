"""``--task ner``: token classification, entity spans per row (the reference's token-classification
pipeline: aggregation strategies, ignored labels, long texts in overlapping windows)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import pyarrow as pa

from actors.ner import AGGREGATIONS, TokenClassify, entity_type
from actors.tokenize import Windows
from jobs.options import Option, SpecError, choice, csv, whole
from jobs.task import Task

if TYPE_CHECKING:
    from jobs.model import ResolvedModel


class NerTask(Task):
    name = "ner"
    help = ("token classification (named entities): 'entities', per row a list of {entity_group, score, word, start, "
            "end} spans (character offsets into the text; {entity, score, index, word, start, end} per token with "
            "--aggregation none), as transformers' token-classification pipeline gives them")
    stage = TokenClassify
    takes_pairs = False
    options = (
        Option("aggregation", "how tokens become entities, as the reference pipeline's aggregation_strategy: none "
               "(one per token), simple (adjacent tokens of one type, B-/I- aware), first / average / max (whole words "
               "take their first token's label, the averaged scores' label, or the most confident token's label, "
               "then group as simple); default: simple", choice(AGGREGATIONS), default="simple",
               flag={"choices": AGGREGATIONS}),
        Option("ignore_labels", "labels left out of 'entities' (default: O; '' keeps every label)", csv,
               default=("O",), flag={"metavar": "A,B"}),
        Option("stride", "ner: a text longer than the model runs in overlapping windows sharing N tokens, their "
               "entities merged (the reference pipeline's stride; not with --aggregation none); without it, text past "
               "the model's length is cut and marked truncated. score: windows start every N tokens", whole,
               flag={"metavar": "N"}),
    )

    def settings(self, model: "ResolvedModel") -> dict[str, Any]:
        settings = super().settings(model)
        stride = settings["stride"]
        if stride is not None:
            if settings["aggregation"] == "none":
                raise SpecError("--stride needs an --aggregation other than none: overlapping windows see the same "
                                "tokens twice, and only spans can be merged back (as the reference pipeline refuses)")
            if stride >= model.max_length:
                raise SpecError(f"--stride {stride} must be less than the model's length ({model.max_length} tokens, "
                                "special tokens included)")
        settings["ignore_labels"] = list(settings["ignore_labels"])
        return settings

    def tokenize_kwargs(self, settings: Mapping[str, Any], model: "ResolvedModel") -> dict[str, Any]:
        stride = settings["stride"]
        if stride is None:  # one window: the text past it is never read, so don't tokenize it
            return {"windows": Windows(max_length=model.max_length, overflow=False, max_text_tokens=model.max_length)}
        return {"windows": Windows(max_length=model.max_length, stride=stride)}

    def stage_kwargs(self, settings: Mapping[str, Any], model: "ResolvedModel") -> dict[str, Any]:
        return {"aggregation": settings["aggregation"], "ignore_labels": settings["ignore_labels"]}

    def output_schema(self, settings: Mapping[str, Any], model: "ResolvedModel") -> pa.Schema:
        return pa.schema([("entities", entity_type(settings["aggregation"]))])


TASK = NerTask
