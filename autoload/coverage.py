"""The coverage table: for each model type the seed document names, the class each Auto class
loads (README, "Model coverage").  ``python -m autoload.coverage`` prints it; a test keeps
the README's copy equal to it, so the table can't drift from the model files' contracts."""
from __future__ import annotations

from . import auto, registry
from .tokenization.auto import AutoTokenizer

# The seed's Auto classes, in the document's order (auto_classes.txt).
AUTO_CLASSES = (auto.AutoConfig, AutoTokenizer, auto.AutoModel, auto.AutoModelForPreTraining,
                auto.AutoModelWithLMHead, auto.AutoModelForSequenceClassification,
                auto.AutoModelForQuestionAnswering, auto.AutoModelForTokenClassification)
# The seed's fallback order of name patterns (auto_classes.txt, AutoTokenizer), plus flaubert,
# which the document maps only from its configuration class.
SEED_TYPES = ("t5", "distilbert", "albert", "camembert", "xlm-roberta", "roberta", "bert", "openai-gpt", "gpt2",
              "transfo-xl", "xlnet", "flaubert", "xlm", "ctrl", "electra")
NONE = "—"


def loaded_class(model_type: str, auto_class: type) -> str:
    """The name of the class ``auto_class`` loads for ``model_type`` (``NONE``: it has no such head)."""
    found = registry.contract(model_type)
    if auto_class is auto.AutoConfig:
        return found.config_class.__name__
    if auto_class is AutoTokenizer:
        return found.tokenizer_class
    head = found.heads.get(auto_class.head)
    return head.__name__ if head is not None else NONE


def rows() -> list[list[str]]:
    return [[model_type, *(loaded_class(model_type, a) for a in AUTO_CLASSES)] for model_type in SEED_TYPES]


def table() -> str:
    """The Markdown table: a row per seed model type, a column per Auto class."""
    header = ["model type", *(a.__name__ for a in AUTO_CLASSES)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(f"`{cell}`" if cell != NONE else cell for cell in row) + " |" for row in rows()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
