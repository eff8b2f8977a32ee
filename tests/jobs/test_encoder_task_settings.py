"""The encoder tasks' settings resolved in the driver (no Ray): embed's prompts, precisions,
calibration and dimensions, classify's default function, fill-mask on a causal LM; every
mistake refused before anything starts, with a message that says what to do."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.model import ModelError, resolve
from jobs.options import SpecError
from jobs.spec import parse_spec


@pytest.fixture(autouse=True)
def no_weight_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about settings: skip hashing the 90 MB of MiniLM's weights per resolve."""
    import jobs.model

    monkeypatch.setattr(jobs.model, "weights_digest", lambda files: "0" * 64)


def _settings(*argv: str) -> dict:
    spec = parse_spec([*argv, "--input", "in", "--output", "out"])
    task = spec.make_task()
    return task.settings(resolve(spec, task))


def _with_prompts(tmp_path: Path, minilm: str, **config) -> Path:
    """MiniLM with a config_sentence_transformers.json of ``config``."""
    directory = tmp_path / "minilm"
    directory.mkdir()
    for path in Path(minilm).rglob("*"):
        if path.is_file():
            target = directory / path.relative_to(minilm)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    (directory / "config_sentence_transformers.json").write_text(json.dumps(config))
    return directory


def test_embed_prompts_from_the_model_and_of_your_own(tmp_path: Path, minilm: str) -> None:
    model = str(_with_prompts(tmp_path, minilm, prompts={"query": "query: ", "passage": "passage: "},
                              default_prompt_name="query"))
    assert _settings("--model", model)["prompt_text"] == "query: "  # the model's default prompt
    assert _settings("--model", model, "--prompt-name", "passage")["prompt_text"] == "passage: "
    assert _settings("--model", model, "--prompt", "Represent this: ")["prompt_text"] == "Represent this: "
    assert _settings("--model", minilm)["prompt_text"] == ""
    with pytest.raises(SpecError, match="--prompt-name title: the model's config_sentence_transformers.json has "
                                        "prompts passage, query"):
        _settings("--model", model, "--prompt-name", "title")
    with pytest.raises(SpecError, match="give --prompt or --prompt-name, not both"):
        _settings("--model", model, "--prompt-name", "query", "--prompt", "q: ")


def test_embed_precision_dimensions_and_calibration_are_checked(tmp_path: Path, minilm: str) -> None:
    assert _settings("--model", minilm, "--precision", "ubinary", "--dimensions", "64")["precision"] == "ubinary"
    assert _settings("--model", minilm, "--embedding-dtype", "float16")["precision"] == "float16"
    with pytest.raises(SpecError, match="--precision int8 needs --calibration FILE"):
        _settings("--model", minilm, "--precision", "int8")
    with pytest.raises(SpecError, match="--calibration applies to --precision int8 or uint8, not binary"):
        _settings("--model", minilm, "--precision", "binary", "--calibration", "x.json")
    with pytest.raises(SpecError, match="--dimensions 500 is more than the model's 384-value embeddings"):
        _settings("--model", minilm, "--dimensions", "500")
    with pytest.raises(SpecError, match="--precision float32 and --embedding-dtype float16 disagree"):
        _settings("--model", minilm, "--precision", "float32", "--embedding-dtype", "float16")
    ranges = [[-1.0] * 32, [1.0] * 32]
    (tmp_path / "ranges.json").write_text(json.dumps({"ranges": ranges}))
    settings = _settings("--model", minilm, "--precision", "uint8", "--dimensions", "32", "--calibration",
                         str(tmp_path / "ranges.json"))
    assert settings["calibration_ranges"] == ranges
    with pytest.raises(SpecError, match=r"ranges of shape \(2, 32\), the embeddings need \(2, 16\)"):
        _settings("--model", minilm, "--precision", "int8", "--dimensions", "16", "--calibration",
                  str(tmp_path / "ranges.json"))
    # Parquet embeddings (a float run's output, with a null row for a bad input row): their min and max.
    values = np.random.default_rng(0).normal(size=(10, 16)).astype(np.float32)
    column = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), 16)
    pq.write_table(pa.table({"embedding": pa.concat_arrays([column, pa.nulls(1, column.type)])}),
                   tmp_path / "sample.parquet")
    settings = _settings("--model", minilm, "--precision", "int8", "--dimensions", "16", "--calibration",
                         str(tmp_path / "sample.parquet"))
    np.testing.assert_allclose(settings["calibration_ranges"], [values.min(0), values.max(0)], rtol=1e-6)
    with pytest.raises(SpecError, match="can't read calibration ranges"):
        _settings("--model", minilm, "--precision", "int8", "--calibration", str(tmp_path / "missing.json"))


def test_fill_mask_refuses_a_causal_lm_and_a_checkpoint_without_its_head(tmp_path: Path, minilm: str) -> None:
    from causal_lm_data import tiny_gpt2

    gpt2 = tiny_gpt2(tmp_path / "gpt2")
    with pytest.raises(ModelError, match="it needs a masked language model"):
        _settings("--task", "fill-mask", "--model", str(gpt2))
    with pytest.raises(ModelError, match="not a masked language model checkpoint"):
        _settings("--task", "fill-mask", "--model", minilm)  # an embedding model: no trained MLM head
