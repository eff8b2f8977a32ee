"""The score and generate stages on a tiny GPT-2 (no Ray) against the reference: log-likelihoods
as the reference's loss, the sliding-window perplexity recipe, prompt/continuation scoring,
greedy generation token for token, EOS and stop strings, seeded sampling, long prompts."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from actors.common import BadRowError, ROW, SOURCE, TRUNCATED
from actors.generate import Generate
from actors.score import Score, windows
from actors.tokenize import Tokenize
from causal_lm_data import CORPUS, tiny_gpt2

transformers = pytest.importorskip("transformers")

CONTEXT = 32
TEXTS = ["the quick brown fox", "hello world", CORPUS[1] + " " + CORPUS[0], "a"]
PROMPTS = ["the quick brown fox", "hello world", "a", "a quiet village"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_gpt2(tmp_path_factory.mktemp("gpt2"), n_positions=CONTEXT)


@pytest.fixture(scope="module")
def reference(model_dir: Path):
    return (transformers.AutoTokenizer.from_pretrained(model_dir),
            transformers.GPT2LMHeadModel.from_pretrained(model_dir).eval())


def tokenized(model_dir: Path, texts: list, pairs: list | None = None, max_length: int = 1 << 20) -> pa.Table:
    columns = {"text": texts, **({"pair": pairs} if pairs else {})}
    table = Tokenize(str(model_dir), text_column="text", text_pair_column="pair" if pairs else None,
                     max_length=max_length, prompt_boundary=True)(pa.table(columns))
    return table.append_column(SOURCE, pa.array(["in.parquet"] * len(texts))).append_column(
        ROW, pa.array(range(len(texts)), type=pa.int64()))


def reference_window_logprob(model, ids: list[int], context: int, stride: int) -> tuple[float, int]:
    """The reference perplexity recipe (transformers docs): -sum(loss * targets) and the targets."""
    tensor = torch.tensor([ids])
    total, count, previous = 0.0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + context, len(ids))
        chunk = tensor[:, begin:end]
        labels = chunk.clone()
        labels[:, :-(end - previous)] = -100
        targets = int((labels[:, 1:] != -100).sum())
        with torch.no_grad():
            total -= float(model(chunk, labels=labels).loss) * targets
        count, previous = count + targets, end
        if end == len(ids):
            break
    return total, count


def test_windows_score_each_token_once() -> None:
    for length in (1, 5, 32, 33, 95, 96):
        cuts = windows(length, 32, 16)
        scored = [t for begin, end, first in cuts for t in range(first, end)]
        assert scored == list(range(1, length)) and all(end - begin <= 32 for begin, end, _ in cuts)


@pytest.mark.parametrize("flat", [True, False])
def test_logprob_sum_is_the_references_loss_times_tokens(model_dir: Path, reference, flat: bool) -> None:
    tokenizer, model = reference
    stage = Score(str(model_dir), context=CONTEXT, stride=CONTEXT, threads=1, return_token_logprobs=True)
    stage.flat = flat
    out = stage(tokenized(model_dir, TEXTS[:2] + TEXTS[3:]))
    for row, text in enumerate(TEXTS[:2] + TEXTS[3:]):
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        targets = ids.shape[1] - 1
        if not targets:  # one token: nothing before it, nothing scored
            assert out["scored_tokens"][row].as_py() == 0 and out["logprob_sum"][row].as_py() is None
            continue
        with torch.no_grad():
            expected = -float(model(ids, labels=ids).loss) * targets
        assert out["scored_tokens"][row].as_py() == targets
        np.testing.assert_allclose(out["logprob_sum"][row].as_py(), expected, rtol=1e-4)
        np.testing.assert_allclose(out["perplexity"][row].as_py(), np.exp(-expected / targets), rtol=1e-4)
        assert len(out["token_logprobs"][row].as_py()) == targets


def test_a_text_three_times_the_context_matches_the_sliding_window_recipe(model_dir: Path, reference) -> None:
    tokenizer, model = reference
    text = " ".join(CORPUS * 3)
    ids = tokenizer(text)["input_ids"]
    assert len(ids) >= 3 * CONTEXT
    for stride in (8, 16, 32):
        out = Score(str(model_dir), context=CONTEXT, stride=stride, threads=1, max_batch_tokens=64)(
            tokenized(model_dir, [text]))
        expected, count = reference_window_logprob(model, ids, CONTEXT, stride)
        assert out["scored_tokens"][0].as_py() == count
        # Overlapping windows score every token but the first; without overlap (stride =
        # context) each window's first token has no left context, in the recipe as here.
        assert count == (len(ids) - 1 if stride < CONTEXT else len(ids) - -(-len(ids) // CONTEXT))
        np.testing.assert_allclose(out["logprob_sum"][0].as_py(), expected, rtol=1e-4)


def test_prompt_and_continuation_score_only_the_continuation(model_dir: Path, reference) -> None:
    tokenizer, model = reference
    prompts, continuations = ["the quick brown", "hello"], [" fox jumps", " world, rivers"]
    out = Score(str(model_dir), context=CONTEXT, threads=1)(tokenized(model_dir, prompts, continuations))
    for row, (prompt, continuation) in enumerate(zip(prompts, continuations)):
        prompt_ids, rest = tokenizer(prompt)["input_ids"], tokenizer(continuation)["input_ids"]
        ids = torch.tensor([prompt_ids + rest])
        labels = ids.clone()
        labels[:, :len(prompt_ids)] = -100
        with torch.no_grad():
            expected = -float(model(ids, labels=labels).loss) * len(rest)
        assert out["scored_tokens"][row].as_py() == len(rest)
        np.testing.assert_allclose(out["logprob_sum"][row].as_py(), expected, rtol=1e-4)


def test_add_bos_scores_the_first_token_too(model_dir: Path, reference) -> None:
    tokenizer, model = reference
    out = Score(str(model_dir), context=CONTEXT, threads=1, bos_token_id=0)(tokenized(model_dir, ["a"]))
    ids = torch.tensor([[0] + tokenizer("a")["input_ids"]])
    with torch.no_grad():
        expected = -float(model(ids, labels=ids).loss)
    assert out["scored_tokens"][0].as_py() == 1
    np.testing.assert_allclose(out["logprob_sum"][0].as_py(), expected, rtol=1e-4)


def _reference_greedy(reference, text: str, new: int, eos: int | None) -> list[int]:
    tokenizer, model = reference
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=new, do_sample=False, pad_token_id=0, eos_token_id=eos)
    return out[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("max_batch_tokens", [4, 10_000])
def test_greedy_generation_equals_the_reference_token_for_token(model_dir: Path, reference,
                                                                max_batch_tokens: int) -> None:
    tokenizer, _ = reference
    stage = Generate(str(model_dir), context=CONTEXT, max_new_tokens=10, threads=1, max_batch_tokens=max_batch_tokens)
    out = stage(tokenized(model_dir, PROMPTS))
    for row, text in enumerate(PROMPTS):
        expected = _reference_greedy(reference, text, 10, None)
        assert out["generated_text"][row].as_py() == tokenizer.decode(expected, skip_special_tokens=True)
        assert out["generated_tokens"][row].as_py() == 10 and out["finish_reason"][row].as_py() == "length"


def test_eos_and_stop_strings_end_rows_with_their_reason(model_dir: Path, reference) -> None:
    tokenizer, _ = reference
    free = _reference_greedy(reference, "hello world", 10, None)
    eos = free[3]  # a token the greedy continuation reaches: as EOS, it ends the row there
    stage = Generate(str(model_dir), context=CONTEXT, max_new_tokens=10, threads=1, eos_token_id=eos)
    out = stage(tokenized(model_dir, ["hello world", "the quick brown fox"]))
    ended = free.index(eos) + 1
    assert out["finish_reason"][0].as_py() == "eos" and out["generated_tokens"][0].as_py() == ended
    assert out["generated_text"][0].as_py() == tokenizer.decode(free[:ended], skip_special_tokens=True)
    expected_other = _reference_greedy(reference, "the quick brown fox", 10, eos)
    assert out["generated_tokens"][1].as_py() == len(expected_other)
    text = tokenizer.decode(free, skip_special_tokens=True)
    stop = text[len(text) // 2: len(text) // 2 + 2]
    stopped = Generate(str(model_dir), context=CONTEXT, max_new_tokens=10, threads=1, stop=[stop])(
        tokenized(model_dir, ["hello world"]))
    assert stopped["finish_reason"][0].as_py() == "stop"
    assert stopped["generated_text"][0].as_py() == text[:text.index(stop)]
    count = stopped["generated_tokens"][0].as_py()
    assert stop in tokenizer.decode(free[:count]) and stop not in tokenizer.decode(free[:count - 1])


def test_seeded_sampling_is_the_same_across_runs_and_batches(model_dir: Path) -> None:
    table = tokenized(model_dir, PROMPTS)
    stage = Generate(str(model_dir), context=CONTEXT, max_new_tokens=6, threads=1, do_sample=True, temperature=0.9,
                     top_k=40, top_p=0.95, seed=11)
    first = stage(table)["generated_text"].to_pylist()
    assert stage(table)["generated_text"].to_pylist() == first
    assert stage(table.slice(2, 2))["generated_text"].to_pylist() == first[2:]  # a retried unit's rows alone
    stage.max_batch_tokens = 3  # other micro-batches
    assert stage(table)["generated_text"].to_pylist() == first
    other = Generate(str(model_dir), context=CONTEXT, max_new_tokens=6, threads=1, do_sample=True, seed=12)
    assert other(table)["generated_text"].to_pylist() != first


def test_a_prompt_without_room_fails_naming_the_row_or_keeps_its_end(model_dir: Path, reference) -> None:
    tokenizer, _ = reference
    long = " ".join(CORPUS * 2)
    table = tokenized(model_dir, ["hello", long])
    with pytest.raises(BadRowError, match=r"in\.parquet row 1: a prompt of \d+ tokens leaves no room for "
                                          r"--max-new-tokens 8 in the model's context of 32"):
        Generate(str(model_dir), context=CONTEXT, max_new_tokens=8, threads=1)(table)
    out = Generate(str(model_dir), context=CONTEXT, max_new_tokens=8, threads=1, long_prompt="truncate")(table)
    assert out[TRUNCATED].to_pylist() == [False, True]
    kept = tokenizer.decode(tokenizer(long)["input_ids"][-(CONTEXT - 8):])
    expected = _reference_greedy(reference, kept, 8, None)
    assert out["generated_text"][1].as_py() == tokenizer.decode(expected, skip_special_tokens=True)
