"""Parity coverage comes from the registry: every architecture a model file declares, and every
head in its contract, has a parity case (a ``ModelCase`` in a ``test_model_*.py`` next to this
file), so a new architecture is picked up, and failing here, until its test file covers it."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from autoload import registry

transformers = pytest.importorskip("transformers")

HERE = Path(__file__).resolve().parent


def _cases() -> list:
    cases = []
    for path in sorted(HERE.glob("test_model_*.py")):
        spec = importlib.util.spec_from_file_location(f"_coverage_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        cases += getattr(module, "CASES", [])
    return cases


def covered_heads() -> dict[str, set[str]]:
    """model_type → the heads some parity case runs for it."""
    covered: dict[str, set[str]] = {}
    for case in _cases():
        # A golden-fixture case (an architecture today's reference lacks) names its model_type itself.
        model_type = getattr(case, "model_type", None) or getattr(transformers, case.config_class).model_type
        covered.setdefault(model_type, set()).update(case.heads)
    return covered


@pytest.mark.parametrize("model_type", registry.known_model_types())
def test_every_declared_head_has_a_parity_case(model_type: str) -> None:
    declared = set(registry.contract(model_type).heads)
    missing = declared - covered_heads().get(model_type, set())
    assert not missing, (f"{model_type} declares head(s) {sorted(missing)} that no parity case runs: add ModelCase "
                         f"entries to a test_model_*.py in {HERE}")
