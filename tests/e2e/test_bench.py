"""The benchmark scripts stay runnable: a tiny model-level run and its plot."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytest.importorskip("sentence_transformers")
pytest.importorskip("matplotlib")
sys.path.insert(0, str(REPO / "bench"))

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


def test_without_the_packaged_model_minilm_is_a_random_model_of_its_shape(tmp_path: Path, monkeypatch) -> None:
    """A GPU box without the MiniLM package (no network there) still runs the benchmark: a
    random-weight model of MiniLM's shape with a vocabulary covering the generated texts."""
    import common
    from autoload import AutoConfig, AutoTokenizer

    monkeypatch.setattr(common, "CACHE", tmp_path)
    monkeypatch.setattr(common, "packaged_minilm", lambda: None)
    path = common.model_path(common.MINILM)
    assert path == tmp_path / "minilm-shape" and (path / "model.safetensors").exists()
    config = AutoConfig.from_pretrained(path)
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size) == (384, 6, 1536)
    tokenizer = AutoTokenizer.from_pretrained(path)
    texts = common.generate_texts(20)
    encodings = tokenizer(texts)["input_ids"]
    assert tokenizer.unk_token_id not in {i for ids in encodings for i in ids}
    words = sum(len(t.split()) for t in texts)
    assert words < sum(len(ids) for ids in encodings) < 1.3 * words  # about a token per word, plus full stops


def test_causal_bench_writes_both_tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import causal_bench

    monkeypatch.setattr(causal_bench, "CACHE", tmp_path / "cache")
    output = tmp_path / "causal.json"
    assert causal_bench.main(["--shape", "tiny", "--texts", "6", "--runs", "1", "--context", "64", "--new-tokens", "4",
                              "--device", "cpu", "--output", str(output)]) == 0
    results = json.loads(output.read_text())
    for task in ("score", "generate"):
        names = [t["name"] for t in results[task]["timings"]]
        assert names[0].startswith("ours") and names[1].startswith("transformers")
        assert all(t["tokens_per_second"] > 0 for t in results[task]["timings"]) and results[task]["ratio"] > 0
