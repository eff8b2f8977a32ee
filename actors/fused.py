"""CPU-only clusters: read's output tokenized and run through the model in one actor.

On a cluster without GPUs the model actors are the CPUs: a separate tokenize pool only adds
a process per node, a hand-off of every block between processes and a CPU reservation the
model can't use.  Tokenizing costs about 1 % of a CPU forward (MiniLM, 6,000 texts: 2.7 s of
tokenizing against 203 s of forwards), so the model actor does it itself.  With GPUs the
stages stay apart: tokenizing then scales with the CPUs while the GPU computes.
"""
from __future__ import annotations

from typing import Any

import pyarrow as pa

from .tokenize import Tokenize


class TokenizeAndRun:
    """``stage(Tokenize(**tokenize)(table))``: the two stages' columns, errors and timings,
    unchanged.  ``stage`` is a model stage class (``Embed`` or ``Classify``), built once here."""

    def __init__(self, *, tokenize: dict[str, Any], stage: type, stage_kwargs: dict[str, Any]) -> None:
        self.tokenize = Tokenize(**tokenize)
        self.stage = stage(**stage_kwargs)

    def __call__(self, table: pa.Table) -> pa.Table:
        return self.stage(self.tokenize(table))
