"""DistilBERT × every head: parity with the reference, loading reports, batch invariance."""
import torch
from model_harness import ModelCase, generic_tests, transformers

import autoload
from autoload.models.distilbert import DistilBertConfig

TINY = dict(vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64, num_labels=3)
HEADS = {
    "base": "DistilBertModel",
    "pretraining": "DistilBertForMaskedLM",
    "masked_lm": "DistilBertForMaskedLM",
    "with_lm_head": "DistilBertForMaskedLM",
    "sequence_classification": "DistilBertForSequenceClassification",
    "token_classification": "DistilBertForTokenClassification",
    "question_answering": "DistilBertForQuestionAnswering",
}
CASES = [
    ModelCase("distilbert", "DistilBertConfig", TINY, HEADS, uses_token_types=False),
    # Non-default options: other activations, fixed sinusoidal positions, untied LM decoder, another pad id.
    ModelCase("distilbert-relu-sinusoidal-untied", "DistilBertConfig",
              {**TINY, "activation": "relu", "sinusoidal_pos_embds": True, "tie_word_embeddings": False,
               "pad_token_id": 1}, HEADS, uses_token_types=False),
    ModelCase("distilbert-gelu_new-sinusoidal", "DistilBertConfig",
              {**TINY, "activation": "gelu_new", "sinusoidal_pos_embds": True}, HEADS, uses_token_types=False),
]

test_parity, test_loading_report, test_batch_invariance = generic_tests(CASES)


def test_config_defaults_and_aliases_match_reference() -> None:
    ours, reference = DistilBertConfig(), transformers.DistilBertConfig()
    for key, value in DistilBertConfig.defaults.items():
        assert getattr(reference, key) == value, key
    for alias in ("hidden_size", "num_attention_heads", "num_hidden_layers"):
        assert getattr(ours, alias) == getattr(reference, alias), alias
    # Aliases write through and are not serialised twice.
    config = DistilBertConfig(hidden_size=64)
    assert config.dim == 64 and "hidden_size" not in config.to_dict()


def test_sinusoidal_positions_initialised_as_reference() -> None:
    """Fresh models and checkpoints lacking the table both get the reference's fixed table."""
    config = {**TINY, "sinusoidal_pos_embds": True}
    reference = transformers.DistilBertModel(CASES[0].reference_config(sinusoidal_pos_embds=True))
    expected = reference.embeddings.position_embeddings.weight.detach()
    fresh = autoload.AutoModel.from_config(DistilBertConfig(**config))
    table = fresh.embeddings.position_embeddings.weight
    torch.testing.assert_close(table, expected, atol=0, rtol=0)
    assert not table.requires_grad

    state = {k: v for k, v in fresh.state_dict().items() if "position_embeddings" not in k}
    loaded, info = autoload.AutoModel.from_pretrained(None, config=DistilBertConfig(**config), state_dict=state,
                                                      output_loading_info=True)
    assert info["missing_keys"] == ["embeddings.position_embeddings.weight"]
    torch.testing.assert_close(loaded.embeddings.position_embeddings.weight, expected, atol=0, rtol=0)
