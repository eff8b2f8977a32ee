"""Find, read and load checkpoint weights into a model built on the meta device.

Reading: ``model.safetensors`` (or its sharded index) first, then ``pytorch_model.bin`` (or its
index) through ``torch.load(weights_only=True)``, which refuses pickles that carry code.
Loading: global and per-model rename rules, base-prefix add/strip, shape checks, strict
``load_state_dict(assign=True)``, fresh initialisation of the weights reported missing, and
tied weights.  Per-model deviations are data on the model class (see ``PreTrainedModel``).
:func:`verify_checkpoint` runs the same checks on names and shapes alone, without reading
any tensor data: a cheap way to reject a bad checkpoint before anything loads it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file as load_safetensors
from torch import nn

from .sources import ModelSource

logger = logging.getLogger(__name__)

SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
TORCH_WEIGHTS = "pytorch_model.bin"
TORCH_INDEX = "pytorch_model.bin.index.json"
WEIGHT_FILES = (SAFE_WEIGHTS, SAFE_INDEX, TORCH_WEIGHTS, TORCH_INDEX)

# Renames every checkpoint gets (old TF-era names).
GLOBAL_RENAMES: list[tuple[str, str]] = [
    (r"LayerNorm\.gamma$", "LayerNorm.weight"),
    (r"LayerNorm\.beta$", "LayerNorm.bias"),
]


class CheckpointError(OSError):
    """A weight file is missing, unreadable, corrupt or unsafe."""


def weight_files(source: ModelSource) -> list[Path]:
    """The weight files of a source, safetensors first; raises naming what was looked for where."""
    if source.single_file is not None and source.single_file.name.endswith((".safetensors", ".bin", ".pt", ".pth")):
        return [source.single_file]
    for name in WEIGHT_FILES:
        if source.has(name):
            if name.endswith(".index.json"):
                return _shards(source, source.fetch(name))
            return [source.fetch(name)]
    raise CheckpointError(
        f"No model weights found in {source.where()}: looked for {', '.join(WEIGHT_FILES)}."
    )


def _shards(source: ModelSource, index_path: Path) -> list[Path]:
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{index_path} is not a valid shard index (needs a 'weight_map'): {err}") from err
    return [source.fetch(name) for name in sorted(set(weight_map.values()))]


def _corrupt_safetensors(path: Path, err: Exception) -> CheckpointError:
    return CheckpointError(f"Can't read weights from {path}: the safetensors file is corrupt or truncated ({err}). "
                           "Re-download or re-export it.")


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """One weight file → state dict on CPU, with a clear error naming the file."""
    if path.suffix == ".safetensors":
        try:
            return load_safetensors(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise _corrupt_safetensors(path, err) from err
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:
        message = str(err)
        if "Weights only load failed" in message or "Unsupported global" in message:
            raise CheckpointError(
                f"Refused to load {path}: it is a pickle that needs code to run (not plain tensors). "
                "autoload never executes code from a model file; convert it to safetensors with a tool you trust."
            ) from err
        raise CheckpointError(f"Can't read weights from {path}: corrupt, truncated or not a torch checkpoint ({err}).") from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a flat dict of tensors")
    return state


def read_shapes(path: Path) -> dict[str, torch.Tensor]:
    """One weight file → its tensor names, as meta tensors of the right shape.  A safetensors
    header must describe the file exactly (so truncation shows); a pickle is opened
    memory-mapped through ``weights_only``, so code in it is refused and no data is read."""
    if path.suffix != ".safetensors":
        return {k: torch.empty(v.shape, device="meta") for k, v in read_weights(path).items()}
    try:
        with safe_open(str(path), "pt") as handle:
            return {k: torch.empty(handle.get_slice(k).get_shape(), device="meta") for k in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise _corrupt_safetensors(path, err) from err


def read_checkpoint(files: Iterable[Path]) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for path in files:
        state.update(read_weights(path))
    return state


def weights_digest(files: Iterable[Path]) -> str:
    """sha256 over the weight files' bytes, in order: identifies exactly which weights ran."""
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(8 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def apply_renames(state: dict[str, torch.Tensor], renames: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Rename keys by (regex, replacement) rules.  Where a renamed key lands on a key the
    checkpoint already has, the renamed one wins whatever the file order: a rule names the
    tensor the reference actually computes with (e.g. the LM bias on the decoder)."""
    if not renames:
        return state
    compiled = [(re.compile(pattern), repl) for pattern, repl in renames]
    kept, renamed = {}, {}
    for key, value in state.items():
        new_key = key
        for pattern, repl in compiled:
            new_key = pattern.sub(repl, new_key)
        (kept if new_key == key else renamed)[new_key] = value
    return {**kept, **renamed}


@dataclass
class LoadingInfo:
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    mismatched_keys: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    error_msgs: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "missing_keys": self.missing_keys,
            "unexpected_keys": self.unexpected_keys,
            "mismatched_keys": self.mismatched_keys,
            "error_msgs": self.error_msgs,
        }


def _align_prefix(state: dict[str, torch.Tensor], model_keys: set[str], prefix: str) -> dict[str, torch.Tensor]:
    """Body checkpoint into a head model: add the prefix. Head checkpoint into a body: strip it."""
    if not prefix:
        return state
    dotted = prefix + "."
    has_prefix = any(k.startswith(dotted) for k in state)
    expects_prefix = any(k.startswith(dotted) for k in model_keys)
    if expects_prefix and not has_prefix:
        return {dotted + k: v for k, v in state.items()}
    if has_prefix and not expects_prefix:
        return {k[len(dotted):] if k.startswith(dotted) else k: v for k, v in state.items()}
    return state


def _match(model: nn.Module, state: dict[str, torch.Tensor], dtype: torch.dtype, ignore_mismatched_sizes: bool,
           source_name: str) -> tuple[dict[str, torch.Tensor], LoadingInfo]:
    """Checkpoint tensors → the model's keys (renames, drops, base prefix); the tensors to load
    and the report.  Shapes that don't fit are an error unless ``ignore_mismatched_sizes``."""
    rules = type(model)
    state = apply_renames(state, GLOBAL_RENAMES + list(rules.checkpoint_renames))
    drop = [re.compile(p) for p in rules.checkpoint_drop]
    state = {k: v for k, v in state.items() if not any(p.search(k) for p in drop)}
    expected = model.state_dict(keep_vars=True)
    state = _align_prefix(state, set(expected), rules.base_model_prefix)
    tied = model.tied_weights()

    info = LoadingInfo()
    to_load: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key not in expected:
            info.unexpected_keys.append(key)
        elif tuple(tensor.shape) != tuple(expected[key].shape):
            info.mismatched_keys.append((key, tuple(tensor.shape), tuple(expected[key].shape)))
        else:
            to_load[key] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    if info.mismatched_keys and not ignore_mismatched_sizes:
        lines = "; ".join(f"{k}: checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in info.mismatched_keys)
        raise ValueError(
            f"Weights in {source_name} do not fit the model built from its config ({lines}). "
            "Fix config.json, or pass ignore_mismatched_sizes=True to re-initialise those weights."
        )
    info.missing_keys = sorted(k for k in expected if k not in to_load and not (k in tied and tied[k] in to_load))
    info.unexpected_keys.sort()
    return to_load, info


def verify_checkpoint(model_class: type, config: object, files: list[Path]) -> LoadingInfo:
    """What loading ``files`` into ``model_class(config)`` would report, from the files' names
    and shapes alone (nothing is loaded or initialised).  Raises what loading would raise for a
    corrupt or truncated file, a pickle that needs code, or shapes that don't fit the config."""
    with torch.device("meta"):
        model = model_class(config)
    shapes: dict[str, torch.Tensor] = {}
    for path in files:
        shapes.update(read_shapes(path))
    return _match(model, shapes, torch.float32, False, ", ".join(map(str, files)))[1]


def load_into(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    *,
    dtype: torch.dtype,
    ignore_mismatched_sizes: bool = False,
    source_name: str = "checkpoint",
) -> LoadingInfo:
    """Load ``state`` into a meta-device ``model`` (strict, reported), then materialise the rest."""
    to_load, info = _match(model, state, dtype, ignore_mismatched_sizes, source_name)
    for key, found, wanted in info.mismatched_keys:
        logger.warning("%s: shape %s in checkpoint, %s in model: re-initialised", key, found, wanted)
    model.load_state_dict(to_load, strict=False, assign=True)
    _initialise_missing(model, info.missing_keys + [k for k, _, _ in info.mismatched_keys], dtype)
    model.tie_weights()
    leftover = [name for name, p in model.named_parameters() if p.is_meta]
    if leftover:
        raise RuntimeError(f"internal error: parameters left uninitialised after loading: {leftover}")
    return info


def _initialise_missing(model: nn.Module, keys: list[str], dtype: torch.dtype) -> None:
    """Fresh weights for keys the checkpoint lacks, by the model's init rule."""
    for key in keys:
        module_name, _, param_name = key.rpartition(".")
        module = model.get_submodule(module_name)
        old = getattr(module, param_name)
        fresh = nn.Parameter(torch.empty(old.shape, dtype=dtype, device="cpu"), requires_grad=old.requires_grad)
        setattr(module, param_name, fresh)
        model.init_weight(module, param_name, fresh)

