"""CTRL × every head: parity with the reference, loading reports, batch invariance."""
import torch
from model_harness import ModelCase, generic_tests, transformers

import autoload

# pad_token_id is set (0, the id the harness pads with, extra padding included): the sequence classifier
# pools the last non-pad token and refuses batches without one.
TINY = dict(vocab_size=99, n_embd=32, n_layer=2, n_head=4, dff=37, n_positions=64, num_labels=3, pad_token_id=0)
HEADS = {
    "base": "CTRLModel",
    "pretraining": "CTRLLMHeadModel",
    "with_lm_head": "CTRLLMHeadModel",
    "causal_lm": "CTRLLMHeadModel",
    "sequence_classification": "CTRLForSequenceClassification",
}
CASES = [
    ModelCase("ctrl", "CTRLConfig", TINY, HEADS),
    # Non-default options: no token types, untied LM head, another final epsilon, three layers, left
    # padding with explicit positions (its pad-only queries attend uniformly, as in the reference).
    ModelCase("ctrl-untied-notypes", "CTRLConfig", {**TINY, "tie_word_embeddings": False, "layer_norm_epsilon": 1e-3},
              HEADS, uses_token_types=False),
    ModelCase("ctrl-left-3layers", "CTRLConfig", {**TINY, "n_layer": 3}, HEADS, uses_token_types=False,
              padding_side="left"),
]

test_parity, test_loading_report, test_batch_invariance = generic_tests(CASES)


def test_config_defaults_are_the_references() -> None:
    ours, reference = autoload.AutoConfig.for_model("ctrl"), transformers.CTRLConfig()
    for key in ("vocab_size", "n_positions", "n_embd", "dff", "n_layer", "n_head", "layer_norm_epsilon",
                "max_position_embeddings", "hidden_size", "tie_word_embeddings", "pad_token_id"):
        assert getattr(ours, key) == getattr(reference, key), key


def test_positional_encoding_is_the_references() -> None:
    from autoload.models.ctrl import positional_encoding

    table = transformers.models.ctrl.modeling_ctrl.positional_encoding(50, 24, torch.float)
    assert torch.equal(positional_encoding(torch.arange(50), 24), table)
