"""XLM × every head: parity with the reference, loading reports, batch invariance (generic
harness); languages (``langs``, several per batch) with learned and sinusoidal positions; the
causal variant; every summary type; the flat path equal to the padded one and the reference;
the seed's SQuAD-head XLMForQuestionAnswering and XLMForMultipleChoice; refused settings."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from model_harness import ATOL, RTOL, AUTO_CLASSES, ModelCase, assert_outputs_close, build_reference, check_loading_report, \
    check_parity, generic_tests, padded_batch

import autoload
from autoload import registry
from autoload.modeling import Segments

TINY = dict(vocab_size=99, emb_dim=32, n_layers=2, n_heads=4, max_position_embeddings=64, num_labels=3,
            pad_token_id=2, summary_first_dropout=0.1)
HEADS = {
    "base": "XLMModel",
    "pretraining": "XLMWithLMHeadModel",
    "with_lm_head": "XLMWithLMHeadModel",
    "masked_lm": "XLMWithLMHeadModel",
    "causal_lm": "XLMWithLMHeadModel",
    "sequence_classification": "XLMForSequenceClassification",
    "token_classification": "XLMForTokenClassification",
    "span_question_answering": "XLMForQuestionAnsweringSimple",  # what the qa task runs
}
SOME = {k: HEADS[k] for k in ("base", "with_lm_head", "sequence_classification", "token_classification")}
LANGS3 = {"n_langs": 3, "lang2id": {"en": 0, "fr": 1, "de": 2}, "id2lang": {0: "en", 1: "fr", 2: "de"}}
CASES = [
    ModelCase("xlm", "XLMConfig", TINY, HEADS),
    # Sinusoidal positions, three languages (embedded: langs default to none here), relu, untied
    # prediction layer, tanh summary projected to the hidden width.
    ModelCase("xlm-sinusoidal-langs-relu-untied", "XLMConfig",
              {**TINY, "sinusoidal_embeddings": True, **LANGS3, "gelu_activation": False,
               "tie_word_embeddings": False, "summary_activation": "tanh", "summary_proj_to_labels": False,
               "layer_norm_eps": 1e-6}, SOME),
    ModelCase("xlm-causal", "XLMConfig", {**TINY, "causal": True, "n_layers": 3},
              {k: HEADS[k] for k in ("base", "causal_lm", "token_classification")}),
    # Languages in the config but not embedded (use_lang_emb false: no lang_embeddings table).
    ModelCase("xlm-langs-unembedded", "XLMConfig", {**TINY, **LANGS3, "use_lang_emb": False}, {"base": "XLMModel"}),
]

test_parity, test_loading_report, test_batch_invariance = generic_tests(CASES)
# AutoModelForQuestionAnswering: the seed's SQuAD head, whose beams read padded positions as the
# reference's do, so it is checked below with p_mask and per row rather than by the generic tests.
QA_CASE = ModelCase("xlm-squad", "XLMConfig", {**TINY, **LANGS3, "start_n_top": 2, "end_n_top": 2},
                    {"question_answering": "XLMForQuestionAnswering"}, base_class="XLMModel")
CASES = CASES + [QA_CASE]


# -- helpers shared with test_model_flaubert ---------------------------------------------------
def with_langs(inputs: dict[str, torch.Tensor], n_langs: int) -> dict[str, torch.Tensor]:
    """``inputs`` plus a language per token: each row its own language, one row mixing two."""
    batch, length = inputs["input_ids"].shape
    langs = (torch.arange(batch)[:, None] % n_langs).expand(batch, length).clone()
    langs[0, length // 2:] = (langs[0, 0] + 1) % n_langs
    return {**inputs, "langs": langs}


def reference_call(reference, inputs: dict[str, Any], **kwargs: Any):
    return reference(**inputs, **kwargs)


def check_parity_and_rows(case: ModelCase, head: str, tmp_path: Path, inputs: dict[str, torch.Tensor],
                          call=reference_call, attentions: bool = True, ours_class: Any = None) -> None:
    """Ours (loaded through the Auto class, or ``ours_class``) equals the reference on
    ``inputs`` (hidden states and, unless the reference can't return them, attentions too),
    and each row alone equals its row in the batch."""
    reference = build_reference(case, case.heads[head])
    reference.save_pretrained(tmp_path)
    ours = (ours_class or AUTO_CLASSES[head]).from_pretrained(tmp_path)
    assert type(ours).__name__ == case.heads[head]
    flags = dict(output_hidden_states=True, output_attentions=attentions)
    with torch.no_grad():
        expected = call(reference, inputs, **flags)
        got = ours(**inputs, **flags)
        assert_outputs_close(got, expected)
        lengths = inputs["attention_mask"].sum(1).tolist()
        for row, length in enumerate(lengths):
            alone = ours(**{k: v[row:row + 1, :length] for k, v in inputs.items()})
            for key in alone.keys():
                one, many = alone[key][0], got[key][row]
                if alone[key].dim() >= 2 and alone[key].shape[1] == length:
                    many = many[:length]
                torch.testing.assert_close(many, one, atol=ATOL, rtol=RTOL, msg=lambda m: f"row {row} {key}: {m}")


def check_flat(case: ModelCase, head: str, tmp_path: Path, n_langs: int = 1, call=reference_call,
               ours_class: Any = None) -> None:
    """The flat path (ragged rows back to back, and their languages) equals our padded forward
    and the reference's at every real token / for every row."""
    reference = build_reference(case, case.heads[head])
    reference.save_pretrained(tmp_path)
    ours = (ours_class or AUTO_CLASSES[head]).from_pretrained(tmp_path).prepare_for_inference()
    lengths = [1, 7, 3, 9]
    generator = torch.Generator().manual_seed(5)
    width = max(lengths)
    padded = {"input_ids": torch.full((len(lengths), width), case.config["pad_token_id"]),
              "attention_mask": torch.zeros(len(lengths), width, dtype=torch.long)}
    for i, n in enumerate(lengths):
        padded["input_ids"][i, :n] = torch.randint(5, case.config["vocab_size"], (n,), generator=generator)
        padded["attention_mask"][i, :n] = 1
    if n_langs > 1:
        padded = with_langs(padded, n_langs)
    real = padded["attention_mask"].bool()
    flat = {k: v[real] for k, v in padded.items() if k != "attention_mask"}
    with torch.inference_mode():
        got = ours.forward_flat(flat.pop("input_ids"), Segments.from_lengths(lengths), **flat)
        views = []
        for out in (call(reference, padded), ours(**padded)):
            if head == "base":
                views.append(out.last_hidden_state[real])
            elif head == "sequence_classification":
                views.append(out.logits)
            elif head == "question_answering":
                views.append(torch.stack([out.start_logits, out.end_logits], -1)[real])
            else:
                views.append(out.logits[real])
    for view in views:
        torch.testing.assert_close(got, view, atol=ATOL, rtol=RTOL)


# -- languages ---------------------------------------------------------------------------------
LANG_CASES = [
    ModelCase("xlm-langs-learned", "XLMConfig", {**TINY, **LANGS3}, HEADS),
    ModelCase("xlm-langs-sinusoidal-causal", "XLMConfig",
              {**TINY, **LANGS3, "sinusoidal_embeddings": True, "causal": True}, HEADS),
]


LANG_PARAMS = [pytest.param(LANG_CASES[0], head, id=f"{LANG_CASES[0].name}-{head}")
               for head in ("base", "with_lm_head", "sequence_classification", "token_classification")]
LANG_PARAMS += [pytest.param(LANG_CASES[1], head, id=f"{LANG_CASES[1].name}-{head}") for head in ("base", "causal_lm")]


@pytest.mark.parametrize("case, head", LANG_PARAMS)
def test_languages_parity_and_rows_alone(case: ModelCase, head: str, tmp_path: Path) -> None:
    inputs = with_langs(padded_batch(case), 3)
    check_parity_and_rows(case, head, tmp_path, inputs)
    # The languages matter: other languages, other outputs.
    ours = AUTO_CLASSES["base"].from_pretrained(tmp_path)
    with torch.no_grad():
        a = ours(**inputs).last_hidden_state
        b = ours(**{**inputs, "langs": (inputs["langs"] + 1) % 3}).last_hidden_state
    assert not torch.allclose(a[:, :2], b[:, :2])


FLAT_PARAMS = [pytest.param(CASES[0], head, id=f"learned-{head}")
               for head in ("base", "sequence_classification", "token_classification", "masked_lm")]
FLAT_PARAMS += [pytest.param(LANG_CASES[1], head, id=f"sinusoidal-causal-langs-{head}") for head in ("base", "causal_lm")]


@pytest.mark.parametrize("case, head", FLAT_PARAMS)
def test_flat_equals_padded_and_reference(case: ModelCase, head: str, tmp_path: Path) -> None:
    check_flat(case, head, tmp_path, n_langs=case.config.get("n_langs", 1))


def test_without_attention_mask_the_pad_ids_mark_padding(tmp_path: Path) -> None:
    """The reference derives the mask from pad ids (or ``lengths``) when none is given."""
    case = CASES[0]
    reference = build_reference(case, "XLMModel")
    reference.save_pretrained(tmp_path)
    ours = autoload.AutoModel.from_pretrained(tmp_path)
    inputs = padded_batch(case)
    lengths = inputs["attention_mask"].sum(1)
    with torch.no_grad():
        for kwargs in ({"input_ids": inputs["input_ids"]}, {"input_ids": inputs["input_ids"], "lengths": lengths}):
            torch.testing.assert_close(ours(**kwargs).last_hidden_state, reference(**kwargs).last_hidden_state,
                                       atol=ATOL, rtol=RTOL)


# -- sequence summaries ------------------------------------------------------------------------
@pytest.mark.parametrize("summary", ["first", "last", "mean", "cls_index"])
def test_summary_types(summary: str, tmp_path: Path) -> None:
    """Every summary type equals the reference on a padded batch (which, for last / mean, reads
    the padded positions as the reference does; the classifier passes no cls_index, so
    "cls_index" reads the last position); the summary at given indices too."""
    case = ModelCase("xlm-summary", "XLMConfig", {**TINY, "summary_type": summary, "summary_activation": "tanh"},
                     {"sequence_classification": "XLMForSequenceClassification"})
    reference = build_reference(case, "XLMForSequenceClassification")
    reference.save_pretrained(tmp_path)
    ours = autoload.AutoModelForSequenceClassification.from_pretrained(tmp_path)
    inputs = padded_batch(case)
    with torch.no_grad():
        torch.testing.assert_close(ours(**inputs).logits, reference(**inputs).logits, atol=ATOL, rtol=RTOL)
        if summary == "cls_index":  # the summary itself at given indices, as the reference's module
            hidden = ours.transformer(**inputs).last_hidden_state
            index = inputs["attention_mask"].sum(1) - 1
            torch.testing.assert_close(ours.sequence_summary(hidden, index),
                                       reference.sequence_summary(hidden, index), atol=ATOL, rtol=RTOL)
        # The flat path summarises each row as it is alone.
        ours.prepare_for_inference()
        lengths = inputs["attention_mask"].sum(1).tolist()
        real = inputs["attention_mask"].bool()
        flat = ours.forward_flat(inputs["input_ids"][real], Segments.from_lengths(lengths))
        for row, n in enumerate(lengths):
            alone = reference(**{k: v[row:row + 1, :n] for k, v in inputs.items() if k != "token_type_ids"}).logits[0]
            torch.testing.assert_close(flat[row], alone, atol=ATOL, rtol=RTOL)


# -- classes beside the Auto mapping -----------------------------------------------------------
def _load_direct(class_name: str, case: ModelCase, tmp_path: Path, module: str = "xlm"):
    reference = build_reference(case, class_name)
    reference.save_pretrained(tmp_path)
    ours_class = getattr(__import__(f"autoload.models.{module}", fromlist=[class_name]), class_name)
    ours, info = ours_class.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    return reference, ours


BEAM_KEYS = ("start_top_log_probs", "start_top_index", "end_top_log_probs", "end_top_index", "cls_logits")


def check_squad_head(case: ModelCase, tmp_path: Path, call=reference_call) -> None:
    """AutoModelForQuestionAnswering's SQuAD head: beams over starts and ends and the
    answerability logit equal the reference's (without and with p_mask / cls_index, and with
    languages); the flat path gives each row's beam as the row alone does."""
    check_parity(case, "question_answering", tmp_path / "parity")
    check_loading_report(case, "question_answering", tmp_path / "loading")
    check_squad_beams(case, tmp_path, call)


def check_squad_beams(case: ModelCase, tmp_path: Path, call=reference_call) -> None:
    reference = build_reference(case, case.heads["question_answering"])
    reference.save_pretrained(tmp_path / "qa")
    ours = autoload.AutoModelForQuestionAnswering.from_pretrained(tmp_path / "qa")
    inputs = with_langs(padded_batch(case), case.config["n_langs"])
    p_mask = (1 - inputs["attention_mask"]).float()
    lengths = inputs["attention_mask"].sum(1)
    with torch.no_grad():
        for kwargs in ({}, {"p_mask": p_mask, "cls_index": lengths - 1}):
            got, expected = ours(**inputs, **kwargs), call(reference, {**inputs, **kwargs})
            for key in BEAM_KEYS:
                torch.testing.assert_close(getattr(got, key), getattr(expected, key), atol=ATOL, rtol=RTOL)
        ours.prepare_for_inference()
        real = inputs["attention_mask"].bool()
        flat = ours.forward_flat(inputs["input_ids"][real], Segments.from_lengths(lengths.tolist()),
                                 langs=inputs["langs"][real])
        for row, n in enumerate(lengths.tolist()):
            alone = call(reference, {k: v[row:row + 1, :n] for k, v in inputs.items() if k != "token_type_ids"})
            for key in BEAM_KEYS:
                torch.testing.assert_close(getattr(flat, key)[row], getattr(alone, key)[0], atol=ATOL, rtol=RTOL)


def test_squad_head_question_answering(tmp_path: Path) -> None:
    check_squad_head(QA_CASE, tmp_path)


@pytest.mark.parametrize("case", [CASES[0], LANG_CASES[1]], ids=["learned", "sinusoidal-causal-langs"])
def test_span_head_question_answering_simple(case: ModelCase, tmp_path: Path) -> None:
    """Today's span head (5.24's AutoModelForQuestionAnswering class), loaded by class: parity
    with languages, rows alone, the flat path."""
    from autoload.models.xlm import XLMForQuestionAnsweringSimple
    simple = ModelCase(case.name, "XLMConfig", case.config, {"question_answering": "XLMForQuestionAnsweringSimple"})
    n_langs = case.config.get("n_langs", 1)
    inputs = padded_batch(simple)
    check_parity_and_rows(simple, "question_answering", tmp_path / "padded",
                          with_langs(inputs, n_langs) if n_langs > 1 else inputs, ours_class=XLMForQuestionAnsweringSimple)
    check_flat(simple, "question_answering", tmp_path / "flat", n_langs=n_langs, ours_class=XLMForQuestionAnsweringSimple)


def test_multiple_choice_equals_reference(tmp_path: Path) -> None:
    case = ModelCase("xlm-choice", "XLMConfig", {**TINY, **LANGS3}, {})
    reference, ours = _load_direct("XLMForMultipleChoice", case, tmp_path)
    inputs = padded_batch(case)
    choices = {k: torch.stack([v, v.roll(1, 0)], 1) for k, v in with_langs(inputs, 3).items()}  # (B, 2, T)
    with torch.no_grad():
        torch.testing.assert_close(ours(**choices).logits, reference(**choices).logits, atol=ATOL, rtol=RTOL)


# -- contract and refusals ---------------------------------------------------------------------
def test_contract_and_registry() -> None:
    contract = registry.contract("xlm")
    assert contract.input_names == ("input_ids", "attention_mask", "langs")
    assert registry.model_type_from_name("some/xlm-mlm-enfr-1024") == "xlm"
    assert registry.model_type_from_name("xlm-roberta-base") == "xlm-roberta"
    assert registry.pending("xlm") is None


@pytest.mark.parametrize("setting, words", [({"asm": True}, "asm=True"), ({"is_encoder": False}, "is_encoder"),
                                            ({"summary_type": "attn"}, "summary_type")])
def test_unsupported_settings_are_refused_by_name(setting: dict, words: str, tmp_path: Path) -> None:
    config = autoload.AutoConfig.for_model("xlm", **{**TINY, **setting}) if hasattr(autoload.AutoConfig, "for_model") \
        else registry.config_class("xlm")(**{**TINY, **setting})
    with pytest.raises(ValueError, match=words):
        autoload.AutoModelForSequenceClassification.from_config(config)
