"""``--task classify``: a sequence classifier's label and score per row (or per text pair)."""
from __future__ import annotations

from typing import Any, Mapping

import pyarrow as pa

from actors.classify import Classify
from jobs.model import ResolvedModel
from jobs.options import SWITCH, Option, boolean
from jobs.task import Task


class ClassifyTask(Task):
    name = "classify"
    help = ("sequence classification: label (string from id2label), label_id, score; with --text-pair-column, "
            "pairs (NLI, cross-encoder reranking: a single-logit model's score is its raw value)")
    stage = Classify
    options = (
        Option("return_probs", "also write 'probs', every label's probability", boolean, default=False, flag=SWITCH),
    )

    def output_schema(self, settings: Mapping[str, Any], model: ResolvedModel) -> pa.Schema:
        fields = [("label", pa.string()), ("label_id", pa.int32()), ("score", pa.float32())]
        if settings["return_probs"]:
            fields.append(("probs", pa.list_(pa.float32(), int(model.config.num_labels))))
        return pa.schema(fields)


TASK = ClassifyTask
