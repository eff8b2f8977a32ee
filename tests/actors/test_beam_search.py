"""Beam search in the generate stage on a tiny GPT-2 (no Ray) against transformers'
``generate(num_beams=k, do_sample=False)`` on each prompt alone: the best beam token for token,
with and without an EOS the beams reach, over left-padded micro-batches and one-prompt ones."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import pyarrow as pa
import pytest
import torch

from actors.common import TOKENS
from actors.generate import Generate
from actors.model_stage import Results
from actors.tokenize import Tokenize
from causal_lm_data import tiny_gpt2
from jobs.options import SpecError
from jobs.tasks.generate import GenerateTask

transformers = pytest.importorskip("transformers")

CONTEXT, NEW = 32, 10
# 1 to 4 tokens each.  With these and the EOS tokens below, some rows' answers depend on when a
# prompt's search settles and on ended spare continuations not becoming hypotheses (breaking
# either rule fails the comparison).
PROMPTS = ["the quick brown fox", "hello world", "a", "a quiet village", "hello", "fox", "by", "quick", "over",
           "village", "the lazy", "the ocean", "old", "seas", "run to", "jumps over"]
EOS_TOKENS = 8


class Recorded(Generate):
    """The stage, keeping each row's generated ids (before decoding) for token comparisons."""

    def columns(self, results: Results) -> dict[str, pa.Array]:
        tokens = results.per_row("tokens", (self.max_new_tokens,))
        self.ids = [[int(t) for t in row if t >= 0] for row in tokens]
        return super().columns(results)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_gpt2(tmp_path_factory.mktemp("gpt2"), n_positions=CONTEXT)


@pytest.fixture(scope="module")
def reference(model_dir: Path):
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.GPT2LMHeadModel.from_pretrained(model_dir).eval()
    runs: dict[tuple, list[int]] = {}

    def best_beam(text: str, k: int, eos: Optional[int]) -> list[int]:
        """The reference's best beam's new tokens for ``text`` alone (its default 1 returned)."""
        key = (text, k, eos)
        if key not in runs:
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            with torch.no_grad():
                out = model.generate(ids, num_beams=k, do_sample=False, max_new_tokens=NEW, pad_token_id=0,
                                     eos_token_id=eos)
            runs[key] = out[0, ids.shape[1]:].tolist()
        return runs[key]

    return tokenizer, best_beam


@pytest.fixture(scope="module")
def reached_eos(reference) -> list[int]:
    """Tokens the reference's best beams reach: as EOS, they end some beams early."""
    _, best_beam = reference
    seen = [t for text in PROMPTS for t in best_beam(text, 2, None)]
    return list(dict.fromkeys(seen))[:EOS_TOKENS]


def tokenized(model_dir: Path, texts: list[str]) -> pa.Table:
    return Tokenize(str(model_dir), text_column="text", max_length=1 << 20, prompt_boundary=True)(
        pa.table({"text": texts}))


@pytest.mark.parametrize("max_batch_tokens", [4, 10_000])  # one prompt per micro-batch; all in one, left-padded
@pytest.mark.parametrize("num_beams", [2, 4])
def test_beam_search_equals_the_reference_token_for_token(model_dir: Path, reference, reached_eos: list[int],
                                                          num_beams: int, max_batch_tokens: int) -> None:
    tokenizer, best_beam = reference
    table = tokenized(model_dir, PROMPTS)
    assert len(set(table[TOKENS].to_pylist())) > 1  # prompts of several lengths: padding inside a batch
    stage = Recorded(str(model_dir), context=CONTEXT, max_new_tokens=NEW, threads=1, num_beams=num_beams,
                     max_batch_tokens=max_batch_tokens)
    reasons = []
    for eos in [None, *reached_eos]:
        stage.eos_token_id = eos
        out = stage(table)
        for row, text in enumerate(PROMPTS):
            expected = best_beam(text, num_beams, eos)
            reason = "eos" if eos is not None and expected[-1] == eos else "length"
            assert stage.ids[row] == expected, (text, eos)
            assert out["generated_text"][row].as_py() == tokenizer.decode(expected, skip_special_tokens=True)
            assert out["generated_tokens"][row].as_py() == len(expected)
            assert out["finish_reason"][row].as_py() == reason
            reasons.append((eos is None, reason, len(expected)))
    # Without EOS every row runs to the limit; EOS ends some rows early and lets others run on.
    assert {r for r in reasons if r[0]} == {(True, "length", NEW)}
    ended = [length for no_eos, reason, length in reasons if not no_eos and reason == "eos"]
    assert min(ended) < NEW and ("length" in {r[1] for r in reasons if not r[0]})


def test_beam_search_is_not_greedy_here(model_dir: Path, reference) -> None:
    """The comparison above discriminates: on this model some prompt's best beam differs from
    its greedy continuation."""
    table = tokenized(model_dir, PROMPTS)
    greedy = Recorded(str(model_dir), context=CONTEXT, max_new_tokens=NEW, threads=1)
    beam = Recorded(str(model_dir), context=CONTEXT, max_new_tokens=NEW, threads=1, num_beams=4)
    greedy(table), beam(table)
    assert greedy.ids != beam.ids


def test_micro_batches_count_prompts_times_beams(model_dir: Path) -> None:
    stage = Generate(str(model_dir), context=CONTEXT, max_new_tokens=NEW, threads=1, num_beams=4,
                     max_batch_tokens=64, batch_size=8)
    # B prompts run B x 4 rows: a forward's budget holds a quarter of the prompts.
    assert (stage.max_batch_tokens, stage.batch_size) == (16, 2)


def test_beam_search_with_sampling_is_refused(model_dir: Path) -> None:
    with pytest.raises(ValueError, match="num_beams > 1 runs without do_sample"):
        Generate(str(model_dir), context=CONTEXT, max_new_tokens=NEW, num_beams=2, do_sample=True)
    model = SimpleNamespace(max_length=128, config=SimpleNamespace(eos_token_id=0))
    with pytest.raises(SpecError, match="--num-beams 2 is beam search, which samples nothing: drop --do-sample"):
        GenerateTask({"num_beams": 2, "do_sample": True}).settings(model)
    task = GenerateTask({"num_beams": 3})
    assert task.stage_kwargs(task.settings(model), model)["num_beams"] == 3
    assert GenerateTask({}).settings(model)["num_beams"] == 1
