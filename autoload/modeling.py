"""Shared model machinery: the PreTrainedModel base, output dataclasses, stable primitives.

Model files (``autoload/models/<arch>.py``) hold everything architecture-specific; this module
holds only what every architecture uses unchanged: loading/saving, attention call,
activations by name, output containers.
"""
from __future__ import annotations

import copy
import functools
import logging
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
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


# A decoder's key/value cache: per layer, (key, value), each (B, nH, T_past, d).
PastKeyValues = tuple[tuple[torch.Tensor, torch.Tensor], ...]


@dataclass
class BaseModelOutputWithPast(ModelOutput):
    last_hidden_state: torch.Tensor
    past_key_values: Optional[PastKeyValues] = None
    hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    attentions: Optional[tuple[torch.Tensor, ...]] = None


@dataclass
class CausalLMOutputWithPast(ModelOutput):
    logits: torch.Tensor
    past_key_values: Optional[PastKeyValues] = None
    hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    attentions: Optional[tuple[torch.Tensor, ...]] = None


@dataclass
class SequenceClassifierOutputWithPast(ModelOutput):
    logits: torch.Tensor
    past_key_values: Optional[PastKeyValues] = None
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


def causal_mask(attention_mask: Optional[torch.Tensor], query_length: int, past_length: int,
                device: torch.device) -> torch.Tensor:
    """A decoder's mask, (B|1, 1, T, P + T) boolean, True = attend: the query at absolute
    position P + i sees key j when j <= P + i and, given ``attention_mask`` (B, P + T) 0/1 over
    the cached and the new tokens, key j is a real token (so left-padded prompts work)."""
    keys = past_length + query_length
    allowed = torch.ones(query_length, keys, dtype=torch.bool, device=device).tril(diagonal=past_length)  # (T, P+T)
    if attention_mask is None:
        return allowed[None, None]
    return allowed[None, None] & attention_mask.to(torch.bool)[:, None, None, :]


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: Optional[torch.Tensor],
    *,
    causal: bool = False,
    dropout_p: float = 0.0,
    need_weights: bool = False,
    scale: Optional[float] = None,
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Scaled dot-product attention over padded batches.

    q: (B, nH, T, d); k, v: (B, nH, S, d); mask: (B, 1, 1|T, S) boolean, True = attend, or None
    when every key may be attended (SDPA runs faster without a mask).  ``causal`` is for
    T == S (no cache: build :func:`causal_mask` otherwise); ``scale`` defaults to 1/sqrt(d).
    Returns the context (B, nH, T, d) and, when ``need_weights``, the probabilities (B, nH, T, S).
    With ``need_weights`` a query whose keys are all masked (left padding before any real token)
    gets uniform weights over every key, as the reference's eager attention does (its additive
    mask swamps the scores); SDPA gives it a zero context.  Either way that query is padding.
    """
    if causal:
        t = q.shape[-2]
        tril = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
        mask = tril if mask is None else mask & tril
    if not need_weights:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale), None
    scores = q @ k.transpose(-1, -2)  # (B, nH, T, S)
    scores = scores / math.sqrt(q.shape[-1]) if scale is None else scores * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    probs = F.dropout(scores.softmax(-1), p=dropout_p)
    return probs @ v, probs


class FusedQKV:
    """Mixin for a self-attention module whose query, key and value projections are separate
    ``nn.Linear`` s (their own checkpoint keys, named by ``qkv_names``) but may run as one GEMM.

    One (N, H) x (H, 3H) product is faster than three (N, H) x (H, H) ones (on 2 CPU cores,
    MiniLM's shapes: 77 vs 49 GFLOP/s).  ``fuse_qkv`` builds the fused weight once, as a
    non-persistent buffer, so checkpoints and strict loading still see the three keys; call
    it again after changing those weights.
    """

    qkv_names: tuple[str, str, str] = ("query", "key", "value")

    def fuse_qkv(self) -> None:
        linears = [getattr(self, name) for name in self.qkv_names]
        with torch.no_grad():
            weight = torch.cat([linear.weight for linear in linears])  # (3H, H)
            bias = torch.cat([linear.bias for linear in linears])  # (3H,)
        self.register_buffer("qkv_weight", weight, persistent=False)
        self.register_buffer("qkv_bias", bias, persistent=False)

    def qkv(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., H) → (..., 3H): queries, keys and values side by side."""
        weight = getattr(self, "qkv_weight", None)
        if weight is not None:
            return F.linear(hidden, weight, self.qkv_bias)
        return torch.cat([getattr(self, name)(hidden) for name in self.qkv_names], dim=-1)


# --------------------------------------------------------------------------------------------
# Unpadded (flat) layout: the tokens of a batch back to back, no padding
# --------------------------------------------------------------------------------------------
def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array on ``device`` without waiting for the device: to a GPU through pinned
    memory with a non-blocking copy, so queued kernels keep running while the host prepares
    the next batch (a pageable copy would synchronise the stream)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


@dataclass(frozen=True)
class Segments:
    """Where each sequence lives in a flat (N, ...) token layout: sequence ``i`` is rows
    ``cu_seqlens[i]:cu_seqlens[i + 1]``.  Built once per batch and shared by every layer.

    Besides the offsets it carries what the layers and poolings index with, computed once:
    each token's sequence and position, and for attention without a variable-length kernel
    the token's slot in the padded (B, T) layout plus that layout's key mask.
    """

    cu_seqlens: torch.Tensor  # (B + 1,) int32: sequence start offsets, then N
    max_seqlen: int
    lengths: torch.Tensor  # (B,) int64
    sequence: torch.Tensor  # (N,) int64: the sequence of each token
    positions: torch.Tensor  # (N,) int64: each token's position within its sequence
    padded_index: torch.Tensor  # (N,) int64: sequence * max_seqlen + position
    mask: torch.Tensor  # (B, 1, 1, T) bool: True for real keys in the padded layout

    @classmethod
    def from_lengths(cls, lengths: Sequence[int] | np.ndarray | torch.Tensor,
                     device: torch.device | str | None = None) -> "Segments":
        """Segments of sequences with these lengths (each at least 1), on ``device``.

        Sizes come from the host copy, so building on a GPU queues work without waiting for it.
        """
        host = np.asarray(lengths.cpu() if isinstance(lengths, torch.Tensor) else lengths, dtype=np.int64)
        if host.ndim != 1 or len(host) == 0 or host.min() < 1:
            raise ValueError("Segments need a non-empty 1-d list of lengths, each at least 1")
        total, longest = int(host.sum()), int(host.max())
        offsets = np.zeros(len(host) + 1, dtype=np.int32)
        np.cumsum(host, out=offsets[1:])
        device = torch.device(device) if device is not None else torch.device("cpu")
        lengths_t = to_device(host, device)
        cu_seqlens = to_device(offsets, device)
        sequence = torch.repeat_interleave(torch.arange(len(host), device=device), lengths_t, output_size=total)
        positions = torch.arange(total, device=device) - cu_seqlens[:-1].long()[sequence]
        mask = torch.arange(longest, device=device)[None, :] < lengths_t[:, None]  # (B, T)
        return cls(cu_seqlens, longest, lengths_t, sequence, positions, sequence * longest + positions,
                   mask[:, None, None, :])

    @property
    def num_sequences(self) -> int:
        return self.lengths.shape[0]

    @property
    def num_tokens(self) -> int:
        return self.sequence.shape[0]

    @property
    def uniform(self) -> bool:
        """All sequences have the same length: the flat layout is the padded one."""
        return self.num_tokens == self.num_sequences * self.max_seqlen

    @property
    def first(self) -> torch.Tensor:
        """(B,) flat index of each sequence's first token (CLS / <s>)."""
        return self.cu_seqlens[:-1].long()

    @property
    def last(self) -> torch.Tensor:
        """(B,) flat index of each sequence's last token."""
        return self.cu_seqlens[1:].long() - 1


@functools.lru_cache(maxsize=None)
def _varlen_kernel() -> Optional[Callable[..., torch.Tensor]]:
    """torch's variable-length flash attention (torch >= 2.11, CUDA only), if installed.

    Looked up on first use, not at import: the module imports ``torch._dynamo`` (about 1.8 s
    on a small CPU), which CPU-only processes never need."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def _can_use_varlen_kernel(qkv: torch.Tensor, head_dim: int) -> bool:
    """The flash kernel's limits: CUDA sm80+, half precision, head dims up to 256 in steps of 8."""
    return (qkv.is_cuda and qkv.dtype in (torch.float16, torch.bfloat16) and head_dim % 8 == 0 and head_dim <= 256
            and torch.cuda.get_device_capability(qkv.device) >= (8, 0) and _varlen_kernel() is not None)


def varlen_attention(qkv: torch.Tensor, segments: Segments, num_heads: int, *, causal: bool = False,
                     scale: Optional[float] = None) -> torch.Tensor:
    """Self-attention within each sequence of a flat batch: (N, 3H) fused q|k|v → (N, H) context;
    ``scale`` multiplies the scores (default 1/sqrt(d)).

    On CUDA in half precision this is ``torch.nn.attention.varlen.varlen_attn`` (no padding at
    all).  Elsewhere the tokens are scattered into a zero (B, T) layout for SDPA and gathered
    back: on CPU that measured fastest (MiniLM shapes, 2 cores: nested jagged tensors ran
    1.3-24x slower, one SDPA call per sequence 1.3-19x slower), and the rows of a length-sorted
    micro-batch carry little padding.
    """
    total, width = qkv.shape
    hidden = width // 3
    head_dim = hidden // num_heads
    if _can_use_varlen_kernel(qkv, head_dim):
        q, k, v = qkv.view(total, 3, num_heads, head_dim).unbind(1)  # (N, nH, d) each, last dim contiguous
        window = (-1, 0) if causal else (-1, -1)
        out = _varlen_kernel()(q, k, v, segments.cu_seqlens, segments.cu_seqlens, segments.max_seqlen,
                               segments.max_seqlen, window_size=window, scale=scale)
        return out.reshape(total, hidden)
    batch, length = segments.num_sequences, segments.max_seqlen
    if segments.uniform:
        padded, mask = qkv, None  # already (B * T, 3H) in order, nothing to mask
    else:
        padded = qkv.new_zeros(batch * length, width).index_copy_(0, segments.padded_index, qkv)  # (B*T, 3H)
        mask = segments.mask
    q, k, v = padded.view(batch, length, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # (B, nH, T, d)
    context, _ = attention(q, k, v, mask, causal=causal, scale=scale)
    context = context.transpose(1, 2).reshape(batch * length, hidden)  # (B*T, H)
    return context if segments.uniform else context.index_select(0, segments.padded_index)  # (N, H)


def check_flat_inputs(model: nn.Module, input_ids: torch.Tensor, segments: Segments) -> None:
    """The flat forwards are for inference: no dropout, one id per token of ``segments``."""
    if model.training:
        raise RuntimeError(f"{type(model).__name__}.forward_flat is inference-only: call .eval() first")
    if input_ids.dim() != 1 or input_ids.shape[0] != segments.num_tokens:
        raise ValueError(f"forward_flat needs (N,) input ids with N = {segments.num_tokens} tokens, "
                         f"got shape {tuple(input_ids.shape)}")


def embed_flat(model: nn.Module, input_ids: torch.Tensor, segments: Segments,
               token_type_ids: Optional[torch.Tensor] = None, positions: Optional[torch.Tensor] = None) -> torch.Tensor:
    """A flat batch through ``model.embeddings`` (a padded-layout module taking ids, token
    types, positions and input embeddings) as one (1, N) row → (N, E).  Checks the inputs
    first; ``positions`` default to each token's position within its sequence."""
    check_flat_inputs(model, input_ids, segments)
    positions = segments.positions if positions is None else positions
    types = None if token_type_ids is None else token_type_ids[None]
    return model.embeddings(input_ids[None], types, positions[None], None)[0]


def pool_segments(hidden: torch.Tensor, segments: Segments, mode: str) -> torch.Tensor:
    """(N, H) token states of a flat batch → (B, H), one vector per sequence.

    ``mean`` averages a sequence's tokens, ``cls`` takes its first token, ``last`` its last
    one, ``max`` the element-wise maximum: what sentence-transformers computes on padded rows.
    """
    if mode == "cls":
        return hidden.index_select(0, segments.first)
    if mode == "last":
        return hidden.index_select(0, segments.last)
    width = hidden.shape[1]
    if mode == "mean":
        sums = hidden.new_zeros(segments.num_sequences, width).index_add_(0, segments.sequence, hidden)  # (B, H)
        return sums / segments.lengths[:, None].to(hidden.dtype)
    if mode == "max":
        index = segments.sequence[:, None].expand(-1, width)  # (N, H)
        start = hidden.new_full((segments.num_sequences, width), float("-inf"))
        return start.scatter_reduce_(0, index, hidden, "amax")
    raise ValueError(f"pooling must be one of mean, cls, last, max; got {mode!r}")


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

    def prepare_for_inference(self) -> "PreTrainedModel":
        """Eval mode plus inference-only fusions (one QKV GEMM per layer).  Call once the
        weights, device and dtype are final: fused copies don't follow later weight changes."""
        self.eval()
        for module in self.modules():
            if isinstance(module, FusedQKV):
                module.fuse_qkv()
        return self

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: PretrainedConfig, *model_args: Any, torch_dtype: Any = None, **kwargs: Any):
        """A freshly initialised model (reference init), in eval mode.  ``kwargs`` that are
        config attributes override a copy of ``config``; the others go to ``__init__``."""
        dtype = torch_dtype if torch_dtype is not None else kwargs.pop("dtype", None)
        config, model_kwargs = _config_and_model_kwargs(config, kwargs)
        model = cls(config, *model_args, **model_kwargs)
        model.init_all_weights()
        return model.to(resolve_dtype(dtype, config)).eval()

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
        """Build on the meta device, load the checkpoint strictly, return in eval mode.

        ``kwargs`` that are config attributes override the config (a copy of ``config=``, which
        stays as it was); the others go to the model's ``__init__`` with ``model_args``.
        """
        refuse_tf(kwargs)
        options = FetchOptions.pop_from(kwargs)
        torch_dtype = torch_dtype if torch_dtype is not None else kwargs.pop("dtype", None)
        source = None
        if config is None or state_dict is None:
            if pretrained_model_name_or_path is None:
                raise ValueError("from_pretrained needs a model name or path unless both config= and state_dict= are given")
            source = open_source(pretrained_model_name_or_path, options)
        if config is None:
            config = cls.config_class(**load_config_dict(source))
        config, model_kwargs = _config_and_model_kwargs(config, kwargs)
        dtype = resolve_dtype(torch_dtype, config)
        with torch.device("meta"):
            model = cls(config, *model_args, **model_kwargs)
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


def refuse_tf(kwargs: dict[str, Any]) -> None:
    """Take ``from_tf`` out of ``kwargs``; True is an error until a model source reads
    TensorFlow checkpoints (silently loading something else would be worse)."""
    if kwargs.pop("from_tf", False):
        raise ValueError(
            "from_tf=True: autoload cannot read TensorFlow checkpoints (model.ckpt.index, tf_model.h5). "
            "Convert the checkpoint to PyTorch first (load it with the reference library's from_tf=True "
            "and save_pretrained, which writes model.safetensors), then load that directory."
        )


def _config_and_model_kwargs(config: PretrainedConfig, kwargs: dict[str, Any]) -> tuple[PretrainedConfig, dict[str, Any]]:
    """A copy of ``config`` with the kwargs that are its attributes applied, and the others:
    the model's own ``__init__`` arguments (``add_pooling_layer=False``, ...)."""
    config = copy.deepcopy(config)
    return config, config.update_known(kwargs)


def _log_loading(name: str, info: LoadingInfo) -> None:
    if info.missing_keys:
        logger.warning("%s: weights not in the checkpoint, newly initialised: %s", name, ", ".join(info.missing_keys))
    if info.unexpected_keys:
        logger.info("%s: checkpoint weights not used by this model: %s", name, ", ".join(info.unexpected_keys))
