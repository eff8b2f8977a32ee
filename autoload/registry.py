"""Which module implements which model type, and which class serves which head.

A table, not decorators: a model module is imported only when its type is asked for.
Each module in ``autoload.models`` exports ``CONFIG_CLASS`` and ``HEADS`` (head name → class).
"""
from __future__ import annotations

import importlib
import logging
from types import ModuleType

logger = logging.getLogger(__name__)

# model_type (as written in config.json) → module under autoload.models
MODEL_MODULES: dict[str, str] = {
    "bert": "bert",
    "roberta": "roberta",
    "xlm-roberta": "xlm_roberta",
    "camembert": "camembert",
    "distilbert": "distilbert",
    "albert": "albert",
    "electra": "electra",
}

# Head names used by the Auto classes.
BASE = "base"
PRETRAINING = "pretraining"
MASKED_LM = "masked_lm"
CAUSAL_LM = "causal_lm"
SEQUENCE_CLASSIFICATION = "sequence_classification"
QUESTION_ANSWERING = "question_answering"
TOKEN_CLASSIFICATION = "token_classification"


def name_patterns() -> list[tuple[str, str]]:
    """(substring, model_type) tried in order: longest first, so ``xlm-roberta`` beats
    ``roberta`` beats ``bert``, and ``distilbert``/``camembert``/``albert`` beat ``bert``."""
    patterns = {t: t for t in MODEL_MODULES}
    patterns.update({t.replace("-", "_"): t for t in MODEL_MODULES if "-" in t})
    return sorted(patterns.items(), key=lambda item: (-len(item[0]), item[0]))


def model_type_from_name(name: str) -> str:
    """The model type whose pattern the name contains, or a ValueError listing the known ones."""
    lowered = str(name).lower()
    for pattern, model_type in name_patterns():
        if pattern in lowered:
            logger.info("config has no model_type; %r matched name pattern %r → %s", name, pattern, model_type)
            return model_type
    raise ValueError(
        f"Unrecognized model in {name!r}: its config.json has no 'model_type' and the name contains none "
        f"of the known patterns. Known model types: {', '.join(known_model_types())}. "
        "Add \"model_type\" to config.json."
    )


def known_model_types() -> list[str]:
    return sorted(MODEL_MODULES)


def model_module(model_type: str) -> ModuleType:
    if model_type not in MODEL_MODULES:
        raise ValueError(
            f"Unknown model type {model_type!r}. Known model types: {', '.join(known_model_types())}."
        )
    return importlib.import_module(f"autoload.models.{MODEL_MODULES[model_type]}")


def config_class(model_type: str):
    return model_module(model_type).CONFIG_CLASS


def head_class(model_type: str, head: str):
    heads = model_module(model_type).HEADS
    if head not in heads:
        raise ValueError(
            f"Model type {model_type!r} has no {head.replace('_', ' ')} head. "
            f"Its heads: {', '.join(sorted(heads))}."
        )
    return heads[head]
