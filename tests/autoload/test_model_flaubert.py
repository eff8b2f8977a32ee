"""FlauBERT × every head: parity with the reference, loading reports, batch invariance (generic
harness, post-norm); pre-norm blocks (through a workaround for the reference's pre-norm call,
which indexes its cache); languages; the flat path; LayerDrop only while training."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from model_harness import ModelCase, generic_tests, padded_batch
from test_model_xlm import LANGS3, TINY, check_flat, check_parity_and_rows, check_squad_beams, check_squad_head, \
    with_langs

import autoload
from autoload.models.flaubert import FlaubertForQuestionAnsweringSimple, FlaubertModel

HEADS = {
    "base": "FlaubertModel",
    "pretraining": "FlaubertWithLMHeadModel",
    "with_lm_head": "FlaubertWithLMHeadModel",
    "masked_lm": "FlaubertWithLMHeadModel",
    "sequence_classification": "FlaubertForSequenceClassification",
    "token_classification": "FlaubertForTokenClassification",
    "span_question_answering": "FlaubertForQuestionAnsweringSimple",  # what the qa task runs
}
CASES = [
    ModelCase("flaubert", "FlaubertConfig", {**TINY, "layerdrop": 0.3}, HEADS),
    ModelCase("flaubert-sinusoidal-causal-langs", "FlaubertConfig",
              {**TINY, **LANGS3, "sinusoidal_embeddings": True, "causal": True},
              {k: HEADS[k] for k in ("base", "masked_lm", "sequence_classification")}),
]

test_parity, test_loading_report, test_batch_invariance = generic_tests(CASES)
# AutoModelForQuestionAnswering: the seed's SQuAD head, checked with p_mask and per row (test_model_xlm).
QA_CASE = ModelCase("flaubert-squad", "FlaubertConfig", {**TINY, **LANGS3, "start_n_top": 1, "end_n_top": 2},
                    {"question_answering": "FlaubertForQuestionAnswering"}, base_class="FlaubertModel")
CASES = CASES + [QA_CASE]


def pre_norm_call(reference, inputs, output_attentions: bool = False, **kwargs):
    """The reference with pre_norm=True indexes its cache per layer (``cache[i]``), which 5.24's
    EncoderDecoderCache does not support, and asks its attention for no weights: give it a
    cache whose layers are None (what the post-norm path's attention gets without caching)."""
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    class PerLayerNone(EncoderDecoderCache):
        def __getitem__(self, index):
            return None

    config = reference.config
    cache = PerLayerNone(DynamicCache(config=config), DynamicCache(config=config))
    return reference(**inputs, cache=cache, **kwargs)


PRE_NORM = ModelCase("flaubert-pre-norm", "FlaubertConfig", {**TINY, **LANGS3, "pre_norm": True, "layerdrop": 0.5},
                     HEADS)


@pytest.mark.parametrize("head", ["base", "masked_lm", "sequence_classification", "token_classification",
                                  "question_answering_simple"])
def test_pre_norm_parity_and_rows_alone(head: str, tmp_path: Path) -> None:
    inputs = with_langs(padded_batch(PRE_NORM), 3)
    if head == "question_answering_simple":  # today's span head, loaded by class
        simple = ModelCase(PRE_NORM.name, "FlaubertConfig", PRE_NORM.config,
                           {"question_answering": "FlaubertForQuestionAnsweringSimple"})
        check_parity_and_rows(simple, "question_answering", tmp_path, inputs, call=pre_norm_call, attentions=False,
                              ours_class=FlaubertForQuestionAnsweringSimple)
        return
    check_parity_and_rows(PRE_NORM, head, tmp_path, inputs, call=pre_norm_call, attentions=False)


@pytest.mark.parametrize("pre_norm", [False, True], ids=["post-norm", "pre-norm"])
def test_squad_head_question_answering(pre_norm: bool, tmp_path: Path) -> None:
    case = ModelCase(QA_CASE.name, "FlaubertConfig", {**QA_CASE.config, "pre_norm": pre_norm}, QA_CASE.heads,
                     base_class="FlaubertModel")
    if pre_norm:  # the harness's parity runs the reference without the cache workaround: beams only
        check_squad_beams(case, tmp_path, call=pre_norm_call)
    else:
        check_squad_head(case, tmp_path)


@pytest.mark.parametrize("case, head", [(PRE_NORM, "base"), (PRE_NORM, "sequence_classification"),
                                        (CASES[0], "token_classification"), (CASES[1], "base")],
                         ids=["pre-norm-base", "pre-norm-seq", "post-norm-tok", "causal-langs-base"])
def test_flat_equals_padded_and_reference(case: ModelCase, head: str, tmp_path: Path) -> None:
    call = pre_norm_call if case.config.get("pre_norm") else (lambda ref, inputs, **kw: ref(**inputs, **kw))
    check_flat(case, head, tmp_path, n_langs=case.config.get("n_langs", 1), call=call)


def test_layerdrop_is_off_in_eval_and_drops_blocks_in_training(tmp_path: Path) -> None:
    config = autoload.AutoConfig.for_model("flaubert", **{**TINY, "layerdrop": 0.999, "dropout": 0.0,
                                                          "attention_dropout": 0.0})
    model = FlaubertModel.from_config(config)
    ids = torch.randint(5, 99, (2, 6))
    with torch.no_grad():
        evaluated = model(ids, output_hidden_states=True)
        assert len(evaluated.hidden_states) == config.n_layers + 1  # every block ran
        model.train()
        trained = model(ids, output_hidden_states=True)
    assert len(trained.hidden_states) < config.n_layers + 1


def test_flaubert_names_resolve_before_bert() -> None:
    from autoload import registry
    assert registry.model_type_from_name("flaubert/flaubert_base_cased") == "flaubert"
    assert registry.contract("flaubert").input_names == registry.contract("xlm").input_names
