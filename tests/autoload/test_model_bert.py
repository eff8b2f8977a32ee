"""BERT × every head: parity with the reference, loading reports, batch invariance."""
from model_harness import ModelCase, generic_tests

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64, type_vocab_size=2, num_labels=3)
HEADS = {
    "base": "BertModel",
    "pretraining": "BertForPreTraining",
    "masked_lm": "BertForMaskedLM",
    "with_lm_head": "BertForMaskedLM",
    "causal_lm": "BertLMHeadModel",
    "sequence_classification": "BertForSequenceClassification",
    "token_classification": "BertForTokenClassification",
    "question_answering": "BertForQuestionAnswering",
}
CASES = [
    ModelCase("bert", "BertConfig", TINY, HEADS),
    # Non-default options: other activations, untied embeddings, no token types, decoder mask.
    ModelCase("bert-relu-untied", "BertConfig", {**TINY, "hidden_act": "relu", "tie_word_embeddings": False,
                                                  "layer_norm_eps": 1e-7}, HEADS),
    ModelCase("bert-gelu_new-decoder", "BertConfig", {**TINY, "hidden_act": "gelu_new", "is_decoder": True,
                                                       "type_vocab_size": 1}, HEADS, uses_token_types=False),
]

test_parity, test_loading_report, test_batch_invariance = generic_tests(CASES)
