"""OpenAI GPT × every head: parity with the reference, loading reports, batch invariance."""
import pytest
import torch
from model_harness import ModelCase, build_reference, generic_tests, transformers

import autoload

# pad_token_id is set (0, the id the harness pads with, extra padding included): the sequence classifier
# pools the last non-pad token and refuses batches without one.
TINY = dict(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64, num_labels=3, pad_token_id=0)
HEADS = {
    "base": "OpenAIGPTModel",
    "pretraining": "OpenAIGPTLMHeadModel",
    "with_lm_head": "OpenAIGPTLMHeadModel",
    "causal_lm": "OpenAIGPTLMHeadModel",
    "sequence_classification": "OpenAIGPTForSequenceClassification",
}
CASES = [
    ModelCase("openai-gpt", "OpenAIGPTConfig", TINY, HEADS, uses_token_types=False),
    # Non-default options: the reference's other activations, untied LM head, another epsilon, token
    # types (looked up in the token embedding), left padding with explicit positions.
    ModelCase("openai-gpt-relu-untied-types", "OpenAIGPTConfig",
              {**TINY, "afn": "relu", "tie_word_embeddings": False, "layer_norm_epsilon": 1e-3}, HEADS),
    ModelCase("openai-gpt-silu-left", "OpenAIGPTConfig", {**TINY, "afn": "silu"}, HEADS,
              uses_token_types=False, padding_side="left"),
    ModelCase("openai-gpt-swish-left-untied", "OpenAIGPTConfig", {**TINY, "afn": "swish", "tie_word_embeddings": False},
              HEADS, uses_token_types=False, padding_side="left"),
]

test_parity, test_loading_report, test_batch_invariance = generic_tests(CASES)


def test_config_defaults_are_the_references() -> None:
    ours, reference = autoload.AutoConfig.for_model("openai-gpt"), transformers.OpenAIGPTConfig()
    for key in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "afn", "layer_norm_epsilon",
                "max_position_embeddings", "hidden_size", "tie_word_embeddings", "pad_token_id"):
        assert getattr(ours, key) == getattr(reference, key), key


def test_activation_outside_the_references_table_is_refused() -> None:
    # The reference's table has relu, silu, gelu (its tanh approximation) and swish: gelu_new is a KeyError there.
    with pytest.raises(ValueError, match="afn='gelu_new'"):
        autoload.AutoModel.from_config(autoload.AutoConfig.for_model("openai-gpt", **{**TINY, "afn": "gelu_new"}))


def test_sequence_classification_needs_a_pad_token_for_batches(tmp_path) -> None:
    case = ModelCase("no-pad", "OpenAIGPTConfig", {**TINY, "pad_token_id": None}, HEADS)
    reference = build_reference(case, HEADS["sequence_classification"])
    reference.save_pretrained(tmp_path)
    ours = autoload.AutoModelForSequenceClassification.from_pretrained(tmp_path)
    ids = torch.randint(5, TINY["vocab_size"], (2, 6))
    for model in (ours, reference):
        with pytest.raises(ValueError, match="batch sizes > 1"):
            model(input_ids=ids)
    with torch.no_grad():  # one row: its last position
        torch.testing.assert_close(ours(input_ids=ids[:1]).logits, reference(input_ids=ids[:1]).logits)
