"""Shared model machinery: the PreTrainedModel base, output dataclasses, stable primitives.

Model files (``autoload/models/<arch>.py``) hold everything architecture-specific; this module
holds only what every architecture uses unchanged: loading/saving, attention call,
activations by name, output containers.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from .checkpoint import LoadingInfo, load_into, read_checkpoint, weight_files
from .configuration import PretrainedConfig, load_config_dict
from .sources import FetchOptions, open_source

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------
class ModelOutput:
    """Dataclass base whose instances also index like the tuple of their non-None fields."""

    def to_tuple(self) -> tuple:
        return tuple(getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None)

    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def __getitem__(self, item: int | slice | str) -> Any:
        if isinstance(item, str):
            if item not in self.keys():
                raise KeyError(item)
            return getattr(self, item)
        return self.to_tuple()[item]

    def __iter__(self):
        return iter(self.to_tuple())

    def __len__(self) -> int:
        return len(self.to_tuple())


@dataclass
class BaseModelOutput(ModelOutput):
    last_hidden_state: torch.Tensor
    hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    attentions: Optional[tuple[torch.Tensor, ...]] = None


@dataclass
class BaseModelOutputWithPooling(ModelOutput):
    last_hidden_state: torch.Tensor
    pooler_output: Optional[torch.Tensor] = None
    hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    attentions: Optional[tuple[torch.Tensor, ...]] = None


@dataclass
class MaskedLMOutput(ModelOutput):
    logits: torch.Tensor
    hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    attentions: Optional[tuple[torch.Tensor, ...]] = None


@dataclass
class CausalLMOutput(ModelOutput):
    logits: torch.Tensor
    hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    attentions: Optional[tuple[torch.Tensor, ...]] = None


@dataclass
class SequenceClassifierOutput(ModelOutput):
    logits: torch.Tensor
    hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    attentions: Optional[tuple[torch.Tensor, ...]] = None


@dataclass
class TokenClassifierOutput(ModelOutput):
    logits: torch.Tensor
    hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    attentions: Optional[tuple[torch.Tensor, ...]] = None


@dataclass
class QuestionAnsweringModelOutput(ModelOutput):
    start_logits: torch.Tensor
    end_logits: torch.Tensor
    hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    attentions: Optional[tuple[torch.Tensor, ...]] = None


# --------------------------------------------------------------------------------------------
# Primitives
# --------------------------------------------------------------------------------------------
def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


def _quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_python": F.gelu,
    "gelu_new": _gelu_tanh,
    "gelu_fast": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "quick_gelu": _quick_gelu,
    "relu": F.relu,
    "relu6": F.relu6,
    "silu": F.silu,
    "swish": F.silu,
    "mish": F.mish,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "linear": lambda x: x,
}


def activation(name: str | Callable) -> Callable[[torch.Tensor], torch.Tensor]:
    """Activation function by its config name (``hidden_act``)."""
    if callable(name):
        return name
    if name not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {name!r}; known: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]


def padding_mask(attention_mask: Optional[torch.Tensor], shape: tuple[int, int], device: torch.device) -> torch.Tensor:
    """(B, T) 0/1 mask → (B, 1, 1, T) boolean, True where keys may be attended."""
    if attention_mask is None:
        return torch.ones(shape, dtype=torch.bool, device=device)[:, None, None, :]
    return attention_mask.to(torch.bool)[:, None, None, :]


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    *,
    causal: bool = False,
    dropout_p: float = 0.0,
    need_weights: bool = False,
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Scaled dot-product attention over padded batches.

    q, k, v: (B, nH, T, d); mask: (B, 1, 1|T, T) boolean, True = attend.  Returns the context
    (B, nH, T, d) and, when ``need_weights``, the probabilities (B, nH, T, T).
    """
    if causal:
        t = q.shape[-2]
        mask = mask & torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    if not need_weights:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p), None
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # (B, nH, T, T)
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    probs = F.dropout(scores.softmax(-1), p=dropout_p)
    return probs @ v, probs


# --------------------------------------------------------------------------------------------
# Base model
# --------------------------------------------------------------------------------------------
def resolve_dtype(value: Any, config: PretrainedConfig) -> torch.dtype:
    """torch_dtype argument → dtype: None is float32 (as the reference), "auto" reads the config."""
    if value is None:
        return torch.float32
    if value == "auto":
        value = getattr(config, "torch_dtype", None) or "float32"
    if isinstance(value, torch.dtype):
        return value
    dtype = getattr(torch, str(value).replace("torch.", ""), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"Unknown dtype {value!r}; use float32, float16, bfloat16 or 'auto'")
    return dtype


class PreTrainedModel(nn.Module):
    """Base of every model class: loading, saving, weight init and tying.

    Class attributes are the checkpoint rules (data, not code paths):
      ``base_model_prefix``   attribute name of the body inside head models (``bert``)
      ``checkpoint_renames``  (regex, replacement) applied to checkpoint keys
      ``checkpoint_drop``     regexes of checkpoint keys to ignore silently (old buffers)
      ``tied_keys``           {target: source} tied when ``config.tie_word_embeddings``
      ``checkpoint_aliases``  {our key: reference key} also written on save, for references
                              that read one tensor under a second name
    """

    config_class: type[PretrainedConfig] = PretrainedConfig
    base_model_prefix: str = ""
    checkpoint_renames: tuple[tuple[str, str], ...] = ()
    checkpoint_drop: tuple[str, ...] = (r"(^|\.)position_ids$",)
    tied_keys: dict[str, str] = {}
    checkpoint_aliases: dict[str, str] = {}

    def __init__(self, config: PretrainedConfig):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self.checkpoint_files: list[Path] = []

    # -- weights --------------------------------------------------------------------------
    def tied_weights(self) -> dict[str, str]:
        return dict(self.tied_keys) if getattr(self.config, "tie_word_embeddings", True) else {}

    def tie_weights(self) -> None:
        for target, source in self.tied_weights().items():
            module_name, _, name = target.rpartition(".")
            setattr(self.get_submodule(module_name), name, self.get_parameter(source))

    def init_weight(self, module: nn.Module, name: str, param: torch.Tensor) -> None:
        """The reference's initialisation for one parameter of ``module``."""
        with torch.no_grad():
            if isinstance(module, nn.LayerNorm) or name.endswith("bias"):
                param.fill_(1.0 if name == "weight" and isinstance(module, nn.LayerNorm) else 0.0)
                return
            param.normal_(mean=0.0, std=getattr(self.config, "initializer_range", 0.02))
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                param[module.padding_idx].zero_()

    def init_all_weights(self) -> None:
        for module in self.modules():
            for name, param in module.named_parameters(recurse=False):
                self.init_weight(module, name, param)
        self.tie_weights()

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: PretrainedConfig, *model_args: Any, torch_dtype: Any = None, **kwargs: Any):
        """A freshly initialised model (reference init), in eval mode."""
        config.update_known(kwargs)
        model = cls(config, *model_args)
        model.init_all_weights()
        return model.to(resolve_dtype(torch_dtype or kwargs.get("dtype"), config)).eval()

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike | None,
        *model_args: Any,
        config: Optional[PretrainedConfig] = None,
        state_dict: Optional[dict[str, torch.Tensor]] = None,
        output_loading_info: bool = False,
        ignore_mismatched_sizes: bool = False,
        torch_dtype: Any = None,
        **kwargs: Any,
    ):
        """Build on the meta device, load the checkpoint strictly, return in eval mode."""
        options = FetchOptions.pop_from(kwargs)
        torch_dtype = torch_dtype if torch_dtype is not None else kwargs.pop("dtype", None)
        source = None
        if config is None or state_dict is None:
            if pretrained_model_name_or_path is None:
                raise ValueError("from_pretrained needs a model name or path unless both config= and state_dict= are given")
            source = open_source(pretrained_model_name_or_path, options)
        if config is None:
            config = cls.config_class(**load_config_dict(source))
        unused = config.update_known(kwargs)
        if unused:
            logger.warning("%s.from_pretrained ignored arguments that are not config attributes: %s",
                           cls.__name__, ", ".join(sorted(unused)))
        dtype = resolve_dtype(torch_dtype, config)
        with torch.device("meta"):
            model = cls(config, *model_args)
        files = [] if state_dict is not None else weight_files(source)
        state = state_dict if state_dict is not None else read_checkpoint(files)
        info = load_into(model, dict(state), dtype=dtype, ignore_mismatched_sizes=ignore_mismatched_sizes,
                         source_name=", ".join(map(str, files)) or "state_dict")
        model.checkpoint_files = files
        _log_loading(cls.__name__, info)
        model.eval()
        return (model, info.as_dict()) if output_loading_info else model

    # -- saving ---------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """config.json + model.safetensors, loadable by autoload and by the reference library."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.architectures = [type(self).__name__]
        self.config.torch_dtype = str(self.dtype).replace("torch.", "")
        self.config.save_pretrained(directory)
        tied = self.tied_weights()
        tensors = {k: v.detach().contiguous() for k, v in self.state_dict().items() if k not in tied}
        for ours, alias in self.checkpoint_aliases.items():
            if ours in tensors:
                tensors[alias] = tensors[ours].clone()  # safetensors refuses shared storage
        save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})


def _log_loading(name: str, info: LoadingInfo) -> None:
    if info.missing_keys:
        logger.warning("%s: weights not in the checkpoint, newly initialised: %s", name, ", ".join(info.missing_keys))
    if info.unexpected_keys:
        logger.info("%s: checkpoint weights not used by this model: %s", name, ", ".join(info.unexpected_keys))
