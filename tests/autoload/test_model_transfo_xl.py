"""Transformer-XL against golden fixtures from transformers 4.37.2 (today's reference has no
Transformer-XL; tests/fixtures/transfo_xl/make_fixtures.py made them): hidden states,
attentions and memories over two segments, adaptive-softmax log-probabilities and losses,
greedy generation with memories, sequence classification; a padded batch equals each row
alone; checkpoints load strictly through the Auto classes, and save and load back."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import autoload
from autoload import registry
from autoload.models.transfo_xl import TransfoXLConfig, TransfoXLLMHeadModel

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "transfo_xl"
LM_CASES = ("div1", "div2", "plain")
ATOL = RTOL = 1e-5


class GoldenCase:
    """A parity case whose reference outputs are fixture files (test_parity_coverage counts its
    heads). A plain class: the coverage test loads this file without registering it as a module."""

    def __init__(self, name: str, model_type: str, heads: dict[str, str]):
        self.name, self.model_type = name, model_type
        self.heads = heads  # our head → the reference class that made the fixture


LM_HEADS = {"pretraining": "TransfoXLLMHeadModel", "with_lm_head": "TransfoXLLMHeadModel",
            "causal_lm": "TransfoXLLMHeadModel"}
CASES = [GoldenCase(name, "transfo-xl", {"base": "TransfoXLModel", **LM_HEADS}) for name in LM_CASES]
CASES.append(GoldenCase("seqcls", "transfo-xl", {"sequence_classification": "TransfoXLForSequenceClassification"}))


def expected(case: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / case / "expected.npz") as data:
        return dict(data)


def close(actual: torch.Tensor, wanted: np.ndarray) -> None:
    torch.testing.assert_close(actual, torch.from_numpy(wanted), atol=ATOL, rtol=RTOL)


@pytest.fixture(scope="module", params=LM_CASES)
def lm(request) -> tuple[str, TransfoXLLMHeadModel, dict[str, np.ndarray]]:
    model, info = autoload.AutoModelForCausalLM.from_pretrained(FIXTURES / request.param, output_loading_info=True)
    assert info["missing_keys"] == info["unexpected_keys"] == info["mismatched_keys"] == []
    return request.param, model, expected(request.param)


def test_body_two_segments_equal_the_reference(lm) -> None:
    name, _, want = lm
    body = autoload.AutoModel.from_pretrained(FIXTURES / name)  # the body alone from a head checkpoint
    assert type(body).__name__ == "TransfoXLModel"
    with torch.no_grad():
        first = body(torch.from_numpy(want["first"]), output_hidden_states=True, output_attentions=True)
        second = body(torch.from_numpy(want["second"]), mems=first.mems)
    close(first.last_hidden_state, want["first_hidden"])
    assert len(first.hidden_states) == body.config.n_layer + 1
    for i, state in enumerate(first.hidden_states):
        close(state, want[f"first_hidden_states_{i}"])
    for i, probs in enumerate(first.attentions):
        close(probs, want[f"first_attentions_{i}"])
    close(second.last_hidden_state, want["second_hidden"])
    if body.config.mem_len == 0:
        assert first.mems is None and second.mems is None
    else:
        for i in range(body.config.n_layer):
            assert first.mems[i].shape == (body.config.mem_len, 3, body.config.d_model)
            close(first.mems[i], want[f"first_mems_{i}"])
            close(second.mems[i], want[f"second_mems_{i}"])


def test_lm_head_logprobs_and_losses_equal_the_reference(lm) -> None:
    _, model, want = lm
    with torch.no_grad():
        first = model(torch.from_numpy(want["first"]))
        second = model(torch.from_numpy(want["second"]), mems=first.mems)
        labelled = model(torch.from_numpy(want["first"]), labels=torch.from_numpy(want["labels"]))
    close(first.prediction_scores, want["first_logprobs"])
    close(second.prediction_scores, want["second_logprobs"])
    torch.testing.assert_close(first.prediction_scores.exp().sum(-1), torch.ones(3, 7), atol=1e-5, rtol=0)
    close(labelled.losses, want["losses"])  # the reference's order: grouped by cluster
    close(labelled.loss, want["loss"])


def test_target_logprobs_are_the_full_distribution_at_the_targets(lm) -> None:
    _, model, want = lm
    ids = torch.from_numpy(want["first"])
    with torch.no_grad():
        hidden = model.transformer(ids).last_hidden_state[:, :-1].reshape(-1, model.config.d_model)
        scored = model.target_logprobs(hidden, ids[:, 1:].reshape(-1))
    full = torch.from_numpy(want["first_logprobs"])[:, :-1].reshape(-1, model.config.vocab_size)
    close(scored, full.gather(1, ids[:, 1:].reshape(-1, 1)).squeeze(1).numpy())


def reference_greedy(model: TransfoXLLMHeadModel, prompt: torch.Tensor, steps: int) -> list[int]:
    """The reference generate's loop (4.37 prepare_inputs_for_generation): the prompt, then the
    last token on the memories; with mem_len 0 (no memories) the whole sequence again."""
    tokens, mems = prompt[None], None
    with torch.no_grad():
        for _ in range(steps):
            out = model(tokens[:, -1:] if mems else tokens, mems=mems)
            tokens = torch.cat([tokens, out.prediction_scores[:, -1].argmax(-1, keepdim=True)], dim=1)
            mems = out.mems
    return tokens[0, len(prompt):].tolist()


def test_greedy_decoding_with_memories_equals_the_reference_generate(lm) -> None:
    _, model, want = lm
    prompt = torch.from_numpy(want["generate_prompt"])[0]
    steps = want["generate_output"].shape[1] - len(prompt)
    assert prompt.tolist() + reference_greedy(model, prompt, steps) == want["generate_output"][0].tolist()


def test_decoding_hook_runs_ragged_prompts_as_each_alone(lm) -> None:
    """start_decoding / decode_step / select_rows (the generate stage's hook): a right-padded
    batch of prompts of several lengths, a row leaving and one repeated, decodes each row as the
    reference's generate does alone."""
    _, model, want = lm
    first = torch.from_numpy(want["first"])
    rows = [first[0, :4], first[1, :6], first[2, :3], first[2, :4]]
    ids = torch.zeros(len(rows), 6, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = row
    mask = (torch.arange(6)[None] < torch.tensor([len(r) for r in rows])[:, None]).long()
    steps = 6
    with torch.no_grad():
        logits, state = model.start_decoding(ids, mask)
        slots, histories, left = list(range(len(rows))), [[] for _ in rows], {}
        for t in range(steps):
            tokens = logits.argmax(-1)
            for history, token in zip(histories, tokens.tolist()):
                history.append(token)
            if t == 1:  # row 2 leaves the batch, row 0 runs twice
                keep = [0, 1, 3, 0]
                left[2] = histories[2]
                slots, histories = [slots[k] for k in keep], [list(histories[k]) for k in keep]
                tokens, state = tokens[keep], model.select_rows(state, torch.tensor(keep))
            logits, state = model.decode_step(state, tokens)
    alone = [reference_greedy(model, row, steps) for row in rows]
    assert slots == [0, 1, 3, 0]
    for slot, history in zip(slots, histories):
        assert history == alone[slot], slot
    assert left[2] == alone[2][:2]


def test_padded_batch_equals_each_row_alone(lm) -> None:
    """No attention mask: the model is causal, so right padding never reaches a real token (with
    same_length each query sees the last mem_len keys, whatever the batch's width)."""
    _, model, want = lm
    ids = torch.from_numpy(want["first"]).clone()
    lengths = [7, 4, 2]
    for row, length in enumerate(lengths):
        ids[row, length:] = (row + 3) % model.config.vocab_size  # anything: padding
    with torch.no_grad():
        batch = model(ids).prediction_scores
        for row, length in enumerate(lengths):
            alone = model(ids[row:row + 1, :length]).prediction_scores[0]
            torch.testing.assert_close(batch[row, :length], alone, atol=ATOL, rtol=RTOL)
            # and both are the reference's: a row's prefix sees what the full row saw
            close(alone, want["first_logprobs"][row, :length])


def test_sequence_classification_equals_the_reference() -> None:
    want = expected("seqcls")
    model, info = autoload.AutoModelForSequenceClassification.from_pretrained(FIXTURES / "seqcls",
                                                                             output_loading_info=True)
    assert info["missing_keys"] == info["unexpected_keys"] == []
    with torch.no_grad():
        close(model(torch.from_numpy(want["ids"])).logits, want["logits"])


def test_save_and_load_back_keeps_every_output(tmp_path: Path) -> None:
    want = expected("div2")
    model = autoload.AutoModelWithLMHead.from_pretrained(FIXTURES / "div2")
    model.save_pretrained(tmp_path)
    again, info = autoload.AutoModelForPreTraining.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == info["unexpected_keys"] == []
    # untie_r false: the layers' r biases are the body's, one tensor
    assert again.transformer.layers[1].dec_attn.r_w_bias is again.transformer.r_w_bias
    assert again.crit.out_layers[2].weight is again.transformer.word_emb.emb_layers[2].weight
    with torch.no_grad():
        close(again(torch.from_numpy(want["first"])).prediction_scores, want["first_logprobs"])


def test_config_defaults_and_generic_names_equal_the_reference() -> None:
    golden = json.loads((FIXTURES / "config_defaults.json").read_text(encoding="utf-8"))
    ours = autoload.AutoConfig.for_model("transfo-xl")
    assert {name: getattr(ours, name) for name in golden["generic"]} == golden["generic"]
    mine = ours.to_dict()
    assert {k: mine.get(k) for k in golden["to_dict"]} == golden["to_dict"]


def test_registry_and_refusals() -> None:
    contract = registry.contract("transfo-xl")
    assert registry.model_type_from_name("my-transfo-xl-wt103") == "transfo-xl"
    assert contract.causal and contract.input_names == ("input_ids",)
    assert contract.max_input_length(TransfoXLConfig()) > 0
    assert TransfoXLConfig(cutoffs=[5, 9], proj_share_all_but_first=False).tie_projs == [False, False, False]
    with pytest.raises(ValueError, match="sample_softmax"):
        TransfoXLLMHeadModel(TransfoXLConfig(sample_softmax=8, vocab_size=50, cutoffs=[10]))
    with pytest.raises(ValueError, match="attn_type"):
        TransfoXLLMHeadModel(TransfoXLConfig(attn_type=1))
    with pytest.raises(ValueError, match="cutoffs"):
        TransfoXLLMHeadModel(TransfoXLConfig(vocab_size=50, cutoffs=[30, 10]))
