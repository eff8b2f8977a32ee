"""OpenAI GPT and CTRL decoding with a key/value cache: a prompt, then one token at a time with
the cache, gives at every real position the logits of one full forward (ours and the reference's),
for right- and left-padded batches, with default or explicit positions."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from model_harness import ATOL, RTOL, ModelCase, build_reference, padded_batch
from test_model_ctrl import CASES as CTRL_CASES
from test_model_openai_gpt import CASES as OPENAI_GPT_CASES

import autoload

# Right padding with default positions and token types, left padding with explicit positions, per architecture.
CASES = [OPENAI_GPT_CASES[1], OPENAI_GPT_CASES[2], CTRL_CASES[0], CTRL_CASES[2]]


def _columns(inputs: dict[str, torch.Tensor], start: int, stop: int, *, with_mask: bool = True) -> dict:
    """Columns start:stop of every input; the attention mask always covers the past too."""
    out = {k: v[:, start:stop] for k, v in inputs.items() if k != "attention_mask"}
    if with_mask:
        out["attention_mask"] = inputs["attention_mask"][:, :stop]
    return out


@pytest.mark.parametrize("prompt", [1, 4])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_cached_decoding_equals_full_forward(case: ModelCase, prompt: int, tmp_path: Path) -> None:
    reference = build_reference(case, case.heads["causal_lm"])
    reference.save_pretrained(tmp_path)
    ours = autoload.AutoModelForCausalLM.from_pretrained(tmp_path)
    inputs = padded_batch(case)
    length = inputs["input_ids"].shape[1]
    with torch.no_grad():
        expected = reference(**inputs).logits
        full = ours(**inputs).logits
        out = ours(**_columns(inputs, 0, prompt), use_cache=True)
        steps, past = [out.logits], out.past_key_values
        for t in range(prompt, length):
            out = ours(**_columns(inputs, t, t + 1), past_key_values=past, use_cache=True)
            steps.append(out.logits)
            past = out.past_key_values
    cached = torch.cat(steps, dim=1)  # (B, T, V)
    real = inputs["attention_mask"].bool()
    torch.testing.assert_close(cached[real], full[real], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(cached[real], expected[real], atol=ATOL, rtol=RTOL)
    heads = case.config["n_head"]
    assert len(past) == case.config["n_layer"]
    assert all(k.shape == v.shape == (3, heads, length, case.config["n_embd"] // heads) for k, v in past)


@pytest.mark.parametrize("case", [OPENAI_GPT_CASES[0], CTRL_CASES[1]], ids=lambda c: c.name)
def test_no_cache_unless_asked(case: ModelCase, tmp_path: Path) -> None:
    build_reference(case, case.heads["base"]).save_pretrained(tmp_path)
    ours = autoload.AutoModel.from_pretrained(tmp_path)
    inputs = padded_batch(case)
    with torch.no_grad():
        assert ours(**inputs).past_key_values is None
        assert len(ours(**inputs, use_cache=True).past_key_values) == case.config["n_layer"]


def _greedy(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, steps: int) -> torch.Tensor:
    """Greedy decoding with the cache: the prompt once, then one token per step, positions counting
    real tokens only (left-padded prompts)."""
    positions = (attention_mask.cumsum(1) - 1).clamp(min=0)
    out = model(input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=True)
    ids, mask = input_ids, attention_mask
    for _ in range(steps):
        token = out.logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
        ids, mask = torch.cat([ids, token], 1), torch.cat([mask, torch.ones_like(token)], 1)
        out = model(token, attention_mask=mask, position_ids=positions[:, -1:] + 1, past_key_values=out.past_key_values,
                    use_cache=True)
        positions = torch.cat([positions, positions[:, -1:] + 1], 1)
    return ids


@pytest.mark.parametrize("case", [OPENAI_GPT_CASES[0], CTRL_CASES[1]], ids=lambda c: c.name)
def test_greedy_decoding_with_the_cache_is_the_references_generate(case: ModelCase, tmp_path: Path) -> None:
    reference = build_reference(case, case.heads["causal_lm"])
    reference.save_pretrained(tmp_path)
    ours = autoload.AutoModelForCausalLM.from_pretrained(tmp_path)
    prompts = torch.randint(5, case.config["vocab_size"], (2, 5), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(prompts)
    mask[1, :2] = 0  # the second prompt is left-padded
    prompts = prompts.masked_fill(mask == 0, case.config["pad_token_id"])
    with torch.no_grad():
        got = _greedy(ours, prompts, mask, steps=8)
        for row in range(2):  # the reference alone on each unpadded prompt
            real = prompts[row:row + 1, mask[row].bool()]
            expected = reference.generate(real, attention_mask=torch.ones_like(real), max_new_tokens=8,
                                          do_sample=False, pad_token_id=case.config["pad_token_id"])
            assert torch.equal(got[row, -expected.shape[1]:], expected[0]), row
