"""Weight files: formats, shards, old key names, dtype, tying, and every bad-input error."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from autoload import AutoModel, AutoModelForMaskedLM
from autoload.checkpoint import CheckpointError

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64)
IDS = torch.tensor([[5, 17, 42, 8, 63, 2], [9, 33, 4, 0, 0, 0]])
MASK = (IDS != 0).long()


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(transformers.BertConfig(**TINY)).eval()
    path = tmp_path_factory.mktemp("ref")
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def expected_logits(reference_dir: Path) -> torch.Tensor:
    model = transformers.BertForMaskedLM.from_pretrained(reference_dir).eval()
    with torch.no_grad():
        return model(input_ids=IDS, attention_mask=MASK).logits


def _copy_config(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "config.json").write_text((src / "config.json").read_text())


def _logits(path: Path, **kwargs) -> torch.Tensor:
    model = AutoModelForMaskedLM.from_pretrained(path, **kwargs)
    with torch.no_grad():
        return model(IDS, MASK).logits


def test_pytorch_bin_loads_with_weights_only(reference_dir, expected_logits, tmp_path):
    _copy_config(reference_dir, tmp_path)
    torch.save(load_file(str(reference_dir / "model.safetensors")), tmp_path / "pytorch_model.bin")
    torch.testing.assert_close(_logits(tmp_path), expected_logits, atol=1e-5, rtol=1e-5)


def test_safetensors_preferred_over_bin(reference_dir, expected_logits, tmp_path):
    _copy_config(reference_dir, tmp_path)
    (tmp_path / "model.safetensors").write_bytes((reference_dir / "model.safetensors").read_bytes())
    (tmp_path / "pytorch_model.bin").write_bytes(b"not a checkpoint at all")
    torch.testing.assert_close(_logits(tmp_path), expected_logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_sharded_checkpoints(reference_dir, expected_logits, tmp_path, fmt):
    _copy_config(reference_dir, tmp_path)
    state = load_file(str(reference_dir / "model.safetensors"))
    keys = sorted(state)
    shards = [keys[: len(keys) // 2], keys[len(keys) // 2:]]
    weight_map = {}
    for i, shard_keys in enumerate(shards):
        if fmt == "safetensors":
            name = f"model-{i + 1:05d}-of-00002.safetensors"
            save_file({k: state[k] for k in shard_keys}, str(tmp_path / name))
        else:
            name = f"pytorch_model-{i + 1:05d}-of-00002.bin"
            torch.save({k: state[k] for k in shard_keys}, tmp_path / name)
        weight_map.update({k: name for k in shard_keys})
    index = "model.safetensors.index.json" if fmt == "safetensors" else "pytorch_model.bin.index.json"
    (tmp_path / index).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    torch.testing.assert_close(_logits(tmp_path), expected_logits, atol=1e-5, rtol=1e-5)


def test_old_layernorm_names_and_decoder_bias(reference_dir, expected_logits, tmp_path):
    """TF-era checkpoints: LayerNorm.gamma/beta and the LM bias stored on the decoder."""
    _copy_config(reference_dir, tmp_path)
    state = load_file(str(reference_dir / "model.safetensors"))
    old = {}
    for key, value in state.items():
        key = key.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        old[key.replace("cls.predictions.bias", "cls.predictions.decoder.bias")] = value
    assert any(k.endswith("gamma") for k in old) and "cls.predictions.decoder.bias" in old
    save_file(old, str(tmp_path / "model.safetensors"))
    model, info = AutoModelForMaskedLM.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    with torch.no_grad():
        torch.testing.assert_close(model(IDS, MASK).logits, expected_logits, atol=1e-5, rtol=1e-5)


def test_tied_output_embeddings_share_storage(reference_dir):
    model = AutoModelForMaskedLM.from_pretrained(reference_dir)
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight


def test_dtype_argument(reference_dir, expected_logits):
    model = AutoModelForMaskedLM.from_pretrained(reference_dir, torch_dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    with torch.no_grad():
        logits = model(IDS, MASK).logits.float()
    torch.testing.assert_close(logits, expected_logits, atol=5e-2, rtol=5e-2)


def test_state_dict_argument(reference_dir, expected_logits):
    state = load_file(str(reference_dir / "model.safetensors"))
    model = AutoModelForMaskedLM.from_pretrained(reference_dir, state_dict=state)
    with torch.no_grad():
        torch.testing.assert_close(model(IDS, MASK).logits, expected_logits, atol=1e-5, rtol=1e-5)


# ---- bad input -------------------------------------------------------------------------------
def test_missing_config_names_file_and_place(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(OSError, match=r"No config\.json found in .*" + tmp_path.name):
        AutoModel.from_pretrained(tmp_path)


def test_missing_weights_lists_what_was_looked_for(reference_dir, tmp_path):
    _copy_config(reference_dir, tmp_path)
    with pytest.raises(CheckpointError, match=r"No model weights found in .*model\.safetensors.*pytorch_model\.bin"):
        AutoModel.from_pretrained(tmp_path)


def test_nonexistent_path_is_a_clear_error(tmp_path):
    with pytest.raises(OSError, match="not a local directory or file, not a URL"):
        AutoModel.from_pretrained(str(tmp_path / "nope"))


def test_truncated_safetensors_names_the_file(reference_dir, tmp_path):
    _copy_config(reference_dir, tmp_path)
    data = (reference_dir / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*corrupt or truncated"):
        AutoModel.from_pretrained(tmp_path)


def test_garbage_bin_names_the_file(reference_dir, tmp_path):
    _copy_config(reference_dir, tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(os.urandom(256))
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin.*corrupt, truncated or not a torch checkpoint"):
        AutoModel.from_pretrained(tmp_path)


class _Payload:
    """Unpickling this runs a shell command: the attack weights_only must stop."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_is_refused(reference_dir, tmp_path):
    _copy_config(reference_dir, tmp_path)
    marker = tmp_path / "pwned"
    state = dict(load_file(str(reference_dir / "model.safetensors")))
    state["evil"] = _Payload(marker)
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"Refused to load .*pytorch_model\.bin.*needs code to run"):
        AutoModel.from_pretrained(tmp_path)
    assert not marker.exists()


def test_shape_mismatch_is_an_error_unless_ignored(reference_dir, tmp_path):
    config = json.loads((reference_dir / "config.json").read_text())
    config["vocab_size"] = 120
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes((reference_dir / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match=r"bert\.embeddings\.word_embeddings\.weight: checkpoint \(99, 32\) vs model \(120, 32\).*ignore_mismatched_sizes=True"):
        AutoModelForMaskedLM.from_pretrained(tmp_path)
    model, info = AutoModelForMaskedLM.from_pretrained(tmp_path, ignore_mismatched_sizes=True, output_loading_info=True)
    mismatched = {key: (found, wanted) for key, found, wanted in info["mismatched_keys"]}
    assert mismatched["bert.embeddings.word_embeddings.weight"] == ((99, 32), (120, 32))
    assert model.bert.embeddings.word_embeddings.weight.shape == (120, 32)
    assert torch.isfinite(model.bert.embeddings.word_embeddings.weight).all()
