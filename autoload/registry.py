"""Which model file implements which model type, and which class serves which head.

Discovered, not listed: every module of ``autoload.models`` that exports ``CONTRACT`` (a
:class:`~autoload.contract.ModelContract`) is an architecture, and its module name is its
``model_type`` with "-" written "_". A module is imported only when its type is asked for;
the name fallback, which must try every pattern, imports them all. Helper modules export no
``CONTRACT`` (and are best named with a leading underscore, which discovery skips).
"""
from __future__ import annotations

import functools
import importlib
import logging
import pkgutil
from dataclasses import dataclass

from .contract import ModelContract

logger = logging.getLogger(__name__)

MODELS_PACKAGE = "autoload.models"

# Head names used by the Auto classes.
BASE = "base"
PRETRAINING = "pretraining"
MASKED_LM = "masked_lm"
WITH_LM_HEAD = "with_lm_head"  # the seed's AutoModelWithLMHead: masked LM for encoders, causal LM for decoders
CAUSAL_LM = "causal_lm"
SEQUENCE_CLASSIFICATION = "sequence_classification"
QUESTION_ANSWERING = "question_answering"
# Start and end logits per token (the qa task's head), where the seed's QUESTION_ANSWERING class is
# another head: XLNet, XLM and FlauBERT map it to the SQuAD beam-search head (top-k spans).
SPAN_QUESTION_ANSWERING = "span_question_answering"
TOKEN_CLASSIFICATION = "token_classification"
ENCODER = "encoder"  # an encoder-decoder's encoder alone (T5EncoderModel): what embed runs on such a model


@dataclass(frozen=True)
class SeedType:
    """A model type the seed document names that no model file implements yet."""

    model_type: str
    rank: int  # place in the seed's fallback order (see ModelContract.rank)
    name_patterns: tuple[str, ...]
    tokenizer_class: str  # the reference tokenizer class, so tokenizer_config.json naming it is refused too


# The seed's model types still to be built, with their ranks. Asking for one (by model_type, by
# name, or by tokenizer class) raises NotImplementedModelType rather than "unknown type", and
# its patterns keep their place in the fallback order so "gpt2-medium" never matches a later
# pattern. An entry leaves this list when its model file (with a CONTRACT of the same rank) lands.
NOT_IMPLEMENTED: tuple[SeedType, ...] = (
)


class NotImplementedModelType(ValueError):
    """A model type the seed document names, which autoload does not implement yet."""

    def __init__(self, model_type: str, how: str = "") -> None:
        super().__init__(
            f"{model_type!r}{how} is a known seed model type, not implemented yet; "
            f"supported: {', '.join(known_model_types())}."
        )
        self.model_type = model_type


def _module_name(model_type: str) -> str:
    return model_type.replace("-", "_")


@functools.cache
def _module_names() -> tuple[str, ...]:
    package = importlib.import_module(MODELS_PACKAGE)
    return tuple(sorted(m.name for m in pkgutil.iter_modules(package.__path__)
                        if not m.ispkg and not m.name.startswith("_")))


def _contract_of(module_name: str) -> ModelContract | None:
    module = importlib.import_module(f"{MODELS_PACKAGE}.{module_name}")
    found = getattr(module, "CONTRACT", None)
    if found is not None and _module_name(found.model_type) != module_name:
        raise RuntimeError(f"{module.__name__} declares model_type {found.model_type!r}; its module must be named "
                           f"{_module_name(found.model_type)!r} for discovery to find it")
    return found


@functools.cache
def contracts() -> tuple[ModelContract, ...]:
    """Every implemented architecture's contract, in rank order (imports every model file)."""
    found = [c for c in map(_contract_of, _module_names()) if c is not None]
    return tuple(sorted(found, key=lambda c: c.rank))


def known_model_types() -> list[str]:
    return sorted(c.model_type for c in contracts())


def pending(model_type: str) -> SeedType | None:
    """The seed type still to come of this name, else None."""
    return next((seed for seed in NOT_IMPLEMENTED if seed.model_type == model_type), None)


def contract(model_type: str) -> ModelContract:
    """The contract of ``model_type``; a clear error for seed types still to come and unknown ones."""
    if pending(model_type) is not None:
        raise NotImplementedModelType(model_type)
    module_name = _module_name(str(model_type))
    found = _contract_of(module_name) if module_name in _module_names() else None
    if found is None or found.model_type != model_type:
        raise ValueError(f"Unknown model type {model_type!r}. Known model types: {', '.join(known_model_types())}.")
    return found


def name_patterns() -> list[tuple[str, str]]:
    """(substring, model_type) in the order the name fallback tries them: the seed's, by rank
    (implemented and pending types interleaved), so ``xlm-roberta`` beats ``roberta`` beats
    ``bert``, and ``distilbert`` / ``camembert`` / ``albert`` / ``flaubert`` beat ``bert``."""
    entries = [(c.rank, c.name_patterns, c.model_type) for c in contracts()]
    entries += [(s.rank, s.name_patterns, s.model_type) for s in NOT_IMPLEMENTED]
    return [(pattern, model_type) for _, patterns, model_type in sorted(entries) for pattern in patterns]


def model_type_from_name(name: str) -> str:
    """The model type whose pattern the name's last component contains first; a clear error for a
    seed type still to come, or a ValueError listing the known ones when no pattern matches."""
    # Only the last path component counts: a parent directory ("/home/albert/...", a temporary
    # "pytest-of-..." path) says nothing about the model inside it.
    lowered = str(name).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1].lower()
    for pattern, model_type in name_patterns():
        if pattern in lowered:
            if pending(model_type) is not None:
                raise NotImplementedModelType(model_type, f" (from the name {name!r})")
            logger.info("no model_type given; %r matched name pattern %r → %s", name, pattern, model_type)
            return model_type
    raise ValueError(
        f"Unrecognized model in {name!r}: its config.json has no 'model_type' and the name contains none "
        f"of the known patterns. Known model types: {', '.join(known_model_types())}. "
        "Add \"model_type\" to config.json."
    )


def config_class(model_type: str) -> type:
    return contract(model_type).config_class


def head_class(model_type: str, head: str) -> type:
    heads = contract(model_type).heads
    if head not in heads:
        raise ValueError(
            f"Model type {model_type!r} has no {head.replace('_', ' ')} head. "
            f"Its heads: {', '.join(sorted(heads))}."
        )
    return heads[head]
