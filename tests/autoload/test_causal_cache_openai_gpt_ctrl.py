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
