"""ALBERT × every head: parity with the reference, loading reports, batch invariance, and the
checkpoint forms of the masked-LM bias."""
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import autoload
from model_harness import ModelCase, build_reference, generic_tests, padded_batch

TINY = dict(vocab_size=99, embedding_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=37, max_position_embeddings=64, type_vocab_size=2, num_labels=3)
HEADS = {
    "base": "AlbertModel",
    "pretraining": "AlbertForPreTraining",
    "masked_lm": "AlbertForMaskedLM",
    "with_lm_head": "AlbertForMaskedLM",
    "sequence_classification": "AlbertForSequenceClassification",
    "token_classification": "AlbertForTokenClassification",
    "question_answering": "AlbertForQuestionAnswering",
}
GROUPED = {**TINY, "num_hidden_groups": 2, "inner_group_num": 2, "embedding_size": 16, "num_hidden_layers": 4}
CASES = [
    ModelCase("albert", "AlbertConfig", TINY, HEADS),
    # Two groups of two inner layers over four steps of depth, embeddings narrower than hidden.
    ModelCase("albert-grouped", "AlbertConfig", GROUPED, HEADS),
    # Another activation (the default is gelu_new), untied decoder, other epsilon, no token types.
    ModelCase("albert-relu-untied", "AlbertConfig", {**TINY, "hidden_act": "relu", "tie_word_embeddings": False,
                                                      "layer_norm_eps": 1e-7, "type_vocab_size": 1},
              HEADS, uses_token_types=False),
    # Layers not a multiple of groups: the reference's float split gives groups 0, 0, 1.
    ModelCase("albert-uneven-groups", "AlbertConfig", {**GROUPED, "num_hidden_layers": 3},
              {"base": "AlbertModel", "masked_lm": "AlbertForMaskedLM"}),
]

test_parity, test_loading_report, test_batch_invariance = generic_tests(CASES)


def test_layers_are_shared_across_depth() -> None:
    config = autoload.AutoConfig.for_model("albert", **GROUPED)
    model = autoload.AutoModel.from_config(config)
    encoder = model.encoder
    assert [encoder.group_index(depth) for depth in range(4)] == [0, 0, 1, 1]
    assert len(encoder.albert_layer_groups) == 2
    assert all(len(group.albert_layers) == 2 for group in encoder.albert_layer_groups)
    out = model(**padded_batch(CASES[1]), output_hidden_states=True, output_attentions=True)
    # The input state plus one per inner layer per step of depth, as the reference records them.
    assert len(out.hidden_states) == 4 * 2 + 1 and len(out.attentions) == 4 * 2
    assert out.hidden_states[0].shape[-1] == 32  # after the embedding → hidden projection


def _randomise_biases(model: torch.nn.Module) -> None:
    """Fresh biases are zeros, which would hide which of the two checkpoint biases is used."""
    with torch.no_grad():
        model.predictions.bias.normal_()
        if model.predictions.decoder.bias is not model.predictions.bias:
            model.predictions.decoder.bias.normal_()


def _masked_lm_logits(path: Path) -> tuple[torch.Tensor, dict]:
    model, info = autoload.AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True)
    with torch.no_grad():
        return model(**padded_batch(CASES[0])).logits, info


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("weights", ["safetensors", "bin"])
def test_decoder_bias_checkpoint_forms(tied: bool, weights: str, tmp_path: Path) -> None:
    """Old .bin checkpoints carry `predictions.decoder.bias` next to `predictions.bias`; untied
    checkpoints carry both with different values and the reference uses the decoder's."""
    reference = build_reference(CASES[0], "AlbertForMaskedLM", tie_word_embeddings=tied)
    _randomise_biases(reference)
    reference.save_pretrained(tmp_path)
    if weights == "bin":
        # Every key, tied ones included, as torch.save of a state_dict wrote them.
        (tmp_path / "model.safetensors").unlink()
        torch.save(reference.state_dict(), tmp_path / "pytorch_model.bin")
    else:
        assert ("predictions.decoder.bias" in load_file(str(tmp_path / "model.safetensors"))) == (not tied)
    logits, info = _masked_lm_logits(tmp_path)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    with torch.no_grad():
        expected = reference(**padded_batch(CASES[0])).logits
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
