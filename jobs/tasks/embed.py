"""``--task embed``: one vector per row, pooled from the encoder's token states."""
from __future__ import annotations

from typing import Any, Mapping

import pyarrow as pa

from actors.common import EMBEDDING_DTYPES, POOLINGS
from actors.embed import ARROW_TYPES, Embed
from jobs.model import ResolvedModel
from jobs.options import SWITCH, Option, boolean, choice
from jobs.task import Task


class EmbedTask(Task):
    name = "embed"
    help = "sentence embeddings: one vector per row (embedding: fixed_size_list<float32>[hidden size])"
    stage = Embed
    options = (
        Option("pooling", "how token states become one vector; default: the model's sentence-transformers "
               "1_Pooling/config.json, else mean", choice(POOLINGS), default="mean", flag={"choices": POOLINGS}),
        Option("normalize", "L2-normalise embeddings; default: on when the model's modules.json has a Normalize module",
               boolean, default=False, flag=SWITCH),
        Option("embedding_dtype", "value type of the embedding column (default: float32)", choice(EMBEDDING_DTYPES),
               default="float32", flag={"choices": EMBEDDING_DTYPES}),
    )

    def model_defaults(self, model: ResolvedModel) -> dict[str, Any]:
        found = model.sentence_transformers
        return {name: found[name] for name in ("pooling", "normalize") if name in found}

    def output_schema(self, settings: Mapping[str, Any], model: ResolvedModel) -> pa.Schema:
        width = int(model.config.hidden_size)
        return pa.schema([("embedding", pa.list_(ARROW_TYPES[settings["embedding_dtype"]], width))])


TASK = EmbedTask
