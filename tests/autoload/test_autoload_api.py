"""The Auto* API as the reference text describes it: config loading, overrides, registry, sources."""
from __future__ import annotations

import json
import os
from pathlib import Path

import fsspec
import pytest
import torch

import autoload
from autoload import AutoConfig, AutoModel, AutoModelForSequenceClassification, registry
from autoload.models.bert import BertConfig, BertModel

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bert-tiny")
    transformers.BertModel(transformers.BertConfig(**TINY)).save_pretrained(path)
    return path


# ---- AutoConfig -------------------------------------------------------------------------------
def test_config_from_directory_json_file_and_file_url(bert_dir):
    for reference in (bert_dir, bert_dir / "config.json", f"file://{bert_dir}"):
        config = AutoConfig.from_pretrained(reference)
        assert isinstance(config, BertConfig)
        assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (32, 2, 99)


def test_config_overrides_and_unused_kwargs(bert_dir):
    config = AutoConfig.from_pretrained(bert_dir, output_attentions=True, hidden_dropout_prob=0.3)
    assert config.output_attentions is True and config.hidden_dropout_prob == 0.3
    config, unused = AutoConfig.from_pretrained(bert_dir, output_attentions=True, foo=False, return_unused_kwargs=True)
    assert config.output_attentions is True
    assert unused == {"foo": False}
    assert not hasattr(config, "foo")


def test_config_round_trip_and_reference_reads_ours(bert_dir, tmp_path):
    config = AutoConfig.from_pretrained(bert_dir, num_labels=3)
    config.save_pretrained(tmp_path)
    again = AutoConfig.from_pretrained(tmp_path)
    assert again == config
    assert json.loads(again.to_json_string()) == config.to_dict()
    assert BertConfig.from_json_file(tmp_path / "config.json") == config
    theirs = transformers.AutoConfig.from_pretrained(tmp_path)
    assert (theirs.model_type, theirs.hidden_size, theirs.num_labels) == ("bert", 32, 3)
    assert theirs.id2label == config.id2label


def test_config_for_model_and_from_json_file(tmp_path):
    config = AutoConfig.for_model("bert", hidden_size=48)
    assert isinstance(config, BertConfig) and config.hidden_size == 48 and config.num_attention_heads == 12
    path = tmp_path / "my_configuration.json"
    config.to_json_file(path)
    assert AutoConfig.from_json_file(path).hidden_size == 48


def test_labels_from_json_use_int_ids(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "id2label": {"0": "neg", "1": "pos"}}))
    config = AutoConfig.from_pretrained(tmp_path)
    assert config.id2label == {0: "neg", 1: "pos"} and config.label2id == {"neg": 0, "pos": 1}
    assert config.num_labels == 2


@pytest.mark.parametrize("name, expected", [
    ("xlm-roberta-base", "xlm-roberta"),
    ("my_xlm_roberta_model", "xlm-roberta"),
    ("roberta-large", "roberta"),
    ("distilbert-base-uncased", "distilbert"),
    ("camembert-base", "camembert"),
    ("albert-base-v2", "albert"),
    ("google/electra-small-discriminator", "electra"),
    ("bert-base-uncased", "bert"),
    ("dbmdz/bert-base-german-cased", "bert"),
])
def test_name_patterns_longest_first(name, expected):
    assert registry.model_type_from_name(name) == expected


def test_config_without_model_type_falls_back_to_name(tmp_path):
    directory = tmp_path / "my-distilbert-finetune"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"dim": 64}))
    config = AutoConfig.from_pretrained(directory)
    assert config.model_type == "distilbert"


def test_unknown_model_type_lists_known_types(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama-ish"}))
    with pytest.raises(ValueError, match=r"Unknown model type 'llama-ish'\. Known model types: albert, bert, camembert"):
        AutoConfig.from_pretrained(tmp_path)
    anonymous = tmp_path / "plain"
    anonymous.mkdir()
    (anonymous / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"no 'model_type'.*Known model types: .*xlm-roberta"):
        AutoConfig.from_pretrained(anonymous)


def test_invalid_config_json_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        AutoConfig.from_pretrained(tmp_path)


# ---- Auto model classes ------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [autoload.AutoConfig, autoload.AutoModel, autoload.AutoModelForPreTraining,
                                 autoload.AutoModelWithLMHead, autoload.AutoModelForSequenceClassification,
                                 autoload.AutoModelForQuestionAnswering, autoload.AutoModelForTokenClassification])
def test_auto_classes_cannot_be_instantiated(cls):
    with pytest.raises(EnvironmentError, match="from_pretrained"):
        cls()


def test_from_config_builds_fresh_model_in_eval_mode():
    config = AutoConfig.for_model("bert", **TINY)
    model = AutoModel.from_config(config)
    assert isinstance(model, BertModel) and not model.training
    assert abs(model.encoder.layer[0].attention.self.query.weight.std().item() - 0.02) < 0.005


def test_from_pretrained_kwargs_update_config_and_outputs_index_like_tuples(bert_dir):
    model = AutoModel.from_pretrained(bert_dir, output_hidden_states=True)
    assert model.config.output_hidden_states is True
    ids = torch.tensor([[5, 6, 7]])
    out = model(ids)
    assert out[0] is out.last_hidden_state and out[1] is out.pooler_output
    assert out["pooler_output"] is out.pooler_output
    assert len(out.hidden_states) == TINY["num_hidden_layers"] + 1
    first, pooled, hidden = out
    assert first.shape == (1, 3, 32) and pooled.shape == (1, 32)


def test_with_lm_head_is_masked_lm(bert_dir):
    model = autoload.AutoModelWithLMHead.from_pretrained(bert_dir)
    assert type(model).__name__ == "BertForMaskedLM"


def test_missing_head_lists_available_heads():
    with pytest.raises(ValueError, match=r"'bert' has no .*Its heads: base, causal_lm"):
        registry.head_class("bert", "image_classification")


def test_config_given_explicitly(bert_dir):
    config = AutoConfig.from_pretrained(bert_dir, num_labels=4)
    model = AutoModelForSequenceClassification.from_pretrained(bert_dir, config=config)
    assert model.classifier.out_features == 4


# ---- sources: URLs, caches, download options ------------------------------------------------------
@pytest.fixture()
def memory_model(bert_dir):
    """The tiny model on fsspec's in-memory filesystem: a remote source without a server."""
    fs = fsspec.filesystem("memory")
    for path in bert_dir.iterdir():
        fs.pipe(f"/models/tiny/{path.name}", path.read_bytes())
    yield "memory://models/tiny"
    fs.rm("/models", recursive=True)


def test_remote_url_is_cached_once(memory_model, bert_dir, tmp_path):
    cache = tmp_path / "cache"
    model = AutoModel.from_pretrained(memory_model, cache_dir=cache)
    cached = sorted(p.name for p in cache.rglob("*") if p.is_file() and p.suffix not in (".lock", ".version"))
    assert cached == ["config.json", "model.safetensors"]
    reference = AutoModel.from_pretrained(bert_dir)
    for a, b in zip(model.state_dict().values(), reference.state_dict().values()):
        torch.testing.assert_close(a, b)
    # A second load reads the cache: removing the remote copy does not matter.
    fsspec.filesystem("memory").rm("/models/tiny/model.safetensors")
    AutoModel.from_pretrained(memory_model, cache_dir=cache)
    with pytest.raises(OSError, match="No model weights found in memory://models/tiny"):
        AutoModel.from_pretrained(memory_model, cache_dir=cache, force_download=True)


def test_changed_remote_file_is_fetched_again_and_nested_files_resolve(memory_model, tmp_path):
    from autoload.sources import FetchOptions, open_source

    cache = str(tmp_path / "cache")  # a plain string works as in the reference API
    assert AutoConfig.from_pretrained(memory_model, cache_dir=cache).hidden_dropout_prob == 0.1
    fs = fsspec.filesystem("memory")
    config = json.loads(fs.cat("/models/tiny/config.json"))
    config["hidden_dropout_prob"] = 0.25
    fs.pipe("/models/tiny/config.json", json.dumps(config, indent=4).encode())
    assert AutoConfig.from_pretrained(memory_model, cache_dir=cache).hidden_dropout_prob == 0.25

    fs.pipe("/models/tiny/1_Pooling/config.json", b'{"pooling_mode_mean_tokens": true}')
    source = open_source(memory_model, FetchOptions(cache_dir=cache))
    assert source.has("1_Pooling/config.json") and not source.has("2_Dense/config.json")
    assert json.loads(source.fetch("1_Pooling/config.json").read_text()) == {"pooling_mode_mean_tokens": True}


def test_resume_download_appends_to_partial_file(memory_model, bert_dir, tmp_path):
    cache = tmp_path / "cache"
    AutoConfig.from_pretrained(memory_model, cache_dir=cache)
    (config_path,) = cache.rglob("config.json")
    full = (bert_dir / "model.safetensors").read_bytes()
    partial = config_path.with_name("model.safetensors.incomplete")
    partial.write_bytes(full[:1000])
    AutoModel.from_pretrained(memory_model, cache_dir=cache, resume_download=True)
    assert config_path.with_name("model.safetensors").read_bytes() == full
    assert not partial.exists()


def test_names_resolve_through_local_caches(bert_dir, tmp_path, monkeypatch):
    ours = tmp_path / "cache" / "models" / "acme--tiny-bert"
    ours.mkdir(parents=True)
    for path in bert_dir.iterdir():
        (ours / path.name).write_bytes(path.read_bytes())
    assert AutoConfig.from_pretrained("acme/tiny-bert", cache_dir=tmp_path / "cache").hidden_size == 32

    hub = tmp_path / "hub"
    snapshot = hub / "models--acme--other-bert" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    for path in bert_dir.iterdir():
        (snapshot / path.name).write_bytes(path.read_bytes())
    (hub / "models--acme--other-bert" / "refs").mkdir()
    (hub / "models--acme--other-bert" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    assert isinstance(AutoModel.from_pretrained("acme/other-bert"), BertModel)
    with pytest.raises(OSError, match="not in the local caches"):
        AutoModel.from_pretrained("acme/absent-bert", cache_dir=tmp_path / "cache")


def test_unreachable_url_is_a_clear_error():
    with pytest.raises(OSError, match=r"Can't find model memory://nowhere/model"):
        AutoConfig.from_pretrained("memory://nowhere/model")


def test_cache_dir_env_default(monkeypatch, tmp_path):
    from autoload.sources import default_cache_dir

    monkeypatch.setenv("AUTOINFER_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("AUTOINFER_CACHE")
    assert default_cache_dir() == Path(os.path.expanduser("~")) / ".cache" / "autoinfer"
