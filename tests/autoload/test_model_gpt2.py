"""GPT-2 × every head: parity with the reference, loading reports, batch invariance (left and right
padding); the key/value cache decodes step by step exactly as the full forward; contract."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from model_harness import ATOL, RTOL, ModelCase, build_reference, generic_tests, padded_batch, transformers

import autoload
from autoload import registry

# pad_token_id is explicit: the harness pads with it and sequence classification finds each
# row's last token by it (the released checkpoints have none).  bos/eos inside the tiny vocab.
TINY = dict(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64, num_labels=3, pad_token_id=0,
            bos_token_id=98, eos_token_id=98)
HEADS = {
    "base": "GPT2Model",
    "pretraining": "GPT2LMHeadModel",
    "with_lm_head": "GPT2LMHeadModel",
    "causal_lm": "GPT2LMHeadModel",
    "sequence_classification": "GPT2ForSequenceClassification",
    "token_classification": "GPT2ForTokenClassification",
    "question_answering": "GPT2ForQuestionAnswering",
}
CASES = [
    ModelCase("gpt2", "GPT2Config", TINY, HEADS, uses_token_types=False),
    ModelCase("gpt2-left", "GPT2Config", TINY, HEADS, uses_token_types=False, padding_side="left"),
    # Non-default options: an inner width, relu, scores divided by the layer number, untied LM
    # head, another epsilon; token types (GPT-2 looks them up in the word table).
    ModelCase("gpt2-inner-relu-inverse-untied", "GPT2Config",
              {**TINY, "n_inner": 24, "activation_function": "relu", "scale_attn_by_inverse_layer_idx": True,
               "tie_word_embeddings": False, "layer_norm_epsilon": 1e-6}, HEADS),
    # silu, unscaled and float32-upcast scores, three layers, left padding.
    ModelCase("gpt2-silu-upcast-unscaled-left", "GPT2Config",
              {**TINY, "n_layer": 3, "activation_function": "silu", "reorder_and_upcast_attn": True,
               "scale_attn_weights": False, "classifier_dropout": 0.2}, HEADS, uses_token_types=False,
              padding_side="left"),
]

test_parity, test_loading_report, test_batch_invariance = generic_tests(CASES)


def _lm(case: ModelCase, tmp_path: Path):
    reference = build_reference(case, "GPT2LMHeadModel")
    reference.save_pretrained(tmp_path)
    return reference, autoload.AutoModelForCausalLM.from_pretrained(tmp_path)


def _decode_in_steps(model, inputs: dict[str, torch.Tensor], prefill: int):
    """Run the first ``prefill`` columns at once, then one column per call with the cache, as a
    generate loop does; → logits (B, T, V) and the last call's cache."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    positions = inputs.get("position_ids", torch.arange(ids.shape[1])[None].expand_as(ids))
    types = inputs.get("token_type_ids")
    past, logits = None, []
    bounds = [0, prefill] + list(range(prefill + 1, ids.shape[1] + 1))
    for start, end in zip(bounds, bounds[1:]):
        out = model(input_ids=ids[:, start:end], attention_mask=mask[:, :end], position_ids=positions[:, start:end],
                    token_type_ids=None if types is None else types[:, start:end], past_key_values=past,
                    use_cache=True)
        past = out.past_key_values
        logits.append(out.logits)
    return torch.cat(logits, dim=1), past


@pytest.mark.parametrize("prefill", [1, 4])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_cache_steps_equal_the_full_forward(case: ModelCase, prefill: int, tmp_path: Path) -> None:
    """Every real position's logits, decoded step by step with the cache, equal one full forward's
    and the reference's; the returned cache holds the reference's keys and values."""
    reference, ours = _lm(case, tmp_path)
    inputs = padded_batch(case)
    real = inputs["attention_mask"].bool()
    with torch.no_grad():
        expected = reference(**inputs, use_cache=True)
        full = ours(**inputs)
        stepped, past = _decode_in_steps(ours, inputs, prefill)
    assert full.past_key_values is None  # only on request
    torch.testing.assert_close(full.logits[real], expected.logits[real], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(stepped[real], expected.logits[real], atol=ATOL, rtol=RTOL)
    assert len(past) == case.config.get("n_layer", 2)
    for (key, value), layer in zip(past, expected.cache.layers):
        assert key.shape == value.shape == (3, 4, 9, 8)  # (B, nH, T, d)
        # Real tokens only: above the first layer a pad's key comes from its own (undefined) state.
        for ours_kv, theirs in ((key, layer.keys), (value, layer.values)):
            torch.testing.assert_close(ours_kv.transpose(1, 2)[real], theirs.transpose(1, 2)[real], atol=ATOL, rtol=RTOL)


def test_greedy_decoding_of_left_padded_prompts_matches_reference_generate(tmp_path: Path) -> None:
    """A generate loop on our cache (left-padded prompts, positions from the mask) picks the
    reference generate's tokens."""
    case = CASES[1]
    reference, ours = _lm(case, tmp_path)
    inputs = padded_batch(case)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    with torch.no_grad():
        expected = reference.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False,
                                      pad_token_id=0, eos_token_id=None)
        out = ours(input_ids=ids, attention_mask=mask, position_ids=inputs["position_ids"], use_cache=True)
        for _ in range(5):
            next_ids = out.logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
            ids, mask = torch.cat([ids, next_ids], 1), torch.cat([mask, torch.ones_like(next_ids)], 1)
            out = ours(input_ids=next_ids, attention_mask=mask, position_ids=mask.sum(1, keepdim=True) - 1,
                       past_key_values=out.past_key_values, use_cache=True)
    assert torch.equal(ids, expected)


def test_sequence_classification_without_pad_token_takes_one_row_only(tmp_path: Path) -> None:
    case = ModelCase("gpt2-nopad", "GPT2Config", {**TINY, "pad_token_id": None}, HEADS)
    reference = build_reference(case, "GPT2ForSequenceClassification")
    reference.save_pretrained(tmp_path)
    ours = autoload.AutoModelForSequenceClassification.from_pretrained(tmp_path)
    ids = torch.randint(5, 99, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=ids[:1]).logits, reference(input_ids=ids[:1]).logits)
        with pytest.raises(ValueError, match="pad_token_id"):
            ours(input_ids=ids)


def test_old_checkpoint_buffers_and_unprefixed_keys_load(tmp_path: Path) -> None:
    """Released GPT-2 checkpoints keep the mask buffers (attn.bias, attn.masked_bias) and, for the
    bare body, no "transformer." prefix: both load strictly into the LM head."""
    from safetensors.torch import load_file, save_file

    case = CASES[0]
    reference = build_reference(case, "GPT2Model")
    reference.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    for i in range(TINY["n_layer"]):
        state[f"h.{i}.attn.bias"] = torch.ones(1, 1, 64, 64).tril()
        state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    ours, info = autoload.AutoModelWithLMHead.from_pretrained(tmp_path, output_loading_info=True)
    assert type(ours).__name__ == "GPT2LMHeadModel"
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []  # lm_head is tied to wte
    assert ours.lm_head.weight is ours.transformer.wte.weight


def test_contract() -> None:
    contract = registry.contract("gpt2")
    assert [p for p, t in registry.name_patterns() if t == "gpt2"] == ["gpt2"]
    assert registry.model_type_from_name("openai-community/gpt2-medium") == "gpt2"
    assert contract.padding_side == transformers.GPT2TokenizerFast.padding_side
    assert list(contract.input_names) == transformers.GPT2TokenizerFast.model_input_names
    config = autoload.AutoConfig.for_model("gpt2", n_positions=77)
    assert contract.max_input_length(config) == 77
    reference = transformers.GPT2Config()
    ours = autoload.AutoConfig.for_model("gpt2")
    for key in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner", "activation_function",
                "layer_norm_epsilon", "bos_token_id", "eos_token_id", "pad_token_id", "scale_attn_weights",
                "scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "tie_word_embeddings"):
        assert getattr(ours, key) == getattr(reference, key), key
    assert ours.hidden_size == 768 and ours.max_position_embeddings == 1024
