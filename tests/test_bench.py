"""The benchmark scripts stay runnable: a tiny model-level run and its plot."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("matplotlib")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import model_bench  # noqa: E402
import plot  # noqa: E402


def test_model_bench_writes_results_that_plot_draws(tmp_path: Path) -> None:
    results = tmp_path / "model.json"
    assert model_bench.main(["--texts", "6", "--runs", "1", "--device", "cpu", "--threads", "1",
                             "--sorted-batch-sizes", "4", "--output", str(results)]) == 0
    data = json.loads(results.read_text())
    names = [t["name"] for t in data["models"]["minilm"]["timings"]]
    assert names[0] == model_bench.OURS and any(n.startswith("sentence-transformers") for n in names)
    assert all(t["tokens_per_second"] > 0 for t in data["models"]["minilm"]["timings"])
    assert plot.main([str(results), str(tmp_path / "model.png")]) == 0
    assert (tmp_path / "model.png").stat().st_size > 10_000
