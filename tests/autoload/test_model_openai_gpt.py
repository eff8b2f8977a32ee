"""OpenAI GPT × every head: parity with the reference, loading reports, batch invariance."""
from model_harness import ModelCase, generic_tests

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
