"""XLNet × every head against transformers 5.24: parity on a left-padded batch (hidden states,
attentions, memories), loading reports, rows in a padded batch and in the flat layout equal to
the row alone, memories of one segment fed to the next, the query stream (perm_mask /
target_mapping), bi_data, the simple QA and multiple-choice heads; contract.

What "equal to the row alone" means for XLNet: every real token's states equal the row's alone
(positions are relative, pad keys masked), so per-token outputs and the ``last`` summary of a
left-padded row match the row alone.  The reference's ``first`` and ``mean`` summaries read the
pads of a padded row (the first position, the mean over all positions): the padded forward keeps
that (it is the reference), and the flat forward, the job's path, summarises each row over its
own tokens, which equals the reference on the row alone.  Memories of a padded batch hold pad
states too, so they are compared to the reference, not to rows alone.

The reference cannot take an attention mask with ``attn_type="uni"`` for more than one row
(its in-place mask sum fails to broadcast); uni cases compare unpadded rows with it and padded
batches with it row by row.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from model_harness import ATOL, AUTO_CLASSES, RTOL, ModelCase, assert_outputs_close, build_reference, \
    check_loading_report, head_overrides, transformers

import autoload
from autoload import registry
from autoload.modeling import Segments
from autoload.models.xlnet import XLNetForMultipleChoice, XLNetForQuestionAnsweringSimple

# pad 5, as XLNet's vocabulary; ids 0..8 are the specials, rows draw from 9 up.
TINY = dict(vocab_size=99, d_model=32, n_layer=2, n_head=4, d_inner=37, num_labels=3, pad_token_id=5,
            start_n_top=3, end_n_top=2)
LM = "XLNetLMHeadModel"
HEADS = {
    "base": "XLNetModel",
    "pretraining": LM,
    "with_lm_head": LM,
    "causal_lm": LM,
    "sequence_classification": "XLNetForSequenceClassification",
    "token_classification": "XLNetForTokenClassification",
    "question_answering": "XLNetForQuestionAnswering",
    "span_question_answering": "XLNetForQuestionAnsweringSimple",  # what the qa task runs
}
SOME_HEADS = {k: HEADS[k] for k in ("base", "sequence_classification", "token_classification", "question_answering")}
CASES = [
    ModelCase("xlnet", "XLNetConfig", TINY, HEADS),
    # Causal attention, clamped distances, relu, a memory that keeps 4 of the first 3 states,
    # summary of the first token without projection or activation.
    ModelCase("xlnet-uni-clamp-first", "XLNetConfig",
              {**TINY, "attn_type": "uni", "clamp_len": 3, "ff_activation": "relu", "mem_len": 4, "reuse_len": 3,
               "summary_type": "first", "summary_use_proj": False, "summary_activation": ""},
              {**SOME_HEADS, "pretraining": LM}),
    # Mean summary with gelu_new and another epsilon; three layers, no memory length (all kept).
    ModelCase("xlnet-mean-3layers", "XLNetConfig",
              {**TINY, "n_layer": 3, "summary_type": "mean", "ff_activation": "gelu_new", "layer_norm_eps": 1e-5,
               "mem_len": None}, SOME_HEADS),
    # cls_index summary (no index given: the last position), uni with same_length, untied LM head.
    ModelCase("xlnet-cls-index-uni-same-length", "XLNetConfig",
              {**TINY, "summary_type": "cls_index", "attn_type": "uni", "same_length": True, "mem_len": 6,
               "tie_word_embeddings": False, "summary_activation": "relu"},
              {"sequence_classification": HEADS["sequence_classification"], "with_lm_head": LM}),
]
LENGTHS = [9, 6, 2]


def _uni(case: ModelCase) -> bool:
    return case.config.get("attn_type") == "uni"


def _rows(case: ModelCase, lengths: list[int], seed: int = 1) -> list[dict[str, torch.Tensor]]:
    """Rows as the XLNet tokenizer lays them out: segment A (type 0), B (type 1), <cls> last (type 2)."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for n in lengths:
        types = torch.zeros(n, dtype=torch.long)
        types[n // 2:] = 1
        types[-1] = 2
        rows.append({"input_ids": torch.randint(9, case.config["vocab_size"], (n,), generator=generator),
                     "token_type_ids": types})
    return rows


def _left_padded(case: ModelCase, rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """(B, T) inputs padded on the left: pad id, pad type 3 (XLNetTokenizer's), mask 0."""
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), case.config["pad_token_id"])
    types = torch.full((len(rows), width), 3)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        ids[i, width - n:], types[i, width - n:], mask[i, width - n:] = row["input_ids"], row["token_type_ids"], 1
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}


def _load(case: ModelCase, head: str, tmp_path: Path, class_name: str = ""):
    reference = build_reference(case, class_name or case.heads[head])
    reference.save_pretrained(tmp_path / "ref")
    auto = AUTO_CLASSES[head] if not class_name else None
    ours = auto.from_pretrained(tmp_path / "ref") if auto else None
    return reference, ours


def _parity_inputs(case: ModelCase) -> dict[str, torch.Tensor]:
    rows = _rows(case, LENGTHS if not _uni(case) else [7, 7, 7])
    inputs = _left_padded(case, rows)
    if _uni(case):
        del inputs["attention_mask"]  # equal lengths: nothing to mask (see the module docstring)
    return inputs


PARAMS = [p for case in CASES for p in case.params()]
# One head name per class (pretraining, with_lm_head and causal_lm are all XLNetLMHeadModel).
DISTINCT = [p for case in CASES for p in [next(q for q in case.params() if q.values[1] == head)
                                         for head in {cls: h for h, cls in reversed(case.heads.items())}.values()]]


@pytest.mark.parametrize("case, head", PARAMS)
def test_every_head_name_builds_the_reference_class(case: ModelCase, head: str) -> None:
    """The Auto class of each head name gives the class the case names (parity runs once per class)."""
    config = autoload.AutoConfig.for_model("xlnet", **{**case.config, **head_overrides(case.heads[head])})
    assert type(AUTO_CLASSES[head].from_config(config)).__name__ == case.heads[head]


@pytest.mark.parametrize("case, head", DISTINCT)
def test_parity(case: ModelCase, head: str, tmp_path: Path) -> None:
    """Every output (hidden states, attentions and memories included) equals the reference's;
    our save_pretrained loads back into the reference with the same outputs."""
    reference, ours = _load(case, head, tmp_path)
    assert type(ours).__name__ == case.heads[head] and not ours.training
    inputs = _parity_inputs(case)
    with torch.no_grad():
        expected = reference(**inputs, output_hidden_states=True, output_attentions=True)
        got = ours(**inputs, output_hidden_states=True, output_attentions=True)
    assert "mems" in got.keys() and len(got.mems) == case.config.get("n_layer", 2)  # use_mems_eval by default
    assert_outputs_close(got, expected)
    ours.save_pretrained(tmp_path / "ours")
    reloaded = getattr(transformers, case.heads[head]).from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        again = reloaded(**inputs)
    for key in ("logits", "last_hidden_state", "start_top_log_probs", "end_top_index", "cls_logits"):
        if key in got.keys():
            torch.testing.assert_close(getattr(again, key), got[key], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("case, head", [p for p in PARAMS if p.values[0] is CASES[0] or p.values[1] == "base"])
def test_loading_report(case: ModelCase, head: str, tmp_path: Path) -> None:
    check_loading_report(case, head, tmp_path)


def _per_token(key: str, value: torch.Tensor, length: int) -> bool:
    return key in ("logits", "last_hidden_state", "start_logits", "end_logits") and value.dim() >= 2 and value.shape[1] == length


@pytest.mark.parametrize("case, head", [p for p in DISTINCT if p.values[1] != "question_answering"])
def test_left_padded_rows_equal_rows_alone(case: ModelCase, head: str, tmp_path: Path) -> None:
    """Real tokens' outputs of a left-padded batch (4 extra pads too) equal the reference on each
    row alone; the summary does where it reads real tokens only (last, cls_index's last position),
    and for first/mean it is the reference's padded reading (see the module docstring)."""
    reference, ours = _load(case, head, tmp_path)
    rows = _rows(case, LENGTHS)
    inputs = _left_padded(case, rows)
    extra = {k: torch.nn.functional.pad(v, (4, 0), value=0) for k, v in inputs.items()}
    summary = case.config.get("summary_type", "last")
    with torch.no_grad():
        batched, padded_more = ours(**inputs), ours(**extra)
        if not _uni(case):
            torch.testing.assert_close(batched[0], reference(**inputs)[0], atol=ATOL, rtol=RTOL)
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            alone = reference(**{k: v[None] for k, v in row.items()})
            key = list(alone.keys())[0]
            if _per_token(key, alone[key], n):
                for out in (batched, padded_more):
                    torch.testing.assert_close(out[key][i, -n:], alone[key][0], atol=ATOL, rtol=RTOL)
            elif summary in ("last", "cls_index"):
                for out in (batched, padded_more):
                    torch.testing.assert_close(out[key][i], alone[key][0], atol=ATOL, rtol=RTOL)
            else:  # first / mean of a padded row read its pads, as the reference's do
                if n == max(LENGTHS):  # no pads in the batch's longest row
                    torch.testing.assert_close(batched[key][i], alone[key][0], atol=ATOL, rtol=RTOL)
                else:
                    assert not torch.allclose(batched[key][i], alone[key][0], atol=1e-4)
                assert not torch.allclose(padded_more[key][i], alone[key][0], atol=1e-4)


def _flat_params() -> list:
    return [pytest.param(case, head, id=f"{case.name}-{head}") for case in CASES
            for head in ("base", "sequence_classification", "token_classification", "with_lm_head")
            if head in case.heads]


@pytest.mark.parametrize("case, head", _flat_params())
def test_flat_rows_equal_the_reference_on_each_row_alone(case: ModelCase, head: str, tmp_path: Path) -> None:
    """The job's path: ragged rows back to back, each row's outputs (every summary type over its
    own tokens) equal the reference run on that row alone."""
    reference, ours = _load(case, head, tmp_path)
    lengths = [1, 7, 3, 9, 7]
    rows = _rows(case, lengths, seed=4)
    with torch.inference_mode():
        got = ours.prepare_for_inference().forward_flat(torch.cat([r["input_ids"] for r in rows]),
                                                        Segments.from_lengths(lengths))
        alone = [reference(input_ids=row["input_ids"][None])[0][0] for row in rows]
    expected = torch.cat(alone) if head != "sequence_classification" else torch.stack(alone)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=RTOL)


def test_question_answering_beam_padded_and_flat_equal_the_row_alone(tmp_path: Path) -> None:
    """The full QA head: with p_mask over the pads a left-padded row's beam is the row's alone
    (indices shifted by its padding); the flat path gives each row's beam with in-row indices."""
    case = CASES[0]
    reference, ours = _load(case, "question_answering", tmp_path)
    rows = _rows(case, LENGTHS)
    inputs = _left_padded(case, rows)
    p_mask = 1.0 - inputs["attention_mask"].float()
    width = inputs["input_ids"].shape[1]
    fields = ("start_top_log_probs", "start_top_index", "end_top_log_probs", "end_top_index", "cls_logits")
    with torch.no_grad():
        expected_padded = reference(**inputs, p_mask=p_mask)
        padded = ours(**inputs, p_mask=p_mask)
        flat = ours.forward_flat(torch.cat([r["input_ids"] for r in rows[:2]]), Segments.from_lengths(LENGTHS[:2]))
        for name in fields:
            torch.testing.assert_close(getattr(padded, name), getattr(expected_padded, name), atol=ATOL, rtol=RTOL)
        for i, row in enumerate(rows[:2]):  # rows of at least start_n_top tokens
            alone = reference(input_ids=row["input_ids"][None], token_type_ids=row["token_type_ids"][None])
            shift = width - len(row["input_ids"])
            for name in fields:
                mine, theirs = getattr(padded, name)[i], getattr(alone, name)[0]
                torch.testing.assert_close(mine - shift if name.endswith("index") else mine, theirs, atol=ATOL, rtol=RTOL)
                alone_untyped = getattr(reference(input_ids=row["input_ids"][None]), name)[0]
                torch.testing.assert_close(getattr(flat, name)[i], alone_untyped, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("config", [
    {"mem_len": 4, "reuse_len": 3},
    {"mem_len": 5, "attn_type": "uni", "clamp_len": 2},
    {"mem_len": None, "attn_type": "uni", "same_length": True},
], ids=["bi-mem4-reuse3", "uni-mem5-clamp2", "uni-all-kept-same-length"])
def test_memories_of_one_segment_feed_the_next(config: dict[str, Any], tmp_path: Path) -> None:
    """Segment 1's memories (per layer (M, B, H), the reference's layout) fed to segment 2 give the
    reference's outputs and next memories; use_mems=False returns none."""
    case = ModelCase("mems", "XLNetConfig", {**TINY, **config}, {})
    reference = build_reference(case, LM)
    reference.save_pretrained(tmp_path)
    ours = autoload.AutoModelWithLMHead.from_pretrained(tmp_path)
    first, second = _left_padded(case, _rows(case, [6, 6])), _left_padded(case, _rows(case, [5, 5], seed=2))
    for segment in (first, second):
        del segment["attention_mask"]
    with torch.no_grad():
        ref1, ours1 = reference(**first), ours(**first)
        ref2 = reference(**second, mems=ref1.mems, output_attentions=True)
        ours2 = ours(**second, mems=ours1.mems, output_attentions=True)
        assert ours(**first, use_mems=False).mems is None
    kept = config["mem_len"] or 6
    assert ours1.mems[0].shape == (min(kept, config.get("reuse_len") or 6), 2, 32)
    assert ours2.attentions[0].shape[-1] == 5 + ours1.mems[0].shape[0]  # the keys: memory, then the segment
    for ours_out, ref_out in ((ours1, ref1), (ours2, ref2)):
        assert_outputs_close(ours_out, ref_out)


def test_query_stream_with_perm_mask_and_target_mapping(tmp_path: Path) -> None:
    """Two-stream attention (what pretraining and XLNet generation run): the predictions at the
    target positions, both streams' hidden states and attentions equal the reference's."""
    case = CASES[0]
    reference = build_reference(case, LM)
    reference.save_pretrained(tmp_path)
    ours = autoload.AutoModelForPreTraining.from_pretrained(tmp_path)
    inputs = _left_padded(case, _rows(case, LENGTHS))
    batch, width = inputs["input_ids"].shape
    perm_mask = torch.zeros(batch, width, width)
    perm_mask[:, :, -1] = 1.0  # nobody sees the last token
    perm_mask[:, 3, 6] = 1.0
    target_mapping = torch.zeros(batch, 2, width)
    target_mapping[:, 0, -1] = 1.0
    target_mapping[:, 1, 6] = 1.0
    with torch.no_grad():
        kwargs = dict(perm_mask=perm_mask, target_mapping=target_mapping, output_hidden_states=True,
                      output_attentions=True)
        expected, got = reference(**inputs, **kwargs), ours(**inputs, **kwargs)
    assert got.logits.shape == (batch, 2, TINY["vocab_size"])
    assert len(got.hidden_states) == 2 * (TINY["n_layer"] + 1)  # (h, g) per layer and at the end
    torch.testing.assert_close(got.logits, expected.logits, atol=ATOL, rtol=RTOL)
    for mine, theirs in zip(got.hidden_states, expected.hidden_states):
        torch.testing.assert_close(mine, theirs, atol=ATOL, rtol=RTOL)
    for (mine_h, mine_g), (theirs_h, theirs_g) in zip(got.attentions, expected.attentions):
        torch.testing.assert_close(mine_h, theirs_h, atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(mine_g, theirs_g, atol=ATOL, rtol=RTOL)


def test_bi_data_positions_and_its_limits(tmp_path: Path) -> None:
    """bi_data (half the batch forward, half backward) equals the reference on an even batch; an
    odd batch is refused, and so is the flat path, which runs each row alone."""
    case = ModelCase("bi-data", "XLNetConfig", {**TINY, "bi_data": True, "clamp_len": 4}, {})
    reference = build_reference(case, "XLNetModel")
    reference.save_pretrained(tmp_path)
    ours = autoload.AutoModel.from_pretrained(tmp_path)
    inputs = _left_padded(case, _rows(case, [7, 4, 7, 2]))
    with torch.no_grad():
        torch.testing.assert_close(ours(**inputs).last_hidden_state, reference(**inputs).last_hidden_state,
                                   atol=ATOL, rtol=RTOL)
        with pytest.raises(ValueError, match="even batch"):
            ours(**{k: v[:3] for k, v in inputs.items()})
        with pytest.raises(ValueError, match="bi_data"):
            ours.forward_flat(torch.arange(9, 14), Segments.from_lengths([5]))


def test_simple_question_answering_and_multiple_choice_heads(tmp_path: Path) -> None:
    """Today's reference heads beyond the seed's Auto classes, loaded by class: per-token start/end
    logits (padded and flat), and (B, C) choice logits from (B, C, T) inputs."""
    case = CASES[0]
    rows = _rows(case, LENGTHS)
    inputs = _left_padded(case, rows)
    reference = build_reference(case, "XLNetForQuestionAnsweringSimple")
    reference.save_pretrained(tmp_path / "qa")
    ours = XLNetForQuestionAnsweringSimple.from_pretrained(tmp_path / "qa")
    with torch.no_grad():
        assert_outputs_close(ours(**inputs, output_hidden_states=True), reference(**inputs, output_hidden_states=True))
        flat = ours.forward_flat(torch.cat([r["input_ids"] for r in rows]), Segments.from_lengths(LENGTHS))
        alone = [reference(input_ids=r["input_ids"][None]) for r in rows]
    torch.testing.assert_close(flat, torch.cat([torch.stack([a.start_logits[0], a.end_logits[0]], -1) for a in alone]),
                               atol=ATOL, rtol=RTOL)

    reference = build_reference(case, "XLNetForMultipleChoice")
    reference.save_pretrained(tmp_path / "mc")
    ours, info = XLNetForMultipleChoice.from_pretrained(tmp_path / "mc", output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    choices = {k: torch.stack([v, v.roll(1, dims=0)]) for k, v in inputs.items()}  # (2, 3, T): 2 questions, 3 choices
    with torch.no_grad():
        got, expected = ours(**choices), reference(**choices)
    assert got.logits.shape == (2, 3)
    assert_outputs_close(got, expected)


def test_input_mask_is_the_inverse_attention_mask(tmp_path: Path) -> None:
    case = CASES[0]
    reference, ours = _load(case, "base", tmp_path)
    inputs = _left_padded(case, _rows(case, LENGTHS))
    mask = inputs.pop("attention_mask")
    with torch.no_grad():
        torch.testing.assert_close(ours(**inputs, input_mask=1 - mask).last_hidden_state,
                                   reference(**inputs, input_mask=1 - mask).last_hidden_state, atol=ATOL, rtol=RTOL)
        with pytest.raises(ValueError, match="not both"):
            ours(**inputs, input_mask=1 - mask, attention_mask=mask)


def test_contract_and_config() -> None:
    contract = registry.contract("xlnet")
    assert registry.model_type_from_name("xlnet/xlnet-base-cased") == "xlnet"
    assert contract.padding_side == transformers.XLNetTokenizer.padding_side == "left"
    # Today's XLNetTokenizer gives no token types (the forward still takes them, see test_parity).
    assert list(contract.input_names) == transformers.XLNetTokenizer.model_input_names
    assert contract.max_input_length(autoload.AutoConfig.for_model("xlnet")) >= 1_000_000  # no position table
    # AutoModelForQuestionAnswering gives the seed's class; today's reference maps the simple head.
    assert contract.heads["question_answering"].__name__ == "XLNetForQuestionAnswering"
    assert transformers.AutoModelForQuestionAnswering._model_mapping[transformers.XLNetConfig].__name__ == \
        "XLNetForQuestionAnsweringSimple"
    reference, ours = transformers.XLNetConfig(), autoload.AutoConfig.for_model("xlnet")
    for key in ("vocab_size", "d_model", "n_layer", "n_head", "d_inner", "ff_activation", "attn_type", "layer_norm_eps",
                "mem_len", "reuse_len", "use_mems_eval", "use_mems_train", "bi_data", "clamp_len", "same_length",
                "summary_type", "summary_use_proj", "summary_activation", "summary_last_dropout", "start_n_top",
                "end_n_top", "pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings"):
        assert getattr(ours, key) == getattr(reference, key), key
    assert ours.hidden_size == 1024 and ours.num_hidden_layers == 24
    with pytest.raises(ValueError, match="d_head"):
        autoload.AutoModel.from_config(autoload.AutoConfig.for_model("xlnet", **{**TINY, "d_head": 5}))
    with pytest.raises(ValueError, match="summary_type"):
        autoload.AutoModelForSequenceClassification.from_config(
            autoload.AutoConfig.for_model("xlnet", **{**TINY, "summary_type": "attn"}))


def test_bfloat16_flat_classification_is_close_to_float32(tmp_path: Path) -> None:
    """Half precision (what GPUs run): the masks' floor and the position sinusoids survive bfloat16."""
    case = CASES[0]
    build_reference(case, "XLNetForSequenceClassification").save_pretrained(tmp_path)
    rows = _rows(case, [1, 7, 3, 9])
    ids, segments = torch.cat([r["input_ids"] for r in rows]), Segments.from_lengths([1, 7, 3, 9])
    with torch.inference_mode():
        full = autoload.AutoModelForSequenceClassification.from_pretrained(tmp_path).forward_flat(ids, segments)
        half = autoload.AutoModelForSequenceClassification.from_pretrained(tmp_path, torch_dtype="bfloat16")
        got = half.forward_flat(ids, segments)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), full, atol=5e-2, rtol=5e-2)
