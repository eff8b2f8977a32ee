"""``--task embed``: one vector per row, pooled from the encoder's token states, the way
retrieval stacks store them (the model's Dense / Normalize modules, Matryoshka truncation,
quantised precisions, query / document prompts)."""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, Mapping

import pyarrow as pa

from actors.common import EMBEDDING_DTYPES, POOLINGS
from actors.embed import ARROW_TYPES, Embed
from actors.sentence_modules import CALIBRATED, PRECISIONS, SentenceModuleError, calibration_ranges, output_width
from jobs.model import ResolvedModel
from jobs.options import SWITCH, Option, SpecError, boolean, choice, positive, text
from jobs.task import Task

logger = logging.getLogger(__name__)


class EmbedTask(Task):
    name = "embed"
    help = ("sentence embeddings: one vector per row (embedding: fixed_size_list[width] of the --precision's type: "
            "float32, float16, int8, uint8; binary/ubinary: int8/uint8 bytes of packed sign bits, width/8)")
    stage = Embed
    options = (
        Option("pooling", "how token states become one vector; default: the model's sentence-transformers "
               "1_Pooling/config.json, else mean", choice(POOLINGS), default="mean", flag={"choices": POOLINGS}),
        Option("normalize", "L2-normalise embeddings (after --dimensions); default: on when the model's modules.json "
               "ends with a Normalize module", boolean, default=False, flag=SWITCH),
        Option("embedding_dtype", "value type of the embedding column, float32 or float16 (default: float32); "
               "--precision says the same and more", choice(EMBEDDING_DTYPES), default="float32",
               flag={"choices": EMBEDDING_DTYPES}),
        Option("precision", "the embedding's values, as sentence-transformers' quantize_embeddings: float32, "
               "float16, int8/uint8 (255 buckets per dimension between the --calibration ranges), binary/ubinary "
               "(sign bits packed 8 per byte; binary as int8 = byte - 128); default: --embedding-dtype",
               choice(PRECISIONS), flag={"choices": PRECISIONS}),
        Option("dimensions", "keep the first K values of each embedding (Matryoshka truncation, as "
               "sentence-transformers' truncate_dim), re-normalised when normalising; default: all", positive(int),
               flag={"metavar": "K"}),
        Option("calibration", "int8/uint8 ranges: a JSON file {\"ranges\": [[min...], [max...]]}, or Parquet (a file "
               "or directory) with a float 'embedding' column, e.g. a float32 run of this job on a sample "
               "(per-dimension min and max); the ranges used are stored in the manifest", text,
               flag={"metavar": "FILE"}),
        Option("prompt_name", "a prompt of the model's config_sentence_transformers.json put before every text "
               "(e.g. query); default: its default_prompt_name", text, flag={"metavar": "NAME"}),
        Option("prompt", "a prompt of your own put before every text (instead of --prompt-name)", text,
               flag={"metavar": "TEXT"}),
    )

    def model_defaults(self, model: ResolvedModel) -> dict[str, Any]:
        found = model.sentence_transformers
        defaults = {name: found[name] for name in ("pooling", "normalize") if name in found}
        if found.get("default_prompt_name"):
            defaults["prompt_name"] = found["default_prompt_name"]
        return defaults

    def settings(self, model: ResolvedModel) -> dict[str, Any]:
        settings = super().settings(model)
        given = self.values
        if "precision" in given and "embedding_dtype" in given and given["precision"] != given["embedding_dtype"]:
            raise SpecError(f"--precision {given['precision']} and --embedding-dtype {given['embedding_dtype']} "
                            "disagree: give --precision only")
        precision = settings["precision"] = settings["precision"] or settings["embedding_dtype"]
        found = model.sentence_transformers
        width = int(found.get("dimension") or model.config.hidden_size)
        if settings["dimensions"] is not None and settings["dimensions"] > width:
            raise SpecError(f"--dimensions {settings['dimensions']} is more than the model's {width}-value embeddings")
        dimension = settings["dimensions"] or width
        settings["calibration_ranges"] = None
        if precision in CALIBRATED:
            if not settings["calibration"]:
                raise SpecError(f"--precision {precision} needs --calibration FILE: per-dimension ranges (JSON), or "
                                "Parquet embeddings to take them from (e.g. a float32 run of this job on a sample)")
            try:
                settings["calibration_ranges"] = calibration_ranges(settings["calibration"], dimension)
            except SentenceModuleError as err:
                raise SpecError(str(err)) from None
        elif settings["calibration"]:
            raise SpecError(f"--calibration applies to --precision int8 or uint8, not {precision}")
        settings["prompt_text"] = self._prompt(settings, found)
        if settings["prompt_text"] and not found.get("include_prompt", True):
            raise SpecError(f"{model.reference} pools without the prompt's tokens (1_Pooling include_prompt: false), "
                            "which this job can't reproduce yet: embed without a prompt")
        return settings

    def _prompt(self, settings: Mapping[str, Any], found: Mapping[str, Any]) -> str:
        """The text put before every row: --prompt, else the named prompt (given or the model's default)."""
        if "prompt" in self.values and "prompt_name" in self.values:
            raise SpecError("give --prompt or --prompt-name, not both")
        if settings["prompt"] is not None:
            return settings["prompt"]
        name = settings["prompt_name"]
        if name is None:
            return ""
        known = found.get("prompts") or {}
        if name not in known:
            raise SpecError(f"--prompt-name {name}: the model's config_sentence_transformers.json has "
                            f"{'prompts ' + ', '.join(sorted(known)) if known else 'no prompts'}")
        return known[name]

    def tokenize_kwargs(self, settings: Mapping[str, Any], model: ResolvedModel) -> dict[str, Any]:
        return {"prefix": settings["prompt_text"]} if settings["prompt_text"] else {}

    def stage_kwargs(self, settings: Mapping[str, Any], model: ResolvedModel) -> dict[str, Any]:
        return {"pooling": settings["pooling"], "normalize": settings["normalize"], "precision": settings["precision"],
                "dimensions": settings["dimensions"], "steps": model.sentence_transformers.get("steps", []),
                "calibration_ranges": settings["calibration_ranges"]}

    def identity(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        identity = super().identity(settings)
        identity["prompt_text"] = settings["prompt_text"]
        if settings["calibration_ranges"] is not None:
            ranges = json.dumps(settings["calibration_ranges"]).encode()
            identity["calibration_sha256"] = hashlib.sha256(ranges).hexdigest()
        return identity

    def output_schema(self, settings: Mapping[str, Any], model: ResolvedModel) -> pa.Schema:
        width = int(model.sentence_transformers.get("dimension") or model.config.hidden_size)
        dimension = settings["dimensions"] or width
        return pa.schema([("embedding", pa.list_(ARROW_TYPES[settings["precision"]],
                                                 output_width(dimension, settings["precision"])))])


TASK = EmbedTask
