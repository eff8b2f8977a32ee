"""T5 × every head: parity with transformers 5.24 (v1.0 relu and v1.1 gated, tied and untied LM
heads, odd bucket counts and distances), loading reports, a padded batch equal to each row alone,
the flat (unpadded) encoder and heads equal to the padded ones, the decoder's cache step by step
equal to the full forward, contract.

The generic harness feeds one ``input_ids`` batch; T5's heads also take decoder inputs, and its
sequence classifier needs exactly one EOS per row, so the checks here build those inputs
themselves (the cases are still ``ModelCase`` s, so the coverage test sees every head).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from model_harness import ATOL, RTOL, ModelCase, assert_outputs_close, build_reference, transformers
from safetensors.torch import load_file, save_file

import autoload
from autoload import registry
from autoload.modeling import Segments

EOS = 1
# decoder_start_token_id: the 5.24 reference config has none, and its classifier / QA heads and
# generate() need it (the released checkpoints' generation configs say 0, the pad id).
V10 = dict(vocab_size=99, d_model=16, d_kv=8, d_ff=24, num_layers=2, num_heads=2, relative_attention_num_buckets=7,
           relative_attention_max_distance=9, num_labels=3, decoder_start_token_id=0, feed_forward_proj="relu")
# v1.1: gated-gelu, untied LM head, another layer count on the decoder side, even buckets, a far distance.
V11 = dict(V10, feed_forward_proj="gated-gelu", tie_word_embeddings=False, num_decoder_layers=3,
           relative_attention_num_buckets=10, relative_attention_max_distance=20, d_kv=4, num_heads=4,
           layer_norm_epsilon=1e-5)
HEADS = {
    "base": "T5Model",
    "pretraining": "T5ForConditionalGeneration",
    "with_lm_head": "T5ForConditionalGeneration",
    "encoder": "T5EncoderModel",
    "sequence_classification": "T5ForSequenceClassification",
    "token_classification": "T5ForTokenClassification",
    "question_answering": "T5ForQuestionAnswering",
}
CASES = [
    ModelCase("t5-v1.0-relu-tied", "T5Config", V10, HEADS, uses_token_types=False),
    ModelCase("t5-v1.1-gated-untied", "T5Config", V11, HEADS, uses_token_types=False),
    # A gated relu (the reference accepts any gated-<act>), tiny buckets, one encoder layer.
    ModelCase("t5-gated-relu-5-buckets", "T5Config",
              dict(V10, feed_forward_proj="gated-relu", relative_attention_num_buckets=5,
                   relative_attention_max_distance=4, num_layers=1, num_decoder_layers=2), HEADS,
              uses_token_types=False),
]
PARAMS = [p for case in CASES for p in case.params()]
# Heads of distinct classes (pretraining and with_lm_head are one class) of the first two cases:
# what the slower checks run, to keep the file's time small.
DISTINCT = [p for case in CASES[:2] for p in case.params() if p.values[1] != "pretraining"]
SEQ2SEQ = ("T5Model", "T5ForConditionalGeneration")  # the heads that take decoder inputs from the caller


def load(head: str, directory: Path, **kwargs):
    return registry.head_class("t5", head).from_pretrained(directory, **kwargs)


def reference_dir(case: ModelCase, head: str, tmp_path: Path):
    """The reference head saved to ``tmp_path / "ref"``; an untied case's LM head gets weights of
    its own (5.24 ties at construction and then unties when the checkpoint's head differs, as
    in the released v1.1 checkpoints, whose config says tie_word_embeddings false)."""
    class_name = case.heads[head]
    reference = build_reference(case, class_name)
    directory = tmp_path / "ref"
    reference.save_pretrained(directory)
    if case.config.get("tie_word_embeddings", True) is False and class_name == "T5ForConditionalGeneration":
        state = load_file(str(directory / "model.safetensors"))
        state["lm_head.weight"] = torch.randn(case.config["vocab_size"], case.config["d_model"],
                                              generator=torch.Generator().manual_seed(7))
        save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
        config = json.loads((directory / "config.json").read_text())
        config["tie_word_embeddings"] = False
        config.pop("scale_decoder_outputs", None)
        (directory / "config.json").write_text(json.dumps(config))
        reference = getattr(transformers, class_name).from_pretrained(directory, attn_implementation="eager").eval()
        assert reference.lm_head.weight is not reference.shared.weight
        assert not reference.config.scale_decoder_outputs
    return reference, directory


def batch(case: ModelCase, seed: int = 1) -> dict[str, torch.Tensor]:
    """Rows of 9, 6 and 2 real tokens, right-padded, each ending in its one EOS (the sequence
    classifier pools there); decoder inputs of 5, 3 and 4 tokens, right-padded."""
    generator = torch.Generator().manual_seed(seed)
    vocab = case.config["vocab_size"]
    ids = torch.randint(5, vocab, (3, 9), generator=generator)
    lengths = [9, 6, 2]
    mask = (torch.arange(9)[None] < torch.tensor(lengths)[:, None]).long()
    ids = ids.masked_fill(mask == 0, 0)
    for row, length in enumerate(lengths):
        ids[row, length - 1] = EOS
    decoder_ids = torch.randint(5, vocab, (3, 5), generator=generator)
    decoder_mask = (torch.arange(5)[None] < torch.tensor([5, 3, 4])[:, None]).long()
    decoder_ids = torch.cat([torch.zeros(3, 1, dtype=torch.long), decoder_ids[:, 1:]], 1)  # the start token first
    decoder_ids = decoder_ids.masked_fill(decoder_mask == 0, 0)
    return {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": decoder_ids,
            "decoder_attention_mask": decoder_mask}


def inputs_for(class_name: str, full: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if class_name in SEQ2SEQ:
        return full
    return {k: full[k] for k in ("input_ids", "attention_mask")}  # the others decode the shifted source


@pytest.mark.parametrize("case, head", PARAMS)
def test_parity(case: ModelCase, head: str, tmp_path: Path) -> None:
    """Every output (hidden states and attention probabilities of both stacks included) equals the
    reference's; our save_pretrained loads back into the reference with the same outputs."""
    reference, directory = reference_dir(case, head, tmp_path)
    ours, info = load(head, directory, output_loading_info=True)
    assert type(ours).__name__ == case.heads[head] and not ours.training
    assert info["missing_keys"] == [] and info["unexpected_keys"] == [] and info["mismatched_keys"] == []
    inputs = inputs_for(case.heads[head], batch(case))
    with torch.no_grad():
        expected = reference(**inputs, output_hidden_states=True, output_attentions=True)
        got = ours(**inputs, output_hidden_states=True, output_attentions=True)
    assert_outputs_close(got, expected)
    ours.save_pretrained(tmp_path / "ours")
    reloaded = getattr(transformers, case.heads[head]).from_pretrained(tmp_path / "ours",
                                                                       attn_implementation="eager").eval()
    with torch.no_grad():
        again = reloaded(**inputs)
    for key in got.keys():
        if not key.endswith(("hidden_states", "attentions")):
            torch.testing.assert_close(getattr(again, key), got[key], atol=ATOL, rtol=RTOL)


def test_lm_loss_equals_the_reference_and_the_rescale_follows_the_tie(tmp_path: Path) -> None:
    """Loss from labels (-100 ignored; decoder inputs are the labels shifted right); the tied head
    reads the states scaled by d_model ** -0.5, the untied one unscaled."""
    for case in CASES[:2]:
        reference, directory = reference_dir(case, "with_lm_head", tmp_path / case.name)
        ours = load("with_lm_head", directory)
        inputs = batch(case)
        labels = inputs["decoder_input_ids"].masked_fill(inputs["decoder_attention_mask"] == 0, -100)
        with torch.no_grad():
            expected = reference(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], labels=labels)
            got = ours(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], labels=labels)
        torch.testing.assert_close(got.loss, expected.loss, atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(got.logits, expected.logits, atol=ATOL, rtol=RTOL)
        tied = case.config.get("tie_word_embeddings", True)
        assert ours.config.scale_decoder_outputs is tied
        assert (ours.lm_head.weight is ours.shared.weight) is tied


@pytest.mark.parametrize("case, head", DISTINCT)
def test_loading_report(case: ModelCase, head: str, tmp_path: Path) -> None:
    """A bare T5Model checkpoint into each head: exactly the head's own weights are missing (the
    encoder-only heads drop the decoder silently: a full checkpoint is theirs to read); the body
    weights arrive."""
    body = build_reference(case, "T5Model", **({"num_labels": 2} if head == "question_answering" else {}))
    body.save_pretrained(tmp_path / "body")
    model, info = load(head, tmp_path / "body", output_loading_info=True)
    assert info["unexpected_keys"] == [] and info["mismatched_keys"] == []
    # 5.24 saves every body's config with tie_word_embeddings true (an untied head says so by
    # having its own weights), so the LM head is tied here and nothing of it is missing.
    own = {"pretraining": set() if model.config.tie_word_embeddings else {"lm_head.weight"},
           "sequence_classification": {f"classification_head.{m}.{p}" for m in ("dense", "out_proj")
                                       for p in ("weight", "bias")},
           "token_classification": {"classifier.weight", "classifier.bias"},
           "question_answering": {"qa_outputs.weight", "qa_outputs.bias"}}
    own["with_lm_head"] = own["pretraining"]
    assert set(info["missing_keys"]) == own.get(head, set())
    reference_state = body.state_dict()
    prefix = "transformer." if head in ("sequence_classification", "token_classification") else ""
    for key, value in model.state_dict().items():
        assert torch.isfinite(value).all(), key
        if key.startswith(prefix) and key[len(prefix):] in reference_state:
            torch.testing.assert_close(value, reference_state[key[len(prefix):]])


@pytest.mark.parametrize("case, head", DISTINCT)
def test_batch_invariance(case: ModelCase, head: str, tmp_path: Path) -> None:
    """A row in a padded batch equals the row alone; four more padding columns change nothing."""
    _, directory = reference_dir(case, head, tmp_path)
    model = load(head, directory)
    full = batch(case)
    inputs = inputs_for(case.heads[head], full)
    with torch.no_grad():
        batched = model(**inputs)
        extra = model(**{k: torch.nn.functional.pad(v, (0, 4)) for k, v in inputs.items()})
        for row in range(3):
            alone_inputs = {}
            for key, value in inputs.items():
                mask_key = "decoder_attention_mask" if key.startswith("decoder") else "attention_mask"
                length = int(inputs[mask_key][row].sum())
                alone_inputs[key] = value[row:row + 1, :length]
            alone = model(**alone_inputs)
            for key in alone.keys():
                if key.endswith(("hidden_states", "attentions")):
                    continue
                one = alone[key][0]
                many, more = batched[key][row], extra[key][row]
                if batched[key].dim() >= 2 and batched[key].shape[1] in (9, 5):  # per token: the real part
                    many, more = many[:one.shape[0]], more[:one.shape[0]]
                torch.testing.assert_close(many, one, atol=ATOL, rtol=RTOL, msg=lambda m: f"row {row} {key}: {m}")
                torch.testing.assert_close(more, one, atol=ATOL, rtol=RTOL)


FLAT_LENGTHS = [7, 2, 5, 1]


@pytest.mark.parametrize("case, head", [p for p in PARAMS if p.values[1] != "pretraining"])
def test_flat_equals_padded(case: ModelCase, head: str, tmp_path: Path) -> None:
    """forward_flat on back-to-back sequences equals the padded forward's real positions: the
    encoder states for the seq2seq bodies, per-token logits, per-sequence EOS logits."""
    _, directory = reference_dir(case, head, tmp_path)
    model = load(head, directory)
    generator = torch.Generator().manual_seed(4)
    rows = [torch.randint(5, case.config["vocab_size"], (n,), generator=generator) for n in FLAT_LENGTHS]
    for row in rows:
        row[-1] = EOS
    width = max(FLAT_LENGTHS)
    ids = torch.stack([torch.nn.functional.pad(r, (0, width - len(r))) for r in rows])
    mask = (torch.arange(width)[None] < torch.tensor(FLAT_LENGTHS)[:, None]).long()
    real = mask.bool()
    segments = Segments.from_lengths(FLAT_LENGTHS)
    with torch.no_grad():
        got = model.forward_flat(torch.cat(rows), segments)
        if case.heads[head] in SEQ2SEQ:
            expected = model.encoder(ids, mask)[0][real]
        elif head == "encoder":
            expected = model(ids, mask).last_hidden_state[real]
        elif head == "token_classification":
            expected = model(ids, mask).logits[real]
        elif head == "sequence_classification":
            expected = model(ids, mask).logits
        else:
            out = model(ids, mask)
            expected = torch.stack([out.start_logits[real], out.end_logits[real]], -1)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=RTOL)


def _decode_in_steps(model, inputs: dict[str, torch.Tensor], prefill: int):
    """The encoder once, then the decoder's first ``prefill`` tokens, then one token per call with
    the cache → logits (B, T, V) and the last cache."""
    encoded = model.encode(inputs["input_ids"], inputs["attention_mask"])
    ids, mask = inputs["decoder_input_ids"], inputs["decoder_attention_mask"]
    past, logits = None, []
    bounds = [0, prefill] + list(range(prefill + 1, ids.shape[1] + 1))
    for start, end in zip(bounds, bounds[1:]):
        out = model(attention_mask=inputs["attention_mask"], encoder_outputs=encoded,
                    decoder_input_ids=ids[:, start:end], decoder_attention_mask=mask[:, :end],
                    past_key_values=past, use_cache=True)
        past = out.past_key_values
        logits.append(out.logits)
    return torch.cat(logits, 1), past


@pytest.mark.parametrize("prefill", [1, 3])
@pytest.mark.parametrize("case", CASES[:2], ids=[c.name for c in CASES[:2]])
def test_cache_steps_equal_the_full_forward(case: ModelCase, prefill: int, tmp_path: Path) -> None:
    """Decoding with the cache gives the full forward's (and the reference's) logits at every real
    decoder position; the cache holds the reference's self- and cross-attention keys and values."""
    reference, directory = reference_dir(case, "with_lm_head", tmp_path)
    ours = load("with_lm_head", directory)
    inputs = batch(case)
    real = inputs["decoder_attention_mask"].bool()
    with torch.no_grad():
        expected = reference(**inputs, use_cache=True)
        full = ours(**inputs)
        stepped, past = _decode_in_steps(ours, inputs, prefill)
    assert full.past_key_values is None
    torch.testing.assert_close(stepped[real], expected.logits[real], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(full.logits[real], expected.logits[real], atol=ATOL, rtol=RTOL)
    cache = expected.cache
    assert len(past) == case.config.get("num_decoder_layers", case.config["num_layers"])
    for i, (key, value, cross_key, cross_value) in enumerate(past):
        heads, d_kv = case.config["num_heads"], case.config["d_kv"]
        assert key.shape == (3, heads, 5, d_kv) and cross_key.shape == (3, heads, 9, d_kv)
        layer, cross = cache.self_attention_cache.layers[i], cache.cross_attention_cache.layers[i]
        torch.testing.assert_close(key.transpose(1, 2)[real], layer.keys.transpose(1, 2)[real], atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(value.transpose(1, 2)[real], layer.values.transpose(1, 2)[real], atol=ATOL,
                                   rtol=RTOL)
        torch.testing.assert_close(cross_key, cross.keys, atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(cross_value, cross.values, atol=ATOL, rtol=RTOL)


def test_relative_buckets_equal_the_reference() -> None:
    from transformers.models.t5.modeling_t5 import T5Attention as Reference

    from autoload.models.t5 import relative_position_bucket

    relative = torch.arange(-300, 300)[None, :] - torch.arange(0, 40)[:, None]
    for bidirectional in (True, False):
        for buckets, distance in ((32, 128), (7, 9), (5, 4), (10, 20), (33, 1000)):
            expected = Reference._relative_position_bucket(relative, bidirectional, buckets, distance)
            assert torch.equal(relative_position_bucket(relative, bidirectional, buckets, distance), expected)


def test_sequence_classification_refuses_rows_without_one_eos(tmp_path: Path) -> None:
    _, directory = reference_dir(CASES[0], "sequence_classification", tmp_path)
    model = load("sequence_classification", directory)
    ids = torch.tensor([[5, 6, EOS], [5, 6, 7]])
    with pytest.raises(ValueError, match="EOS token"):
        model(input_ids=ids)
    with pytest.raises(ValueError, match="EOS token"):
        model.forward_flat(ids.flatten(), Segments.from_lengths([3, 3]))


def test_config_matches_the_reference_and_refuses_unknown_feed_forward() -> None:
    ours, reference = autoload.AutoConfig.for_model("t5"), transformers.T5Config()
    for key in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads",
                "relative_attention_num_buckets", "relative_attention_max_distance", "layer_norm_epsilon",
                "feed_forward_proj", "dense_act_fn", "is_gated_act", "pad_token_id", "eos_token_id",
                "scale_decoder_outputs", "is_encoder_decoder"):
        assert getattr(ours, key) == getattr(reference, key), key
    v11 = autoload.AutoConfig.for_model("t5", feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    assert (v11.dense_act_fn, v11.is_gated_act, v11.scale_decoder_outputs) == ("gelu_new", True, False)
    assert ours.hidden_size == 512 and ours.num_attention_heads == 8
    with pytest.raises(ValueError, match="feed_forward_proj"):
        autoload.AutoConfig.for_model("t5", feed_forward_proj="gated-gelu-x")


def test_from_config_and_encoder_only_checkpoint(tmp_path: Path) -> None:
    """A fresh model runs; a full checkpoint loads into the encoder-only model with nothing
    reported; the encoder's output equals the full model's encoder states."""
    model = registry.head_class("t5", "with_lm_head").from_config(autoload.AutoConfig.for_model("t5", **V10))
    assert model.lm_head.weight is model.shared.weight
    assert model.encoder.embed_tokens.weight is model.shared.weight is model.decoder.embed_tokens.weight
    model.save_pretrained(tmp_path)
    encoder, info = load("encoder", tmp_path, output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    ids = torch.tensor([[5, 6, 7, EOS]])
    with torch.no_grad():
        torch.testing.assert_close(encoder(ids).last_hidden_state, model.encode(ids).last_hidden_state)
        assert torch.isfinite(model(ids, decoder_input_ids=ids).logits).all()


def test_contract() -> None:
    contract = registry.contract("t5")
    assert contract.encoder_decoder and not contract.causal
    assert registry.model_type_from_name("google/flan-t5-small") == "t5"
    assert registry.model_type_from_name("t5-bert-hybrid") == "t5"  # t5 comes first in the seed's order
    assert list(contract.input_names) == transformers.T5TokenizerFast.model_input_names
    assert contract.padding_side == transformers.T5TokenizerFast.padding_side
    assert contract.max_input_length(autoload.AutoConfig.for_model("t5")) == 512


@pytest.mark.parametrize("head", ["with_lm_head", "sequence_classification", "encoder"])
def test_float16_keeps_the_feed_forward_output_in_float32_as_the_reference(head: str, tmp_path: Path) -> None:
    """Loaded in float16, ``wo`` stays float32 (the reference's _keep_in_fp32_modules) and the
    outputs follow the reference's float16 run."""
    case = CASES[1]
    _, directory = reference_dir(case, head, tmp_path)
    reference = getattr(transformers, case.heads[head]).from_pretrained(directory, dtype=torch.float16,
                                                                        attn_implementation="eager").eval()
    ours = load(head, directory, torch_dtype="float16")
    dtypes = {name: p.dtype for name, p in ours.named_parameters()}
    assert {d for n, d in dtypes.items() if n.endswith("wo.weight")} == {torch.float32}
    assert {d for n, d in dtypes.items() if not n.endswith("wo.weight")} == {torch.float16}
    assert dtypes == {name: p.dtype for name, p in reference.named_parameters() if name in dtypes}
    exact = load(head, directory)  # float32
    inputs = inputs_for(case.heads[head], batch(case))
    key = "logits" if head != "encoder" else "last_hidden_state"
    with torch.no_grad():
        expected, got, truth = getattr(reference(**inputs), key), ours(**inputs)[key], exact(**inputs)[key]
    assert got.dtype == expected.dtype
    # As close to the float32 result as the reference's float16 run is (their rounding differs:
    # eager vs SDPA attention), and both near it.
    ours_error, reference_error = (got.float() - truth).abs().max(), (expected.float() - truth).abs().max()
    assert ours_error <= 2 * reference_error + 1e-3, (ours_error, reference_error)
    assert ours_error <= 5e-3 * truth.abs().max()
