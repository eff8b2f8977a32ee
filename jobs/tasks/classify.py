"""``--task classify``: a sequence classifier's label and score per row (or per text pair)."""
from __future__ import annotations

from typing import Any, Mapping

import pyarrow as pa

from actors.classify import FUNCTIONS, LABELS, Classify, default_function
from jobs.model import ResolvedModel
from jobs.options import SWITCH, Option, boolean, choice, non_negative_float
from jobs.task import Task


class ClassifyTask(Task):
    name = "classify"
    help = ("sequence classification: label (string from id2label), label_id, score; multi-label models (sigmoid "
            "scores) also 'labels', every label above --threshold; with --text-pair-column, pairs (NLI, and "
            "cross-encoder reranking: a single-logit model's score is sigmoid(logit), --function none gives the raw "
            "logit; both rank the same)")
    stage = Classify
    options = (
        Option("function", "what turns logits into scores, as transformers' text-classification pipeline; default "
               "from the config: none for problem_type regression, sigmoid for multi_label_classification or a "
               "single logit, softmax otherwise", choice(FUNCTIONS), flag={"choices": FUNCTIONS}),
        Option("threshold", "with sigmoid scores over several labels (multi-label), 'labels' holds every label "
               "scoring above this (default: 0.5)", non_negative_float, default=0.5, flag={"metavar": "T"}),
        Option("return_probs", "also write 'probs', every label's score", boolean, default=False, flag=SWITCH),
        Option("return_logits", "also write 'logits', every label's raw logit", boolean, default=False, flag=SWITCH),
    )

    def model_defaults(self, model: ResolvedModel) -> dict[str, Any]:
        return {"function": default_function(model.config)}

    @staticmethod
    def multi_label(settings: Mapping[str, Any], model: ResolvedModel) -> bool:
        """Whether rows get a label set: independent (sigmoid) scores over several labels."""
        return settings["function"] == "sigmoid" and int(model.config.num_labels) > 1

    def stage_kwargs(self, settings: Mapping[str, Any], model: ResolvedModel) -> dict[str, Any]:
        return {**settings, "multi_label": self.multi_label(settings, model)}

    def output_schema(self, settings: Mapping[str, Any], model: ResolvedModel) -> pa.Schema:
        width = int(model.config.num_labels)
        fields = [("label", pa.string()), ("label_id", pa.int32()), ("score", pa.float32())]
        if settings["return_probs"]:
            fields.append(("probs", pa.list_(pa.float32(), width)))
        if settings["return_logits"]:
            fields.append(("logits", pa.list_(pa.float32(), width)))
        if self.multi_label(settings, model):
            fields.append(("labels", LABELS))
        return pa.schema(fields)


TASK = ClassifyTask
