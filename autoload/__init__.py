"""autoload: Auto* classes API-compatible with the reference library, native PyTorch models.

Exports resolve lazily, so ``from autoload import AutoTokenizer`` does not import torch.
"""
from importlib import import_module
from typing import Any

_EXPORTS = {
    "AutoConfig": "auto",
    "AutoModel": "auto",
    "AutoModelForCausalLM": "auto",
    "AutoModelForMaskedLM": "auto",
    "AutoModelForPreTraining": "auto",
    "AutoModelForQuestionAnswering": "auto",
    "AutoModelForSequenceClassification": "auto",
    "AutoModelForTokenClassification": "auto",
    "AutoModelWithLMHead": "auto",
    "AutoTokenizer": "tokenization",
    "PretrainedConfig": "configuration",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'autoload' has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
