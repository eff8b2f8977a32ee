"""``--task fill-mask``: the likeliest tokens for each mask token of a row (masked-LM scoring)."""
from __future__ import annotations

from typing import Any, Mapping, Optional

import pyarrow as pa

from actors.fill_mask import PREDICTIONS, FillMask
from autoload.contract import ModelContract
from jobs.model import ResolvedModel
from jobs.options import Option, csv, positive
from jobs.task import Task


class FillMaskTask(Task):
    name = "fill-mask"
    help = ("masked-token prediction, as transformers' fill-mask pipeline: 'predictions', per mask token of the "
            "text (e.g. [MASK] or <mask>) the top-k candidates best first: {token, token_str, score, sequence}; "
            "a row without a mask token is a bad row")
    stage = FillMask
    takes_pairs = False
    options = (
        Option("top_k", "candidates per mask token (default: 5; at most the number of --targets)", positive(int),
               default=5, flag={"metavar": "K"}),
        Option("targets", "comma-separated candidate tokens: score only these (a word not in the vocabulary "
               "scores its first token, as the reference pipeline)", csv, default=(), flag={"metavar": "A,B"}),
    )

    def unfit(self, contract: ModelContract) -> Optional[str]:
        if contract.causal:
            return (f"it needs a masked language model (an encoder such as bert, roberta, distilbert), and "
                    f"{contract.model_type} is a causal LM")
        return None

    def settings(self, model: ResolvedModel) -> dict[str, Any]:
        settings = super().settings(model)
        settings["targets"] = list(settings["targets"])
        return settings

    def output_schema(self, settings: Mapping[str, Any], model: ResolvedModel) -> pa.Schema:
        return pa.schema([("predictions", PREDICTIONS)])


TASK = FillMaskTask
