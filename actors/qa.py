"""Extractive question-answering stage: per row the best answer span of the context (and the
n best), with character offsets into the context.

It follows the reference's ``pipeline("question-answering")`` (transformers 4.57.6, the last
that has it) step for step, so its answers are the reference's: per window, start and end
probabilities over the context tokens (and [CLS]), each span's score their product, spans no
longer than ``max_answer_length`` tokens, the best ``2 * top_k + 10`` per window aligned to whole
words; answers of equal text (ignoring case) from several windows add their scores; with
``handle_impossible_answer`` the null answer (the lowest [CLS] score over the windows) competes.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import pyarrow as pa
import torch

from autoload import AutoTokenizer
from autoload.modeling import Segments

from .heads import SpanQuestionAnswering
from .model_stage import ModelStage, Results, unpad
from .windows import Window, row_windows

ANSWER = pa.struct([("answer", pa.string()), ("score", pa.float32()), ("start", pa.int32()), ("end", pa.int32())])
# The reference's start for the lowest null score seen: any real score is below it.
_NO_NULL_SCORE = 1000000.0


class QuestionAnswer(ModelStage):
    """Adds ``answer`` (string), ``score`` (float32), ``start``, ``end`` (int32 character offsets
    into the context) and, with ``top_k > 1``, ``answers`` (the ``top_k`` best, list<struct>).
    The null answer (``handle_impossible_answer``) has a score and a null text and offsets; rows
    with an error are null everywhere."""

    auto_class = SpanQuestionAnswering
    checkpoint_kind = "question-answering"
    per_token = ("logits",)

    def __init__(self, model: str, *, top_k: int = 1, max_answer_length: int = 15, handle_impossible_answer: bool = False,
                 question_first: bool = True, **kwargs: Any) -> None:
        self.top_k = top_k
        self.max_answer_length = max_answer_length
        self.handle_impossible_answer = handle_impossible_answer
        self.question_first = question_first
        super().__init__(model, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(model, storage_options=kwargs.get("storage_options") or {},
                                                  cache_dir=kwargs.get("cache_dir"))
        self.cls_token_id = tokenizer.cls_token_id

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.model(**inputs)
        logits = torch.stack([out.start_logits, out.end_logits], dim=-1).float()  # (B, T, 2)
        return {"logits": unpad(logits, inputs["attention_mask"])}

    def forward_flat(self, input_ids: torch.Tensor, segments: Segments, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.model.forward_flat(input_ids, segments, **inputs).float()}  # (N, 2)

    def columns(self, results: Results) -> dict[str, pa.Array]:
        best: list[Optional[dict]] = [None] * results.num_rows
        n_best: list[Optional[list]] = [None] * results.num_rows
        logits = results.per_token.get("logits")
        for row, first, second, windows in row_windows(results):
            context = second if self.question_first else first
            answers = self._answers(context, windows, logits)
            n_best[row] = answers
            best[row] = answers[0] if answers else {"answer": None, "score": None, "start": None, "end": None}
        columns = {
            "answer": pa.array([b and b["answer"] for b in best], type=pa.string()),
            "score": pa.array([b and b["score"] for b in best], type=pa.float32()),
            "start": pa.array([b and b["start"] for b in best], type=pa.int32()),
            "end": pa.array([b and b["end"] for b in best], type=pa.int32()),
        }
        if self.top_k > 1:
            columns["answers"] = pa.array(n_best, type=pa.list_(ANSWER))
        return columns

    def _answers(self, context: str, windows: list[Window], logits: Any) -> list[dict]:
        """The row's ``top_k`` answers over all its windows, best first."""
        answers: list[dict] = []
        null_score = _NO_NULL_SCORE
        context_id = 1 if self.question_first else 0
        for window in windows:
            start_logits, end_logits = logits[window.sequence][:, 0], logits[window.sequence][:, 1]
            starts, ends, scores, null_score = self._spans(window, start_logits, end_logits, null_score)
            for s, e, score in zip(starts, ends, scores):
                start, end = _char_span(window, int(s), int(e), context_id)
                text = context[start:end]
                same = next((a for a in answers if a["answer"].lower() == text.lower()), None)
                if same is not None:
                    same["score"] += float(score)
                else:
                    answers.append({"answer": text, "score": float(score), "start": start, "end": end})
        if self.handle_impossible_answer:
            answers.append({"answer": "", "score": null_score, "start": 0, "end": 0})
        answers = sorted(answers, key=lambda a: a["score"], reverse=True)[:self.top_k]
        # The null answer: no text and no offsets (the reference writes "", 0, 0).
        return [a if a["answer"] or a["end"] else {**a, "answer": None, "start": None, "end": None}
                for a in answers]

    def _spans(self, window: Window, start_logits: np.ndarray, end_logits: np.ndarray, null_score: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """One window's candidate spans (token indices, scores) and the lowest null score so far
        (the reference's ``select_starts_ends`` and ``decode_spans``)."""
        # Tokens that can be in an answer: the context's, and [CLS] (the null answer).
        if self.question_first:
            allowed = window.sequence_ids == 1
        else:  # the reference masks nothing when the context comes first
            allowed = np.ones(len(window.ids), dtype=bool)
        if self.cls_token_id is not None:
            allowed = allowed | (window.ids == self.cls_token_id)
        start = _softmax(np.where(allowed, start_logits, np.float32(-10000.0)))
        end = _softmax(np.where(allowed, end_logits, np.float32(-10000.0)))
        if self.handle_impossible_answer:
            null_score = min(null_score, float(start[0] * end[0]))
        start[0] = end[0] = 0.0
        # Span (s, e) scores start[s] * end[e], for s <= e < s + max_answer_length.
        candidates = np.tril(np.triu(np.outer(start, end)), self.max_answer_length - 1)
        flat = candidates.ravel()
        top = 2 * self.top_k + 10  # more than asked: aligning to words merges some
        if len(flat) < top:
            order = np.argsort(-flat)
        else:
            part = np.argpartition(-flat, top)[:top]
            order = part[np.argsort(-flat[part])]
        starts, ends = np.unravel_index(order, candidates.shape)
        # The reference tests membership against a (1, T) mask's nonzero() tuple, so index 0
        # (its row index) always counts as allowed.
        permitted = np.concatenate([[0], np.flatnonzero(allowed)])
        keep = np.isin(starts, permitted) & np.isin(ends, permitted)
        starts, ends = starts[keep], ends[keep]
        return starts, ends, candidates[starts, ends], null_score


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


def _char_span(window: Window, start: int, end: int, context_id: int) -> tuple[int, int]:
    """Token span → character span in the context, widened to whole words (a token in the middle
    of a word answers with the word); tokens without a word keep their own offsets."""
    first, last = window.word_chars(start, context_id), window.word_chars(end, context_id)
    if first is None or last is None:
        return int(window.offsets[start, 0]), int(window.offsets[end, 1])
    return first[0], last[1]
