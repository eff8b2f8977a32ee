"""The unpadded (flat) path: equal to our padded path and to the reference per architecture,
half precision close to float32, and the model stage's output in input order whatever the
micro-batching, including after out-of-memory retries."""
from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from model_harness import ATOL, RTOL, AUTO_CLASSES, ModelCase, build_reference
from test_model_albert import CASES as ALBERT_CASES
from test_model_bert import CASES as BERT_CASES
from test_model_ctrl import CASES as CTRL_CASES
from test_model_distilbert import CASES as DISTILBERT_CASES
from test_model_electra import CASES as ELECTRA_CASES
from test_model_openai_gpt import CASES as OPENAI_GPT_CASES
from test_model_gpt2 import CASES as GPT2_CASES
from test_model_roberta import CASES as ROBERTA_CASES

from actors.common import INPUT_IDS, PADDED, TOKENS, flat_rows
from actors.embed import Embed, pool
from actors.model_stage import MICRO_BATCH_LIMITS, load_dtype
from actors.tokenize import Tokenize
from autoload import registry
from autoload.modeling import Segments, pool_segments

# Every case of every architecture: BERT, RoBERTa / XLM-RoBERTa / CamemBERT, DistilBERT,
# ELECTRA, ALBERT, GPT-2, OpenAI GPT and CTRL (causal), with their variants (decoder masks, projected embeddings, pad
# ids, layer groups, attention scales, ...).
CASES = (BERT_CASES + ROBERTA_CASES + DISTILBERT_CASES + ELECTRA_CASES + ALBERT_CASES + GPT2_CASES + OPENAI_GPT_CASES
         + CTRL_CASES)
# Ragged, with single-token rows and a tie for the longest.
LENGTHS = [1, 7, 3, 12, 1, 9, 12]


def _flat_input_names(model_class: type) -> list[str]:
    """The inputs ``forward_flat`` takes besides the ids and the segments."""
    return list(inspect.signature(model_class.forward_flat).parameters)[3:]  # after self, input_ids, segments


def _ragged_inputs(case: ModelCase, lengths: list[int], seed: int = 3, model: object = None) -> tuple[dict, dict]:
    """The same rows as padded (B, T) inputs and as flat (N,) inputs.  Token types go in
    where the case uses them and ``model``'s flat path (when given) takes them."""
    generator = torch.Generator().manual_seed(seed)
    rows = [torch.randint(5, case.config["vocab_size"], (n,), generator=generator) for n in lengths]
    types = [torch.randint(0, 2, (n,), generator=generator) for n in lengths]
    width = max(lengths)
    pad = case.config.get("pad_token_id", 0) or 0
    input_ids = torch.full((len(rows), width), pad)
    token_types = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, (row, kinds) in enumerate(zip(rows, types)):
        input_ids[i, :len(row)], token_types[i, :len(row)], mask[i, :len(row)] = row, kinds, 1
    padded = {"input_ids": input_ids, "attention_mask": mask}
    flat = {"input_ids": torch.cat(rows)}
    if case.uses_token_types and (model is None or "token_type_ids" in _flat_input_names(type(model))):
        padded["token_type_ids"] = token_types
        flat["token_type_ids"] = torch.cat(types)
    return padded, flat


def _load(case: ModelCase, head: str, tmp_path: Path):
    reference = build_reference(case, case.heads[head])
    reference.save_pretrained(tmp_path)
    return reference, AUTO_CLASSES[head].from_pretrained(tmp_path)


@pytest.mark.parametrize("fused", [False, True], ids=["three-gemms", "fused-qkv"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_flat_encoder_equals_padded_and_reference(case: ModelCase, fused: bool, tmp_path: Path) -> None:
    reference, ours = _load(case, "base", tmp_path)
    if fused:
        ours.prepare_for_inference()
    padded, flat = _ragged_inputs(case, LENGTHS, model=ours)
    real = padded["attention_mask"].bool()
    segments = Segments.from_lengths(LENGTHS)
    with torch.inference_mode():
        expected = reference(**padded).last_hidden_state[real]  # (N, H): real tokens only
        ours_padded = ours(**padded).last_hidden_state[real]
        ours_flat = ours.forward_flat(flat.pop("input_ids"), segments, **flat)  # (N, H)
    torch.testing.assert_close(ours_padded, expected, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(ours_flat, expected, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(ours_flat, ours_padded, atol=ATOL, rtol=RTOL)


# The heads the job serves, each with a flat path in every architecture.
FLAT_HEADS = ("sequence_classification", "token_classification", "question_answering", "masked_lm", "causal_lm")
# Architectures without a flat forward, and why: the model stage runs them padded.
PADDED_ONLY = {"transfo-xl": "Transformer-XL attends over zero memories with relative positions and no attention "
                             "mask: it runs padded (causal, so right padding costs compute, never correctness)"}
HEAD_PARAMS = [pytest.param(case, head, id=f"{case.name}-{head}") for case in CASES for head in FLAT_HEADS
               if head in case.heads]


def _flat_view(head: str, output, real: torch.Tensor) -> torch.Tensor:
    """A padded output in the flat head's layout: (B, ...) per sequence, (N, ...) per real token."""
    if head == "sequence_classification":
        return output.logits  # (B, num_labels)
    if head == "question_answering":
        return torch.stack([output.start_logits, output.end_logits], dim=-1)[real]  # (N, 2)
    return output.logits[real]  # (N, num_labels) or (N, V)


@pytest.mark.parametrize("case, head", HEAD_PARAMS)
def test_flat_head_equals_padded_and_reference(case: ModelCase, head: str, tmp_path: Path) -> None:
    reference, ours = _load(case, head, tmp_path)
    ours.prepare_for_inference()
    padded, flat = _ragged_inputs(case, LENGTHS, model=ours)
    real = padded["attention_mask"].bool()
    with torch.inference_mode():
        expected = _flat_view(head, reference(**padded), real)
        ours_padded = _flat_view(head, ours(**padded), real)
        got = ours.forward_flat(flat.pop("input_ids"), Segments.from_lengths(LENGTHS), **flat)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(got, ours_padded, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("model_type", registry.known_model_types())
def test_flat_signatures_are_the_declared_inputs(model_type: str) -> None:
    """Every flat class of an architecture takes exactly the inputs its contract declares (the
    attention mask is the segments), so the model stage can pass those and nothing else."""
    if model_type in PADDED_ONLY:
        pytest.skip(PADDED_ONLY[model_type])
    contract = registry.contract(model_type)
    declared = [name for name in contract.input_names if name not in ("input_ids", "attention_mask")]
    flat = {head: cls for head, cls in contract.heads.items() if hasattr(cls, "forward_flat")}
    assert {"base", *FLAT_HEADS} & set(contract.heads) <= set(flat)
    for head, cls in flat.items():
        assert _flat_input_names(cls) == declared, (head, cls.__name__)


def test_equal_lengths_skip_the_scatter_and_match(tmp_path: Path) -> None:
    """All rows of one length: the flat layout is the padded one, attention runs unmasked."""
    case = BERT_CASES[0]
    reference, ours = _load(case, "base", tmp_path)
    padded, flat = _ragged_inputs(case, [6, 6, 6])
    segments = Segments.from_lengths([6, 6, 6])
    assert segments.uniform
    with torch.inference_mode():
        expected = reference(**padded).last_hidden_state.reshape(18, -1)
        got = ours.prepare_for_inference().forward_flat(flat.pop("input_ids"), segments, **flat)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=RTOL)


def test_fused_qkv_keeps_checkpoint_keys_and_saves_like_before(tmp_path: Path) -> None:
    case = BERT_CASES[0]
    _, ours = _load(case, "base", tmp_path / "ref")
    keys = set(ours.state_dict())
    ours.prepare_for_inference()
    assert set(ours.state_dict()) == keys  # the fused weight is not a checkpoint key
    ours.save_pretrained(tmp_path / "again")
    reloaded = AUTO_CLASSES["base"].from_pretrained(tmp_path / "again")
    padded, _ = _ragged_inputs(case, LENGTHS)
    with torch.inference_mode():
        torch.testing.assert_close(reloaded(**padded).last_hidden_state, ours(**padded).last_hidden_state)


def test_flat_forward_refuses_training_mode_and_wrong_shapes(tmp_path: Path) -> None:
    _, ours = _load(BERT_CASES[0], "base", tmp_path)
    segments = Segments.from_lengths([2, 3])
    with pytest.raises(ValueError, match="N = 5 tokens"):
        ours.forward_flat(torch.ones(4, dtype=torch.long), segments)
    ours.train()
    with pytest.raises(RuntimeError, match="inference-only"):
        ours.forward_flat(torch.ones(5, dtype=torch.long), segments)


def test_segments_need_a_token_per_row() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Segments.from_lengths([3, 0, 2])
    segments = Segments.from_lengths(np.array([3, 1, 2]))
    assert segments.cu_seqlens.tolist() == [0, 3, 4, 6] and segments.cu_seqlens.dtype == torch.int32
    assert segments.positions.tolist() == [0, 1, 2, 0, 0, 1]
    assert segments.first.tolist() == [0, 3, 4] and segments.last.tolist() == [2, 3, 5]


@pytest.mark.parametrize("mode", ["mean", "cls", "last", "max"])
def test_pool_segments_equals_padded_pooling(mode: str) -> None:
    lengths = [4, 1, 3]
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 4, 5, generator=generator)  # (B, T, H)
    mask = (torch.arange(4)[None, :] < torch.tensor(lengths)[:, None]).long()
    flat = hidden[mask.bool()]  # (N, H)
    torch.testing.assert_close(pool_segments(flat, Segments.from_lengths(lengths), mode), pool(hidden, mask, mode))


def test_flat_rows_gathers_rows_in_the_given_order() -> None:
    ids = pa.array([[1, 2, 3], [4], [5, 6], []], type=pa.list_(pa.int32())).slice(0, 3)
    assert flat_rows(ids, np.array([2, 0, 1])).tolist() == [5, 6, 1, 2, 3, 4]


# -- real model: half precision, and the stage's order ------------------------------------------------------------
# No empty text: the tokenize stage refuses it as a bad row (issue 4).
TEXTS = [("word " * n).strip() for n in (1, 40, 3, 120, 7, 5, 60, 2, 250, 15, 33, 1)]


@pytest.mark.parametrize("dtype, tolerance", [("float16", 1e-2), ("bfloat16", 2e-2)])
def test_half_precision_flat_close_to_float32(minilm: str, dtype: str, tolerance: float) -> None:
    """Pooled embeddings in half precision (on CPU: the path a GPU takes) against float32,
    as ||half - fp32|| / ||fp32|| per row.  float16 lands near 0.2 %; bfloat16's 8-bit
    mantissa alone costs 1-1.5 % here (transformers' own bf16 MiniLM drifts as much on these
    texts), so its bound is 2 % with a cosine of at least 0.9998."""
    table = Tokenize(minilm, text_column="text", max_length=256)(pa.table({"text": TEXTS}))
    fp32 = Embed(minilm, dtype="float32", max_batch_tokens=2048)(table)
    half = Embed(minilm, dtype=dtype, max_batch_tokens=2048)
    assert half.flat and half.model.dtype == getattr(torch, dtype)
    a = np.array(half(table)["embedding"].to_pylist(), dtype=np.float32)
    b = np.array(fp32["embedding"].to_pylist(), dtype=np.float32)
    relative = np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert relative.max() <= tolerance, relative
    assert cosine.min() >= 0.9998, cosine


def _each_row_alone(minilm: str, table: pa.Table) -> np.ndarray:
    """Reference: every row in its own padded forward (no batching, no sorting)."""
    stage = Embed(minilm, threads=1)
    stage.flat = False
    return np.concatenate([np.array(stage(table.slice(i, 1))["embedding"].to_pylist(), dtype=np.float32)
                           for i in range(table.num_rows)])


@pytest.fixture(scope="module")
def shuffled(minilm: str) -> tuple[pa.Table, np.ndarray]:
    rng = np.random.default_rng(7)
    texts = [("alpha beta gamma " * int(n)).strip() or "x" for n in rng.integers(0, 40, size=40)]
    table = Tokenize(minilm, text_column="text", max_length=128)(pa.table({"text": texts}))
    return table, _each_row_alone(minilm, table)


@pytest.mark.parametrize("max_batch_tokens", [1, 300, 100_000])
def test_stage_restores_input_order(minilm: str, shuffled, max_batch_tokens: int) -> None:
    table, alone = shuffled
    stage = Embed(minilm, max_batch_tokens=max_batch_tokens, threads=1)
    assert stage.flat
    out = stage(table)
    np.testing.assert_allclose(np.array(out["embedding"].to_pylist(), dtype=np.float32), alone, atol=1e-5)
    assert out[PADDED].to_pylist() == out[TOKENS].to_pylist()  # unpadded: each row ran at its own length


def test_out_of_memory_splits_the_micro_batch_and_lowers_the_budget(minilm: str, shuffled, caplog) -> None:
    """A forward over more than 200 padded tokens fails like a full GPU: the stage retries in
    halves, keeps the lower budget for later blocks, and still returns every row in order."""
    table, alone = shuffled
    stage = Embed(minilm, max_batch_tokens=100_000, batch_size=64, threads=1)
    real_forward = stage.forward_flat
    failed: list[int] = []
    ran: list[int] = []

    def forward_flat(input_ids: torch.Tensor, segments: Segments, **inputs: torch.Tensor) -> torch.Tensor:
        if segments.num_sequences * segments.max_seqlen > 200:
            failed.append(segments.num_sequences)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        ran.append(segments.num_sequences)
        return real_forward(input_ids, segments, **inputs)

    stage.forward_flat = forward_flat
    with caplog.at_level("WARNING", logger="actors.model_stage"):
        out = stage(table)
    np.testing.assert_allclose(np.array(out["embedding"].to_pylist(), dtype=np.float32), alone, atol=1e-5)
    assert failed[0] == 40 and all(b == a // 2 for a, b in zip(failed, failed[1:])), failed
    assert sum(ran) == 40
    assert "out of memory" in caplog.text and stage.max_batch_tokens <= 200
    failed.clear()
    stage(table)  # the next block starts at the lowered budget: no failed forward
    assert failed == []


def test_out_of_memory_on_one_row_fails_loudly(minilm: str) -> None:
    table = Tokenize(minilm, text_column="text", max_length=32)(pa.table({"text": ["one row"]}))
    stage = Embed(minilm, threads=1)

    def forward_flat(*args, **kwargs) -> torch.Tensor:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory.")

    stage.forward_flat = forward_flat
    with pytest.raises(RuntimeError, match="single row of 4 tokens"):
        stage(table)
    assert INPUT_IDS in table.column_names  # the input is untouched


def test_auto_dtype_is_float16_on_gpu_and_float32_on_cpu() -> None:
    assert load_dtype("auto", torch.device("cuda")) == "float16"
    assert load_dtype("auto", torch.device("cpu")) == "float32"
    assert load_dtype("bfloat16", torch.device("cuda")) == "bfloat16"


def test_micro_batch_limits_default_per_device(minilm: str) -> None:
    stage = Embed(minilm, threads=1)
    assert (stage.max_batch_tokens, stage.batch_size) == MICRO_BATCH_LIMITS["cpu"]
    assert Embed(minilm, max_batch_tokens=64, batch_size=4, threads=1).max_batch_tokens == 64


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bench/gpu_check.sh runs these)")


@CUDA
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_cuda_flat_equals_the_reference_in_float32_and_half(case: ModelCase, tmp_path: Path) -> None:
    """On a GPU: the flat forward in float32 equals the CPU reference; in float16 and bfloat16
    (``varlen_attn`` where its limits allow) it stays within 1e-2 / 2e-2 relative per token."""
    reference, ours = _load(case, "base", tmp_path)
    padded, flat = _ragged_inputs(case, LENGTHS, model=ours)
    with torch.inference_mode():
        expected = reference(**padded).last_hidden_state[padded["attention_mask"].bool()]  # (N, H)
    device = torch.device("cuda")
    segments = Segments.from_lengths(LENGTHS, device)
    inputs = {k: v.to(device) for k, v in flat.items()}
    ids = inputs.pop("input_ids")
    model = ours.to(device).prepare_for_inference()
    with torch.inference_mode():
        got = model.forward_flat(ids, segments, **inputs).cpu()
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    for dtype, bound in ((torch.float16, 1e-2), (torch.bfloat16, 2e-2)):
        half = model.to(dtype).prepare_for_inference()
        with torch.inference_mode():
            got = half.forward_flat(ids, segments, **inputs).float().cpu()
        relative = (got - expected).norm(dim=1) / expected.norm(dim=1)
        assert relative.max() <= bound, (dtype, relative.max())
