"""The README's coverage table is the one the model files' contracts give, and every cell the
seed document (auto_classes.txt) lists is filled."""
from __future__ import annotations

import re

import pytest

from autoload import coverage
from conftest import REPO

# What the seed document maps by configuration class (auto_classes.txt, "isInstance of ...
# configuration class"), and the tokenizer name patterns it lists: (Auto class, model type).
DOCUMENT_CELLS = (
    [("AutoModel", t) for t in ("distilbert", "roberta", "bert", "openai-gpt", "gpt2", "ctrl", "transfo-xl", "xlnet",
                                "xlm", "flaubert", "electra")]
    + [("AutoModelForTokenClassification", t) for t in ("distilbert", "xlm", "xlm-roberta", "bert", "albert", "xlnet",
                                                         "camembert", "roberta", "electra")]
    + [("AutoTokenizer", t) for t in ("t5", "distilbert", "albert", "camembert", "xlm-roberta", "roberta", "bert",
                                      "openai-gpt", "gpt2", "transfo-xl", "xlnet", "xlm", "ctrl", "electra")]
)


def test_the_readme_table_is_the_generated_one() -> None:
    readme = (REPO / "README.md").read_text()
    found = re.search(r"<!-- coverage: python -m autoload.coverage -->\n(.*?)\n<!-- /coverage -->", readme, re.S)
    assert found, "README.md lacks the coverage table markers"
    assert found.group(1).strip() == coverage.table(), "README's coverage table is stale: paste `python -m autoload.coverage`"


@pytest.mark.parametrize("auto_class, model_type", DOCUMENT_CELLS)
def test_every_cell_the_document_lists_is_filled(auto_class: str, model_type: str) -> None:
    column = [a.__name__ for a in coverage.AUTO_CLASSES].index(auto_class)
    assert coverage.loaded_class(model_type, coverage.AUTO_CLASSES[column]) != coverage.NONE


def test_every_seed_type_has_a_config_a_tokenizer_and_a_base_model() -> None:
    for row in coverage.rows():
        assert coverage.NONE not in row[1:4], row
