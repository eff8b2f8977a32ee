"""Where the seed API says what happens to keyword arguments, ``config=`` and ``from_tf``, and
the generic config names every architecture answers to."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autoload import AutoConfig, AutoModel, AutoModelForSequenceClassification, registry
from autoload.models.bert import BertConfig, BertModel
from autoload.models.distilbert import DistilBertConfig

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64)
GENERIC_NAMES = ("hidden_size", "num_attention_heads", "num_hidden_layers", "max_position_embeddings")


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bert-tiny")
    transformers.BertModel(transformers.BertConfig(**TINY)).save_pretrained(path)
    return path


# ---- kwargs that are not config attributes reach the model's __init__ --------------------------
@pytest.mark.parametrize("load", [AutoModel.from_pretrained, BertModel.from_pretrained], ids=["auto", "class"])
def test_model_kwargs_reach_init(bert_dir: Path, load) -> None:
    model, info = load(bert_dir, add_pooling_layer=False, output_attentions=True, output_loading_info=True)
    assert model.pooler is None
    assert model.config.output_attentions is True  # a config attribute still updates the config
    assert not hasattr(model.config, "add_pooling_layer")
    assert set(info["unexpected_keys"]) == {"pooler.dense.weight", "pooler.dense.bias"}
    assert model(torch.tensor([[5, 6, 7]])).pooler_output is None


def test_unknown_kwarg_is_an_error_not_a_warning(bert_dir: Path) -> None:
    with pytest.raises(TypeError, match="no_such_option"):
        AutoModel.from_pretrained(bert_dir, no_such_option=1)


def test_from_config_passes_model_kwargs_and_keeps_the_config() -> None:
    config = BertConfig(**TINY)
    before = config.to_dict()
    model = AutoModel.from_config(config, add_pooling_layer=False, hidden_dropout_prob=0.3)
    assert model.pooler is None and model.config.hidden_dropout_prob == 0.3
    assert config.to_dict() == before


# ---- an explicit config= is not mutated ----------------------------------------------------------
@pytest.mark.parametrize("load", [AutoModelForSequenceClassification.from_pretrained,
                                  registry.head_class("bert", registry.SEQUENCE_CLASSIFICATION).from_pretrained],
                         ids=["auto", "class"])
def test_explicit_config_is_not_mutated(bert_dir: Path, load) -> None:
    config = AutoConfig.from_pretrained(bert_dir)
    before = config.to_dict()
    model = load(bert_dir, config=config, num_labels=5, output_hidden_states=True)
    assert model.classifier.out_features == 5 and model.config.output_hidden_states is True
    assert model.config is not config
    assert config.to_dict() == before


# ---- from_tf ---------------------------------------------------------------------------------------
def test_from_tf_is_a_clear_error(bert_dir: Path, tmp_path: Path) -> None:
    config = AutoConfig.from_pretrained(bert_dir)
    checkpoint = tmp_path / "model.ckpt.index"  # the seed's example: a TF index file and a config
    checkpoint.write_bytes(b"not a pytorch checkpoint")
    with pytest.raises(ValueError, match=r"from_tf=True: autoload cannot read TensorFlow checkpoints"):
        AutoModel.from_pretrained(checkpoint, from_tf=True, config=config)
    with pytest.raises(ValueError, match=r"from_tf=True"):
        AutoModel.from_pretrained(tmp_path / "no-config-here", from_tf=True)
    with pytest.raises(ValueError, match=r"from_tf=True"):
        BertModel.from_pretrained(bert_dir, from_tf=True)
    assert isinstance(AutoModel.from_pretrained(bert_dir, from_tf=False), BertModel)


# ---- attribute_map: one name for every architecture -------------------------------------------------
@pytest.mark.parametrize("model_type", registry.known_model_types())
def test_generic_config_names_match_the_reference(model_type: str) -> None:
    if model_type == "transfo-xl":
        pytest.skip("5.24 has no Transformer-XL: test_model_transfo_xl.py compares with 4.37.2's config defaults")
    ours, theirs = AutoConfig.for_model(model_type), transformers.AutoConfig.for_model(model_type)
    for name in GENERIC_NAMES:
        if not hasattr(theirs, name):  # 5.24's T5Config has no max_position_embeddings (ours maps it to n_positions)
            continue
        assert getattr(ours, name) == getattr(theirs, name), name


def test_attribute_map_reads_writes_and_overrides_through(tmp_path: Path) -> None:
    config = DistilBertConfig(hidden_size=64, num_hidden_layers=3)
    assert (config.dim, config.n_layers) == (64, 3)
    config.num_attention_heads = 8
    assert config.n_heads == 8
    assert not set(DistilBertConfig.attribute_map) & set(config.to_dict())  # written once, by its own name
    config.save_pretrained(tmp_path)
    loaded, unused = AutoConfig.from_pretrained(tmp_path, hidden_size=96, return_unused_kwargs=True)
    assert (loaded.dim, loaded.hidden_size, unused) == (96, 96, {})
