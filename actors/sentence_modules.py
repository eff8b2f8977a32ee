"""A sentence-transformers model's pipeline after pooling (``modules.json``: Dense and Normalize
modules), its prompts (``config_sentence_transformers.json``), and the retrieval stacks' output
precisions (Matryoshka truncation, ``quantize_embeddings``), without importing
sentence-transformers.

Only data is read from the model repository: the Dense activation is looked up in a fixed
table of torch activation classes (sentence-transformers imports whatever class the config
names), weights come from safetensors or a ``weights_only`` ``torch.load``.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

PRECISIONS = ("float32", "float16", "int8", "uint8", "binary", "ubinary")
# Precisions whose buckets need per-dimension calibration ranges.
CALIBRATED = ("int8", "uint8")

# The activations a Dense module's config may name (sentence-transformers saves the class's full
# name; Tanh is its default).  A name outside this table is refused, never imported.
ACTIVATIONS = {
    "torch.nn.modules.activation.Tanh": nn.Tanh,
    "torch.nn.modules.linear.Identity": nn.Identity,
    "torch.nn.modules.activation.ReLU": nn.ReLU,
    "torch.nn.modules.activation.GELU": nn.GELU,
    "torch.nn.modules.activation.Sigmoid": nn.Sigmoid,
    "torch.nn.modules.activation.SiLU": nn.SiLU,
    "torch.nn.modules.activation.LeakyReLU": nn.LeakyReLU,
    "torch.nn.modules.activation.Softplus": nn.Softplus,
}


class SentenceModuleError(ValueError):
    """A sentence-transformers module file this job can't reproduce (the message names it)."""


def _kind(module: dict) -> str:
    return str(module.get("type", "")).rsplit(".", 1)[-1]


def after_pooling(modules: Sequence[dict], read_json: Any) -> dict[str, Any]:
    """What ``modules.json`` runs after pooling, as the embed task's defaults: ``steps`` (the
    Dense modules in order, and a Normalize between two of them), ``normalize`` (the pipeline
    ends with a Normalize module) and ``dimension`` (the last Dense module's width, else None).
    ``read_json(name)`` reads a JSON file of the model (None when missing)."""
    kinds = [_kind(m) for m in modules if isinstance(m, dict)]
    tail = [m for m in modules if isinstance(m, dict) and _kind(m) not in ("Transformer", "Pooling")]
    if "Pooling" in kinds:
        tail = [m for m in modules[kinds.index("Pooling") + 1:] if isinstance(m, dict)]
    steps: list[dict[str, Any]] = []
    dimension: Optional[int] = None
    for module in tail:
        kind = _kind(module)
        if kind == "Dense":
            path = str(module.get("path", "")).strip("/")
            config = read_json(f"{path}/config.json")
            if not isinstance(config, dict):
                raise SentenceModuleError(f"modules.json names a Dense module at {path}/ without a config.json")
            activation = config.get("activation_function", "torch.nn.modules.activation.Tanh")
            if activation is not None and activation not in ACTIVATIONS:
                raise SentenceModuleError(f"{path}/config.json: the Dense activation {activation!r} is not one of "
                                          f"{', '.join(sorted(ACTIVATIONS))}")
            for key in ("module_input_name", "module_output_name"):
                if config.get(key, "sentence_embedding") not in (None, "sentence_embedding"):
                    raise SentenceModuleError(f"{path}/config.json: a Dense module on {config[key]!r} is not supported")
            steps.append({"type": "Dense", "path": path, "in_features": int(config["in_features"]),
                          "out_features": int(config["out_features"]), "bias": bool(config.get("bias", True)),
                          "activation": activation, "use_residual": bool(config.get("use_residual", False))})
            dimension = int(config["out_features"])
        elif kind == "Normalize":
            steps.append({"type": "Normalize"})
    normalize = bool(steps) and steps[-1]["type"] == "Normalize"
    while steps and steps[-1]["type"] == "Normalize":
        steps.pop()  # the final normalisation is the task's --normalize (on by default here)
    return {"steps": steps, "normalize": normalize, "dimension": dimension}


def prompts(config: Optional[dict]) -> dict[str, Any]:
    """``prompts`` and ``default_prompt_name`` of a ``config_sentence_transformers.json``."""
    config = config if isinstance(config, dict) else {}
    found = config.get("prompts") or {}
    if not isinstance(found, dict) or not all(isinstance(v, str) for v in found.values()):
        raise SentenceModuleError("config_sentence_transformers.json: 'prompts' must map names to strings")
    return {"prompts": dict(found), "default_prompt_name": config.get("default_prompt_name")}


class Dense(nn.Module):
    """sentence-transformers' Dense module: ``activation(linear(x))`` (+ the input, or its
    projection, with ``use_residual``); attribute names are its weight keys."""

    def __init__(self, step: dict[str, Any]) -> None:
        super().__init__()
        self.linear = nn.Linear(step["in_features"], step["out_features"], bias=step["bias"])
        activation = step.get("activation")
        self.activation = ACTIVATIONS[activation]() if activation else nn.Identity()
        self.use_residual = step.get("use_residual", False)
        if self.use_residual and step["in_features"] != step["out_features"]:
            self.residual = nn.Linear(step["in_features"], step["out_features"], bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.activation(self.linear(x))
        if self.use_residual:
            out = out + (self.residual(x) if hasattr(self, "residual") else x)
        return out


def load_dense(step: dict[str, Any], source: Any) -> Dense:
    """The Dense module of ``step`` with its weights from ``source`` (an autoload ModelSource)."""
    module = Dense(step)
    path = step["path"]
    safetensors = source.fetch_optional(f"{path}/model.safetensors")
    if safetensors is not None:
        from safetensors.torch import load_file

        state = load_file(str(safetensors))
    else:
        legacy = source.fetch_optional(f"{path}/pytorch_model.bin")
        if legacy is None:
            raise SentenceModuleError(f"{path}/ has neither model.safetensors nor pytorch_model.bin")
        state = torch.load(legacy, map_location="cpu", weights_only=True)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise SentenceModuleError(f"{path}/ weights don't fit its config.json: {err}") from None
    return module.eval()


def quantize(embeddings: np.ndarray, precision: str, ranges: Optional[np.ndarray] = None) -> np.ndarray:
    """(N, D) float embeddings → ``precision``, as sentence-transformers' ``quantize_embeddings``
    with the given ``ranges`` ((2, D): per-dimension minimum and maximum) for int8/uint8:
    255 equal buckets between them (values outside go to the end buckets); binary packs the
    signs (> 0) eight dimensions to a byte (int8 shifted by -128 for ``binary``)."""
    if precision == "float32":
        return embeddings.astype(np.float32)
    if precision == "float16":
        return embeddings.astype(np.float16)
    if precision in CALIBRATED:
        if ranges is None:
            raise ValueError(f"{precision} needs calibration ranges")
        ranges = np.asarray(ranges, dtype=np.float32)
        starts = ranges[0]
        steps = (ranges[1] - starts) / 255
        steps = np.where(steps == 0, 1, steps)
        buckets = np.clip(np.floor((embeddings - starts) / steps), 0, 255)
        return buckets.astype(np.uint8) if precision == "uint8" else (buckets - 128).astype(np.int8)
    if precision == "binary":
        return (np.packbits(embeddings > 0, axis=-1) - 128).astype(np.int8)
    if precision == "ubinary":
        return np.packbits(embeddings > 0, axis=-1)
    raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def output_width(dimension: int, precision: str) -> int:
    """Values per row of an embedding of ``dimension`` at ``precision`` (binary: bytes of bits)."""
    return -(-dimension // 8) if precision.endswith("binary") else dimension


def calibration_ranges(path: str, dimension: int) -> list[list[float]]:
    """Per-dimension (min, max) ranges for int8/uint8 from ``path``: a JSON file
    ``{"ranges": [[min, ...], [max, ...]]}`` (or ``{"min": [...], "max": [...]}``), or a Parquet
    file or directory with an ``embedding`` column of float embeddings (e.g. a float32 run of the
    same job on a sample): their per-dimension minimum and maximum, as ``quantize_embeddings``'s
    ``calibration_embeddings``."""
    import fsspec

    try:
        if path.endswith(".json"):
            with fsspec.open(path, "rt") as handle:
                data = json.load(handle)
            if isinstance(data, dict) and "ranges" in data:
                data = data["ranges"]
            elif isinstance(data, dict) and {"min", "max"} <= set(data):
                data = [data["min"], data["max"]]
            ranges = np.asarray(data, dtype=np.float64)
        else:
            import pyarrow.dataset as ds

            table = ds.dataset(path, format="parquet").to_table(columns=["embedding"])
            column = table["embedding"].combine_chunks()
            if table.num_rows == 0 or column.null_count == len(column):
                raise ValueError("it holds no embeddings")
            column = column.drop_null()
            values = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float64)
            matrix = values.reshape(len(column), -1)
            ranges = np.vstack([matrix.min(0), matrix.max(0)])
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as err:
        raise SentenceModuleError(f"--calibration {path}: can't read calibration ranges ({type(err).__name__}: {err}); "
                                  "give a JSON file {\"ranges\": [[min...], [max...]]} or Parquet with a float "
                                  "'embedding' column") from None
    if ranges.ndim != 2 or ranges.shape != (2, dimension):
        raise SentenceModuleError(f"--calibration {path}: ranges of shape {tuple(ranges.shape)}, the embeddings need "
                                  f"(2, {dimension}): calibrate with embeddings of the same --dimensions")
    return ranges.tolist()
