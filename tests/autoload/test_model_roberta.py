"""RoBERTa, XLM-RoBERTa, CamemBERT × every head: parity, loading reports, batch invariance."""
import pytest
import torch
from model_harness import ModelCase, build_reference, generic_tests, padded_batch, transformers

import autoload
from autoload import registry
from autoload.models.roberta import position_ids_from_input_ids

# pad_token_id is explicit: the harness pads with it, and RoBERTa's positions count from it.
TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64, type_vocab_size=2, num_labels=3, pad_token_id=1)


def _heads(prefix: str) -> dict[str, str]:
    return {
        "base": f"{prefix}Model",
        "pretraining": f"{prefix}ForMaskedLM",  # the reference's AutoModelForPreTraining choice
        "masked_lm": f"{prefix}ForMaskedLM",
        "with_lm_head": f"{prefix}ForMaskedLM",
        "causal_lm": f"{prefix}ForCausalLM",
        "sequence_classification": f"{prefix}ForSequenceClassification",
        "token_classification": f"{prefix}ForTokenClassification",
        "question_answering": f"{prefix}ForQuestionAnswering",
    }


ROBERTA, XLMR, CAMEMBERT = _heads("Roberta"), _heads("XLMRoberta"), _heads("Camembert")
CASES = [
    ModelCase("roberta", "RobertaConfig", TINY, ROBERTA),
    # Non-default options: other activations, untied embeddings (separate decoder bias), one
    # token type as the released checkpoints have, decoder (causal) attention, another pad id.
    ModelCase("roberta-relu-untied", "RobertaConfig", {**TINY, "hidden_act": "relu", "tie_word_embeddings": False,
                                                        "layer_norm_eps": 1e-5, "type_vocab_size": 1},
              ROBERTA, uses_token_types=False),
    ModelCase("roberta-gelu_new-decoder", "RobertaConfig", {**TINY, "hidden_act": "gelu_new", "is_decoder": True},
              ROBERTA),
    ModelCase("xlm-roberta", "XLMRobertaConfig", TINY, XLMR),
    ModelCase("xlm-roberta-pad3-untied-decoder", "XLMRobertaConfig",
              {**TINY, "pad_token_id": 3, "tie_word_embeddings": False, "is_decoder": True, "type_vocab_size": 1},
              XLMR, uses_token_types=False),
    ModelCase("camembert", "CamembertConfig", TINY, CAMEMBERT),
    ModelCase("camembert-silu-noeps", "CamembertConfig", {**TINY, "hidden_act": "silu", "layer_norm_eps": 1e-5,
                                                          "classifier_dropout": 0.3}, CAMEMBERT),
]

test_parity, test_loading_report, test_batch_invariance = generic_tests(CASES)


@pytest.mark.parametrize("pad", [0, 1, 3])
def test_position_ids_match_reference(pad: int) -> None:
    input_ids = torch.tensor([[5, 6, 7, 8], [5, 6, pad, pad], [pad, 5, 6, pad]])
    expected = transformers.models.roberta.modeling_roberta.RobertaEmbeddings.create_position_ids_from_input_ids(
        input_ids, pad)
    assert torch.equal(position_ids_from_input_ids(input_ids, pad), expected)


@pytest.mark.parametrize("case", [CASES[0], CASES[4]], ids=lambda case: case.name)
def test_inputs_embeds_parity(case: ModelCase, tmp_path) -> None:
    """Embeddings in place of ids: positions count every token, as in the reference."""
    reference = build_reference(case, case.heads["base"])
    reference.save_pretrained(tmp_path)
    ours = autoload.AutoModel.from_pretrained(tmp_path)
    embeds = torch.randn(2, 7, case.config["hidden_size"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference(inputs_embeds=embeds).last_hidden_state
        got = ours(inputs_embeds=embeds).last_hidden_state
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", CASES[:2], ids=lambda case: case.name)
def test_lm_biases_parity(case: ModelCase, tmp_path) -> None:
    """Random (not zero-initialised) LM-head biases: tied, the decoder's bias is ``lm_head.bias``;
    untied, the reference uses ``decoder.bias`` and keeps ``lm_head.bias`` unused."""
    reference = build_reference(case, case.heads["masked_lm"])
    with torch.no_grad():
        reference.lm_head.bias.normal_()
        reference.lm_head.decoder.bias.normal_()
    reference.save_pretrained(tmp_path)
    ours = autoload.AutoModelForMaskedLM.from_pretrained(tmp_path)
    inputs = padded_batch(case)
    with torch.no_grad():
        torch.testing.assert_close(ours(**inputs).logits, reference(**inputs).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("model_type, config_name, name", [
    ("roberta", "RobertaConfig", "FacebookAI/roberta-base"),
    ("xlm-roberta", "XLMRobertaConfig", "FacebookAI/xlm-roberta-base"),
    ("camembert", "CamembertConfig", "almanach/camembert-base"),
])
def test_registry(model_type: str, config_name: str, name: str) -> None:
    config = autoload.AutoConfig.for_model(model_type)
    assert type(config).__name__ == config_name and config.model_type == model_type
    assert registry.model_type_from_name(name) == model_type
    reference = getattr(transformers, config_name)()
    for key in ("vocab_size", "type_vocab_size", "pad_token_id", "bos_token_id", "eos_token_id", "layer_norm_eps"):
        assert getattr(config, key) == getattr(reference, key), key


def test_config_types_are_not_interchangeable() -> None:
    """A RoBERTa config can't build an XLM-R class (it would save the wrong model_type)."""
    from autoload.models.xlm_roberta import XLMRobertaModel

    with pytest.raises(TypeError, match="XLMRobertaConfig"):
        XLMRobertaModel(autoload.AutoConfig.for_model("roberta"))
