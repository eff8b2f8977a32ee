"""Generic architecture × head tests, shared by every ``tests/autoload/test_model_<arch>.py``.

An architecture's test file lists ``ModelCase``s (a tiny reference config and the reference
class for each of our heads) and binds the generic tests:

    test_parity, test_loading_report, test_batch_invariance = generic_tests(CASES)

The reference library (``transformers``) builds every model; ours loads what it saved through
the production path (``Auto*.from_pretrained``), so parity covers loading and forward at once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import autoload
from actors.heads import SpanQuestionAnswering
from autoload.checkpoint import GLOBAL_RENAMES, apply_renames

transformers = pytest.importorskip("transformers")

ATOL = RTOL = 1e-5

# Our Auto class for each head name.
AUTO_CLASSES = {
    "base": autoload.AutoModel,
    "pretraining": autoload.AutoModelForPreTraining,
    "masked_lm": autoload.AutoModelForMaskedLM,
    "with_lm_head": autoload.AutoModelWithLMHead,
    "causal_lm": autoload.AutoModelForCausalLM,
    "sequence_classification": autoload.AutoModelForSequenceClassification,
    "token_classification": autoload.AutoModelForTokenClassification,
    "question_answering": autoload.AutoModelForQuestionAnswering,
    # The qa task's head (actors/heads.py): start/end logits where the seed's QA class is a beam head.
    "span_question_answering": SpanQuestionAnswering,
}


@dataclass
class ModelCase:
    name: str
    config_class: str  # reference config class name, e.g. "BertConfig"
    config: dict[str, Any]
    heads: dict[str, str]  # our head name → reference model class name
    base_class: str = ""  # reference class of the bare body ("BertModel"); defaults to heads["base"]
    uses_token_types: bool = True
    input_kwargs: dict[str, Any] = field(default_factory=dict)
    padding_side: str = "right"  # "left": pads first, and explicit positions counting real tokens only

    def reference_config(self, **overrides: Any):
        return getattr(transformers, self.config_class)(**{**self.config, **overrides})

    def params(self) -> list:
        return [pytest.param(self, head, id=f"{self.name}-{head}") for head in self.heads]


def head_overrides(class_name: str) -> dict[str, Any]:
    """Config values a head class requires whatever the case says."""
    return {"num_labels": 2} if "QuestionAnswering" in class_name else {}  # start/end logits


def build_reference(case: ModelCase, class_name: str, seed: int = 0, **overrides: Any):
    torch.manual_seed(seed)
    config = case.reference_config(**{**head_overrides(class_name), **overrides})
    config._attn_implementation = "eager"  # so attentions are returned for comparison
    model = getattr(transformers, class_name)(config).eval()
    # Fresh biases and LayerNorms are 0/1: randomise every weight (ties are shared tensors and
    # stay tied) so a bias lost or misplaced in loading or saving shows up in the outputs.
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    return model


def padded_batch(case: ModelCase, batch: int = 3, length: int = 9, seed: int = 1) -> dict[str, torch.Tensor]:
    """Ids avoiding special ids below 5, rows of lengths length, length-3 and 2, padded on the
    case's side.  Left-padded rows get position ids counting their real tokens from 0 (what a
    causal model's generate passes), so each row sits where it would alone."""
    generator = torch.Generator().manual_seed(seed)
    vocab = case.config["vocab_size"]
    input_ids = torch.randint(5, vocab, (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, length - 3:] = 0
    mask[2, 2:] = 0
    if case.padding_side == "left":
        mask = mask.flip(1)
    pad = case.config.get("pad_token_id", 0) or 0
    input_ids = input_ids.masked_fill(mask == 0, pad)
    inputs = {"input_ids": input_ids, "attention_mask": mask}
    if case.padding_side == "left":
        inputs["position_ids"] = (mask.cumsum(1) - 1).clamp(min=0)
    if case.uses_token_types:
        token_types = torch.zeros_like(input_ids)
        token_types[:, length // 2:] = 1
        inputs["token_type_ids"] = token_types * mask
    return inputs


def assert_outputs_close(ours: Any, reference: Any) -> None:
    compared = 0
    for key in ours.keys():
        mine, theirs = ours[key], getattr(reference, key)
        if isinstance(mine, tuple):
            assert len(mine) == len(theirs), key
            for a, b in zip(mine, theirs):
                torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL, msg=lambda m: f"{key}: {m}")
        else:
            torch.testing.assert_close(mine, theirs, atol=ATOL, rtol=RTOL, msg=lambda m: f"{key}: {m}")
        compared += 1
    assert compared >= 1


def check_parity(case: ModelCase, head: str, tmp_path: Path) -> None:
    reference = build_reference(case, case.heads[head])
    reference.save_pretrained(tmp_path / "ref")
    ours, info = AUTO_CLASSES[head].from_pretrained(tmp_path / "ref", output_loading_info=True)
    assert type(ours).__name__ == case.heads[head]
    assert info["missing_keys"] == [] and info["unexpected_keys"] == [] and info["mismatched_keys"] == []
    assert not ours.training
    inputs = padded_batch(case)
    with torch.no_grad():
        expected = reference(**inputs, **case.input_kwargs, output_hidden_states=True, output_attentions=True)
        got = ours(**inputs, **case.input_kwargs, output_hidden_states=True, output_attentions=True)
    assert_outputs_close(got, expected)

    # Our save_pretrained → the reference loads it and computes the same (with the eager attention
    # compared above: its SDPA path differs from it at left-padding positions, which see no key).
    ours.save_pretrained(tmp_path / "ours")
    reloaded = getattr(transformers, case.heads[head]).from_pretrained(tmp_path / "ours",
                                                                       attn_implementation="eager").eval()
    with torch.no_grad():
        again = reloaded(**inputs, **case.input_kwargs)
    for key in got.keys():
        if key not in ("hidden_states", "attentions"):
            torch.testing.assert_close(getattr(again, key), got[key], atol=ATOL, rtol=RTOL)


def _keys(path: Path, model: torch.nn.Module) -> set[str]:
    """Keys of a saved checkpoint, under the model's declared rename rules (data, not logic)."""
    rules = GLOBAL_RENAMES + list(type(model).checkpoint_renames)
    return set(apply_renames(load_file(str(path / "model.safetensors")), rules))


def check_loading_report(case: ModelCase, head: str, tmp_path: Path) -> None:
    """Body-only checkpoint into the head, and the head's checkpoint into the body."""
    base_class = case.base_class or case.heads["base"]
    # The body's config is the one the head loads with, so it must satisfy the head (some
    # references refuse a question-answering head without num_labels=2).
    body = build_reference(case, base_class, **head_overrides(case.heads[head]))
    body.save_pretrained(tmp_path / "body")
    model, info = AUTO_CLASSES[head].from_pretrained(tmp_path / "body", output_loading_info=True)
    prefix = type(model).base_model_prefix
    ours = set(model.state_dict())
    saved = _keys(tmp_path / "body", model)
    if head == "base":
        assert info["missing_keys"] == [] and info["unexpected_keys"] == []
        return
    # A tied weight is missing exactly when its source is (RoBERTa's decoder bias is tied to
    # the head's own bias; the reference reports both).
    head_keys = {k for k in ours if not k.startswith(prefix + ".")}
    expected_missing = head_keys - {t for t, s in model.tied_weights().items() if s not in head_keys}
    expected_unexpected = {f"{prefix}.{k}" for k in saved} - ours
    assert set(info["missing_keys"]) == expected_missing
    assert set(info["unexpected_keys"]) == expected_unexpected
    # The body's weights arrived; the head's are finite fresh values.
    body_state = body.state_dict()
    for key, value in model.state_dict().items():
        if key.startswith(prefix + ".") and key[len(prefix) + 1:] in saved:
            torch.testing.assert_close(value, body_state[key[len(prefix) + 1:]])
        assert torch.isfinite(value).all(), key

    # The head checkpoint into the bare body: head weights unexpected, body weights it lacks missing.
    head_model = build_reference(case, case.heads[head])
    head_model.save_pretrained(tmp_path / "head")
    base, info = autoload.AutoModel.from_pretrained(tmp_path / "head", output_loading_info=True)
    saved_head = _keys(tmp_path / "head", base)
    stripped = {k[len(prefix) + 1:] for k in saved_head if k.startswith(prefix + ".")}
    base_keys = set(base.state_dict())
    assert set(info["unexpected_keys"]) == {k for k in saved_head if not k.startswith(prefix + ".")}
    assert set(info["missing_keys"]) == base_keys - stripped


def check_batch_invariance(case: ModelCase, head: str, tmp_path: Path) -> None:
    """A row in a padded batch equals the same row run alone; extra padding changes nothing."""
    reference = build_reference(case, case.heads[head])
    reference.save_pretrained(tmp_path)
    model = AUTO_CLASSES[head].from_pretrained(tmp_path)
    inputs = padded_batch(case)
    lengths = inputs["attention_mask"].sum(1).tolist()
    left = case.padding_side == "left"
    with torch.no_grad():
        batched = model(**inputs, **case.input_kwargs)
        extra = {k: torch.nn.functional.pad(v, (4, 0) if left else (0, 4), value=0) for k, v in inputs.items()}
        extra_out = model(**extra, **case.input_kwargs)
        for row, length in enumerate(lengths):
            real = slice(-length, None) if left else slice(0, length)
            alone = model(**{k: v[row:row + 1, real] for k, v in inputs.items()}, **case.input_kwargs)
            for key in alone.keys():
                if key in ("hidden_states", "attentions"):
                    continue
                one, many, padded_more = alone[key][0], batched[key][row], extra_out[key][row]
                if alone[key].dim() >= 2 and alone[key].shape[1] == length:  # per-token output
                    many, padded_more = many[real], padded_more[real]
                torch.testing.assert_close(many, one, atol=ATOL, rtol=RTOL, msg=lambda m: f"row {row} {key}: {m}")
                torch.testing.assert_close(padded_more, one, atol=ATOL, rtol=RTOL)


def generic_tests(cases: list[ModelCase]):
    params = [p for case in cases for p in case.params()]

    @pytest.mark.parametrize("case, head", params)
    def test_parity(case: ModelCase, head: str, tmp_path: Path) -> None:
        check_parity(case, head, tmp_path)

    @pytest.mark.parametrize("case, head", params)
    def test_loading_report(case: ModelCase, head: str, tmp_path: Path) -> None:
        check_loading_report(case, head, tmp_path)

    @pytest.mark.parametrize("case, head", params)
    def test_batch_invariance(case: ModelCase, head: str, tmp_path: Path) -> None:
        check_batch_invariance(case, head, tmp_path)

    return test_parity, test_loading_report, test_batch_invariance
