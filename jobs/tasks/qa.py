"""``--task qa``: extractive question answering, the answer span of each row's context (the
reference's question-answering pipeline: context windows, answer length, n best, the null
answer)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Optional

import pyarrow as pa

from actors.qa import ANSWER, QuestionAnswer
from actors.tokenize import Windows
from autoload import registry
from jobs.options import SWITCH, Option, SpecError, boolean, positive, text, whole
from jobs.task import Task

if TYPE_CHECKING:
    from jobs.model import ResolvedModel

# The reference's window cap: min(the model's length, 384) tokens.
MAX_SEQ_LEN = 384


class QaTask(Task):
    name = "qa"
    help = ("extractive question answering over --question-column / --context-column: answer, score, start, end "
            "(character offsets into the context), with --top-k > 1 also 'answers', the k best; long contexts run "
            "in overlapping windows (--doc-stride), as transformers' question-answering pipeline")
    stage = QuestionAnswer
    takes_pairs = False
    reads_text_column = False
    options = (
        Option("question_column", "column holding the question (default: question)", text, default="question",
               flag={"metavar": "NAME"}),
        Option("context_column", "column holding the context the answer is taken from (default: context)", text,
               default="context", flag={"metavar": "NAME"}),
        Option("max_seq_len", "tokens per window, question and special tokens included (default: the model's "
               "length, at most 384, as the reference)", positive(int), flag={"metavar": "N"}),
        Option("doc_stride", "tokens of context consecutive windows share (default: half the window, at most 128, "
               "as the reference)", whole, flag={"metavar": "N"}),
        Option("max_answer_length", "longest answer in tokens (default: 15)", positive(int), default=15,
               flag={"metavar": "N"}),
        Option("top_k", "answers per row: 'answer' is the best, and with K > 1 'answers' lists the K best "
               "(default: 1)", positive(int), default=1, flag={"metavar": "K"}),
        Option("handle_impossible_answer", "let the null answer (no answer in the context) compete: when its score "
               "wins, 'answer', 'start' and 'end' are null and 'score' is its score", boolean, default=False,
               flag=SWITCH),
    )

    def settings(self, model: "ResolvedModel") -> dict[str, Any]:
        settings = super().settings(model)
        if settings["max_seq_len"] is None:
            settings["max_seq_len"] = min(model.max_length, MAX_SEQ_LEN)
        elif settings["max_seq_len"] > model.max_length:
            raise SpecError(f"--max-seq-len {settings['max_seq_len']} is longer than the model allows "
                            f"({model.max_length} tokens)")
        if settings["doc_stride"] is None:
            settings["doc_stride"] = min(settings["max_seq_len"] // 2, 128)
        elif settings["doc_stride"] >= settings["max_seq_len"]:
            raise SpecError(f"--doc-stride {settings['doc_stride']} must be less than the window "
                            f"(--max-seq-len {settings['max_seq_len']})")
        if settings["question_column"] == settings["context_column"]:
            raise SpecError(f"--question-column and --context-column both name {settings['question_column']!r}")
        return settings

    @staticmethod
    def question_first(model: "ResolvedModel") -> bool:
        """The reference puts the question first for tokenizers that pad on the right (all but
        XLNet-style left-padding models, which take the context first)."""
        return registry.contract(model.model_type).padding_side == "right"

    def text_columns(self, settings: Mapping[str, Any], model: "ResolvedModel") -> Optional[tuple[str, Optional[str]]]:
        question, context = settings["question_column"], settings["context_column"]
        return (question, context) if self.question_first(model) else (context, question)

    def tokenize_kwargs(self, settings: Mapping[str, Any], model: "ResolvedModel") -> dict[str, Any]:
        truncation = "only_second" if self.question_first(model) else "only_first"
        return {"windows": Windows(max_length=settings["max_seq_len"], stride=settings["doc_stride"],
                                   truncation=truncation)}

    def stage_kwargs(self, settings: Mapping[str, Any], model: "ResolvedModel") -> dict[str, Any]:
        return {"top_k": settings["top_k"], "max_answer_length": settings["max_answer_length"],
                "handle_impossible_answer": settings["handle_impossible_answer"],
                "question_first": self.question_first(model)}

    def output_schema(self, settings: Mapping[str, Any], model: "ResolvedModel") -> pa.Schema:
        fields = [("answer", pa.string()), ("score", pa.float32()), ("start", pa.int32()), ("end", pa.int32())]
        if settings["top_k"] > 1:
            fields.append(("answers", pa.list_(ANSWER)))
        return pa.schema(fields)


TASK = QaTask
