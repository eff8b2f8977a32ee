"""ELECTRA × every head: parity with the reference, loading reports, batch invariance."""
from model_harness import ModelCase, generic_tests

TINY = dict(vocab_size=99, embedding_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=37, max_position_embeddings=64, type_vocab_size=2, num_labels=3)
HEADS = {
    "base": "ElectraModel",
    "pretraining": "ElectraForPreTraining",
    "masked_lm": "ElectraForMaskedLM",
    "with_lm_head": "ElectraForMaskedLM",
    "causal_lm": "ElectraForCausalLM",
    "sequence_classification": "ElectraForSequenceClassification",
    "token_classification": "ElectraForTokenClassification",
    "question_answering": "ElectraForQuestionAnswering",
}
CASES = [
    ModelCase("electra", "ElectraConfig", TINY, HEADS),
    # Narrow embeddings projected up (embeddings_project), relu in the encoder and discriminator
    # (the generator and classification heads stay gelu), untied LM head.
    ModelCase("electra-project-relu-untied", "ElectraConfig",
              {**TINY, "embedding_size": 16, "hidden_act": "relu", "tie_word_embeddings": False,
               "layer_norm_eps": 1e-7}, HEADS),
    # Decoder mask (the causal LM's intended use), projected embeddings, no token types.
    ModelCase("electra-project-gelu_new-decoder", "ElectraConfig",
              {**TINY, "embedding_size": 24, "hidden_act": "gelu_new", "is_decoder": True, "type_vocab_size": 1},
              HEADS, uses_token_types=False),
]

test_parity, test_loading_report, test_batch_invariance = generic_tests(CASES)
