"""CTRL × every head: parity with the reference, loading reports, batch invariance."""
from model_harness import ModelCase, generic_tests

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
